"""Ant velocity, direction and goal families (Finn, Abbeel, Levine 2017, "MAML", §5.3; docs/architecture.md §3).

Robot: gymnasium's MuJoCo v5 ``ant.xml`` (timestep 0.01, RK4, frame skip 5, ``dt = 0.05``), 8 actuators with
``ctrlrange [-1, 1]``. Observation (27,): ``qpos[2:]`` (13) and ``qvel`` (14), as Ant-v5 without contact
forces; with ``use_contact_forces=True`` also ``clip(cfrc_ext[1:], −1, 1)`` flattened (78, total 105), as
Ant-v5's default; with ``oracle=True`` the task parameters are appended. Horizon 200 (the paper's).

Every Ant reward ends in ``− 0.005‖a‖² − c + 0.05`` (info ``reward_ctrl``, ``reward_contact``,
``reward_survive``), where ``c = 0.0005‖clip(cfrc_ext, −1, 1)‖²`` with ``use_contact_forces`` and 0 without.
An episode terminates when the torso height ``qpos[2]`` leaves ``[0.2, 1.0]`` (or the state is not finite);
the terminating step is scored in full, later steps are frozen at 0.

Contact forces are MuJoCo's ``cfrc_ext`` from the constraint solve of the last physics step (at the state
before it), read back from the batched simulator. Gymnasium's Ant-v5 calls ``mj_rnePostConstraint`` after
``mj_step``; with Ant's RK4 integrator that reads the contacts of the last Runge-Kutta stage instead, so the
two differ (with an Euler integrator they are identical). ``v_x`` and the goal distance use the torso's
current position ``qpos[0:2]``; Ant-v5 reads ``xpos`` of the torso, which lags one physics step behind.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from envs.base import Tasks
from envs.locomotion.common import (
    Array,
    LocomotionFamily,
    array_namespace,
    sample_direction,
    sample_disc,
    sample_uniform,
)


class AntFamily(LocomotionFamily):
    """The Ant robot: control cost ``0.005‖a‖²``, contact cost, survive bonus 0.05, torso-height termination.

    Args:
        oracle: append the task parameters to the observation.
        num_threads: native threads that step the simulations (None: the cores available to the process).
        use_contact_forces: contact cost and contact forces in the observation (default False).
        backend: "native" (MuJoCo on the CPU) or "warp" (``mujoco_warp``); see ``LocomotionFamily``.
    """

    robot: ClassVar[str] = "ant"
    ctrl_cost_weight: ClassVar[float] = 0.005
    contact_cost_weight: ClassVar[float] = 5e-4
    survive_reward: ClassVar[float] = 0.05
    healthy_z_range: ClassVar[tuple[float, float]] = (0.2, 1.0)
    supports_contact_forces: ClassVar[bool] = True

    def _state_obs_dim(self) -> int:
        contact = (self.model.nbody - 1) * 6 if self.use_contact_forces else 0
        return self.model.nq - 2 + self.model.nv + contact

    def _write_state_obs(self, qpos: Array, qvel: Array, cfrc_ext: Array | None, out: Array) -> None:
        nq, nv = self.model.nq, self.model.nv
        out[:, : nq - 2] = qpos[:, 2:]
        out[:, nq - 2 : nq - 2 + nv] = qvel
        if cfrc_ext is not None:
            out[:, nq - 2 + nv :] = array_namespace(cfrc_ext).clip(cfrc_ext[:, 1:], -1.0, 1.0).reshape(len(qpos), -1)

    def _robot_reward_terms(self, action: Array, cfrc_ext: Array | None) -> dict[str, Array]:
        xp, n = array_namespace(action), len(action)
        if cfrc_ext is None:
            contact_cost = xp.zeros_like(action[:, 0])
        else:
            contact_cost = self.contact_cost_weight * xp.square(xp.clip(cfrc_ext, -1.0, 1.0)).reshape(n, -1).sum(1)
        return {
            "reward_ctrl": -self.ctrl_cost_weight * xp.square(action).sum(axis=1),
            "reward_contact": -contact_cost,
            "reward_survive": xp.full_like(action[:, 0], self.survive_reward),
        }

    def _healthy(self, qpos: Array, qvel: Array) -> Array:
        xp, (low, high) = array_namespace(qpos), self.healthy_z_range
        finite = xp.isfinite(qpos).all(axis=1) & xp.isfinite(qvel).all(axis=1)
        return finite & (qpos[:, 2] >= low) & (qpos[:, 2] <= high)


class AntVel(AntFamily):
    """Ant running at a target forward velocity.

    * Task: ``{"velocity": [n]}`` float32, ``v* ~ U[0, 3]``.
    * Reward: ``−|v_x − v*| + 1.0 − 0.005‖a‖² − c + 0.05`` (``reward_task = −|v_x − v*| + 1.0``).
    """

    name: ClassVar[str] = "ant-vel"
    gym_id: ClassVar[str] = "AntVel-v0"
    task_key: ClassVar[str] = "velocity"
    velocity_range: ClassVar[tuple[float, float]] = (0.0, 3.0)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """``{"velocity": [n] float32}`` uniform on ``[0, 3]``."""
        return {"velocity": sample_uniform(n, rng, *self.velocity_range)}

    def _task_reward(self, task: Array, x_velocity: Array, qpos: Array) -> Array:
        return -array_namespace(x_velocity).abs(x_velocity - task) + 1.0


class AntDir(AntFamily):
    """Ant running forward or backward.

    * Task: ``{"direction": [n]}`` float32, ``d ∈ {−1, +1}`` each with probability ½.
    * Reward: ``d·v_x − 0.005‖a‖² − c + 0.05`` (``reward_task = d·v_x``).
    """

    name: ClassVar[str] = "ant-dir"
    gym_id: ClassVar[str] = "AntDir-v0"
    task_key: ClassVar[str] = "direction"

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """``{"direction": [n] float32}`` of ±1."""
        return {"direction": sample_direction(n, rng)}

    def _task_reward(self, task: Array, x_velocity: Array, qpos: Array) -> Array:
        return task * x_velocity


class AntGoal(AntFamily):
    """Ant walking to a goal position in the plane.

    * Task: ``{"goal": [n, 2]}`` float32, uniform (by area) in the disc of radius 3.
    * Reward: ``−‖xy − g‖₁ + 4.0 − 0.005‖a‖² − c + 0.05`` with ``xy = qpos[0:2]`` after the step
      (``reward_task = −‖xy − g‖₁ + 4.0``).
    """

    name: ClassVar[str] = "ant-goal"
    gym_id: ClassVar[str] = "AntGoal-v0"
    task_key: ClassVar[str] = "goal"
    task_shape: ClassVar[tuple[int, ...]] = (2,)
    goal_radius: ClassVar[float] = 3.0

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """``{"goal": [n, 2] float32}`` uniform in the disc of radius 3."""
        return {"goal": sample_disc(n, rng, self.goal_radius)}

    def _task_reward(self, task: Array, x_velocity: Array, qpos: Array) -> Array:
        return -array_namespace(qpos).abs(qpos[:, :2] - task).sum(axis=1) + 4.0
