"""Tabular MDPs: task distribution, transition and reward statistics, seeding, validation, gymnasium."""

import importlib.util
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs.tabular_mdp
from envs.base import make_family, repeat_tasks
from envs.tabular_mdp import TabularMDPEnv, TabularMDPFamily, TabularMDPVectorEnv

S, A = 10, 5


def make_env(tasks, max_episode_steps=None, device="cpu") -> TabularMDPVectorEnv:
    n, s, a = tasks["reward_means"].shape
    family = TabularMDPFamily(num_states=s, num_actions=a)
    env = family.make_vector_env(n, max_episode_steps=max_episode_steps, device=device)
    env.set_tasks(tasks)
    return env


def cyclic_task(shift: int, reward: float = 1.0, s: int = S, a: int = A) -> dict[str, np.ndarray]:
    """One deterministic MDP: action ``j`` in state ``i`` leads to ``(i + j + shift) % s``."""
    transitions = np.zeros((1, s, a, s), dtype=np.float32)
    for i in range(s):
        for j in range(a):
            transitions[0, i, j, (i + j + shift) % s] = 1.0
    return {"transitions": transitions, "reward_means": np.full((1, s, a), reward, dtype=np.float32)}


def concat(*tasks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([t[key] for t in tasks]) for key in tasks[0]}


def rollout(env: TabularMDPVectorEnv, actions: np.ndarray, seed: int | None):
    """States [T + 1, N] (decoded from the one-hot observations) and rewards [T, N] for actions [T, N]."""
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs.numpy()], []
    for action in actions:
        obs, reward, terminated, _, _ = env.step(action)
        assert not terminated.any()
        observations.append(obs.numpy())
        rewards.append(reward.numpy())
    observations = np.stack(observations)
    assert observations.dtype == np.float32 and np.all(observations.sum(axis=-1) == 1.0)
    assert set(np.unique(observations)) == {0.0, 1.0}
    return observations.argmax(axis=-1), np.stack(rewards)


# ------------------------------------------------------------------------------------------- task sampling
def test_sample_tasks_distribution_and_reproducibility():
    family = TabularMDPFamily()
    tasks = family.sample_tasks(300, np.random.default_rng(0))
    transitions, reward_means = tasks["transitions"], tasks["reward_means"]
    assert set(tasks) == {"transitions", "reward_means"}
    assert transitions.shape == (300, S, A, S) and transitions.dtype == np.float32
    assert reward_means.shape == (300, S, A) and reward_means.dtype == np.float32
    assert transitions.min() >= 0.0
    np.testing.assert_allclose(transitions.sum(axis=-1), 1.0, atol=1e-5)
    # Dirichlet(1, ..., 1) on S = 10 states: each entry ~ Beta(1, 9), mean 0.1, variance 9 / 1100,
    # P(entry > 0.5) = 0.5^9. A normalized U[0, 1] vector would have variance about 0.0029 instead.
    np.testing.assert_allclose(transitions.mean(), 1 / S, atol=1e-6)  # forced by the sums
    np.testing.assert_allclose(transitions.var(), 9 / 1100, rtol=0.03)
    np.testing.assert_allclose((transitions > 0.5).mean(), 0.5**9, atol=5e-4)
    np.testing.assert_allclose(reward_means.mean(), 1.0, atol=0.03)  # N(1, 1), 15000 draws
    np.testing.assert_allclose(reward_means.std(), 1.0, atol=0.03)
    np.testing.assert_allclose((reward_means < 0.0).mean(), 0.1587, atol=0.012)
    again = family.sample_tasks(300, np.random.default_rng(0))
    np.testing.assert_array_equal(transitions, again["transitions"])
    np.testing.assert_array_equal(reward_means, again["reward_means"])
    other = family.sample_tasks(300, np.random.default_rng(1))
    assert not np.array_equal(transitions, other["transitions"])
    assert not np.array_equal(reward_means, other["reward_means"])
    small = TabularMDPFamily(num_states=3, num_actions=2).sample_tasks(4, np.random.default_rng(0))
    assert small["transitions"].shape == (4, 3, 2, 3) and small["reward_means"].shape == (4, 3, 2)


@pytest.mark.parametrize("n", [0, -1])
def test_sample_tasks_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n"):
        TabularMDPFamily().sample_tasks(n, np.random.default_rng(0))


def test_family_options_and_spaces():
    family = make_family("tabular-mdp", num_states=4, num_actions=3)
    assert family.is_discrete and family.single_action_space == gym.spaces.Discrete(3)
    env = family.make_vector_env(2)
    assert env.max_episode_steps == 10
    assert env.single_observation_space.shape == (4,) and env.observation_space.shape == (2, 4)
    assert env.action_space == gym.spaces.MultiDiscrete([3, 3])
    for key in ("num_states", "num_actions"):
        with pytest.raises(ValueError, match=key):
            make_family("tabular-mdp", **{key: 0})


