"""The ``Episodes`` batch: time-major tensors ``[T, N, ...]`` for ``N = M tasks x E episodes`` plus a mask.

Sub-environment ``n`` runs task ``n // E`` (task-major order, as ``envs.repeat_tasks`` lays them out).
``by_task`` regroups a ``[T, N, ...]`` tensor as ``[M, T, E, ...]`` so per-task computations vmap over
the leading dimension; ``from_task`` undoes it.

``pack_steps`` lays a batch out for learners whose losses are per-task means of per-step terms: each task's
unmasked steps side by side, ``[L, M, ...]``, without the masked slots of episodes that ended early or rounds that
were dropped (docs/architecture.md §2, "Packed steps").
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
        packed: True for a batch from :func:`pack_steps`: steps, not episodes (``[L, M, ...]``, one slot per
            task); what needs episodes (returns, counts, advantages, DiCE weights) refuses it.
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    num_tasks: int
    advantages: Tensor | None = None
    num_unstable: int = 0
    values: Tensor | None = None
    packed: bool = False

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

    def require_episodes(self, what: str) -> None:
        """Raise ValueError if this batch is packed (:func:`pack_steps`): ``what`` needs whole episodes."""
        if self.packed:
            raise ValueError(f"{what} needs episodes; this batch holds packed steps (maml_rl.episodes.pack_steps)")

    def episode_returns(self) -> Tensor:
        """Undiscounted return of every episode slot: ``[N]`` (0 for a dropped slot, see :meth:`episode_counts`)."""
        self.require_episodes("episode returns")
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
        self.require_episodes("episode counts")
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


def steps_per_task(episodes: Episodes) -> Tensor:
    """Unmasked steps of each task: ``[M]`` int64."""
    return by_task(episodes.mask, episodes.num_tasks).flatten(1).gt(0).sum(1)


def pack_steps(episodes: Episodes, length: int | None = None) -> Episodes:
    """The batch's unmasked steps, each task's side by side: ``[L, M, ...]`` (one slot per task, ``E = 1``).

    Task ``m``'s column holds its steps in the order of its episodes (slot by slot, each in time order), then
    padding up to ``L`` with mask 0 (the padding's observations and actions are copies of the batch's entries,
    as finite as they are). Every per-task mean ``Σ mask·x / Σ mask`` over per-step terms ``x`` (the
    REINFORCE and LVC inner losses, the TRPO and PPO surrogates, the mean KL) is the same on the packed batch; the
    policy, being feed-forward, sees the same observations. What needs episodes (returns, episode counts,
    advantages, DiCE's cumulative log-probabilities) does not survive packing, and the packed batch refuses it.

    With a step budget most of a batch's ``[T, M × R·E]`` slots can be masked (episodes that fall early, rounds a
    task did not need): 41–54 % for an Ant-velocity MAML batch at iteration 105, 85–87 % for a one-episode-per-row
    pretrained batch; benchmarks/README.md, "Packed steps".

    Args:
        episodes: a batch with advantages (:func:`maml_rl.advantages.with_advantages`).
        length: ``L``, at least the largest task's step count (:func:`steps_per_task`); default that count. A
            data-parallel run passes the maximum over all ranks, so that a task's tensors, and every sum over
            them, are the same whatever the number of processes.
    """
    if episodes.advantages is None or episodes.values is None:
        raise ValueError("pack the batch after maml_rl.advantages.with_advantages (it needs episodes)")
    episodes.require_episodes("packing")
    m = episodes.num_tasks
    counts = steps_per_task(episodes)
    needed = int(counts.max())
    length = needed if length is None else length
    if length < needed:
        raise ValueError(f"pack length {length} is below the largest task's {needed} steps")

    def per_task_steps(x: Tensor) -> Tensor:  # [T, N, ...] -> [M, E·T, ...], each slot's steps in time order
        grouped = by_task(x, m)  # [M, T, E, ...]
        return grouped.transpose(1, 2).reshape(m, -1, *grouped.shape[3:])

    valid = per_task_steps(episodes.mask) > 0  # [M, E·T]
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)  # unmasked steps first, in order
    if length > order.shape[1]:  # a longer layout than the batch has slots: repeat the last index (masked below)
        order = torch.cat([order, order[:, -1:].expand(m, length - order.shape[1])], dim=1)
    index = order[:, :length]  # [M, L]
    filled = torch.arange(length, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)  # [M, L]

    def pack(x: Tensor) -> Tensor:  # [T, N, ...] -> [L, M, ...]
        steps = per_task_steps(x)
        gather = index.view(m, length, *([1] * (steps.dim() - 2))).expand(m, length, *steps.shape[2:])
        return torch.gather(steps, 1, gather).transpose(0, 1).contiguous()

    mask = filled.to(episodes.mask.dtype).transpose(0, 1).contiguous()
    return Episodes(
        observations=pack(episodes.observations),
        actions=pack(episodes.actions),
        rewards=pack(episodes.rewards) * mask,
        mask=mask,
        num_tasks=m,
        advantages=pack(episodes.advantages) * mask,
        num_unstable=episodes.num_unstable,
        values=pack(episodes.values) * mask,
        packed=True,
    )
