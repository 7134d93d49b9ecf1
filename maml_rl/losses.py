"""Pure functions: per-task masked losses over ``[M, T, E]`` tensors (docs/architecture.md §4, §5)."""

from __future__ import annotations

import torch
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


def magic_box(x: Tensor) -> Tensor:
    """DiCE's ``⊡(x) = exp(x − ⊥(x))`` (Foerster et al. 2018): evaluates to 1, and ``∇⊡(x) = ⊡(x)·∇x``."""
    return (x - x.detach()).exp()


def dice_loss(log_probs: Tensor, weights: Tensor, mask: Tensor) -> Tensor:
    """DiCE objective per task, negated: ``−Σ_t mask·⊡(Σ_{t'≤t} log π_t')·w_t / Σ mask``; ``[M, T, E] -> [M]``.

    With ``w_t = γ^t r_t`` its expectation has the derivatives of every order of the expected discounted return
    (Foerster et al. 2018, "DiCE: The Infinitely Differentiable Monte-Carlo Estimator"); with ``w_t = γ^t δ_t``
    (TD residuals of any baseline) it keeps them and has less variance. Time is dimension 1.
    """
    cumulative = (log_probs * mask).cumsum(dim=1)
    return -_per_task_mean(magic_box(cumulative) * weights, mask)


def lvc_loss(log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """ProMP's low-variance curvature objective per task, negated: ``−Σ mask·⊡(log π_t)·A_t / Σ mask``.

    Its gradient equals REINFORCE's; its Hessian adds ``Σ ∇log π_t ∇log π_tᵀ A_t`` (Rothfuss et al. 2019),
    the curvature term the REINFORCE loss lacks. ``[M, T, E] -> [M]``.
    """
    return -_per_task_mean(magic_box(log_probs) * advantages, mask)


def clipped_surrogate_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: float
                           ) -> Tensor:
    """PPO's clipped objective per task, negated (Schulman et al. 2017; ProMP's outer objective).

    ``−Σ mask·min(r·A, clip(r, 1 − ε, 1 + ε)·A) / Σ mask`` with ``r = exp(log π − log π_old)``; ``[M, T, E] -> [M]``.
    """
    ratio = (log_probs - old_log_probs).exp()
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip)
    return -_per_task_mean(torch.minimum(ratio * advantages, clipped * advantages), mask)


def emaml_loss(log_probs: Tensor, old_log_probs: Tensor, mask: Tensor, post_returns: Tensor) -> Tensor:
    """E-MAML's extra term per task, negated (Stadie et al. 2018, "Some Considerations on Learning to Explore via
    Meta-Reinforcement Learning"): the score of the pre-update episodes times the post-update return.

    ``−(ℓ_m(θ) − ℓ_m(θ_old))·R'_m`` with ``ℓ_m = Σ mask·log π(a|o) / Σ mask`` over task ``m``'s pre-update batch:
    0 at ``θ_old``, gradient ``−R'_m ∇ℓ_m``, the term MAML's gradient drops when it treats the pre-update sampling
    distribution as fixed.

    Args:
        log_probs: ``[M, T, E]`` log-probabilities of the pre-update actions under the current parameters.
        old_log_probs: ``[M, T, E]`` the same under the parameters that sampled them (constants).
        mask: ``[M, T, E]``.
        post_returns: ``[M]`` post-update returns (constants; standardized by the caller).
    """
    change = _per_task_mean(log_probs, mask) - _per_task_mean(old_log_probs.detach(), mask)
    return -change * post_returns.detach()
