"""Linear feature baseline fit per task by ridge regression (Duan et al. 2016; docs/architecture.md §4).

Features per step: ``[o, o², t, t², t³, 1]`` with ``t = step / 100``, ``o`` optionally clipped to ``[-c, c]`` (rllab's
``LinearFeatureBaseline``, the MAML reference's, clips at 10). One least-squares problem per task,
solved for all tasks at once with ``torch.linalg.solve_ex``; the ridge starts at ``1e-5`` and is raised ×10
for the tasks whose solve is singular or non-finite. Padded steps (mask 0) contribute nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maml_rl.episodes import by_task, from_task

INITIAL_RIDGE = 1e-5
RIDGE_GROWTH = 10.0
MAX_RIDGE_ATTEMPTS = 12


def baseline_features(observations: Tensor, obs_clip: float | None = None) -> Tensor:
    """``[T, N, obs_dim]`` -> ``[T, N, 2 * obs_dim + 4]`` features ``[o, o², t, t², t³, 1]``, with ``o`` clipped to
    ``[-obs_clip, obs_clip]`` unless ``obs_clip`` is None."""
    if obs_clip is not None:
        observations = observations.clamp(-obs_clip, obs_clip)
    steps = observations.shape[0]
    t = torch.arange(steps, device=observations.device, dtype=observations.dtype) / 100.0
    t = t.view(steps, *([1] * (observations.dim() - 1))).expand(*observations.shape[:-1], 1)
    return torch.cat([observations, observations.pow(2), t, t.pow(2), t.pow(3), torch.ones_like(t)], dim=-1)


def fit_linear_baseline(observations: Tensor, targets: Tensor, mask: Tensor, num_tasks: int,
                        obs_clip: float | None = None) -> Tensor:
    """Fit one linear baseline per task and return its predictions.

    Args:
        observations: ``[T, N, obs_dim]``.
        targets: ``[T, N]`` regression targets (discounted returns).
        mask: ``[T, N]``, 1 for real steps.
        num_tasks: ``M``; sub-environments ``m*E .. (m+1)*E-1`` belong to task ``m``.
        obs_clip: clip the observations in the features to ``[-obs_clip, obs_clip]`` (None: no clipping).

    Returns:
        ``[T, N]`` baseline values, zero on padded steps; always finite for finite inputs.
    """
    if targets.shape != mask.shape or observations.shape[:2] != mask.shape:
        raise ValueError(
            f"expected observations [T, N, d], targets and mask [T, N]; got {tuple(observations.shape)}, "
            f"{tuple(targets.shape)}, {tuple(mask.shape)}"
        )
    if not (torch.isfinite(observations).all() and torch.isfinite(targets).all()):
        raise ValueError("baseline inputs contain non-finite values")
    features = baseline_features(observations, obs_clip).double() * mask.unsqueeze(-1).double()  # [T, N, F]
    x = by_task(features, num_tasks).flatten(1, 2)  # [M, T*E, F]
    y = by_task((targets * mask).double(), num_tasks).flatten(1, 2)  # [M, T*E]
    gram = x.transpose(1, 2) @ x  # [M, F, F]
    rhs = (x.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)  # [M, F]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    weights = torch.zeros_like(rhs)
    ridge = torch.full((num_tasks,), INITIAL_RIDGE, dtype=gram.dtype, device=gram.device)
    pending = torch.ones(num_tasks, dtype=torch.bool, device=gram.device)
    for _ in range(MAX_RIDGE_ATTEMPTS):
        solution, info = torch.linalg.solve_ex(gram + ridge.view(-1, 1, 1) * eye, rhs)
        ok = (info == 0) & torch.isfinite(solution).all(-1)
        weights = torch.where(pending.unsqueeze(-1) & ok.unsqueeze(-1), solution, weights)
        pending = pending & ~ok
        if not bool(pending.any()):
            break
        ridge = torch.where(pending, ridge * RIDGE_GROWTH, ridge)
    # Tasks still pending after every escalation keep zero weights: a zero baseline is a valid, finite one.
    values = (x @ weights.unsqueeze(-1)).squeeze(-1)  # [M, T*E]
    steps = observations.shape[0]
    values = from_task(values.view(num_tasks, steps, -1))
    return (values * mask.double()).to(targets.dtype)
