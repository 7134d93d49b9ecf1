"""The inner loop and the meta-gradient: finite differences, first order by definition, vmap vs per-task loop."""

import pytest
import torch
from torch.func import functional_call

from maml_rl.adaptation import adapt, inner_loss
from maml_rl.episodes import by_task
from maml_rl.losses import reinforce_loss
from maml_rl.policies import task_params
from tests.conftest import random_episodes, trpo_learner

ALPHA = 0.3


def _flat(policy):
    return torch.cat([p.detach().reshape(-1) for p in policy.parameters()])


def _unflatten(policy, flat):
    out, i = {}, 0
    for name, p in policy.named_parameters():
        out[name] = flat[i : i + p.numel()].view_as(p)
        i += p.numel()
    return out


def _meta_objective(policy, train, valid, first_order=False):
    """The MAML-TRPO surrogate at θ with the old policy fixed at θ0 (the function the outer step differentiates)."""
    learner = trpo_learner(policy, fast_lr=ALPHA, first_order=first_order)
    theta0 = _flat(policy)
    with torch.no_grad():
        old = learner.validation_dist(_unflatten(policy, theta0), train, valid, create_graph=False)
        old_log_probs = policy.log_prob(old, by_task(valid.actions, valid.num_tasks))

    def objective(flat, create_graph=True):
        dist = learner.validation_dist(_unflatten(policy, flat), train, valid, create_graph=create_graph)
        return learner.surrogate(dist, valid, old_log_probs).mean()

    return theta0, objective


@pytest.mark.parametrize("num_inner_steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(gaussian_policy, num_inner_steps):
    train = [random_episodes(seed=10 + k) for k in range(num_inner_steps)]
    valid = random_episodes(seed=20)
    theta0, objective = _meta_objective(gaussian_policy, train, valid)
    leaf = theta0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(objective(leaf), leaf)
    eps = 1e-6
    numeric = torch.zeros_like(theta0)
    with torch.no_grad():
        for i in range(theta0.numel()):
            step = torch.zeros_like(theta0)
            step[i] = eps
            numeric[i] = (objective(theta0 + step, False) - objective(theta0 - step, False)) / (2 * eps)
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-8)


def test_first_order_gradient_differs_and_matches_its_definition(gaussian_policy):
    train, valid = [random_episodes(seed=11)], random_episodes(seed=21)
    theta0, second = _meta_objective(gaussian_policy, train, valid, first_order=False)
    _, first = _meta_objective(gaussian_policy, train, valid, first_order=True)
    leaf = theta0.clone().requires_grad_()
    (g_second,) = torch.autograd.grad(second(leaf), leaf)
    leaf = theta0.clone().requires_grad_()
    (g_first,) = torch.autograd.grad(first(leaf), leaf)

    # definition: Σ_m ∂L(θ'_m)/∂θ'_m with θ'_m held as independent leaves (no derivative through the inner step)
    m = valid.num_tasks
    adapted = adapt(gaussian_policy, task_params(_unflatten(gaussian_policy, theta0), m), train, ALPHA,
                    create_graph=False)
    adapted = {n: p.detach().requires_grad_() for n, p in adapted.items()}
    learner = trpo_learner(gaussian_policy, fast_lr=ALPHA, first_order=True)
    dist = learner._validation_dist(adapted, valid)
    log_probs = gaussian_policy.log_prob(dist, by_task(valid.actions, m))
    loss = learner.surrogate(dist, valid, log_probs.detach()).mean()
    grads = torch.autograd.grad(loss, list(adapted.values()))
    expected = torch.cat([g.sum(0).reshape(-1) for g in grads])

    torch.testing.assert_close(g_first, expected, rtol=1e-9, atol=1e-12)
    assert (g_first - g_second).norm() > 1e-3 * g_second.norm()


def test_vmapped_adaptation_equals_per_task_loop(gaussian_policy):
    batches = [random_episodes(num_tasks=3, seed=30), random_episodes(num_tasks=3, seed=31)]
    params = task_params(dict(gaussian_policy.named_parameters()), 3)
    batched = adapt(gaussian_policy, params, batches, [ALPHA, ALPHA / 2], create_graph=False)
    for m in range(3):
        theta = {n: p.detach().clone() for n, p in gaussian_policy.named_parameters()}
        for batch, alpha in zip(batches, [ALPHA, ALPHA / 2], strict=True):
            cols = slice(m * batch.episodes_per_task, (m + 1) * batch.episodes_per_task)
            leaves = {n: p.requires_grad_() for n, p in theta.items()}
            dist = functional_call(gaussian_policy, leaves, (batch.observations[:, cols],))
            lp = gaussian_policy.log_prob(dist, batch.actions[:, cols])
            loss = reinforce_loss(lp[None], batch.advantages[None, :, cols], batch.mask[None, :, cols])[0]
            grads = torch.autograd.grad(loss, list(leaves.values()))
            theta = {n: (p - alpha * g).detach() for (n, p), g in zip(leaves.items(), grads, strict=True)}
        for name in theta:
            torch.testing.assert_close(batched[name][m], theta[name], rtol=1e-10, atol=1e-12)


def test_inner_loss_is_masked_mean_per_task(gaussian_policy):
    episodes = random_episodes(seed=40)
    params = task_params(dict(gaussian_policy.named_parameters()), episodes.num_tasks)
    loss = inner_loss(gaussian_policy, params, episodes)
    dist = gaussian_policy(episodes.observations)
    lp = gaussian_policy.log_prob(dist, episodes.actions)  # [T, N]
    for m in range(episodes.num_tasks):
        cols = slice(3 * m, 3 * m + 3)
        mask = episodes.mask[:, cols]
        expected = -(lp[:, cols] * episodes.advantages[:, cols] * mask).sum() / mask.sum()
        torch.testing.assert_close(loss[m], expected)


def test_adapt_requires_advantages(gaussian_policy):
    episodes = random_episodes(seed=1).replace(advantages=None)
    params = task_params(dict(gaussian_policy.named_parameters()), 2)
    with pytest.raises(ValueError, match="advantages"):
        adapt(gaussian_policy, params, [episodes], ALPHA)


def test_gaussian_log_prob_sums_over_action_dimensions(gaussian_policy):
    mean = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    log_std = torch.log(torch.tensor([[0.5, 2.0]], dtype=torch.float64))
    actions = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    expected = sum(
        torch.distributions.Normal(mean[0, i], log_std[0, i].exp()).log_prob(actions[0, i]) for i in range(2)
    )
    torch.testing.assert_close(gaussian_policy.log_prob((mean, log_std), actions)[0], expected)
    other = (mean + 0.3, log_std - 0.2)
    expected_kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, log_std.exp()), torch.distributions.Normal(*other[:1], other[1].exp())
    ).sum(-1)
    torch.testing.assert_close(gaussian_policy.kl((mean, log_std), other), expected_kl)
