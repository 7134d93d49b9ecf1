"""The ``Episodes`` batch: time-major tensors ``[T, N, ...]`` for ``N = M tasks x E episodes`` plus a mask.

Sub-environment ``n`` runs task ``n // E`` (task-major order, as ``envs.repeat_tasks`` lays them out).
``by_task`` regroups a ``[T, N, ...]`` tensor as ``[M, T, E, ...]`` so per-task computations vmap over
the leading dimension; ``from_task`` undoes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def by_task(x: Tensor, num_tasks: int) -> Tensor:
    """``[T, N, ...]`` -> ``[M, T, E, ...]`` with ``N = M * E`` (task-major), a contiguous copy.

    Contiguous so that every per-task reduction over ``[T, E]`` runs the same loop whatever ``M`` is: a strided
    view of one task (``M = 1``) coalesces into a different summation order than the same task among several,
    and data-parallel runs (``M / R`` tasks per rank) must give the same per-task values as one process.
    """
    steps, n = x.shape[:2]
    if n % num_tasks:
        raise ValueError(f"N={n} sub-environments are not a multiple of M={num_tasks} tasks")
    return x.reshape(steps, num_tasks, n // num_tasks, *x.shape[2:]).transpose(0, 1).contiguous()


def from_task(x: Tensor) -> Tensor:
    """``[M, T, E, ...]`` -> ``[T, N, ...]``, the inverse of :func:`by_task`."""
    m, steps, e = x.shape[:3]
    return x.transpose(0, 1).reshape(steps, m * e, *x.shape[3:])


@dataclass(frozen=True)
class Episodes:
    """A batch of episodes from ``num_tasks`` tasks, ``N / num_tasks`` episodes each.

    Attributes:
        observations: ``[T, N, obs_dim]`` float32, the observation each action was taken in.
        actions: ``[T, N, act_dim]`` float32 (continuous) or ``[T, N]`` int64 (discrete), as sampled by
            the policy (before any scaling or clipping by the environment).
        rewards: ``[T, N]`` float32, zero where ``mask`` is zero.
        mask: ``[T, N]`` float32, 1 for steps taken before the episode terminated.
        num_tasks: ``M``.
        advantages: ``[T, N]`` float32 once :func:`maml_rl.advantages.with_advantages` filled it in.
        values: ``[T, N]`` the baseline's predictions, filled in with the advantages (zero on padded steps).
        num_unstable: sub-environments the simulator flagged as unstable (reset and masked out).
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    num_tasks: int
    advantages: Tensor | None = None
    num_unstable: int = 0
    values: Tensor | None = None

    def __post_init__(self) -> None:
        steps, n = self.rewards.shape
        if self.observations.shape[:2] != (steps, n):
            raise ValueError(f"observations {tuple(self.observations.shape)} do not match rewards [T={steps}, N={n}]")
        if self.actions.shape[:2] != (steps, n):
            raise ValueError(f"actions {tuple(self.actions.shape)} do not match rewards [T={steps}, N={n}]")
        if self.mask.shape != (steps, n):
            raise ValueError(f"mask {tuple(self.mask.shape)} must be [T={steps}, N={n}]")
        if self.num_tasks < 1 or n % self.num_tasks:
            raise ValueError(f"N={n} is not a positive multiple of num_tasks={self.num_tasks}")

    @property
    def horizon(self) -> int:
        """``T``."""
        return self.rewards.shape[0]

    @property
    def episodes_per_task(self) -> int:
        """``E``."""
        return self.rewards.shape[1] // self.num_tasks

    @property
    def num_steps(self) -> int:
        """Environment steps actually taken (unmasked)."""
        return int(self.mask.sum().item())

    def episode_returns(self) -> Tensor:
        """Undiscounted return of every episode: ``[N]``."""
        return (self.rewards * self.mask).sum(0)

    def task_returns(self) -> Tensor:
        """Mean undiscounted episode return per task: ``[M]``."""
        return self.episode_returns().reshape(self.num_tasks, -1).mean(1)

    def replace(self, **changes: Any) -> Episodes:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> Episodes:
        """The same batch on ``device``."""
        move = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in move.items():
            if isinstance(value, Tensor):
                move[name] = value.to(device)
        return Episodes(**move)
