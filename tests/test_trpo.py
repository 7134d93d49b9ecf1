"""TRPO pieces: Fisher-vector products against explicit Hessians, conjugate gradient, line search, the step."""

import copy
import math

import pytest
import torch
from torch.func import functional_call

import maml_rl.metalearners.maml_trpo as maml_trpo
from maml_rl.config import ConfigError
from maml_rl.learner_settings import REFERENCE_FD_BASE_EPS
from maml_rl.optim.trpo import (
    adapted_gauss_newton_vector_product,
    conjugate_gradient,
    gauss_newton_vector_product,
    hessian_vector_product,
    line_search,
)
from maml_rl.policies import batched_forward, task_leaves, task_params
from tests.conftest import meta_batch, random_episodes, trpo_learner


def test_conjugate_gradient_solves_random_spd_system():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(12, 12, generator=g, dtype=torch.float64)
    spd = a @ a.T + 0.5 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    result = conjugate_gradient(lambda v: spd @ v, b, iterations=50, tolerance=1e-20)
    torch.testing.assert_close(result.x, torch.linalg.solve(spd, b), rtol=1e-8, atol=1e-8)
    assert result.residual_norm < 1e-8


def test_conjugate_gradient_reports_residual_after_few_iterations():
    spd = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
    b = torch.ones(20, dtype=torch.float64)
    result = conjugate_gradient(lambda v: spd @ v, b, iterations=3)
    assert result.residual_norm == pytest.approx(float((b - spd @ result.x).norm()), rel=1e-6)
    assert result.residual_norm > 1e-3  # 3 iterations cannot solve a 20-eigenvalue system


@pytest.mark.parametrize("iterations", [1, 3, 10, 40])
def test_conjugate_gradient_gives_x_a_x_without_another_product(iterations):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(40, 40, generator=g, dtype=torch.float64)
    spd = a @ a.T + 1e-3 * torch.eye(40, dtype=torch.float64)  # ill-conditioned, like a damped Fisher matrix
    b = torch.randn(40, generator=g, dtype=torch.float64)
    calls = []
    result = conjugate_gradient(lambda v: calls.append(1) or spd @ v, b, iterations=iterations, tolerance=0.0)
    assert len(calls) == iterations  # one product per iteration, none for xᵀAx
    assert float(result.x_a_x) == pytest.approx(float(result.x @ spd @ result.x), rel=1e-9)


def test_line_search_backtracks_and_rejects():
    tried = []

    def evaluate(fraction):
        tried.append(fraction)
        return (-1.0, 0.5) if fraction > 0.3 else (-1.0, 0.001)  # KL too large until fraction <= 0.3

    result = line_search(evaluate, old_loss=0.0, max_kl=0.01, max_steps=10, backtrack=0.5)
    assert result.accepted and result.step_fraction == 0.25 and result.steps_taken == 3
    assert tried == [1.0, 0.5, 0.25]
    never = line_search(lambda f: (1.0, 0.0), old_loss=0.0, max_kl=0.01, max_steps=4, backtrack=0.5)
    assert not never.accepted and never.steps_taken == 4


def _kl_objective(policy, episodes, old_dist, num_inner_steps, estimator="reinforce"):
    """KL(π_old' ‖ π_θ') as a function of the flat parameter vector θ (float64), through adaptation."""
    learner = trpo_learner(policy, fast_lr=0.3, estimator=estimator)
    names = [n for n, _ in policy.named_parameters()]
    shapes = [p.shape for _, p in policy.named_parameters()]

    def unflatten(flat):
        out, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = int(torch.tensor(shape).prod())
            out[name] = flat[i : i + size].view(shape)
            i += size
        return out

    def kl_of(flat):
        params = unflatten(flat)
        dist = learner.validation_dist(params, [episodes] * num_inner_steps, episodes, create_graph=True)
        return learner.kl(old_dist, dist, episodes).mean(), dist

    return learner, kl_of, unflatten


@pytest.mark.parametrize(("num_inner_steps", "estimator"), [(0, "reinforce"), (1, "reinforce"), (2, "reinforce"),
                                                          (2, "dice")])
