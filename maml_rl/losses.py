"""Pure functions: per-task masked losses over ``[M, T, E]`` tensors (DESIGN §4, §5)."""

from __future__ import annotations

from torch import Tensor


def _per_task_mean(x: Tensor, mask: Tensor) -> Tensor:
    """``Σ mask·x / Σ mask`` over every dimension but the first: ``[M, ...] -> [M]``."""
    dims = tuple(range(1, x.dim()))
    return (x * mask).sum(dims) / mask.sum(dims).clamp(min=1.0)


def reinforce_loss(log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Inner loss per task: ``−Σ mask·log π(a|o)·A / Σ mask``; inputs ``[M, T, E]``, output ``[M]``."""
    return -_per_task_mean(log_probs * advantages, mask)


def surrogate_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """TRPO surrogate per task: ``−Σ mask·exp(log π − log π_old)·A / Σ mask``; ``[M, T, E] -> [M]``."""
    return -_per_task_mean((log_probs - old_log_probs).exp() * advantages, mask)


def mean_kl(kl: Tensor, mask: Tensor) -> Tensor:
    """Masked mean of per-step KL divergences per task: ``[M, T, E] -> [M]``."""
    return _per_task_mean(kl, mask)
