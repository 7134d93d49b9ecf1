"""Bernoulli bandits: task distribution, reward statistics, seeding, truncation, validation, gymnasium."""

import importlib.util
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs.bandit
from envs.bandit import BernoulliBanditEnv, BernoulliBanditFamily, BernoulliBanditVectorEnv
from envs.base import make_family


def make_env(means, max_episode_steps=None, device="cpu") -> BernoulliBanditVectorEnv:
    means = np.asarray(means, dtype=np.float32)
    family = BernoulliBanditFamily(num_arms=means.shape[1])
    env = family.make_vector_env(len(means), max_episode_steps=max_episode_steps, device=device)
    env.set_tasks({"means": means})
    return env


def rollout(env: BernoulliBanditVectorEnv, actions: np.ndarray, seed: int | None) -> np.ndarray:
    """Rewards [T, N] for actions [T, N] after ``reset(seed=seed)``."""
    env.reset(seed=seed)
    return np.stack([env.step(a)[1].numpy() for a in actions])


# ------------------------------------------------------------------------------------------- task sampling
def test_sample_tasks_distribution_and_reproducibility():
    family = BernoulliBanditFamily(num_arms=4)
    means = family.sample_tasks(3000, np.random.default_rng(0))["means"]
    assert means.shape == (3000, 4) and means.dtype == np.float32
    assert means.min() >= 0.0 and means.max() <= 1.0
    np.testing.assert_allclose(means.mean(axis=0), 0.5, atol=0.02)  # sd/sqrt(n) = 0.0053
    np.testing.assert_allclose(means.var(axis=0), 1 / 12, atol=0.007)
    np.testing.assert_allclose((means < 0.1).mean(), 0.1, atol=0.015)  # flat, not bell-shaped
    np.testing.assert_array_equal(means, family.sample_tasks(3000, np.random.default_rng(0))["means"])
    assert not np.array_equal(means, family.sample_tasks(3000, np.random.default_rng(1))["means"])
    assert BernoulliBanditFamily().sample_tasks(2, np.random.default_rng(0))["means"].shape == (2, 5)


@pytest.mark.parametrize("n", [0, -3])
def test_sample_tasks_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n"):
        BernoulliBanditFamily().sample_tasks(n, np.random.default_rng(0))


def test_family_options_and_spaces():
    family = make_family("bernoulli-bandit", num_arms=7)
    assert family.is_discrete and family.single_action_space == gym.spaces.Discrete(7)
    env = family.make_vector_env(3)
    assert env.max_episode_steps == 10 and env.num_envs == 3
    assert env.single_observation_space.shape == (1,) and env.observation_space.shape == (3, 1)
    assert env.action_space == gym.spaces.MultiDiscrete([7, 7, 7])
    assert family.make_vector_env(3, max_episode_steps=100).max_episode_steps == 100
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="num_arms"):
            make_family("bernoulli-bandit", num_arms=bad)
    with pytest.raises(ValueError, match="bad options"):
        make_family("bernoulli-bandit", arms=3)


def test_module_can_be_executed_twice():
    spec = importlib.util.spec_from_file_location("envs._bandit_again", envs.bandit.__file__)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert gym.spec("BernoulliBandit-v0").entry_point == "envs.bandit:BernoulliBanditEnv"  # registered once
    assert isinstance(gym.make("BernoulliBandit-v0").unwrapped, BernoulliBanditEnv)


# ------------------------------------------------------------------------------------------------ rewards
def test_deterministic_arms_and_per_env_tasks():
    """Arms with mean 0 or 1 pay exactly 0 or 1, so each sub-env's reward reveals which task it runs."""
    means = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5], [1.0, 1.0, 0.0]])
    env = make_env(means, max_episode_steps=50)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 1) and obs.dtype == torch.float32 and not obs.any()
    rng = np.random.default_rng(0)
    for _ in range(50):
        actions = rng.integers(0, 2, size=3)
        obs, reward, terminated, _, info = env.step(actions)
        np.testing.assert_array_equal(reward.numpy(), means[np.arange(3), actions])
        assert not obs.any() and not terminated.any() and info == {}


def test_mean_reward_per_arm_matches_means():
    means = np.array([[0.1, 0.5, 0.9, 0.3], [0.7, 0.2, 0.4, 0.95]], dtype=np.float32)
    steps = 4000
    env = make_env(means, max_episode_steps=steps)
    actions = np.random.default_rng(1).integers(0, 4, size=(steps, 2))
    rewards = rollout(env, actions, seed=3)
    assert set(np.unique(rewards)) <= {0.0, 1.0} and rewards.dtype == np.float32
    for i in range(2):
        for arm in range(4):
            pulls = rewards[actions[:, i] == arm, i]
            p = means[i, arm]
            tolerance = 4.5 * np.sqrt(p * (1 - p) / len(pulls))
            assert abs(pulls.mean() - p) < tolerance, (i, arm, pulls.mean(), p)


def test_seeding_reproduces_and_continues_the_stream():
    env = make_env(np.full((16, 3), 0.5), max_episode_steps=20)
    actions = np.random.default_rng(0).integers(0, 3, size=(20, 16))
    first = rollout(env, actions, seed=7)
    np.testing.assert_array_equal(first, rollout(env, actions, seed=7))
    assert not np.array_equal(first, rollout(env, actions, seed=8))
    continued = rollout(env, actions, seed=None)  # after seed 8: continues its stream
    assert not np.array_equal(continued, rollout(env, actions, seed=8))
    np.testing.assert_array_equal(continued, rollout(env, actions, seed=None))  # after seed 8 again
    other = make_env(np.full((16, 3), 0.5), max_episode_steps=20)  # separate envs, same seed: same stream
    np.testing.assert_array_equal(first, rollout(other, actions, seed=7))