def test_module_can_be_executed_twice():
    spec = importlib.util.spec_from_file_location("envs._tabular_mdp_again", envs.tabular_mdp.__file__)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert gym.spec("TabularMDP-v0").entry_point == "envs.tabular_mdp:TabularMDPEnv"  # registered once
    assert isinstance(gym.make("TabularMDP-v0").unwrapped, TabularMDPEnv)


# -------------------------------------------------------------------------------------------- dynamics
def test_deterministic_transitions_match_numpy_and_each_env_runs_its_task():
    tasks = concat(cyclic_task(1, reward=2.0), cyclic_task(3, reward=-1.0), cyclic_task(0, reward=0.5))
    env = make_env(tasks, max_episode_steps=40)
    actions = np.random.default_rng(0).integers(0, A, size=(40, 3))
    states, rewards = rollout(env, actions, seed=0)
    expected = np.zeros((41, 3), dtype=np.int64)
    for t in range(40):
        expected[t + 1] = (expected[t] + actions[t] + np.array([1, 3, 0])) % S
    np.testing.assert_array_equal(states, expected)
    noise = rewards - np.array([2.0, -1.0, 0.5])  # reward = R[s, a] + N(0, 1)
    assert abs(noise.mean()) < 4.5 / np.sqrt(noise.size)
    assert abs(noise.std() - 1.0) < 0.15


def test_transition_frequencies_match_p():
    task = TabularMDPFamily().sample_tasks(1, np.random.default_rng(4))
    transitions = task["transitions"][0].astype(np.float64)
    n, steps = 2000, 10
    env = make_env(repeat_tasks(task, n))
    actions = np.random.default_rng(5).integers(0, A, size=(steps, n))
    states, _ = rollout(env, actions, seed=1)
    counts = np.zeros((S, A, S))
    np.add.at(counts, (states[:-1], actions, states[1:]), 1.0)
    # First step: every env starts in state 0.
    assert np.all(states[0] == 0)
    visits = counts.sum(axis=-1, keepdims=True)
    assert visits.min() >= 100
    frequencies = counts / visits
    tolerance = 5.0 * np.sqrt(transitions * (1 - transitions) / visits) + 1e-9
    assert np.all(np.abs(frequencies - transitions) <= tolerance)
    # chi-square over all (s, a) rows: 50 * 9 degrees of freedom, mean 450, sd 30
    expected = visits * transitions
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 450 + 5 * 30


def test_zero_probability_states_are_never_reached():
    transitions = np.zeros((1, 4, 2, 4), dtype=np.float32)
    transitions[0, :, :, 1] = 0.25
    transitions[0, :, :, 3] = 0.75
    tasks = repeat_tasks({"transitions": transitions, "reward_means": np.zeros((1, 4, 2))}, 500)
    env = make_env(tasks, max_episode_steps=6)
    states, _ = rollout(env, np.random.default_rng(0).integers(0, 2, size=(6, 500)), seed=0)
    assert set(np.unique(states[1:])) == {1, 3}
    assert abs((states[1:] == 1).mean() - 0.25) < 0.02


def test_reward_means_per_state_action():
    task = TabularMDPFamily().sample_tasks(1, np.random.default_rng(8))
    n, steps = 1000, 10
    env = make_env(repeat_tasks(task, n))
    actions = np.random.default_rng(9).integers(0, A, size=(steps, n))
    states, rewards = rollout(env, actions, seed=2)
    means = task["reward_means"][0]
    sums, visits = np.zeros((S, A)), np.zeros((S, A))
    np.add.at(sums, (states[:-1], actions), rewards)
    np.add.at(visits, (states[:-1], actions), 1.0)
    assert visits.min() >= 50
    assert np.all(np.abs(sums / visits - means) < 5.0 / np.sqrt(visits))
    residual = rewards - means[states[:-1], actions]
    assert abs(residual.std() - 1.0) < 0.03


def test_seeding_reproduces_trajectories():
    tasks = TabularMDPFamily().sample_tasks(8, np.random.default_rng(0))
    env = make_env(tasks, max_episode_steps=10)
    actions = np.random.default_rng(1).integers(0, A, size=(10, 8))
    states, rewards = rollout(env, actions, seed=5)
    same_states, same_rewards = rollout(make_env(tasks), actions, seed=5)
    np.testing.assert_array_equal(states, same_states)
    np.testing.assert_array_equal(rewards, same_rewards)
    other_states, other_rewards = rollout(env, actions, seed=6)
    assert not np.array_equal(rewards, other_rewards) and not np.array_equal(states, other_states)
    continued = rollout(env, actions, seed=None)[1]
    assert not np.array_equal(continued, other_rewards)
    rollout(env, actions, seed=6)
    np.testing.assert_array_equal(continued, rollout(env, actions, seed=None)[1])


