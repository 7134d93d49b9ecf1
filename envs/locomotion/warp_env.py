"""``WarpLocomotionVectorEnv``: the locomotion families on ``mujoco_warp`` (family option ``backend="warp"``).

>>> family = make_family("ant-vel", backend="warp")
>>> env = family.make_vector_env(4096, device="cuda")                 # or device="cpu" (warp's CPU device)
>>> env.set_tasks(repeat_tasks(family.sample_tasks(40, rng), ...))    # numpy or torch task rows
>>> obs, info = env.reset(seed=0)                                      # torch [N, obs_dim] float32 on cuda
>>> obs, reward, terminated, truncated, info = env.step(actions)       # actions: torch [N, act_dim]

The same environment as ``LocomotionVectorEnv`` (same models, frame skip, observation layout, reward terms,
termination, freezing, truncation, ``info`` keys, partial resets), with three differences:

* the physics is ``mujoco_warp``'s, in float32 (``WarpSim``): trajectories follow the native backend's for a
  step or two and then drift apart chaotically; the families' observation, reward and health code is the same
  code, run by torch on zero-copy views of the device arrays;
* outputs are torch tensors on ``env.device`` (obs and rewards float32, flags bool), as are the ``info`` arrays
  and ``get_state``; actions and tasks may be numpy or torch;
* reset noise (``qpos0 + U(−0.1, 0.1)``, ``0.1 · N(0, 1)``) is drawn for every world from a torch generator on
  the device, seeded by ``reset(seed=...)``, and applied where the reset mask is True, so the start states
  differ from the native backend's for the same seed (same distribution).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from envs.base import MetaVectorEnv, Tasks
from envs.locomotion.common import (
    RESET_NOISE_SCALE,
    LocomotionFamily,
    check_positive_int,
    check_tasks,
    reset_mask_option,
)
from envs.locomotion.models import FRAME_SKIP
from envs.locomotion.warp_sim import WarpSim

StepResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


class WarpLocomotionVectorEnv(MetaVectorEnv):
    """``N`` sub-environments of a locomotion family on one ``WarpSim`` (see the module docstring).

    Args:
        family: the task family (its ``backend`` is "warp").
        num_envs: ``N``.
        max_episode_steps: steps after which ``truncated`` is True.
        device: "cpu" (warp's CPU device) or "cuda"/"cuda:N"; outputs are torch tensors there.
        use_graph: replay the physics as a captured warp graph (see ``WarpSim``).
    """

    def __init__(
        self,
        family: LocomotionFamily,
        num_envs: int,
        *,
        max_episode_steps: int,
        device: Any = "cpu",
        use_graph: bool = True,
    ) -> None:
        self.family = family
        self.num_envs = check_positive_int(num_envs, "num_envs")
        self.max_episode_steps = check_positive_int(max_episode_steps, "max_episode_steps")
        model = family.model
        self.sim = WarpSim(
            model, self.num_envs, device=device, contact_forces=family.use_contact_forces, use_graph=use_graph
        )
        self.device = self.sim.device
        #: seconds per environment step
        self.dt = float(model.opt.timestep) * FRAME_SKIP
        self.single_observation_space = family.single_observation_space
        self.single_action_space = family.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        low, high = (torch.as_tensor(model.actuator_ctrlrange[:, i], device=self.device) for i in (0, 1))
        self._ctrl_center, self._ctrl_half_range = (high + low).float() / 2, (high - low).float() / 2
        self._init_qpos = torch.as_tensor(model.qpos0, dtype=torch.float32, device=self.device)
        #: reset noise; seeded by ``reset(seed=...)`` (from OS entropy until then)
        self.generator = torch.Generator(device=self.device)
        self.generator.seed()
        self._task: torch.Tensor | None = None  # float32 [N, *task_shape] on the device
        self._needs_reset = True
        self._terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        #: Check actions without a host synchronization (default on CUDA): non-finite actions set a device flag
        #: (and propagate into the state, which is then flagged unstable) and the next ``reset()`` raises.
        self.deferred_action_checks = self.device.type != "cpu"
        self._invalid_actions = torch.zeros((), dtype=torch.bool, device=self.device)
        self._elapsed = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    # ---------------------------------------------------------------------------------------------- the API
    def set_tasks(self, tasks: Tasks) -> None:
        """Give sub-environment ``i`` the task in row ``i``; the next call must be a full ``reset``.

        Args:
            tasks: ``{task_key: [N, *task_shape]}`` (numpy or torch), finite numbers.
        """
        array = check_tasks(self.family, self.num_envs, tasks)
        self._task = torch.as_tensor(array, dtype=torch.float32, device=self.device)
        self._needs_reset = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Draw new start states for all, or the masked, sub-environments.

        Args:
            seed: seeds ``self.generator``; None continues its stream.
            options: None, or ``{"reset_mask": [N] bool}`` (numpy or torch) to reset only those.

        Returns:
            The observation ``[N, obs_dim]`` float32 on ``self.device`` and an empty info dict.
        """
        if self.closed:
            raise RuntimeError("the environment is closed")
        if self._task is None:
            raise RuntimeError("call set_tasks(tasks) before reset()")
        mask = reset_mask_option(options, self.num_envs)
        if mask is None:
            mask = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        mask = torch.as_tensor(mask, device=self.device)
        if self._needs_reset and not bool(mask.all()):
            raise RuntimeError("the first reset after set_tasks must reset every sub-environment")
        if self.deferred_action_checks and bool(self._invalid_actions):  # one synchronization per episode
            self._invalid_actions = torch.zeros((), dtype=torch.bool, device=self.device)
            raise ValueError("non-finite actions (NaN or infinity) were passed to step() during the last episode")
        if seed is not None:
            self.generator.manual_seed(int(seed))
        rows, own, nq, nv = self.batch_rows, self.own_rows, self.family.model.nq, self.family.model.nv
        uniform = torch.rand((rows, nq), generator=self.generator, device=self.device)[own]
        qpos = self._init_qpos + RESET_NOISE_SCALE * (2 * uniform - 1)
        qvel = RESET_NOISE_SCALE * torch.randn((rows, nv), generator=self.generator, device=self.device)[own]
        return self._start(mask, qpos, qvel), {}

    def step(self, actions: Any) -> StepResult:
        """Advance every sub-environment that has not terminated by one step (5 physics steps).

        Args:
            actions: ``[N, act_dim]`` real numbers, numpy or torch (any device).

        Returns:
            ``obs [N, obs_dim]`` float32, ``reward [N]`` float32, ``terminated [N]``, ``truncated [N]`` and
            ``info`` (as ``LocomotionVectorEnv``), all torch tensors on ``self.device``.
        """
        if self.closed:
            raise RuntimeError("the environment is closed")
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (after construction and after every set_tasks)")
        assert self._task is not None
        action = self._prepare_actions(actions)
        active = ~self._terminated
        sim = self.sim
        sim.ctrl.copy_(self._ctrl_center + action * self._ctrl_half_range)
        x_before = sim.qpos[:, 0].clone()
        unstable = sim.step(active)
        qpos, qvel = sim.qpos, sim.qvel
        x_velocity = (qpos[:, 0] - x_before) / self.dt
        terms = self.family.reward_terms(self._task, x_velocity, qpos, action, sim.cfrc_ext)
        scored = active & ~unstable
        self._terminated = self._terminated | (active & (unstable | ~self.family.healthy(qpos, qvel)))
        self._elapsed += 1

        reward = torch.where(scored, sum(terms.values()), 0.0)  # type: ignore[arg-type]
        info: dict[str, torch.Tensor] = {"x_velocity": torch.where(scored, x_velocity, 0.0)}
        info.update({name: torch.where(scored, term, 0.0) for name, term in terms.items()})
        info["unstable"] = unstable
        obs = self.family.observe(qpos, qvel, sim.cfrc_ext, self._task)
        truncated = self._elapsed >= self.max_episode_steps
        return obs, reward, self._terminated.clone(), truncated, info

    def get_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the joint state: ``qpos [N, nq]`` and ``qvel [N, nv]`` float32 on ``self.device``."""
        return self.sim.qpos.clone(), self.sim.qvel.clone()

    def set_state(self, qpos: Any, qvel: Any) -> torch.Tensor:
        """Start every sub-environment from a given joint state (numpy or torch ``[N, nq]``, ``[N, nv]``), as
        ``reset`` does from a random one; values are not validated. Returns the observation."""
        if self._task is None:
            raise RuntimeError("call set_tasks(tasks) before set_state()")
        qpos = torch.as_tensor(np.asarray(qpos) if not isinstance(qpos, torch.Tensor) else qpos, device=self.device)
        qvel = torch.as_tensor(np.asarray(qvel) if not isinstance(qvel, torch.Tensor) else qvel, device=self.device)
        if qpos.shape != self.sim.qpos.shape or qvel.shape != self.sim.qvel.shape:
            raise ValueError(
                f"qpos and qvel must have shapes {list(self.sim.qpos.shape)} and "
                f"{list(self.sim.qvel.shape)}, got {list(qpos.shape)} and {list(qvel.shape)}"
            )
        mask = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        return self._start(mask, qpos.float(), qvel.float())

    def close_extras(self, **kwargs: Any) -> None:
        """Release the device arrays; the environment cannot be used afterwards."""
        self.sim.close()

    # ------------------------------------------------------------------------------------------- internals
    def _start(self, mask: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> torch.Tensor:
        assert self._task is not None
        self.sim.set_state(mask, qpos, qvel)
        self._terminated = self._terminated & ~mask
        self._elapsed = torch.where(mask, 0, self._elapsed)
        self._needs_reset = False
        return self.family.observe(self.sim.qpos, self.sim.qvel, self.sim.cfrc_ext, self._task)

    def _prepare_actions(self, actions: Any) -> torch.Tensor:
        """Validated actions as float32 ``[N, act_dim]`` on the device, clipped to ``[-1, 1]``."""
        if not isinstance(actions, torch.Tensor):
            actions = torch.as_tensor(np.asarray(actions))
        expected = (self.num_envs, *(self.single_action_space.shape or ()))
        if tuple(actions.shape) != expected:
            raise ValueError(f"actions must have shape {list(expected)}, got {list(actions.shape)}")
        if actions.dtype == torch.bool or actions.is_complex():
            raise ValueError(f"actions must be real numbers, got dtype {actions.dtype}")
        actions = actions.to(device=self.device, dtype=torch.float32)
        finite = torch.isfinite(actions).all()
        if self.deferred_action_checks:
            self._invalid_actions = self._invalid_actions | ~finite
        elif not bool(finite):
            raise ValueError("actions must be finite (got NaN or infinity)")
        return actions.clamp(-1.0, 1.0)
