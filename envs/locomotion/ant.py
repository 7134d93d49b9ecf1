"""Ant velocity, direction and goal families (Finn, Abbeel, Levine 2017, "MAML", §5.3; docs/architecture.md §3),
and the 2-D direction family of ProMP (Rothfuss et al. 2019, ``AntRandDirec2DEnv``).

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
two differ (with an Euler integrator they are identical). ``v_x`` (``v_y``) and the goal distance use the torso's
current position ``qpos[0:2]``; Ant-v5 reads ``xpos`` of the torso, which lags one physics step behind.

``centre_of_mass=True`` rewards as the MAML reference's ``AntEnvRand`` and ``AntEnvRandDirec``
(``rllab/envs/mujoco/ant_env_rand*.py`` in cbfinn/maml_rl): ``v_x`` (``v_y``) is the linear velocity of the torso
subtree's centre of mass (the whole robot) at the state after the step, not the torso's displacement over it, and
the observation appends that centre of mass's position (3 values, before the oracle's). The rest of the reference's
observation (``qpos[0:2]``, the torso's rotation matrix, contact forces of the world body) and its model
(docs/reproduction.md, "The reference's Ant") are not reproduced. Ant goal's reward reads the torso's position,
which the option leaves as it is.

``reference_model=True`` takes the physics and the start state of the reference's rllab ``ant.xml``
(``models.REFERENCE_MODEL``): one RK4 step of 0.02 s per env step, where gymnasium's model takes two of 0.01 s at
``frame_skip`` 2; every geom's contact impedance ``solimp .8 .8 .01`` instead of MuJoCo's default ``.9 .95 .001``;
the start pose of the file's ``init_qpos`` (torso at 0.55, ankles bent to ±1 rad) with N(0, 0.01) noise on qpos
and N(0, 0.1) on qvel, where gymnasium starts the torso at 0.75 with the legs flat and U(−0.1, 0.1) qpos noise.
Combined with ``centre_of_mass`` and ``use_contact_forces`` it is the reference's Ant but for the observation's
other columns (``qpos[0:2]``, the torso's rotation matrix, the world body's contact forces). A list of parts
(``reference_model=["time_step"]``, ``"contact_impedance"``, ``"start_state"``) takes only those.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from envs.base import Tasks
from envs.locomotion.common import (
    LocomotionFamily,
    sample_direction,
    sample_disc,
    sample_uniform,
    sample_unit_circle,
    sum_rows,
)
from envs.locomotion.simulator import Simulator


class AntFamily(LocomotionFamily):
    """The Ant robot: control cost ``0.005‖a‖²``, contact cost, survive bonus 0.05, torso-height termination.

    Args:
        oracle: append the task parameters to the observation.
        num_threads: native threads that step the simulations (None: the cores available to the process).
        use_contact_forces: contact cost and contact forces in the observation (default False).
        backend: "native" (MuJoCo on the CPU) or "warp" (``mujoco_warp``); see ``LocomotionFamily``.
        frame_skip: physics steps per environment step (None: the robot's gymnasium v5 value); see ``LocomotionFamily``.
        centre_of_mass: reward the torso subtree's centre-of-mass velocity after the step and append its position
            to the observation, as the MAML reference's rllab Ant environments did (module docstring); see
            ``LocomotionFamily``.
        reference_model: the MAML reference's rllab ``ant.xml``: one 0.02-s step per env step, contact impedance
            ``solimp .8 .8 .01``, the torso started at 0.55 with the ankles bent (``models.REFERENCE_MODEL``); see
            ``LocomotionFamily``.
    """

    robot: ClassVar[str] = "ant"
    ctrl_cost_weight: ClassVar[float] = 0.005
    contact_cost_weight: ClassVar[float] = 5e-4
    survive_reward: ClassVar[float] = 0.05
    healthy_z_range: ClassVar[tuple[float, float]] = (0.2, 1.0)
    supports_contact_forces: ClassVar[bool] = True
    supports_centre_of_mass: ClassVar[bool] = True
    supports_reference_model: ClassVar[bool] = True

    def _state_obs_dim(self) -> int:
        contact = (self.model.nbody - 1) * 6 if self.use_contact_forces else 0
        return self.model.nq - 2 + self.model.nv + contact

    def _write_state_obs(self, sim: Simulator, out: Tensor) -> None:
        nq, nv = self.model.nq, self.model.nv
        out[:, : nq - 2] = sim.qpos[:, 2:]
        out[:, nq - 2 : nq - 2 + nv] = sim.qvel
        if self.use_contact_forces:
            out[:, nq - 2 + nv :] = sim.fields["cfrc_ext"][:, 1:].clip(-1.0, 1.0).reshape(len(out), -1)

    def _robot_reward_terms(self, sim: Simulator) -> dict[str, Tensor]:
        ctrl, n = sim.ctrl, len(sim.ctrl)
        if self.use_contact_forces:
            clipped = sim.fields["cfrc_ext"].clip(-1.0, 1.0)
            contact_cost = self.contact_cost_weight * sum_rows(clipped.square().reshape(n, -1))
        else:
            contact_cost = torch.zeros_like(ctrl[:, 0])
        return {
            "reward_ctrl": -self.ctrl_cost_weight * sum_rows(ctrl.square()),
            "reward_contact": -contact_cost,
            "reward_survive": torch.full_like(ctrl[:, 0], self.survive_reward),
        }

    def _healthy(self, sim: Simulator) -> Tensor:
        # gymnasium's Ant also requires a finite state; a Simulator guarantees one after every step (it puts
        # unstable simulations back at the default state and reports them), so only the height is checked
        low, high = self.healthy_z_range
        z = sim.qpos[:, 2]
        return (z >= low) & (z <= high)

    def _position(self, sim: Simulator) -> Tensor:
        """The torso's xy, ``qpos[0:2]``."""
        return sim.qpos[:, :2]


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

    def _task_reward(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> Tensor:
        return -(velocity[:, 0] - tasks["velocity"]).abs() + 1.0


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

    def _task_reward(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> Tensor:
        return tasks["direction"] * velocity[:, 0]


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

    def _task_reward(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> Tensor:
        return -sum_rows((sim.qpos[:, :2] - tasks["goal"]).abs()) + 4.0


class AntDir2D(AntFamily):
    """Ant running in a direction of the plane (ProMP's ``AntRandDirec2DEnv``, Rothfuss et al. 2019).

    * Task: ``{"direction": [n, 2]}`` float32, a unit vector ``d = (cos θ, sin θ)`` with ``θ ~ U[0, 2π)`` (ProMP
      normalizes a standard normal draw: the same distribution, uniform on the unit circle).
    * Reward: ``v_xy · d − 0.005‖a‖² − c + 0.05`` with ``v_xy`` the torso's xy velocity
      (``reward_task = v_xy · d``), termination as the other Ant families.
    """

    name: ClassVar[str] = "ant-dir2d"
    gym_id: ClassVar[str] = "AntDir2D-v0"
    task_key: ClassVar[str] = "direction"
    task_shape: ClassVar[tuple[int, ...]] = (2,)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """``{"direction": [n, 2] float32}`` uniform on the unit circle."""
        return {"direction": sample_unit_circle(n, rng)}

    def _task_reward(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> Tensor:
        return sum_rows(velocity * tasks["direction"])
