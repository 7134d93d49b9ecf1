"""MuJoCo locomotion task families (docs/architecture.md §3): HalfCheetah velocity/direction, Ant
velocity/direction/goal/2-D direction, Hopper and Walker2d with randomized physical parameters, Humanoid 2-D
direction.

Importing this package registers the families (``make_family("halfcheetah-vel")``, ...) and their
single-environment gymnasium ids (``gymnasium.make("HalfCheetahVel-v0", task={"velocity": 1.0})``).
Registering a new family: write its module (a ``LocomotionFamily`` subclass with a ``name`` and a ``gym_id``)
and add the class to ``FAMILIES``.

All sub-environments of a vector environment share one MuJoCo model and are stepped together by one
``Simulator`` (``envs.locomotion.simulator``): natively on all cores (``BatchedSim``, docs/architecture.md §7),
outputs numpy arrays computed for all of them at once; or, with the family option ``backend="warp"`` (config
``env.options: {backend: warp}``; needs the ``gpu`` extra), by ``mujoco_warp`` on the device passed to
``make_vector_env`` ("cpu" or "cuda[:N]"), outputs torch tensors there. One ``LocomotionVectorEnv`` serves both.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym

from envs.base import SingleTaskEnv, Tasks, family_names, register_family
from envs.locomotion.ant import AntDir, AntDir2D, AntFamily, AntGoal, AntVel
from envs.locomotion.batched_sim import BatchedSim
from envs.locomotion.common import LocomotionFamily, LocomotionVectorEnv
from envs.locomotion.half_cheetah import HalfCheetahDir, HalfCheetahFamily, HalfCheetahVel
from envs.locomotion.hopper_walker import HopperParams, Walker2dParams
from envs.locomotion.humanoid import HumanoidDir
from envs.locomotion.models import load_model
from envs.locomotion.simulator import Simulator

#: every locomotion family; each is registered under its ``name`` and ``gym_id`` below
FAMILIES: tuple[type[LocomotionFamily], ...] = (
    HalfCheetahVel,
    HalfCheetahDir,
    AntVel,
    AntDir,
    AntGoal,
    AntDir2D,
    HopperParams,
    Walker2dParams,
    HumanoidDir,
)


def make_single_env(
    family: type[LocomotionFamily],
    task: Tasks | None = None,
    max_episode_steps: int | None = None,
    **options: Any,
) -> SingleTaskEnv:
    """One environment of ``family`` (the gymnasium entry point); ``task=None`` draws one at every reset.

    Args:
        family: a class of ``FAMILIES``.
        task: ``{task_key: value}`` for a fixed task.
        max_episode_steps: horizon of the underlying vector env (None: the family's default horizon).
        **options: family options (``oracle``, ``num_threads``, ``backend``, ``frame_skip``, ``use_contact_forces``
            for Ant and Humanoid).
    """
    return SingleTaskEnv(family(**options), task=task, max_episode_steps=max_episode_steps)


for _family in FAMILIES:
    if _family.name not in family_names():
        register_family(_family.name, _family)
    if _family.gym_id not in gym.registry:
        gym.register(
            id=_family.gym_id,
            entry_point=functools.partial(make_single_env, _family),
            max_episode_steps=_family.default_horizon,
        )

__all__ = [
    "FAMILIES",
    "AntDir",
    "AntDir2D",
    "AntFamily",
    "AntGoal",
    "AntVel",
    "BatchedSim",
    "HalfCheetahDir",
    "HalfCheetahFamily",
    "HalfCheetahVel",
    "HopperParams",
    "HumanoidDir",
    "LocomotionFamily",
    "LocomotionVectorEnv",
    "Simulator",
    "Walker2dParams",
    "load_model",
    "make_single_env",
]
