"""The inner loop, written once and batched over tasks (DESIGN §4).

``θ_{k+1}[m] = θ_k[m] − α_k ∇ L_inner(θ_k[m]; D_k[m])`` for every task ``m`` at once: the per-task losses are
computed with one vmapped policy call, and since each task's loss depends only on its own slice of the stacked
``[M, ...]`` parameters, the gradient of their sum is the stack of per-task gradients.

Sampling, meta-training and evaluation all call :func:`adapt`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maml_rl.episodes import Episodes, by_task
from maml_rl.losses import reinforce_loss
from maml_rl.policies import Params, Policy, batched_forward


def inner_loss(policy: Policy, params: Params, episodes: Episodes) -> torch.Tensor:
    """REINFORCE loss of every task under its own parameters ``[M, ...]``: returns ``[M]``."""
    if episodes.advantages is None:
        raise ValueError("episodes have no advantages; call maml_rl.advantages.with_advantages first")
    m = episodes.num_tasks
    dist = batched_forward(policy, params, by_task(episodes.observations, m))
    log_probs = policy.log_prob(dist, by_task(episodes.actions, m))
    return reinforce_loss(log_probs, by_task(episodes.advantages, m), by_task(episodes.mask, m))


def adapt(
    policy: Policy,
    params: Params,
    batches: Sequence[Episodes],
    step_sizes: float | Sequence[float],
    create_graph: bool = True,
) -> Params:
    """Take one inner policy-gradient step per batch, for all tasks at once.

    Args:
        policy: the policy module (its structure only; its own parameters are not used).
        params: per-task parameters ``[M, ...]`` (e.g. ``task_params(θ, M)``).
        batches: ``K`` batches of episodes with advantages; step ``k`` uses ``batches[k]``.
        step_sizes: ``α``, one for all steps or one per step.
        create_graph: keep the graph of the inner gradients (second-order MAML). When False the inner gradients
            are constants: the result is differentiable with respect to ``params`` only through the identity
            term (first-order MAML), and if ``params`` carry no graph the result carries none either.

    Returns:
        The adapted per-task parameters ``[M, ...]``.
    """
    if isinstance(step_sizes, (int, float)):
        step_sizes = [float(step_sizes)] * len(batches)
    if len(step_sizes) != len(batches):
        raise ValueError(f"{len(step_sizes)} step sizes for {len(batches)} inner steps")
    for batch, alpha in zip(batches, step_sizes, strict=True):
        # Under torch.no_grad() views of leaves still report requires_grad, so ask the grad mode too.
        tracked = torch.is_grad_enabled() and any(p.requires_grad for p in params.values())
        with torch.enable_grad():
            inputs = params if tracked else {n: p.detach().requires_grad_() for n, p in params.items()}
            loss = inner_loss(policy, inputs, batch).sum()
            grads = torch.autograd.grad(
                loss, list(inputs.values()), create_graph=create_graph and tracked, retain_graph=tracked
            )
        if not create_graph:
            grads = tuple(g.detach() for g in grads)
        params = {n: p - alpha * g for (n, p), g in zip(params.items(), grads, strict=True)}
    return params
