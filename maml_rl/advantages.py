"""Pure functions: discounted returns, TD residuals, generalized advantage estimation, per-task normalization
(docs/architecture.md §4)."""

from __future__ import annotations

import torch
from torch import Tensor

from maml_rl.baselines import fit_linear_baseline
from maml_rl.config import BASELINE_SCOPES
from maml_rl.episodes import Episodes, by_task, from_task


def _check_time_major(rewards: Tensor, mask: Tensor) -> None:
    if rewards.dim() != 2 or rewards.shape != mask.shape:
        raise ValueError(f"rewards and mask must both be [T, N]; got {tuple(rewards.shape)} and {tuple(mask.shape)}")


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """``R_t = m_t (r_t + γ R_{t+1})`` with ``R_T = 0``: ``rewards, mask [T, N] -> [T, N]``."""
    _check_time_major(rewards, mask)
    returns = torch.zeros_like(rewards)
    running = rewards.new_zeros(rewards.shape[1])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = mask[t] * (rewards[t] + gamma * running)
        returns[t] = running
    return returns


def td_residuals(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """``δ_t = r_t + γ m_{t+1} V_{t+1} − V_t`` with ``V_T = 0`` (values masked first): ``[T, N] -> [T, N]``."""
    _check_time_major(rewards, mask)
    if values.shape != rewards.shape:
        raise ValueError(f"values must be [T, N] = {tuple(rewards.shape)}, got {tuple(values.shape)}")
    values = values * mask
    next_values = torch.cat([values[1:], values.new_zeros(1, values.shape[1])])
    return rewards + gamma * next_values - values


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalized advantage estimation (Schulman et al. 2016), masked.

    ``δ_t = r_t + γ m_{t+1} V_{t+1} − V_t`` with ``V_T = 0``, ``A_t = m_t (δ_t + γ λ A_{t+1})``.

    Args:
        rewards, values, mask: ``[T, N]``.

    Returns:
        ``[T, N]`` advantages, zero on padded steps.
    """
    deltas = td_residuals(rewards, values, mask, gamma)
    advantages = torch.zeros_like(rewards)
    running = rewards.new_zeros(rewards.shape[1])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = mask[t] * (deltas[t] + gamma * lam * running)
        advantages[t] = running
    return advantages


def normalize_per_task(advantages: Tensor, mask: Tensor, num_tasks: int, eps: float = 1e-8) -> Tensor:
    """Zero mean, unit standard deviation over the unmasked steps of each task: ``[T, N] -> [T, N]``."""
    a, m = by_task(advantages, num_tasks), by_task(mask, num_tasks)  # [M, T, E]
    count = m.sum((1, 2), keepdim=True).clamp(min=1.0)
    mean = (a * m).sum((1, 2), keepdim=True) / count
    var = ((a - mean).pow(2) * m).sum((1, 2), keepdim=True) / count
    return from_task((a - mean) / (var.sqrt() + eps) * m)


def with_advantages(episodes: Episodes, gamma: float, gae_lambda: float, normalize: bool = True,
                    scope: str = "task", obs_clip: float | None = None) -> Episodes:
    """Fit the linear baseline to the discounted returns, then GAE, normalized.

    ``scope`` (:data:`BASELINE_SCOPES`): ``task`` fits and normalizes each task on its own; ``batch`` treats the
    whole batch as one group. ``obs_clip``: the baseline features' observation clip (``maml.baseline_obs_clip``).
    The baseline's predictions are kept in ``values`` (the DiCE inner estimator needs the TD residuals).
    """
    if scope not in BASELINE_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(BASELINE_SCOPES)}, got {scope!r}")
    episodes.require_episodes("advantages")
    groups = episodes.num_tasks if scope == "task" else 1
    returns = discounted_returns(episodes.rewards, episodes.mask, gamma)
    values = fit_linear_baseline(episodes.observations, returns, episodes.mask, groups, obs_clip)
    advantages = gae(episodes.rewards, values, episodes.mask, gamma, gae_lambda)
    if normalize:
        advantages = normalize_per_task(advantages, episodes.mask, groups)
    return episodes.replace(advantages=advantages, values=values)
