"""Meta-learners against independent computations: ProMP's clipped objective, DiCE and LVC derivatives by exact
enumeration, the Reptile update, E-MAML's extra term; registry and contract."""

import itertools
from dataclasses import dataclass

import pytest
import torch
from torch.func import functional_call

from maml_rl.adaptation import dice_inner_loss, dice_weights, inner_loss, lvc_inner_loss
from maml_rl.advantages import td_residuals
from maml_rl.checkpoint import load_checkpoint
from maml_rl.config import ConfigError, MamlConfig, check_range, from_dict, load_config
from maml_rl.episodes import by_task
from maml_rl.learner_settings import BUILTIN_LEARNERS
from maml_rl.losses import clipped_surrogate_loss, dice_loss, emaml_loss, lvc_loss, reinforce_loss
from maml_rl.metalearners import MetaLearner, learner_class, learner_names, make_learner, register
from maml_rl.metalearners.base import _REGISTRY
from maml_rl.metalearners.maml_trpo import _Old, standardized_task_returns
from maml_rl.metalearners.reptile import Reptile, ReptileSettings
from maml_rl.policies import task_params
from maml_rl.trainer import Trainer
from tests.conftest import meta_batch, random_episodes, trpo_learner

# ------------------------------------------------------------------------------------------- ProMP's objective


