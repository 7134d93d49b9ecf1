"""The ``Episodes`` batch: time-major tensors ``[T, N, ...]`` for ``N = M tasks x E episodes`` plus a mask.

Sub-environment ``n`` runs task ``n // E`` (task-major order, as ``envs.repeat_tasks`` lays them out).
``by_task`` regroups a ``[T, N, ...]`` tensor as ``[M, T, E, ...]`` so per-task computations vmap over
the leading dimension; ``from_task`` undoes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
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
        """Undiscounted return of every episode slot: ``[N]`` (0 for a dropped slot, see :meth:`episode_counts`)."""
        return (self.rewards * self.mask).sum(0)

    def kept_returns(self) -> Tensor:
        """Undiscounted returns of the batch's episodes, the dropped slots of a step-budget collection left out:
        ``[number of episodes]`` in slot order (``[N]`` when nothing was dropped)."""
        returns = self.episode_returns()
        kept = self.mask[0] > 0
        return returns if bool(kept.all()) else returns[kept]

    def episode_counts(self) -> Tensor:
        """Episodes per task ``[M]``: the slots whose first step is unmasked. Every sampled episode takes its first
        step; slots of a step-budget collection that were dropped (:func:`join_rounds`) are masked throughout."""
        return self.mask[0].reshape(self.num_tasks, -1).sum(1)

    def task_returns(self) -> Tensor:
        """Mean undiscounted return of each task's episodes: ``[M]`` (dropped slots excluded)."""
        return self.episode_returns().reshape(self.num_tasks, -1).sum(1) / self.episode_counts().clamp(min=1.0)

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


def join_rounds(rounds: Sequence[Episodes], kept: Sequence[Tensor]) -> Episodes:
    """One batch from ``R`` rounds of ``E`` episodes per task, each task keeping only the rounds it still needed.

    A step budget (``maml.step_budget``) samples rounds of ``E`` episodes per task until every task's kept
    episodes reach it; a round that starts after a task's budget is met is dropped for that task. The result keeps
    the layout ``[T, M × (R·E), ...]``: task ``m``'s slots are its ``E`` episodes of round 1, then of round 2, …, and
    the slots of a dropped round have mask and rewards 0 (:meth:`Episodes.episode_counts` does not count them).
    The number of slots depends on the number of rounds only, which every process of a data-parallel run shares,
    so a task's tensors are the same whatever the number of processes.

    Args:
        rounds: batches ``[T, M·E, ...]`` of the same tasks, without advantages.
        kept: ``[M]`` booleans per round, True where the task keeps that round's episodes.
    """
    if not rounds or len(rounds) != len(kept):
        raise ValueError(f"{len(rounds)} rounds with {len(kept)} keep flags")
    first = rounds[0]
    if len(rounds) == 1 and bool(kept[0].all()):
        return first
    m = first.num_tasks

    def join(name: str, keep: bool = False) -> Tensor:
        pieces = []
        for batch, flags in zip(rounds, kept, strict=True):
            x = getattr(batch, name)
            x = x.reshape(x.shape[0], m, -1, *x.shape[2:])  # [T, M, E, ...]
            if keep:
                x = x * flags.to(x.dtype).view(1, m, *([1] * (x.dim() - 2)))
            pieces.append(x)
        joined = torch.cat(pieces, dim=2)
        return joined.reshape(joined.shape[0], -1, *joined.shape[3:])

    return Episodes(
        observations=join("observations"),
        actions=join("actions"),
        rewards=join("rewards", keep=True),
        mask=join("mask", keep=True),
        num_tasks=m,
        num_unstable=sum(batch.num_unstable for batch in rounds),
    )
