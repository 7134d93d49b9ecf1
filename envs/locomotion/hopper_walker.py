"""Hopper and Walker2d with randomized physical parameters (ProMP's ``HopperRandParamsEnv`` and
``Walker2DRandParamsEnv``, Rothfuss et al. 2019, "ProMP", built on ``rand_param_envs``).

Distribution (ProMP's ``rand_param_envs``, ``log_scale_limit = 3.0``): a task is a set of multipliers, drawn
per element, in this order, from the ``rng`` given to ``sample_tasks``:

* ``body_mass`` ``[nbody]`` and ``body_inertia`` ``[nbody, 3]``: ``1.5^u``, ``u ~ U[−3, 3]``;
* ``dof_damping`` ``[nv]``: ``1.3^u``;
* ``geom_friction`` ``[ngeom, 3]``: ``1.5^u``.

Sub-environment ``i`` simulates the model with ``field = default × multiplier`` (row ``i`` of each task array),
set inside the batched simulation as per-row model parameters (``Simulator.set_model_fields``:
``mujoco.batch.Batch.expand`` then ``set_const``, so that MuJoCo's derived constants such as subtree masses
and inverse weights follow the new masses and inertias; ProMP's mujoco-py code wrote the fields without
recomputing them). No model is rebuilt per task. With ``oracle=True`` the multipliers are appended to the
observation (41 values for Hopper, 65 for Walker2d).

Robot, observation, reward and termination are gymnasium's MuJoCo v5 ``Hopper-v5`` / ``Walker2d-v5`` with
their defaults: XML ``hopper.xml`` / ``walker2d_v5.xml`` (timestep 0.002, RK4, frame skip 4, ``dt = 0.008``);
observation ``qpos[1:]`` and ``clip(qvel, −10, 10)`` (11 / 17 values); reward ``v_x + 1.0·healthy −
0.001‖a‖²`` (info ``reward_forward``, ``reward_survive``, ``reward_ctrl``), where ``healthy`` is evaluated after
the step; termination when unhealthy: Hopper ``z = qpos[1] > 0.7``, ``|qpos[2]| < 0.2`` and every element of
``(qpos[2:], qvel)`` in ``(−100, 100)``; Walker2d ``0.8 < z < 2.0`` and ``|qpos[2]| < 1``. Reset noise
``U(−0.005, 0.005)`` on qpos and qvel. Default horizon 200 (the MAML paper's locomotion horizon; configs set their
own). The control cost uses the clipped action (gymnasium's the raw one; they agree for actions in ``[-1, 1]``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from envs.base import Tasks, check_task_request
from envs.locomotion.common import LocomotionFamily, sum_rows
from envs.locomotion.simulator import Simulator

#: ProMP ``rand_param_envs``: ``log_scale_limit``
LOG_SCALE_LIMIT = 3.0
#: base of the multiplier ``base^U[−3, 3]`` per model field, in sampling order
MULTIPLIER_BASES: dict[str, float] = {
    "body_mass": 1.5,
    "body_inertia": 1.5,
    "dof_damping": 1.3,
    "geom_friction": 1.5,
}


class RandParamsFamily(LocomotionFamily):
    """A planar walker (gymnasium v5) whose task is a set of physical-parameter multipliers (module docstring).

    Args:
        oracle: append the multipliers to the observation.
        num_threads: native threads that step the simulations (None: the cores available to the process).
        backend: "native" (MuJoCo on the CPU) or "warp" (``mujoco_warp``); see ``LocomotionFamily``.
        frame_skip: physics steps per environment step (None: the robot's gymnasium v5 value); see ``LocomotionFamily``.
    """

    ctrl_cost_weight: ClassVar[float] = 1e-3
    forward_reward_weight: ClassVar[float] = 1.0
    healthy_reward: ClassVar[float] = 1.0
    reset_noise_scale: ClassVar[float] = 5e-3
    reset_qvel_noise: ClassVar[str] = "uniform"
    model_fields: ClassVar[tuple[str, ...]] = tuple(MULTIPLIER_BASES)
    healthy_z_range: ClassVar[tuple[float, float]]
    healthy_angle_range: ClassVar[tuple[float, float]]

    def __init__(self, *, oracle: bool = False, num_threads: int | None = None, backend: str = "native",
                 frame_skip: int | None = None) -> None:
        super().__init__(oracle=oracle, num_threads=num_threads, backend=backend, frame_skip=frame_skip)

    @property
    def task_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{field: shape}`` of the model fields the task multiplies."""
        return {name: tuple(getattr(self.model, name).shape) for name in MULTIPLIER_BASES}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """``{field: [n, *shape] float32}``, each element ``base^u`` with ``u ~ U[−3, 3]`` (fields in order)."""
        n = check_task_request(n, rng)
        return {
            name: (base ** rng.uniform(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT, (n, *shape))).astype(np.float32)
            for (name, shape), base in zip(self.task_shapes.items(), MULTIPLIER_BASES.values(), strict=True)
        }

    def _model_field_values(self, tasks: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            name: self.constant(name, getattr(self.model, name), multiplier) * multiplier
            for name, multiplier in tasks.items()
        }

    def _state_obs_dim(self) -> int:
        return self.model.nq - 1 + self.model.nv

    def _write_state_obs(self, sim: Simulator, out: Tensor) -> None:
        nq = self.model.nq
        out[:, : nq - 1] = sim.qpos[:, 1:]
        out[:, nq - 1 :] = sim.qvel.clip(-10.0, 10.0)

    def _healthy(self, sim: Simulator) -> Tensor:
        z, angle = sim.qpos[:, 1], sim.qpos[:, 2]
        (z_low, z_high), (angle_low, angle_high) = self.healthy_z_range, self.healthy_angle_range
        return (z_low < z) & (z < z_high) & (angle_low < angle) & (angle < angle_high)

    def _task_reward(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> Tensor:
        """The forward term ``v_x`` (the task changes the dynamics, not the reward)."""
        return self.forward_reward_weight * velocity[:, 0]

    def _robot_reward_terms(self, sim: Simulator) -> dict[str, Tensor]:
        healthy = self._healthy(sim).to(sim.qpos.dtype)
        return {
            "reward_survive": self.healthy_reward * healthy,
            "reward_ctrl": -self.ctrl_cost_weight * sum_rows(sim.ctrl.square()),
        }

    def reward_terms(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> dict[str, Tensor]:
        """``reward_forward``, ``reward_survive``, ``reward_ctrl`` (gymnasium v5's names)."""
        return {"reward_forward": self._task_reward(tasks, velocity, sim), **self._robot_reward_terms(sim)}


class HopperParams(RandParamsFamily):
    """Hopper-v5 with randomized body masses, inertias, dof damping and geom friction (ProMP's HopperRandParams).

    Healthy: ``z > 0.7``, ``|angle| < 0.2``, ``(qpos[2:], qvel)`` within ``(−100, 100)``.
    """

    name: ClassVar[str] = "hopper-params"
    gym_id: ClassVar[str] = "HopperParams-v0"
    robot: ClassVar[str] = "hopper"
    healthy_z_range: ClassVar[tuple[float, float]] = (0.7, float("inf"))
    healthy_angle_range: ClassVar[tuple[float, float]] = (-0.2, 0.2)
    healthy_state_range: ClassVar[tuple[float, float]] = (-100.0, 100.0)

    def _healthy(self, sim: Simulator) -> Tensor:
        low, high = self.healthy_state_range
        state = torch.cat([sim.qpos[:, 2:], sim.qvel], dim=1)
        return super()._healthy(sim) & ((low < state) & (state < high)).all(dim=1)


class Walker2dParams(RandParamsFamily):
    """Walker2d-v5 with randomized body masses, inertias, dof damping and geom friction (ProMP's
    Walker2DRandParams). Healthy: ``0.8 < z < 2.0``, ``|angle| < 1``."""

    name: ClassVar[str] = "walker2d-params"
    gym_id: ClassVar[str] = "Walker2dParams-v0"
    robot: ClassVar[str] = "walker2d"
    healthy_z_range: ClassVar[tuple[float, float]] = (0.8, 2.0)
    healthy_angle_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