def test_fisher_vector_product_equals_explicit_kl_hessian(gaussian_policy, num_inner_steps, estimator):
    episodes = random_episodes(seed=5)
    theta = torch.cat([p.detach().reshape(-1) for p in gaussian_policy.parameters()])
    learner, kl_of, unflatten = _kl_objective(gaussian_policy, episodes, None, num_inner_steps, estimator)
    with torch.no_grad():
        params = unflatten(theta)
        old_dist = tuple(x.detach() for x in learner.validation_dist(params, [episodes] * num_inner_steps,
                                                                     episodes, create_graph=False))
    _, kl_of, _ = _kl_objective(gaussian_policy, episodes, old_dist, num_inner_steps, estimator)
    hessian = torch.autograd.functional.hessian(lambda t: kl_of(t)[0], theta)
    vector = torch.randn(theta.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = hessian @ vector

    leaf = theta.clone().requires_grad_()
    kl, dist = kl_of(leaf)
    gn = gauss_newton_vector_product(dist, [leaf], lambda d: learner.kl(old_dist, d, episodes).mean(), damping=0.0)
    torch.testing.assert_close(gn(vector), expected, rtol=1e-7, atol=1e-9)
    hvp = hessian_vector_product(kl, [leaf], damping=0.0)
    torch.testing.assert_close(hvp(vector), expected, rtol=1e-7, atol=1e-9)
    # damping adds damping * v
    gn_damped = gauss_newton_vector_product(dist, [leaf], lambda d: learner.kl(old_dist, d, episodes).mean(),
                                            damping=0.1)
    torch.testing.assert_close(gn_damped(vector), expected + 0.1 * vector, rtol=1e-7, atol=1e-9)
    assert expected.norm() > 1e-3  # the test is not vacuous

    # With respect to per-task copies of θ the product returns each task's share [M, P]: row m is the Hessian of
    # task m's KL / M times v (each task's Hessian computed on its own), and the rows sum to the product above.
    m = episodes.num_tasks
    leaves = task_leaves(unflatten(theta.clone()), m)
    train = [episodes] * num_inner_steps
    task_dist = learner.validation_dist(leaves, train, episodes, create_graph=True)
    shares = gauss_newton_vector_product(task_dist, list(leaves.values()),
                                         lambda d: learner.kl(old_dist, d, episodes).sum() / m, per_task=True)(vector)
    assert shares.shape == (m, theta.numel())
    # The same shares from the symmetric inner-step Jacobians (the product the step uses)
    path = [list(p.values()) for p in learner.adapted_path(leaves, train, m, create_graph=True)]
    adapted_dist = learner._validation_dist(dict(zip(leaves, path[-1], strict=True)), episodes)
    fast = adapted_gauss_newton_vector_product(path, adapted_dist,
                                               lambda d: learner.kl(old_dist, d, episodes).sum() / m)(vector)
    for task in range(m):
        def task_kl(t, task=task):
            dist = learner.validation_dist(unflatten(t), train, episodes, create_graph=True)
            return learner.kl(old_dist, dist, episodes)[task] / m
        want = torch.autograd.functional.hessian(task_kl, theta) @ vector
        torch.testing.assert_close(shares[task], want, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(fast[task], want, rtol=1e-7, atol=1e-9)
        assert want.norm() > 1e-4
    torch.testing.assert_close(shares.sum(0), expected, rtol=1e-7, atol=1e-9)


def test_fisher_vector_product_for_categorical_policy(categorical_policy):
    episodes = random_episodes(discrete_actions=3, seed=6)
    params = dict(categorical_policy.named_parameters())
    names = list(params)
    theta = torch.cat([p.detach().reshape(-1) for p in params.values()])
    sizes = [p.numel() for p in params.values()]

    def dist_of(flat):
        pieces = {n: x.view_as(params[n]) for n, x in zip(names, torch.split(flat, sizes), strict=True)}
        obs = episodes.observations.reshape(-1, 2)
        return (functional_call(categorical_policy, pieces, (obs,))[0],)

    old = tuple(x.detach() for x in dist_of(theta))

    def kl_of(flat):
        return categorical_policy.kl(old, dist_of(flat)).mean()

    hessian = torch.autograd.functional.hessian(kl_of, theta)
    vector = torch.randn(theta.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    leaf = theta.clone().requires_grad_()
    gn = gauss_newton_vector_product(dist_of(leaf), [leaf], lambda d: categorical_policy.kl(old, tuple(d)).mean())
    torch.testing.assert_close(gn(vector), hessian @ vector, rtol=1e-7, atol=1e-10)


def _valid_kl(learner, old_params, new_params, train, valid):
    with torch.no_grad():
        old = learner.validation_dist(old_params, train, valid, create_graph=False)
        new = learner.validation_dist(new_params, train, valid, create_graph=False)
        return float(learner.kl(old, new, valid).mean())


@pytest.mark.parametrize("max_kl", [1e-3, 1e-2])
def test_outer_step_respects_trust_region(gaussian_policy, max_kl):
    train, valid = random_episodes(seed=7), random_episodes(seed=8)
    learner = trpo_learner(gaussian_policy, fast_lr=0.2, max_kl=max_kl)
    before = copy.deepcopy(gaussian_policy.state_dict())
    new, metrics = learner.step(meta_batch(learner, [train], valid))
    for name, p in gaussian_policy.state_dict().items():  # parameters come back as data; the policy is untouched
        assert torch.equal(p, before[name])
    kl = _valid_kl(learner, before, new, [train], valid)
    assert metrics["trpo/step_accepted"] == 1.0  # a random batch of this size always has a descent step
    assert 0 < kl <= max_kl * (1 + 1e-9)
    assert metrics["trpo/kl_after"] == pytest.approx(kl, rel=1e-9)
    assert metrics["trpo/surrogate_after"] < metrics["trpo/surrogate_before"]


def test_rejected_outer_step_returns_the_old_parameters(gaussian_policy, monkeypatch):
    train, valid = random_episodes(seed=7), random_episodes(seed=8)
    learner = trpo_learner(gaussian_policy, fast_lr=0.2, ls_max_steps=3)
    before = copy.deepcopy(gaussian_policy.state_dict())
    real_line_search = maml_trpo.line_search
    tried = []

    def rejecting(evaluate, old_loss, max_kl, max_steps, backtrack):
        tried.append(real_line_search(evaluate, old_loss, max_kl, max_steps, backtrack))
        return maml_trpo.LineSearchResult(False, 0.0, max_steps, 1.0, 1.0)

    monkeypatch.setattr(maml_trpo, "line_search", rejecting)
    new, metrics = learner.step(meta_batch(learner, [train], valid))
    assert len(tried) == 1 and metrics["trpo/step_accepted"] == 0.0
    for name, p in gaussian_policy.state_dict().items():
        assert torch.equal(p, before[name]) and torch.equal(new[name], before[name])


def test_zero_gradient_keeps_parameters(gaussian_policy):
    train, valid = random_episodes(seed=7), random_episodes(seed=8)
    learner = trpo_learner(gaussian_policy, fast_lr=0.2)
    before = copy.deepcopy(gaussian_policy.state_dict())
    zero = valid.replace(advantages=torch.zeros_like(valid.advantages))
    new, metrics = learner.step(meta_batch(learner, [train], zero))
    assert metrics["trpo/step_accepted"] == 0.0 and metrics["trpo/grad_norm"] == 0.0
    for name, p in before.items():
        assert torch.equal(new[name], p)


def test_batched_forward_matches_per_task_calls(gaussian_policy):
    g = torch.Generator().manual_seed(0)
    params = {n: p.detach() + 0.1 * torch.randn((3, *p.shape), generator=g, dtype=p.dtype)
              for n, p in gaussian_policy.named_parameters()}
    obs = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    mean, log_std = batched_forward(gaussian_policy, params, obs)
    for m in range(3):
        single = functional_call(gaussian_policy, {n: p[m] for n, p in params.items()}, (obs[m],))
        torch.testing.assert_close(mean[m], single[0])
        torch.testing.assert_close(log_std[m], single[1])
    with pytest.raises(ValueError, match="task rows"):
        batched_forward(gaussian_policy, task_params(dict(gaussian_policy.named_parameters()), 2), obs)


def _fd_setup(policy, seed=5, **trpo):
    train, valid = random_episodes(seed=seed), random_episodes(seed=seed + 1)
    if policy.log_std.dtype == torch.float32:
        train, valid = (e.replace(**{name: getattr(e, name).float() for name in
                                     ("observations", "actions", "rewards", "mask", "advantages", "values")})
                        for e in (train, valid))
    learner = trpo_learner(policy, fast_lr=0.3, fisher="finite-difference", cg_damping=1e-5, **trpo)
    batch = meta_batch(learner, [train], valid)
    shared = learner.shared_params()
    names, like = list(shared), list(shared.values())
    theta = torch.cat([p.reshape(-1) for p in like])
    with torch.no_grad():
        old_dist = tuple(x.detach() for x in learner.validation_dist(shared, [train], valid, create_graph=False))
    product = learner._finite_difference_product(names, like, theta, batch, old_dist)
    return learner, batch, shared, old_dist, theta, product


def test_finite_difference_fisher_product_is_the_kl_hessian_in_float64(gaussian_policy):
    """The reference's formula, (∇KL(θ + εv) − ∇KL(θ − εv)) / 2ε + damping·v, against the exact product."""
    learner, batch, shared, old_dist, theta, product = _fd_setup(gaussian_policy)
    leaves = task_leaves(shared, batch.num_tasks)
    dist = learner.validation_dist(leaves, batch.train, batch.valid, create_graph=True)
    exact = gauss_newton_vector_product(dist, list(leaves.values()),
                                        lambda d: learner.kl(old_dist, d, batch.valid).sum() / batch.num_tasks,
                                        per_task=True)
    vector = torch.randn(theta.shape, generator=torch.Generator().manual_seed(2), dtype=theta.dtype)
    want = exact(vector).sum(0) + 1e-5 * vector
    torch.testing.assert_close(product(vector), want, rtol=1e-4, atol=1e-8)
    assert (want - 1e-5 * vector).norm() > 1e-3


def _float32_policy_away_from_zero():
    from maml_rl.policies import GaussianMLPPolicy

    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(6,), activation="tanh", init_std=0.8,
                               generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for p in policy.parameters():  # no parameter near zero (zeros would register any perturbation)
            p.copy_(p.sign() * (p.abs() + 0.5) + (p == 0) * 0.5)
    return policy


def test_finite_difference_fisher_product_collapses_to_the_damping_in_float32():
    """rllab's declared base_eps (1e-8, the default): in float32 the perturbation ε·v (ε = 1e-8 / ‖θ‖) is below
    the resolution of every parameter that is not near zero, so the product is damping·v exactly."""
    _, _, _, _, theta, product = _fd_setup(_float32_policy_away_from_zero())
    vector = torch.randn(theta.shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(product(vector), 1e-5 * vector)


def test_the_reference_codes_base_eps_measures_the_curvature_in_float32():
    """The reference ran ``FiniteDifferenceHvp(num_slices)``: base_eps = 1, ε = 1 / ‖θ‖. On the same float32
    policy as the collapse test, that product is the KL's curvature (the exact product within 2 % for a vector of
    a gradient's size), where the default's is damping·v."""
    learner, batch, shared, old_dist, theta, product = _fd_setup(_float32_policy_away_from_zero(),
                                                                 fd_base_eps=REFERENCE_FD_BASE_EPS)
    leaves = task_leaves(shared, batch.num_tasks)
    dist = learner.validation_dist(leaves, batch.train, batch.valid, create_graph=True)
    exact = gauss_newton_vector_product(dist, list(leaves.values()),
                                        lambda d: learner.kl(old_dist, d, batch.valid).sum() / batch.num_tasks,
                                        per_task=True)
    vector = 1e-2 * torch.randn(theta.shape, generator=torch.Generator().manual_seed(2))
    want = exact(vector).sum(0).detach() + 1e-5 * vector
    got = product(vector)
    assert (got - want).norm() < 0.02 * want.norm()
    assert (got - 1e-5 * vector).norm() > 100 * (1e-5 * vector).norm()  # far from the collapsed product


def test_unknown_fisher_product_is_refused():
    from maml_rl.metalearners.maml_trpo import TRPOSettings

    with pytest.raises(ConfigError, match=r"algorithm\.options\.fisher.*exact, finite-difference"):
        TRPOSettings(fisher="diagonal")


def test_finite_difference_step_with_negative_curvature_takes_step_size_one(gaussian_policy, monkeypatch):
    """The reference's fallback: √(2δ / sᵀFs) of a negative sᵀFs is NaN there, replaced by 1; no error."""
    learner, batch, *_ = _fd_setup(gaussian_policy)
    monkeypatch.setattr(learner, "_finite_difference_product", lambda *args: (lambda v: -v))  # A = −I
    tried = []
    original = learner.objective

    def objective(params, *args, **kwargs):
        tried.append(torch.cat([p.reshape(-1) for p in params.values()]))
        return original(params, *args, **kwargs)

    monkeypatch.setattr(learner, "objective", objective)
    theta = torch.cat([p.detach().reshape(-1) for p in gaussian_policy.parameters()])
    _, metrics = learner.step(batch)
    # CG on A = −I returns x = −g, so the first candidate is θ − 1·x = θ + g (step size 1, not √(2δ / sᵀFs))
    grad_norm = metrics["trpo/grad_norm"]
    assert float((tried[0] - theta).norm()) == pytest.approx(grad_norm, rel=1e-6)
    assert metrics["trpo/line_search_steps"] == len(tried)


def test_finite_difference_step_rejects_an_overflowing_conjugate_gradient(gaussian_policy, monkeypatch):
    """A zero product makes CG divide by pᵀAp = 0; the reference then rejects the step. θ stays, nothing
    non-finite is returned, and trpo/cg_residual = −1 marks it."""
    learner, batch, *_ = _fd_setup(gaussian_policy)
    monkeypatch.setattr(learner, "_finite_difference_product", lambda *args: (lambda v: torch.zeros_like(v)))
    theta = {name: p.detach().clone() for name, p in gaussian_policy.named_parameters()}
    new, metrics = learner.step(batch)
    assert all(torch.equal(new[name], value) for name, value in theta.items())
    assert metrics["trpo/step_accepted"] == 0.0 and metrics["trpo/cg_residual"] == -1.0
    assert all(math.isfinite(value) for value in metrics.values())