def test_truncation():
    env = make_env(cyclic_task(1), max_episode_steps=3)
    env.reset(seed=0)
    for t in range(1, 5):
        *_, terminated, truncated, _ = env.step(np.array([2]))
        assert truncated.tolist() == [t >= 3] and terminated.tolist() == [False]
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs.numpy(), np.eye(S, dtype=np.float32)[[0]])


# --------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("actions", "match"),
    [([5], r"\[0, 5\)"), ([-1], r"\[0, 5\)"), ([np.nan], "finite"), ([1.5], "integer"), ([[1]], "shape")],
)
def test_bad_actions_raise(actions, match):
    env = make_env(cyclic_task(1))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(np.array(actions))


def _bad_tasks():
    good = cyclic_task(1)
    rows = dict(good, transitions=good["transitions"] * 0.9)
    negative = good["transitions"].copy()
    negative[0, 0, 0, :2] = [-0.5, 1.5]
    return [
        (dict(good, transitions=np.zeros((1, S, A, S + 1))), r"'transitions'.*\[1, 10, 5, 10\]"),
        (dict(good, transitions=np.zeros((2, S, A, S))), r"'transitions'.*\[1, 10, 5, 10\]"),
        (dict(good, reward_means=np.zeros((1, S, A + 1))), r"'reward_means'.*\[1, 10, 5\]"),
        (dict(good, reward_means=np.zeros((S, A))), r"'reward_means'.*\[1, 10, 5\]"),
        (dict(good, reward_means=np.full((1, S, A), np.inf)), "finite"),
        (rows, "sum to 1"),
        (dict(good, transitions=negative), "non-negative"),
        ({"transitions": good["transitions"]}, "missing"),
    ]


@pytest.mark.parametrize(("tasks", "match"), _bad_tasks())
def test_bad_tasks_raise(tasks, match):
    env = TabularMDPFamily().make_vector_env(1)
    with pytest.raises(ValueError, match=match):
        env.set_tasks(tasks)


# ------------------------------------------------------------------------------------------ gymnasium API
def _check_env_quietly(env: gym.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    unexpected = [str(w.message) for w in caught if "different from the unwrapped" not in str(w.message)]
    assert not unexpected


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"task": {key: value[0] for key, value in cyclic_task(2).items()}},
        {"num_states": 3, "num_actions": 2},
    ],
)
def test_gymnasium_check_env(kwargs):
    env = gym.make("TabularMDP-v0", **kwargs)
    _check_env_quietly(env.unwrapped)
    _check_env_quietly(env)


def test_single_env_episode():
    one_task = {key: value[0] for key, value in cyclic_task(1).items()}  # a single task: no task dimension
    env = gym.make("TabularMDP-v0", task=one_task)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, np.eye(S)[0])
    state = 0
    for t in range(1, 11):
        obs, reward, terminated, truncated, _ = env.step(3)
        state = (state + 4) % S
        np.testing.assert_array_equal(obs, np.eye(S)[state])
        assert isinstance(reward, float) and not terminated and truncated == (t == 10)


# ----------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_vector_env():
    task = TabularMDPFamily().sample_tasks(1, np.random.default_rng(4))
    n = 4000
    env = make_env(repeat_tasks(task, n), device="cuda")
    obs, _ = env.reset(seed=0)
    assert obs.device.type == "cuda" and obs.shape == (n, S)
    obs, reward, terminated, truncated, _ = env.step(torch.full((n,), 2, device="cuda"))
    assert reward.device.type == terminated.device.type == truncated.device.type == "cuda"
    frequencies = obs.sum(dim=0).cpu().numpy() / n
    p = task["transitions"][0, 0, 2]
    assert np.all(np.abs(frequencies - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9)
    residual = (reward - torch.as_tensor(task["reward_means"][0, 0, 2], device="cuda")).cpu().numpy()
    assert abs(residual.mean()) < 0.08 and abs(residual.std() - 1) < 0.06
    env.reset(seed=3)
    first = [env.step(np.full(n, 1))[:2] for _ in range(3)]
    env.reset(seed=3)
    for obs_a, reward_a in first:
        obs_b, reward_b = env.step(np.full(n, 1))[:2]
        assert torch.equal(obs_a, obs_b) and torch.equal(reward_a, reward_b)
