"""Shared machinery for the torch-native vector environments (navigation, bandit, tabular MDP).

``TorchMetaVectorEnv`` implements the parts of the ``envs.base`` contract that do not depend on the
dynamics: task validation and transfer to the device, seeding of the ``torch.Generator``, action
validation and clipping (``envs._actions.ActionValidator``: non-finite, out-of-range, shape), freezing of
terminated sub-environments and truncation. A family only writes ``_reset_state`` and ``_step`` as batched
tensor operations.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space
from torch import Tensor

from envs._actions import ActionValidator
from envs.base import MetaVectorEnv, Tasks, check_positive_int


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class TorchMetaVectorEnv(MetaVectorEnv):
    """A ``MetaVectorEnv`` whose tasks, state and outputs are torch tensors on ``device``.

    Subclasses pass the single spaces and the task shapes to ``__init__`` and implement ``_reset_state``
    and ``_step``. The usage loop is the one of ``envs.base``::

        env.set_tasks(tasks)                  # numpy arrays, num_envs rows each; then reset() is required
        obs, info = env.reset(seed=0)         # obs [N, obs_dim] float32 on env.device
        obs, reward, terminated, truncated, info = env.step(actions)

    Actions are ``[N, act_dim]`` floats for ``Box`` action spaces (clipped to the space) and ``[N]`` integers
    for ``Discrete`` ones (floats with integral values are accepted); a torch tensor on any device or a numpy
    array. Randomness comes from ``self.generator`` (a ``torch.Generator`` on ``device``), seeded by
    ``reset(seed=...)``; an unseeded reset continues the stream (the first one, if unseeded, starts from
    fresh OS entropy). ``info`` is always empty.
    """

    def __init__(
        self,
        num_envs: int,
        max_episode_steps: int,
        device: Any,
        single_observation_space: gym.spaces.Box,
        single_action_space: gym.spaces.Box | gym.spaces.Discrete,
        task_shapes: dict[str, tuple[int, ...]],
    ) -> None:
        self.num_envs = check_positive_int(num_envs, "num_envs")
        self.max_episode_steps = check_positive_int(max_episode_steps, "max_episode_steps")
        self.device = torch.device(device)
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self.observation_space = batch_space(single_observation_space, self.num_envs)
        self.action_space = batch_space(single_action_space, self.num_envs)
        #: per-task shapes, without the leading ``num_envs`` dimension
        self.task_shapes = {key: tuple(shape) for key, shape in task_shapes.items()}
        self.generator = torch.Generator(device=self.device)
        self.generator.seed()  # non-deterministic until reset(seed=...); never the global RNG
        self._tasks: dict[str, Tensor] | None = None
        self._needs_reset = True
        self._elapsed_steps = 0
        self._terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        #: validates actions; its value checks are deferred to the next ``reset()`` (no host synchronization)
        #: by default on non-CPU devices (see ``deferred_action_checks``)
        self.validate_actions = ActionValidator(single_action_space, self.num_envs, device=self.device)

    @property
    def deferred_action_checks(self) -> bool:
        """Check actions without a host synchronization (default on non-CPU devices): an invalid action sets a
        device flag (out-of-range discrete actions are clamped, non-finite ones propagate into the
        observations) and the next ``reset()`` raises the ``ValueError``. On the CPU, ``step`` raises at once."""
        return self.validate_actions.deferred

    @deferred_action_checks.setter
    def deferred_action_checks(self, value: bool) -> None:
        self.validate_actions.deferred = bool(value)

    # ----------------------------------------------------------------------------------------- family hooks
    @abstractmethod
    def _reset_state(self) -> Tensor:
        """Put every sub-environment in its start state; returns a fresh observation ``[N, obs_dim]``."""

    @abstractmethod
    def _step(self, actions: Tensor, active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Advance the sub-environments where ``active`` (``[N]`` bool) is True; leave the others unchanged.

        Args:
            actions: ``[N, act_dim]`` float32 (clipped) or ``[N]`` int64 (in range), on ``device``.
            active: ``[N]`` bool, False for sub-environments that terminated earlier in the episode.

        Returns:
            A fresh observation ``[N, obs_dim]`` float32 (the unchanged one where not active), the reward
            ``[N]`` float32 (ignored where not active) and the termination ``[N]`` bool of this step.
        """

    def _check_tasks(self, tasks: dict[str, np.ndarray]) -> None:
        """Optional family-specific validation of well-shaped float32 task arrays; raise ``ValueError``."""

    # ---------------------------------------------------------------------------------------------- the API
    def set_tasks(self, tasks: Tasks) -> None:
        """Give sub-environment ``i`` the task in row ``i``; the next call must be ``reset``.

        Args:
            tasks: one array per key of ``task_shapes``, each ``[num_envs, *task_shapes[key]]`` (numpy, or
                torch tensors, which are validated on the CPU). Copied to ``device`` as float32 once.
        """
        missing = sorted(set(self.task_shapes) - set(tasks))
        unexpected = sorted(set(tasks) - set(self.task_shapes))
        if missing or unexpected:
            raise ValueError(
                f"task keys must be {sorted(self.task_shapes)}; missing {missing}, unexpected {unexpected}"
            )
        arrays: dict[str, np.ndarray] = {}
        for key, shape in self.task_shapes.items():
            array = _to_numpy(tasks[key])
            expected = (self.num_envs, *shape)
            if array.shape != expected:
                raise ValueError(f"task {key!r} must have shape {list(expected)}, got {list(array.shape)}")
            if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
                raise ValueError(f"task {key!r} must hold finite numbers")
            arrays[key] = array.astype(np.float32)
        self._check_tasks(arrays)
        self._tasks = {key: torch.tensor(array, device=self.device) for key, array in arrays.items()}
        self._needs_reset = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        """Start a new episode in every sub-environment.

        Args:
            seed: seeds ``self.generator``; None continues its stream.
            options: must be None or empty (no reset options exist).

        Returns:
            The observation ``[N, obs_dim]`` float32 on ``device`` and an empty info dict.
        """
        if options:
            raise ValueError(f"{type(self).__name__}.reset takes no options, got {sorted(options)}")
        if self._tasks is None:
            raise RuntimeError("call set_tasks(tasks) before reset()")
        self.validate_actions.raise_deferred()  # one synchronization per episode when deferred
        super().reset(seed=seed)  # validates the seed and seeds self.np_random (unused by the dynamics)
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._elapsed_steps = 0
        self._terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        obs = self._reset_state()
        self._needs_reset = False
        return obs, {}

    def step(self, actions: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        """Advance all sub-environments one step (terminated ones stay frozen, reward 0).

        Args:
            actions: ``[N, act_dim]`` float (continuous) or ``[N]`` integer (discrete); tensor or array.

        Returns:
            ``obs [N, obs_dim]`` float32, ``reward [N]`` float32, ``terminated [N]`` bool, ``truncated [N]``
            bool (all True once ``max_episode_steps`` steps were taken) and an empty info dict, on ``device``.
        """
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (after construction and after every set_tasks)")
        actions = self.validate_actions(actions)
        active = ~self._terminated
        obs, reward, terminated = self._step(actions, active)
        reward = torch.where(active, reward, torch.zeros_like(reward))
        self._terminated = self._terminated | terminated
        self._elapsed_steps += 1
        at_limit = self._elapsed_steps >= self.max_episode_steps
        truncated = torch.full((self.num_envs,), at_limit, dtype=torch.bool, device=self.device)
        return obs, reward, self._terminated.clone(), truncated, {}

    # ------------------------------------------------------------------------------------------- internals
    def _task(self, key: str) -> Tensor:
        assert self._tasks is not None  # guaranteed by reset()
        return self._tasks[key]