def test_clipped_surrogate_on_a_hand_computed_case():
    """One task, two steps, two episodes; ε = 0.2. Ratios r = e^{Δ}: 1.5 (A=+1), 0.5 (A=+2), 1.1 (A=−1), 0.7
    (A=−3, masked out). min(r·A, clip(r)·A): 1.5·1 → clip 1.2 → 1.2; 0.5·2 = 1.0 vs 0.8·2 = 1.6 → 1.0;
    1.1·(−1) = −1.1 vs −1.1 → −1.1. Loss = −(1.2 + 1.0 − 1.1) / 3."""
    ratios = torch.tensor([[[1.5, 0.5], [1.1, 0.7]]], dtype=torch.float64)  # [M=1, T=2, E=2]
    advantages = torch.tensor([[[1.0, 2.0], [-1.0, -3.0]]], dtype=torch.float64)
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    old = torch.zeros_like(ratios)
    log_probs = ratios.log().requires_grad_()
    loss = clipped_surrogate_loss(log_probs, old, advantages, mask, clip=0.2)
    assert loss.shape == (1,)
    assert float(loss.detach()) == pytest.approx(-(1.2 + 1.0 - 1.1) / 3, abs=1e-12)
    (grad,) = torch.autograd.grad(loss.sum(), log_probs)
    # d/d log r of −r·A/3 where the unclipped term is the minimum, 0 where the clipped one is (and where masked)
    expected = torch.tensor([[[0.0, -0.5 * 2.0 / 3], [1.1 / 3, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)
    # inside the clip range the objective is the plain surrogate
    small = torch.tensor([[[0.1, -0.1], [0.05, 0.0]]], dtype=torch.float64)
    plain = -(small.exp() * advantages * mask).sum() / mask.sum()
    assert float(clipped_surrogate_loss(small, old, advantages, mask, clip=0.2)) == pytest.approx(float(plain))


# ------------------------------------------------------------------------------------------- a tiny tabular MDP

S, A, H, GAMMA = 2, 2, 3, 0.9
P = torch.tensor([[[0.7, 0.3], [0.2, 0.8]], [[0.5, 0.5], [0.9, 0.1]]], dtype=torch.float64)  # P[s, a, s']
R = torch.tensor([[1.0, -0.5], [0.3, 2.0]], dtype=torch.float64)  # deterministic reward r(s, a)
START = 0


def trajectories():
    """Every (states, actions) of length H from START, with its probability under P given the actions."""
    for actions in itertools.product(range(A), repeat=H):
        for nexts in itertools.product(range(S), repeat=H - 1):
            states = (START, *nexts)
            p_env = 1.0
            for t in range(H - 1):
                p_env *= float(P[states[t], actions[t], states[t + 1]])
            yield states, actions, p_env


TRAJ = list(trajectories())


def log_pi(theta):
    """Tabular softmax policy ``[S, A]`` log-probabilities."""
    return torch.log_softmax(theta.view(S, A), dim=-1)


def traj_log_probs(theta):
    """``[n, H]`` log π(a_t|s_t) of every enumerated trajectory."""
    lp = log_pi(theta)
    return torch.stack([torch.stack([lp[s, a] for s, a in zip(st, ac, strict=True)]) for st, ac, _ in TRAJ])


def traj_probabilities(theta):
    return torch.exp(traj_log_probs(theta).sum(1)) * torch.tensor([p for *_, p in TRAJ], dtype=torch.float64)


REWARDS = torch.tensor([[float(R[s, a]) for s, a in zip(st, ac, strict=True)] for st, ac, _ in TRAJ],
                       dtype=torch.float64)  # [n, H]
DISCOUNT = GAMMA ** torch.arange(H, dtype=torch.float64)
THETA0 = torch.tensor([0.3, -0.2, -0.4, 0.5], dtype=torch.float64)


def expected_return(theta):
    """``J(θ) = Σ_τ p_θ(τ) Σ_t γ^t r_t`` exactly."""
    return (traj_probabilities(theta) * (REWARDS * DISCOUNT).sum(1)).sum()


def expected_surrogate(loss_of_log_probs, theta):
    """``Σ_τ p_θ0(τ)·(−loss(τ; θ))·H``: the estimator's expectation under the sampling policy θ0 (held fixed)."""
    weights = traj_probabilities(THETA0).detach()
    per_trajectory = loss_of_log_probs(traj_log_probs(theta).unsqueeze(-1))  # each trajectory a "task", E = 1
    return -(weights * per_trajectory).sum() * H


def derivatives(function, theta):
    gradient = torch.autograd.functional.jacobian(function, theta)
    hessian = torch.autograd.functional.hessian(function, theta)
    return gradient, hessian


MASK = torch.ones(len(TRAJ), H, 1, dtype=torch.float64)


def test_dice_first_and_second_derivatives_equal_the_exact_ones():
    exact = derivatives(expected_return, THETA0)
    weights = (REWARDS * DISCOUNT).unsqueeze(-1)  # w_t = γ^t r_t
    dice = derivatives(lambda th: expected_surrogate(lambda lp: dice_loss(lp, weights, MASK), th), THETA0)
    torch.testing.assert_close(dice[0], exact[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dice[1], exact[1], rtol=1e-10, atol=1e-12)
    assert exact[1].abs().max() > 1e-2  # not vacuous

    # TD residuals of any baseline V(s, t) as weights (what dice_weights uses): the same derivatives
    values_table = torch.tensor([[0.4, -1.0, 2.0], [1.5, 0.2, -0.7]], dtype=torch.float64)  # V[s, t]
    values = torch.tensor([[float(values_table[s, t]) for t, s in enumerate(st)] for st, _, _ in TRAJ],
                          dtype=torch.float64)
    mask = torch.ones_like(REWARDS)
    deltas = td_residuals(REWARDS.T, values.T, mask.T, GAMMA).T  # [n, H]
    baseline_weights = (deltas * DISCOUNT).unsqueeze(-1)
    with_baseline = derivatives(lambda th: expected_surrogate(lambda lp: dice_loss(lp, baseline_weights, MASK), th),
                                THETA0)
    torch.testing.assert_close(with_baseline[0], exact[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(with_baseline[1], exact[1], rtol=1e-10, atol=1e-12)

    # the REINFORCE loss with reward-to-go has the right gradient but not the right Hessian
    to_go = (REWARDS * DISCOUNT).flip(1).cumsum(1).flip(1).unsqueeze(-1)
    reinforce = derivatives(lambda th: expected_surrogate(lambda lp: reinforce_loss(lp, to_go, MASK), th), THETA0)
    torch.testing.assert_close(reinforce[0], exact[0], rtol=1e-10, atol=1e-12)
    assert (reinforce[1] - exact[1]).abs().max() > 1e-2


def test_lvc_has_reinforce_gradient_and_the_score_outer_product_curvature():
    """ProMP's LVC: ∇ equals REINFORCE's; ∇² adds Σ_t A_t ∇log π_t ∇log π_tᵀ / Σ mask (per trajectory)."""
    advantages = torch.randn(len(TRAJ), H, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def lvc(th):
        return lvc_loss(traj_log_probs(th).unsqueeze(-1), advantages, MASK).sum()

    def reinforce(th):
        return reinforce_loss(traj_log_probs(th).unsqueeze(-1), advantages, MASK).sum()

    g_lvc, h_lvc = derivatives(lvc, THETA0)
    g_rf, h_rf = derivatives(reinforce, THETA0)
    torch.testing.assert_close(g_lvc, g_rf, rtol=1e-12, atol=1e-12)
    scores = torch.autograd.functional.jacobian(lambda th: traj_log_probs(th), THETA0)  # [n, H, P]
    outer = -torch.einsum("nt,ntp,ntq->pq", advantages[..., 0], scores, scores) / H
    torch.testing.assert_close(h_lvc - h_rf, outer, rtol=1e-10, atol=1e-12)


def test_dice_weights_are_discounted_td_residuals_over_their_scale():
    episodes = random_episodes(seed=3)
    weights = dice_weights(episodes, gamma=0.9)  # [M, T, E]
    deltas = td_residuals(episodes.rewards, episodes.values, episodes.mask, 0.9)
    discount = 0.9 ** torch.arange(episodes.horizon, dtype=torch.float64)
    raw = by_task(deltas * discount.unsqueeze(1) * episodes.mask, episodes.num_tasks)
    for m in range(episodes.num_tasks):
        mask = by_task(episodes.mask, episodes.num_tasks)[m].bool()
        to_go = raw[m].flip(0).cumsum(0).flip(0)[mask]
        scale = to_go.std(unbiased=False)
        torch.testing.assert_close(weights[m], raw[m] / (scale + 1e-8))


def test_inner_estimator_values_and_reinforce_lvc_gradients(gaussian_policy):
    episodes = random_episodes(seed=4)
    params = {n: p.detach().clone().requires_grad_() for n, p in gaussian_policy.named_parameters()}
    stacked = task_params(params, episodes.num_tasks)
    reinforce = inner_loss(gaussian_policy, stacked, episodes)
    lvc = lvc_inner_loss(gaussian_policy, stacked, episodes)
    mask, advantages = by_task(episodes.mask, episodes.num_tasks), by_task(episodes.advantages, episodes.num_tasks)
    torch.testing.assert_close(lvc, -(advantages * mask).sum((1, 2)) / mask.sum((1, 2)))  # ⊡ evaluates to 1
    g_r = torch.autograd.grad(reinforce.sum(), list(params.values()), retain_graph=True)
    g_l = torch.autograd.grad(lvc.sum(), list(params.values()))
    for a, b in zip(g_r, g_l, strict=True):
        torch.testing.assert_close(a, b)
    dice = dice_inner_loss(gaussian_policy, stacked, episodes, gamma=0.9)
    weights = dice_weights(episodes, 0.9)
    torch.testing.assert_close(dice, -(weights * mask).sum((1, 2)) / mask.sum((1, 2)))  # value Σw / Σmask


# ------------------------------------------------------------------------------------------- E-MAML's term


def test_emaml_term_is_the_pre_update_score_times_the_post_update_return(gaussian_policy):
    train, valid = random_episodes(seed=11), random_episodes(seed=12)
    learner = trpo_learner(gaussian_policy, fast_lr=0.3, estimator="e-maml")
    batch = meta_batch(learner, [train], valid)
    post = standardized_task_returns(valid)
    returns = valid.task_returns()
    torch.testing.assert_close(post, (returns - returns.mean()) / returns.std())
    params = {n: p.detach().clone().requires_grad_() for n, p in gaussian_policy.named_parameters()}
    m = train.num_tasks

    # the learner's term at θ: value 0, gradient −mean_m R'_m ∇ ℓ_m(θ)
    path = learner.adapted_path(params, batch.train, m, create_graph=True)
    old_lp = tuple(x.detach() for x in learner._train_log_probs(path, batch.train))
    old = _Old(dist=(), log_probs=torch.zeros(()), train_log_probs=old_lp, post_returns=post)
    term = learner.emaml_term(path, batch.train, old).mean()
    assert float(term.detach()) == 0.0
    grads = torch.autograd.grad(term, list(params.values()))

    # definition, task by task with the plain module: ℓ_m = Σ mask·log π_θ(a|o) / Σ mask over task m's episodes
    expected = [torch.zeros_like(p) for p in params.values()]
    e = train.episodes_per_task
    for task in range(m):
        cols = slice(task * e, (task + 1) * e)
        leaves = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
        dist = functional_call(gaussian_policy, leaves, (train.observations[:, cols],))
        mask = train.mask[:, cols]
        ell = (gaussian_policy.log_prob(dist, train.actions[:, cols]) * mask).sum() / mask.sum()
        for i, g in enumerate(torch.autograd.grad(ell, list(leaves.values()))):
            expected[i] -= post[task] * g / m
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)

    # the e-maml objective is MAML's plus the term
    plain = trpo_learner(gaussian_policy, fast_lr=0.3)
    with torch.no_grad():
        dist = plain.validation_dist(params, batch.train, valid, create_graph=False)
        old_log_probs = gaussian_policy.log_prob(dist, by_task(valid.actions, m))
    loss_e, _ = learner.objective(params, batch, _Old(dist, old_log_probs, old_lp, post), create_graph=True)
    loss_p, _ = plain.objective(params, batch, _Old(dist, old_log_probs), create_graph=True)
    g_e = torch.autograd.grad(loss_e.mean(), list(params.values()))  # objective: per-task losses [M]
    g_p = torch.autograd.grad(loss_p.mean(), list(params.values()))
    for ge, gp, want in zip(g_e, g_p, expected, strict=True):
        torch.testing.assert_close(ge - gp, want, rtol=1e-8, atol=1e-10)
    assert max(float(w.abs().max()) for w in expected) > 1e-3  # the term is not vacuous


def test_emaml_loss_is_zero_at_the_old_parameters_and_linear_in_the_log_likelihood_change():
    log_probs = torch.tensor([[[-1.0, -2.0], [-0.5, -3.0]]], dtype=torch.float64)
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    post = torch.tensor([2.0], dtype=torch.float64)
    assert float(emaml_loss(log_probs, log_probs, mask, post)) == 0.0
    moved = log_probs + torch.tensor([[[0.3, 0.0], [0.0, 9.0]]], dtype=torch.float64)  # the masked step is ignored
    assert float(emaml_loss(moved, log_probs, mask, post)) == pytest.approx(-2.0 * 0.3 / 3)


# ------------------------------------------------------------------------------------------- Reptile


@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_reptile_moves_towards_the_mean_adapted_parameters(gaussian_policy, beta):
    train, valid = random_episodes(seed=21), random_episodes(seed=22)
    learner = Reptile(gaussian_policy, MamlConfig(fast_lr=0.3), ReptileSettings(beta=beta))
    batch = meta_batch(learner, [train], valid)
    before = {n: p.detach().clone() for n, p in gaussian_policy.named_parameters()}
    new, metrics = learner.step(batch)
    for name, theta in before.items():
        adapted = [batch.adapted[name][m] for m in range(valid.num_tasks)]
        expected = theta + beta * sum(a - theta for a in adapted) / len(adapted)
        torch.testing.assert_close(new[name], expected, rtol=1e-12, atol=1e-12)
        if beta == 1.0:
            torch.testing.assert_close(new[name], sum(adapted) / len(adapted))  # the seeds' plain average
        assert torch.equal(dict(gaussian_policy.named_parameters())[name].detach(), theta)  # data, not in place
    step = torch.cat([(new[n] - before[n]).reshape(-1) for n in before]).norm()
    assert metrics["reptile/step_norm"] == pytest.approx(float(step)) and float(step) > 0


# ------------------------------------------------------------------------------------------- registry, contract


def test_every_learner_builds_from_config_and_declares_its_inner_loop(gaussian_policy):
    expected = {"maml-trpo": (2, "reinforce"), "pretrained": (0, "reinforce"), "maml-fo": (2, "reinforce"),
                "promp": (2, "lvc"), "reptile": (2, "reinforce")}
    for name in learner_names():
        config = from_dict({"algorithm": {"name": name}, "maml": {"num_inner_steps": 2}})
        learner = make_learner(config, gaussian_policy)
        assert isinstance(learner, MetaLearner) and learner.name == name
        assert (learner.num_inner_steps, learner.inner_estimator(learner.settings)) == expected[name]
        assert learner_class(name).__doc__ and learner_class(name).__module__.startswith("maml_rl.metalearners.")
    dice = make_learner(from_dict({"algorithm": {"name": "maml-fo", "options": {"estimator": "dice"}}}),
                        gaussian_policy)
    assert dice.inner_estimator(dice.settings) == "dice"


def test_the_torch_free_settings_table_agrees_with_the_registry():
    """Validation reads ``BUILTIN_LEARNERS``; training builds the registry's class: they must name the same options."""
    assert set(BUILTIN_LEARNERS) == set(learner_names())
    for name, options in BUILTIN_LEARNERS.items():
        assert learner_class(name).Settings is options.settings, name
        assert learner_class(name).adapts is options.adapts, name


@pytest.mark.parametrize("name", ["maml-fo", "promp"])
def test_gradient_learners_return_new_parameters_and_keep_adam_state(gaussian_policy, name):
    train, valid = random_episodes(seed=31), random_episodes(seed=32)
    config = from_dict({"algorithm": {"name": name}, "maml": {"fast_lr": 0.3}})
    learner = make_learner(config, gaussian_policy)
    before = {n: p.detach().clone() for n, p in gaussian_policy.named_parameters()}
    new, metrics = learner.step(meta_batch(learner, [train], valid))
    assert set(new) == set(before)
    moved = max(float((new[n] - before[n]).abs().max()) for n in before)
    assert 0 < moved <= config.algorithm.options["lr"] * config.algorithm.options.get("num_steps", 1) * 1.01
    assert all(torch.equal(p.detach(), before[n]) for n, p in gaussian_policy.named_parameters())
    state = learner.state_dict()
    assert state["adam"]["state"] and all(isinstance(k, int) for k in state["adam"]["state"])
    assert isinstance(state["adam"]["param_groups"][0]["betas"], list)  # plain data only
    assert all(metrics[key] == metrics[key] for key in metrics)  # finite numbers, no NaN


# ------------------------------------------------------------------------------------------- a learner in one file


@dataclass(frozen=True)
class HalfwaySettings:
    fraction: float = 0.5

    def __post_init__(self) -> None:
        check_range("algorithm.options.fraction", self.fraction, low=0.0, high=1.0)


class Halfway(MetaLearner):
    """A toy learner for the contract: θ ← θ + f·(mean_m θ'_m − θ) (Reptile with β = f), written outside the package."""

    name = "halfway"
    Settings = HalfwaySettings

    def step(self, batch):
        theta = self.shared_params()
        new = {n: p + self.settings.fraction * (batch.adapted[n].mean(0) - p) for n, p in theta.items()}
        self.calls = getattr(self, "calls", 0) + 1
        return new, {"halfway/calls": float(self.calls)}


@pytest.fixture
def halfway():
    register(Halfway)
    yield Halfway
    _REGISTRY.pop(Halfway.name)


def test_a_learner_written_in_one_place_trains_through_the_config(halfway, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key algorithm.options.beta; valid keys in "
                                          r"algorithm.options: fraction$"):
        load_config("experiments/navigation-2d/paper.yaml", ["algorithm={name: halfway, options: {beta: 1}}"])
    config = load_config("experiments/navigation-2d/paper.yaml", [
        "algorithm={name: halfway, options: {fraction: 0.25}}", "maml.meta_batch_size=2", "maml.fast_batch_size=2",
        "env.horizon=5", "policy.hidden_sizes=[4]", "train.num_iterations=2"])
    trainer = Trainer(config, tmp_path)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    history = trainer.train(progress=False)
    assert [row["halfway/calls"] for row in history] == [1.0, 2.0]
    assert any(not torch.equal(p.detach(), before[n]) for n, p in trainer.policy.named_parameters())
    assert load_checkpoint(tmp_path)[1]["config"]["algorithm"] == {"name": "halfway", "options": {"fraction": 0.25}}
