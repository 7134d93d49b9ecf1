"""Returns, GAE, normalization and the linear baseline against hand-computed and independent values."""

import numpy as np
import pytest
import torch

from maml_rl.advantages import discounted_returns, gae, normalize_per_task, with_advantages
from maml_rl.baselines import baseline_features, fit_linear_baseline
from tests.conftest import random_episodes


def test_discounted_returns_hand_computed_with_mask():
    # two episodes, T=3; the second ends after step 1 (mask 1, 1, 0)
    rewards = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    returns = discounted_returns(rewards, mask, gamma=0.5)
    # episode 0: R2 = 5, R1 = 3 + 2.5 = 5.5, R0 = 1 + 2.75 = 3.75 ; episode 1: R1 = 4, R0 = 2 + 2 = 4, R2 = 0
    expected = torch.tensor([[3.75, 4.0], [5.5, 4.0], [5.0, 0.0]])
    torch.testing.assert_close(returns, expected)


def test_discounted_returns_ignore_rewards_after_termination():
    rewards = torch.tensor([[1.0], [100.0]])
    mask = torch.tensor([[1.0], [0.0]])
    torch.testing.assert_close(discounted_returns(rewards, mask, 0.9), torch.tensor([[1.0], [0.0]]))


def test_gae_hand_computed():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    mask = torch.ones(3, 1)
    gamma, lam = 0.9, 0.8
    # deltas: d2 = 3 - 1.5 = 1.5 ; d1 = 2 + 0.9*1.5 - 1 = 2.35 ; d0 = 1 + 0.9*1.0 - 0.5 = 1.4
    a2 = 1.5
    a1 = 2.35 + 0.72 * a2
    a0 = 1.4 + 0.72 * a1
    torch.testing.assert_close(gae(rewards, values, mask, gamma, lam), torch.tensor([[a0], [a1], [a2]]))


def test_gae_masks_padded_steps_and_does_not_bootstrap_from_them():
    rewards = torch.tensor([[1.0], [0.0]])
    values = torch.tensor([[0.25], [7.0]])  # the padded step's value must not leak into step 0
    mask = torch.tensor([[1.0], [0.0]])
    out = gae(rewards, values, mask, gamma=0.99, lam=1.0)
    torch.testing.assert_close(out, torch.tensor([[0.75], [0.0]]))


def test_gae_with_lambda_one_is_returns_minus_values():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    mask = torch.ones(6, 4)
    mask[4:, 1] = 0
    rewards = rewards * mask
    expected = (discounted_returns(rewards, mask, 0.95) - values) * mask
    torch.testing.assert_close(gae(rewards, values, mask, 0.95, 1.0), expected)


def test_shape_errors_are_named():
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        discounted_returns(torch.zeros(3), torch.zeros(3), 0.9)


def test_normalize_per_task_uses_only_unmasked_steps_of_each_task():
    g = torch.Generator().manual_seed(1)
    adv = torch.randn(5, 6, generator=g) * 3 + 2
    mask = torch.ones(5, 6)
    mask[3:, 0] = 0
    out = normalize_per_task(adv, mask, num_tasks=2)
    for task in range(2):
        cols = slice(3 * task, 3 * task + 3)
        values = out[:, cols][mask[:, cols] > 0]
        assert abs(values.mean().item()) < 1e-5
        assert abs(values.std(unbiased=False).item() - 1) < 1e-4
    assert torch.all(out[mask == 0] == 0)


def test_linear_baseline_matches_numpy_least_squares_per_task():
    g = torch.Generator().manual_seed(2)
    steps, m, e, d = 7, 3, 4, 2
    obs = torch.randn(steps, m * e, d, generator=g, dtype=torch.float64)
    targets = torch.randn(steps, m * e, generator=g, dtype=torch.float64)
    mask = torch.ones(steps, m * e, dtype=torch.float64)
    mask[5:, 2] = 0
    values = fit_linear_baseline(obs, targets, mask, m)
    feats = baseline_features(obs).numpy()
    for task in range(m):
        cols = list(range(task * e, (task + 1) * e))
        rows = mask[:, cols].numpy().reshape(-1) > 0
        x = feats[:, cols].reshape(-1, feats.shape[-1])[rows]
        y = targets[:, cols].numpy().reshape(-1)[rows]
        w = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
        pred = np.zeros(steps * e)
        pred[rows] = x @ w
        np.testing.assert_allclose(values[:, cols].numpy().reshape(-1), pred, rtol=1e-6, atol=1e-8)
    assert torch.all(values[mask == 0] == 0)


