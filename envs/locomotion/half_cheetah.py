"""HalfCheetah velocity and direction families (Finn, Abbeel, Levine 2017, "MAML", §5.3; docs/architecture.md §3).

Robot: gymnasium's MuJoCo v5 ``half_cheetah.xml`` (timestep 0.01, frame skip 5, ``dt = 0.05``), 6 actuators
with ``ctrlrange [-1, 1]``. Observation (17,): ``qpos[1:]`` (8) and ``qvel`` (9), as HalfCheetah-v5; with
``oracle=True`` the task parameter is appended (18,). Never terminates; horizon 200 (the paper's).

``centre_of_mass=True`` is the MAML reference's HalfCheetahEnvRand (``rllab/envs/mujoco/half_cheetah_env_rand.py``
in cbfinn/maml_rl): the observation appends the robot's centre of mass (the torso's subtree is the whole robot),
20 values, and the velocity ``v_x`` in the rewards is the centre of mass's at the state after the step, not the
root's displacement over the step (docs/reproduction.md).

``reference_model=True`` is the reference's rllab ``half_cheetah.xml``, which has gymnasium's physics: one 0.01-s
step per env step (``frame_skip`` 1) and its start state, ``qpos0`` with N(0, 0.01) noise on qpos and N(0, 0.1) on
qvel where gymnasium draws U(−0.1, 0.1) on qpos (``models.REFERENCE_MODEL``).

>>> family = HalfCheetahVel()
>>> env = family.make_vector_env(800)
>>> env.set_tasks(repeat_tasks(family.sample_tasks(40, np.random.default_rng(0)), 20))
>>> obs, info = env.reset(seed=0)                         # [800, 17]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from torch import Tensor

from envs.base import Tasks
from envs.locomotion.common import LocomotionFamily, sample_direction, sample_uniform, sum_rows
from envs.locomotion.simulator import Simulator


class HalfCheetahFamily(LocomotionFamily):
    """The HalfCheetah robot: observation ``[qpos[1:], qvel]``, control cost ``0.05‖a‖²``, no termination.

    Args:
        oracle: append the task parameter to the observation.
        num_threads: native threads that step the simulations (None: the cores available to the process).
        backend: "native" (MuJoCo on the CPU) or "warp" (``mujoco_warp``); see ``LocomotionFamily``.
        frame_skip: physics steps per environment step (None: the robot's gymnasium v5 value); see ``LocomotionFamily``.
        centre_of_mass: observe and reward the centre of mass as the MAML reference did (module docstring); see
            ``LocomotionFamily``.
        reference_model: the reference's rllab model: one 0.01-s step per env step and its start state (module
            docstring); see ``LocomotionFamily``.
    """

    robot: ClassVar[str] = "half_cheetah"
    ctrl_cost_weight: ClassVar[float] = 0.05
    supports_centre_of_mass: ClassVar[bool] = True
    supports_reference_model: ClassVar[bool] = True

    def __init__(self, *, oracle: bool = False, num_threads: int | None = None, backend: str = "native",
                 frame_skip: int | None = None, centre_of_mass: bool = False,
                 reference_model: bool | list[str] | tuple[str, ...] = False) -> None:
        super().__init__(oracle=oracle, num_threads=num_threads, backend=backend, frame_skip=frame_skip,
                         centre_of_mass=centre_of_mass, reference_model=reference_model)

    def _state_obs_dim(self) -> int:
        return self.model.nq - 1 + self.model.nv

    def _write_state_obs(self, sim: Simulator, out: Tensor) -> None:
        nq = self.model.nq
        out[:, : nq - 1] = sim.qpos[:, 1:]
        out[:, nq - 1 :] = sim.qvel

    def _robot_reward_terms(self, sim: Simulator) -> dict[str, Tensor]:
        return {"reward_ctrl": -self.ctrl_cost_weight * sum_rows(sim.ctrl.square())}


class HalfCheetahVel(HalfCheetahFamily):
    """HalfCheetah running at a target forward velocity.

    * Task: ``{"velocity": [n]}`` float32, ``v* ~ U[0, 2]``.
    * Reward: ``−|v_x − v*| − 0.05‖a‖²`` (info ``reward_task``, ``reward_ctrl``).
    """

    name: ClassVar[str] = "halfcheetah-vel"
    gym_id: ClassVar[str] = "HalfCheetahVel-v0"
    task_key: ClassVar[str] = "velocity"
    #: bounds of the target velocity distribution
    velocity_range: ClassVar[tuple[float, float]] = (0.0, 2.0)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """``{"velocity": [n] float32}`` uniform on ``[0, 2]``."""
        return {"velocity": sample_uniform(n, rng, *self.velocity_range)}

    def _task_reward(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> Tensor:
        return -(velocity[:, 0] - tasks["velocity"]).abs()


class HalfCheetahDir(HalfCheetahFamily):
    """HalfCheetah running forward or backward.

    * Task: ``{"direction": [n]}`` float32, ``d ∈ {−1, +1}`` each with probability ½.
    * Reward: ``d·v_x − 0.05‖a‖²`` (info ``reward_task``, ``reward_ctrl``).
    """

    name: ClassVar[str] = "halfcheetah-dir"
    gym_id: ClassVar[str] = "HalfCheetahDir-v0"
    task_key: ClassVar[str] = "direction"

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """``{"direction": [n] float32}`` of ±1."""
        return {"direction": sample_direction(n, rng)}

    def _task_reward(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> Tensor:
        return tasks["direction"] * velocity[:, 0]