def test_unseeded_reset_does_not_touch_global_rng():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    env = make_env(np.full((8, 2), 0.5), max_episode_steps=30)
    rollout(env, np.zeros((30, 8), dtype=np.int64), seed=None)
    assert torch.equal(state, torch.get_rng_state())


def test_truncation_and_no_termination():
    env = make_env(np.full((3, 2), 0.5), max_episode_steps=4)
    env.reset(seed=0)
    for t in range(1, 7):
        *_, terminated, truncated, _ = env.step(torch.ones(3, dtype=torch.int64))
        assert truncated.tolist() == [t >= 4] * 3 and not terminated.any()


def test_action_types():
    means = np.array([[0.0, 1.0], [1.0, 0.0]])
    env = make_env(means)
    env.reset(seed=0)
    for actions in ([1, 1], np.array([1, 1], dtype=np.int32), torch.tensor([1, 1]), np.array([1.0, 1.0])):
        np.testing.assert_array_equal(env.step(actions)[1].numpy(), [1.0, 0.0])


# --------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("actions", "match"),
    [
        ([0, 3], r"\[0, 3\)"),
        ([-1, 0], r"\[0, 3\)"),
        (torch.tensor([5, 0]), r"\[0, 3\)"),
        ([np.nan, 0.0], "finite"),
        ([np.inf, 0.0], "finite"),
        ([0.5, 1.0], "integer"),
        ([0, 1, 2], "shape"),
        ([[0], [1]], "shape"),
        ([True, False], "real"),
    ],
)
def test_bad_actions_raise(actions, match):
    env = make_env(np.full((2, 3), 0.5))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(actions)


@pytest.mark.parametrize(
    ("means", "match"),
    [
        (np.full((2, 4), 0.5), r"'means'.*\[2, 3\]"),
        (np.full((3, 3), 0.5), r"'means'.*\[2, 3\]"),
        (np.full(3, 0.5), r"'means'.*\[2, 3\]"),
        (np.array([[0.5, 1.5, 0.5], [0.5, 0.5, 0.5]]), r"\[0, 1\]"),
        (np.array([[0.5, -0.1, 0.5], [0.5, 0.5, 0.5]]), r"\[0, 1\]"),
    ],
)
def test_bad_tasks_raise(means, match):
    env = BernoulliBanditFamily(num_arms=3).make_vector_env(2)
    with pytest.raises(ValueError, match=match):
        env.set_tasks({"means": means})
    with pytest.raises(ValueError, match="missing"):
        env.set_tasks({"mean": means})


# ------------------------------------------------------------------------------------------ gymnasium API
def _check_env_quietly(env: gym.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    unexpected = [str(w.message) for w in caught if "different from the unwrapped" not in str(w.message)]
    assert not unexpected


@pytest.mark.parametrize("kwargs", [{}, {"task": {"means": [0.2, 0.9, 0.4]}, "num_arms": 3}, {"num_arms": 2}])
def test_gymnasium_check_env(kwargs):
    env = gym.make("BernoulliBandit-v0", **kwargs)
    _check_env_quietly(env.unwrapped)
    _check_env_quietly(env)


def test_single_env_episode():
    env = gym.make("BernoulliBandit-v0", task={"means": [0.0, 1.0, 0.0]}, num_arms=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1,) and obs.dtype == np.float32 and obs[0] == 0.0
    for t in range(1, 11):
        obs, reward, terminated, truncated, _ = env.step(1)
        assert reward == 1.0 and not terminated and truncated == (t == 10)
    env.reset()
    assert env.step(np.int64(0))[1] == 0.0
    direct = BernoulliBanditEnv(max_episode_steps=3)
    direct.reset(seed=0)
    assert [direct.step(0)[3] for _ in range(3)] == [False, False, True]


# ----------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_vector_env():
    means = np.tile(np.array([[0.0, 1.0, 0.5]], dtype=np.float32), (1000, 1))
    env = make_env(means, max_episode_steps=200, device="cuda")
    obs, _ = env.reset(seed=0)
    assert obs.device.type == "cuda" and obs.shape == (1000, 1)
    total = torch.zeros(1000, device="cuda")
    for t in range(200):
        actions = torch.full((1000,), t % 3, device="cuda")
        obs, reward, terminated, truncated, _ = env.step(actions if t % 2 else actions.cpu().numpy())
        assert reward.device.type == terminated.device.type == truncated.device.type == "cuda"
        if t % 3 < 2:
            assert torch.equal(reward, torch.full_like(reward, float(t % 3)))
        else:
            total += reward
    assert abs(total.mean().item() / 66 - 0.5) < 0.01  # 66 pulls of the p=0.5 arm, 1000 envs
    first = rollout_cuda(env)
    assert torch.equal(first, rollout_cuda(env))


def rollout_cuda(env: BernoulliBanditVectorEnv) -> torch.Tensor:
    env.reset(seed=11)
    return torch.stack([env.step(torch.full((env.num_envs,), 2, device="cuda"))[1] for _ in range(5)])


def test_deferred_action_checks_clamp_and_raise_at_the_next_reset():
    """The CUDA mode (no host synchronization per step), exercised on the CPU."""
    family = BernoulliBanditFamily(num_arms=3)
    env = family.make_vector_env(2)
    env.deferred_action_checks = True
    env.set_tasks({"means": np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=np.float32)})
    env.reset(seed=0)
    _, reward, *_ = env.step(np.array([7, 2]))  # 7 is out of range: clamped to arm 2, flagged
    assert reward.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="invalid actions"):
        env.reset(seed=1)
