"""The inner loop, written once and batched over tasks (docs/architecture.md §4).

``θ_{k+1}[m] = θ_k[m] − α_k ∇ L_inner(θ_k[m]; D_k[m])`` for every task ``m`` at once: the per-task losses are
computed with one vmapped policy call, and since each task's loss depends only on its own slice of the stacked
``[M, ...]`` parameters, the gradient of their sum is the stack of per-task gradients.

The inner loss is an *estimator* of the policy gradient; they share first derivatives in expectation but not
second ones, which is what the meta-gradient differentiates:

- ``reinforce``: ``−Σ mask·log π·A / Σ mask`` (MAML);
- ``dice``: DiCE with TD-residual weights (Foerster et al. 2018), unbiased derivatives of every order;
- ``lvc``: ProMP's low-variance curvature estimator (Rothfuss et al. 2019).

Collection (training and evaluation) and every meta-learner call :func:`adapt` / :func:`adapt_path`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from maml_rl.advantages import td_residuals
from maml_rl.episodes import Episodes, by_task
from maml_rl.losses import dice_loss, lvc_loss, reinforce_loss
from maml_rl.policies import Params, Policy, batched_forward

#: ``(policy, params [M, ...], episodes) -> [M]`` per-task inner losses
InnerLoss = Callable[[Policy, Params, Episodes], Tensor]
ESTIMATORS = ("reinforce", "dice", "lvc")


def _log_probs(policy: Policy, params: Params, episodes: Episodes) -> Tensor:
    """``[M, T, E]`` log-probabilities of the batch's actions, task ``m`` under ``params[m]``."""
    m = episodes.num_tasks
    dist = batched_forward(policy, params, by_task(episodes.observations, m))
    return policy.log_prob(dist, by_task(episodes.actions, m))


def _advantages(episodes: Episodes) -> Tensor:
    if episodes.advantages is None:
        raise ValueError("episodes have no advantages; call maml_rl.advantages.with_advantages first")
    return by_task(episodes.advantages, episodes.num_tasks)


def inner_loss(policy: Policy, params: Params, episodes: Episodes) -> Tensor:
    """REINFORCE loss of every task under its own parameters ``[M, ...]``: returns ``[M]``."""
    advantages = _advantages(episodes)
    return reinforce_loss(_log_probs(policy, params, episodes), advantages, by_task(episodes.mask, episodes.num_tasks))


def lvc_inner_loss(policy: Policy, params: Params, episodes: Episodes) -> Tensor:
    """ProMP's LVC loss (:func:`maml_rl.losses.lvc_loss`) per task: ``[M]``; same value and gradient as REINFORCE."""
    advantages = _advantages(episodes)
    return lvc_loss(_log_probs(policy, params, episodes), advantages, by_task(episodes.mask, episodes.num_tasks))


def dice_weights(episodes: Episodes, gamma: float) -> Tensor:
    """``[M, T, E]`` DiCE weights ``γ^t δ_t / s_m``: TD residuals of the batch's baseline, discounted from the start.

    ``s_m`` is the standard deviation over task ``m``'s steps of ``Σ_{t'≥t} γ^{t'} δ_{t'}`` (a constant), so that
    the gradient has the scale of REINFORCE's with normalized advantages and ``α`` keeps its meaning.
    """
    episodes.require_episodes("DiCE's weights")
    if episodes.values is None:
        raise ValueError("episodes have no baseline values; call maml_rl.advantages.with_advantages first")
    m = episodes.num_tasks
    deltas = td_residuals(episodes.rewards, episodes.values, episodes.mask, gamma)
    discount = gamma ** torch.arange(episodes.horizon, device=deltas.device, dtype=deltas.dtype)
    weights = by_task(deltas * discount.unsqueeze(1) * episodes.mask, m)  # [M, T, E]
    mask = by_task(episodes.mask, m)
    to_go = weights.flip(1).cumsum(1).flip(1)
    count = mask.sum((1, 2), keepdim=True).clamp(min=1.0)
    mean = (to_go * mask).sum((1, 2), keepdim=True) / count
    std = (((to_go - mean) * mask).pow(2).sum((1, 2), keepdim=True) / count).sqrt()
    return weights / (std + 1e-8)


def dice_inner_loss(policy: Policy, params: Params, episodes: Episodes, gamma: float) -> Tensor:
    """DiCE loss (:func:`maml_rl.losses.dice_loss`) per task with :func:`dice_weights`: ``[M]``."""
    weights = dice_weights(episodes, gamma)
    return dice_loss(_log_probs(policy, params, episodes), weights, by_task(episodes.mask, episodes.num_tasks))


def make_inner_loss(estimator: str, gamma: float) -> InnerLoss:
    """The inner loss of ``estimator`` (one of :data:`ESTIMATORS`); ``gamma`` is used by DiCE."""
    if estimator == "reinforce":
        return inner_loss
    if estimator == "lvc":
        return lvc_inner_loss
    if estimator == "dice":
        return functools.partial(dice_inner_loss, gamma=gamma)
    raise ValueError(f"unknown inner estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")


def adapt_path(
    policy: Policy,
    params: Params,
    batches: Sequence[Episodes],
    step_sizes: float | Sequence[float],
    create_graph: bool = True,
    loss: InnerLoss = inner_loss,
) -> list[Params]:
    """Take one inner policy-gradient step per batch, for all tasks at once; returns ``[θ_0, θ_1, …, θ_K]``.

    Args:
        policy: the policy module (its structure only; its own parameters are not used).
        params: per-task parameters ``[M, ...]`` (e.g. ``task_params(θ, M)``).
        batches: ``K`` batches of episodes with advantages; step ``k`` uses ``batches[k]``.
        step_sizes: ``α``, one for all steps or one per step.
        create_graph: keep the graph of the inner gradients (second-order MAML). When False the inner gradients
            are constants: the result is differentiable with respect to ``params`` only through the identity
            term (first-order MAML), and if ``params`` carry no graph the result carries none either.
        loss: the inner estimator (:func:`make_inner_loss`), per-task losses ``[M]``.

    Returns:
        The per-task parameters ``[M, ...]`` before every step and after the last.
    """
    if isinstance(step_sizes, (int, float)):
        step_sizes = [float(step_sizes)] * len(batches)
    if len(step_sizes) != len(batches):
        raise ValueError(f"{len(step_sizes)} step sizes for {len(batches)} inner steps")
    path = [params]
    for batch, alpha in zip(batches, step_sizes, strict=True):
        # Under torch.no_grad() views of leaves still report requires_grad, so ask the grad mode too.
        tracked = torch.is_grad_enabled() and any(p.requires_grad for p in params.values())
        with torch.enable_grad():
            inputs = params if tracked else {n: p.detach().requires_grad_() for n, p in params.items()}
            total = loss(policy, inputs, batch).sum()
            grads = torch.autograd.grad(
                total, list(inputs.values()), create_graph=create_graph and tracked, retain_graph=tracked
            )
        if not create_graph:
            grads = tuple(g.detach() for g in grads)
        params = {n: p - alpha * g for (n, p), g in zip(params.items(), grads, strict=True)}
        path.append(params)
    return path


def adapt(
    policy: Policy,
    params: Params,
    batches: Sequence[Episodes],
    step_sizes: float | Sequence[float],
    create_graph: bool = True,
    loss: InnerLoss = inner_loss,
) -> Params:
    """The adapted per-task parameters ``θ_K [M, ...]`` (the last entry of :func:`adapt_path`)."""
    return adapt_path(policy, params, batches, step_sizes, create_graph, loss)[-1]
