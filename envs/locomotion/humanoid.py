"""Humanoid running in a direction of the plane (ProMP's ``HumanoidRandDirec2DEnv``, Rothfuss et al. 2019).

* Task: ``{"direction": [n, 2]}`` float32, a unit vector ``d = (cos θ, sin θ)`` with ``θ ~ U[0, 2π)`` (ProMP
  normalizes a standard normal draw: the same distribution, uniform on the unit circle).
* Reward: ``1.25 · (v_com · d) + 5.0·healthy − 0.1‖ctrl‖² − min(5e-7‖cfrc_ext‖², 10)`` (info ``reward_task``,
  ``reward_survive``, ``reward_ctrl``, ``reward_contact``): ProMP's task term, the velocity of the centre of
  mass in the plane projected on ``d``, with gymnasium v5 Humanoid's weight 1.25, healthy reward, control cost
  (on the control, ``ctrl = 0.4·a``) and contact cost; ``v_com`` is the displacement of the mass-weighted mean of
  the bodies' ``xipos`` over ``dt``, as Humanoid-v5 (for ``d = (1, 0)`` the terms are Humanoid-v5's, the contact
  cost up to the difference stated below).
* Termination: torso height ``qpos[2]`` outside ``(1.0, 2.0)``.

Robot and observation are gymnasium's ``Humanoid-v5`` with its defaults: ``humanoid.xml`` (timestep 0.003,
RK4, frame skip 5, ``dt = 0.015``), 17 actuators with ``ctrlrange [-0.4, 0.4]`` (actions in ``[-1, 1]`` are
scaled onto it); observation ``qpos[2:]`` (22), ``qvel`` (23), ``cinert[1:]`` (130), ``cvel[1:]`` (78),
``qfrc_actuator[6:]`` (17) and ``cfrc_ext[1:]`` (78), 348 values (270 with ``use_contact_forces=False``, which
also drops the contact cost); reset noise ``U(−0.01, 0.01)`` on qpos and qvel; default horizon 200 (the MAML
paper's locomotion horizon; configs set their own).
Contact forces: Humanoid-v5 calls ``mj_rnePostConstraint`` after ``mj_step``, on the data of the last
Runge-Kutta stage; ``mujoco.batch`` has no such call, so ``cfrc_ext`` is computed by one ``mj_forward`` at the new
state after each step (``BatchedSim(fields_after_step=("cfrc_ext",))``; the other observed fields keep ``mj_step``'s
values, as Humanoid-v5's). Measured against Humanoid-v5's on 45 steps in contact of six random rollouts, the
contact cost differs by 0.15 % (median; at most 17 % at an impact; 0.006 per step on average, against a mean cost
of 0.45 and a healthy reward of 5); the in-step value that Ant uses (the constraint solve at the state before the
last physics step) was 35 % off (median). Everything else is identical to Humanoid-v5.

Backend: native only. ``humanoid.xml`` uses MuJoCo's PGS solver, which ``mujoco_warp`` 4.0 does not implement
(its ``SolverType`` has CG and NEWTON), so ``backend="warp"`` raises ``ValueError``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from envs.base import Tasks
from envs.locomotion.common import LocomotionFamily, sample_unit_circle, sum_rows
from envs.locomotion.simulator import Simulator


class HumanoidDir(LocomotionFamily):
    """Humanoid-v5 running in a task direction on the unit circle (module docstring).

    Args:
        oracle: append the direction to the observation.
        num_threads: native threads that step the simulations (None: the cores available to the process).
        use_contact_forces: contact forces in the observation and the contact cost (default True, as
            Humanoid-v5).
        backend: "native" (MuJoCo on the CPU) or "warp" (``mujoco_warp``); see ``LocomotionFamily``.
        frame_skip: physics steps per environment step (None: the robot's gymnasium v5 value); see ``LocomotionFamily``.
    """

    name: ClassVar[str] = "humanoid-dir"
    gym_id: ClassVar[str] = "HumanoidDir-v0"
    robot: ClassVar[str] = "humanoid"
    task_key: ClassVar[str] = "direction"
    task_shape: ClassVar[tuple[int, ...]] = (2,)
    supports_contact_forces: ClassVar[bool] = True
    data_fields: ClassVar[tuple[str, ...]] = ("cinert", "cvel", "qfrc_actuator", "xipos")
    reset_noise_scale: ClassVar[float] = 1e-2
    reset_qvel_noise: ClassVar[str] = "uniform"
    forward_reward_weight: ClassVar[float] = 1.25
    healthy_reward: ClassVar[float] = 5.0
    ctrl_cost_weight: ClassVar[float] = 0.1
    contact_cost_weight: ClassVar[float] = 5e-7
    contact_cost_max: ClassVar[float] = 10.0
    healthy_z_range: ClassVar[tuple[float, float]] = (1.0, 2.0)
    contact_forces_after_step: ClassVar[bool] = True

    def __init__(
        self,
        *,
        oracle: bool = False,
        num_threads: int | None = None,
        use_contact_forces: bool = True,
        backend: str = "native",
        frame_skip: int | None = None,
    ) -> None:
        if backend == "warp":
            raise ValueError(
                "humanoid-dir runs on the native backend only: humanoid.xml uses the PGS solver, which mujoco_warp "
                "does not implement"
            )
        super().__init__(oracle=oracle, num_threads=num_threads, use_contact_forces=use_contact_forces, backend=backend,
                         frame_skip=frame_skip)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """``{"direction": [n, 2] float32}`` uniform on the unit circle."""
        return {"direction": sample_unit_circle(n, rng)}

    def _state_obs_dim(self) -> int:
        model, bodies = self.model, self.model.nbody - 1
        contact = bodies * 6 if self.use_contact_forces else 0
        return model.nq - 2 + model.nv + bodies * 10 + bodies * 6 + model.nv - 6 + contact

    def _write_state_obs(self, sim: Simulator, out: Tensor) -> None:
        n, fields = len(out), sim.fields
        parts = [sim.qpos[:, 2:], sim.qvel, fields["cinert"][:, 1:].reshape(n, -1),
                 fields["cvel"][:, 1:].reshape(n, -1), fields["qfrc_actuator"][:, 6:]]
        if self.use_contact_forces:
            parts.append(fields["cfrc_ext"][:, 1:].reshape(n, -1))
        start = 0
        for part in parts:
            out[:, start : start + part.shape[1]] = part
            start += part.shape[1]

    def _position(self, sim: Simulator) -> Tensor:
        """The centre of mass in the plane: ``Σ_b m_b xipos_b[:2] / Σ_b m_b``, ``[N, 2]``."""
        xipos = sim.fields["xipos"]
        mass = self.constant("body_mass", self.model.body_mass, xipos)
        return torch.einsum("b,nbj->nj", mass, xipos[:, :, :2]) / mass.sum()

    def _healthy(self, sim: Simulator) -> Tensor:
        low, high = self.healthy_z_range
        return (low < sim.qpos[:, 2]) & (sim.qpos[:, 2] < high)

    def _task_reward(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> Tensor:
        return self.forward_reward_weight * sum_rows(velocity * tasks["direction"])

    def _robot_reward_terms(self, sim: Simulator) -> dict[str, Tensor]:
        ctrl, n = sim.ctrl, len(sim.ctrl)
        if self.use_contact_forces:
            contact = self.contact_cost_weight * sum_rows(sim.fields["cfrc_ext"].square().reshape(n, -1))
            contact = contact.clamp(max=self.contact_cost_max)
        else:
            contact = torch.zeros_like(ctrl[:, 0])
        return {
            "reward_survive": self.healthy_reward * self._healthy(sim).to(ctrl.dtype),
            "reward_ctrl": -self.ctrl_cost_weight * sum_rows(ctrl.square()),
            "reward_contact": -contact,
        }