def test_linear_baseline_is_finite_on_degenerate_inputs():
    steps, n = 6, 4
    obs = torch.zeros(steps, n, 3)  # constant features: o and o² are all zero -> singular normal equations
    obs[:, :, 1] = 5.0
    targets = torch.ones(steps, n)
    mask = torch.ones(steps, n)
    mask[:, 3] = 0  # a fully padded episode
    mask[2:, 2] = 0
    values = fit_linear_baseline(obs, targets, mask, num_tasks=2)
    assert torch.isfinite(values).all()
    # all-padded task: zero data, zero predictions
    values = fit_linear_baseline(obs, targets, torch.zeros(steps, n), num_tasks=2)
    assert torch.isfinite(values).all() and torch.all(values == 0)


def test_linear_baseline_rejects_non_finite_inputs():
    obs = torch.zeros(2, 2, 1)
    obs[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        fit_linear_baseline(obs, torch.zeros(2, 2), torch.ones(2, 2), 1)


def test_batch_scope_fits_one_baseline_and_normalizes_over_every_task_together():
    # Independent computation: numpy least squares on every unmasked step of the batch, then GAE (lambda = 1:
    # returns minus values) and one mean/std over the batch. The per-task scope must differ on the same data.
    raw = random_episodes(num_tasks=3, per_task=2, steps=6, obs_dim=2, seed=5).replace(advantages=None, values=None)
    gamma = 0.9
    batch = with_advantages(raw, gamma, 1.0, scope="batch")
    feats = baseline_features(raw.observations).numpy().reshape(-1, 2 * 2 + 4)
    rows = raw.mask.numpy().reshape(-1) > 0
    returns = discounted_returns(raw.rewards, raw.mask, gamma).numpy().reshape(-1)
    x, y = feats[rows], returns[rows]
    w = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
    values = np.zeros_like(returns)
    values[rows] = x @ w
    np.testing.assert_allclose(batch.values.numpy().reshape(-1), values, rtol=1e-6, atol=1e-8)
    adv = (returns - values)[rows]
    expected = np.zeros_like(returns)
    expected[rows] = (adv - adv.mean()) / (adv.std() + 1e-8)
    np.testing.assert_allclose(batch.advantages.numpy().reshape(-1), expected, rtol=1e-6, atol=1e-8)
    per_task = with_advantages(raw, gamma, 1.0, scope="task")
    assert not torch.allclose(per_task.values, batch.values)
    with pytest.raises(ValueError, match="scope must be one of task, batch"):
        with_advantages(raw, gamma, 1.0, scope="episode")


def test_clipped_baseline_matches_rllab_features_written_out():
    """``obs_clip`` (``maml.baseline_obs_clip``) is rllab's LinearFeatureBaseline: features from ``clip(o, -c, c)``,
    written out here in numpy, with the time features untouched; without it large observations change the fit."""
    g = torch.Generator().manual_seed(4)
    steps, n, d, clip = 9, 5, 3, 1.5
    obs = 3 * torch.randn(steps, n, d, generator=g, dtype=torch.float64)  # many entries beyond ±1.5
    targets = torch.randn(steps, n, generator=g, dtype=torch.float64)
    mask = torch.ones(steps, n, dtype=torch.float64)
    values = fit_linear_baseline(obs, targets, mask, 1, obs_clip=clip)
    o = np.clip(obs.numpy(), -clip, clip).reshape(-1, d)
    t = np.repeat(np.arange(steps) / 100.0, n)[:, None]
    x = np.concatenate([o, o**2, t, t**2, t**3, np.ones_like(t)], axis=1)
    y = targets.numpy().reshape(-1)
    w = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
    np.testing.assert_allclose(values.numpy().reshape(-1), x @ w, rtol=1e-6, atol=1e-8)
    assert not torch.allclose(values, fit_linear_baseline(obs, targets, mask, 1))
    # a clip beyond every observation changes nothing
    np.testing.assert_array_equal(fit_linear_baseline(obs, targets, mask, 1, obs_clip=1e3).numpy(),
                                  fit_linear_baseline(obs, targets, mask, 1).numpy())


def test_with_advantages_passes_the_clip_to_the_baseline():
    raw = random_episodes(num_tasks=2, per_task=3, steps=6, obs_dim=2, seed=3).replace(advantages=None, values=None)
    raw = raw.replace(observations=raw.observations * 20)
    clipped = with_advantages(raw, 0.9, 1.0, obs_clip=10.0)
    expected = fit_linear_baseline(raw.observations, discounted_returns(raw.rewards, raw.mask, 0.9), raw.mask, 2,
                                   obs_clip=10.0)
    torch.testing.assert_close(clipped.values, expected)
    assert not torch.allclose(clipped.values, with_advantages(raw, 0.9, 1.0).values)
