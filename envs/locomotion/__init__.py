"""MuJoCo locomotion task families (docs/architecture.md §3): HalfCheetah velocity/direction, Ant
velocity/direction/goal.

Importing this package registers the families (``make_family("halfcheetah-vel")``, ...) and their
single-environment gymnasium ids (``gymnasium.make("HalfCheetahVel-v0", task={"velocity": 1.0})``).

All sub-environments of a vector environment share one MuJoCo model and are stepped together in native
code on all cores (``BatchedSim``, docs/architecture.md §7); observations, rewards and terminations are numpy arrays
computed for all of them at once. With the family option ``backend="warp"`` (config
``env.options: {backend: warp}``; needs the ``gpu`` extra) ``mujoco_warp`` steps them on the device passed to
``make_vector_env`` ("cpu" or "cuda[:N]") and the outputs are torch tensors there (``envs.locomotion.warp_env``).
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym

from envs.base import SingleTaskEnv, Tasks, family_names, register_family
from envs.locomotion.ant import AntDir, AntFamily, AntGoal, AntVel
from envs.locomotion.batched_sim import BatchedSim
from envs.locomotion.common import LocomotionFamily, LocomotionVectorEnv
from envs.locomotion.half_cheetah import HalfCheetahDir, HalfCheetahFamily, HalfCheetahVel
from envs.locomotion.models import load_model

FAMILIES: tuple[type[LocomotionFamily], ...] = (HalfCheetahVel, HalfCheetahDir, AntVel, AntDir, AntGoal)


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
        max_episode_steps: horizon of the underlying vector env (None: 200).
        **options: family options (``oracle``, ``num_threads``, ``backend``, ``use_contact_forces`` for Ant).
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
    "AntFamily",
    "AntGoal",
    "AntVel",
    "BatchedSim",
    "HalfCheetahDir",
    "HalfCheetahFamily",
    "HalfCheetahVel",
    "LocomotionFamily",
    "LocomotionVectorEnv",
    "load_model",
    "make_single_env",
]
