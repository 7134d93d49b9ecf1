"""2D navigation: task distribution, dynamics against numpy, freezing, truncation, validation, gymnasium."""

import importlib.util
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs.navigation
from envs.base import make_family, repeat_tasks
from envs.navigation import Navigation2DEnv, Navigation2DFamily, Navigation2DVectorEnv


def make_env(goals, max_episode_steps=None, device="cpu", oracle=False) -> Navigation2DVectorEnv:
    goals = np.asarray(goals, dtype=np.float32)
    env = Navigation2DFamily(oracle=oracle).make_vector_env(
        len(goals), max_episode_steps=max_episode_steps, device=device
    )
    env.set_tasks({"goal": goals})
    return env


def reference_rollout(goals: np.ndarray, actions: np.ndarray):
    """Independent float64 numpy rollout: actions [T, N, 2] -> obs, rewards, terminated, each [T, N, ...]."""
    position = np.zeros_like(goals, dtype=np.float64)
    done = np.zeros(len(goals), dtype=bool)
    observations, rewards, terminations = [], [], []
    for action in actions:
        moved = position + np.clip(action, -0.1, 0.1)
        position = np.where(done[:, None], position, moved)
        reward = np.where(done, 0.0, -np.sqrt(((position - goals) ** 2).sum(axis=1)))
        done = done | (np.abs(position - goals).max(axis=1) < 0.01)
        observations.append(position.copy())
        rewards.append(reward)
        terminations.append(done.copy())
    return np.stack(observations), np.stack(rewards), np.stack(terminations)


# ------------------------------------------------------------------------------------------- task sampling
def test_sample_tasks_distribution_and_reproducibility():
    family = Navigation2DFamily()
    tasks = family.sample_tasks(4000, np.random.default_rng(0))
    assert set(tasks) == {"goal"}
    goals = tasks["goal"]
    assert goals.shape == (4000, 2) and goals.dtype == np.float32
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.min() < -0.49 and goals.max() > 0.49  # fills the square
    np.testing.assert_allclose(goals.mean(axis=0), 0.0, atol=0.02)  # U[-.5,.5]: sd/sqrt(n) = 0.0046
    np.testing.assert_allclose(goals.var(axis=0), 1 / 12, atol=0.006)
    assert abs(np.corrcoef(goals.T)[0, 1]) < 0.06  # independent coordinates
    np.testing.assert_array_equal(goals, family.sample_tasks(4000, np.random.default_rng(0))["goal"])
    assert not np.array_equal(goals, family.sample_tasks(4000, np.random.default_rng(1))["goal"])


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_sample_tasks_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n"):
        Navigation2DFamily().sample_tasks(n, np.random.default_rng(0))


def test_family_registration_and_default_horizon():
    family = make_family("navigation-2d", oracle=True)
    assert isinstance(family, Navigation2DFamily) and family.oracle
    assert not family.is_discrete
    env = make_family("navigation-2d").make_vector_env(3)
    assert env.max_episode_steps == 100 and env.num_envs == 3
    assert env.single_observation_space.shape == (2,)
    assert env.observation_space.shape == (3, 2) and env.action_space.shape == (3, 2)
    assert env.single_action_space == gym.spaces.Box(-0.1, 0.1, (2,), np.float32)
    with pytest.raises(ValueError, match="oracle"):
        make_family("navigation-2d", oracle="yes")


def test_module_can_be_executed_twice():
    """Re-running the module (as a reload does) must not trip over the registrations it already made."""
    spec = importlib.util.spec_from_file_location("envs._navigation_again", envs.navigation.__file__)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert make_family("navigation-2d").__class__ is Navigation2DFamily
    assert gym.spec("Navigation2D-v0").entry_point == "envs.navigation:Navigation2DEnv"  # registered once
    assert isinstance(gym.make("Navigation2D-v0").unwrapped, Navigation2DEnv)


# ----------------------------------------------------------------------------------------------- dynamics
def test_rollout_matches_numpy_reference():
    rng = np.random.default_rng(3)
    goals = rng.uniform(-0.5, 0.5, size=(7, 2)).astype(np.float32)
    goals[0] = [0.05, -0.03]  # reachable in one step by a small action
    actions = rng.uniform(-0.15, 0.15, size=(30, 7, 2))  # some outside the box: clipped
    actions[0, 0] = [0.05, -0.03]
    env = make_env(goals)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == torch.float32 and obs.shape == (7, 2)
    np.testing.assert_array_equal(obs.numpy(), 0.0)
    ref_obs, ref_rewards, ref_terminated = reference_rollout(goals.astype(np.float64), actions)
    for t in range(30):
        obs, reward, terminated, truncated, info = env.step(actions[t])
        assert reward.dtype == torch.float32 and terminated.dtype == truncated.dtype == torch.bool
        np.testing.assert_allclose(obs.numpy(), ref_obs[t], atol=1e-5)
        np.testing.assert_allclose(reward.numpy(), ref_rewards[t], atol=1e-5)
        np.testing.assert_array_equal(terminated.numpy(), ref_terminated[t])
        assert not truncated.any() and info == {}
    assert ref_terminated[0, 0] and not ref_terminated[-1, 1:].all()


def test_each_sub_env_runs_its_own_goal():
    goals = np.array([[0.3, 0.0], [-0.2, 0.4], [0.0, 0.0]], dtype=np.float32)
    env = make_env(goals)
    env.reset(seed=0)
    _, reward, terminated, _, _ = env.step(np.full((3, 2), 0.05))
    expected = -np.linalg.norm(goals - 0.05, axis=1)
    np.testing.assert_allclose(reward.numpy(), expected, atol=1e-6)
    assert len(set(reward.tolist())) == 3 and not terminated.any()


def test_frozen_after_termination():
    goals = np.array([[0.255, -0.148], [0.4, 0.4]], dtype=np.float32)
    env = make_env(goals)
    env.reset(seed=0)
    step = torch.tensor([[0.1, -0.05], [0.1, 0.1]])
    for _ in range(2):
        _, reward, terminated, _, _ = env.step(step)
        assert not terminated.any()
    obs, reward, terminated, _, _ = env.step(torch.tensor([[0.05, -0.05], [0.1, 0.1]]))
    np.testing.assert_allclose(obs[0].numpy(), [0.25, -0.15], atol=1e-6)
    assert terminated.tolist() == [True, False]
    np.testing.assert_allclose(reward[0].item(), -np.hypot(0.005, 0.002), atol=1e-6)  # arrival step counts
    for t in range(3):
        obs, reward, terminated, truncated, _ = env.step(torch.tensor([[0.1, 0.1], [0.01, -0.02]]))
        np.testing.assert_allclose(obs[0].numpy(), [0.25, -0.15], atol=1e-6)  # frozen
        assert reward[0].item() == 0.0 and terminated.tolist() == [True, False] and not truncated.any()
        np.testing.assert_allclose(obs[1].numpy(), [0.3 + 0.01 * (t + 1), 0.3 - 0.02 * (t + 1)], atol=1e-6)
        assert reward[1].item() < 0.0
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs.numpy(), 0.0)
    _, reward, terminated, _, _ = env.step(torch.zeros(2, 2))
    assert not terminated.any() and reward[0].item() < 0.0  # reset un-freezes


def test_termination_uses_the_max_norm():
    """``‖p − g‖∞ < 0.01``: offset (0.009, 0.009) terminates (Euclidean 0.0127), 0.011 on one axis not."""
    goals = np.array([[0.109, 0.109], [0.111, 0.1], [0.1, -0.091], [0.1, 0.1]], dtype=np.float32)
    env = make_env(goals)
    env.reset(seed=0)
    *_, terminated, _, _ = env.step(np.array([[0.1, 0.1], [0.1, 0.1], [0.1, -0.1], [0.1, 0.1]]))
    assert terminated.tolist() == [True, False, True, True]


def test_truncation_at_max_episode_steps():
    env = make_env(np.full((4, 2), 0.45), max_episode_steps=5)
    env.reset(seed=0)
    for t in range(1, 8):
        *_, terminated, truncated, _ = env.step(np.zeros((4, 2), dtype=np.float32))
        assert truncated.tolist() == [t >= 5] * 4
        assert not terminated.any()
    env.reset()
    *_, truncated, _ = env.step(np.zeros((4, 2)))
    assert not truncated.any()


def test_actions_are_clipped():
    env = make_env(np.zeros((3, 2)))
    env.reset(seed=0)
    obs, *_ = env.step(np.array([[5.0, -5.0], [0.2, 0.05], [-1e9, 1e-3]]))
    np.testing.assert_allclose(obs.numpy(), [[0.1, -0.1], [0.1, 0.05], [-0.1, 1e-3]], atol=1e-7)


def test_oracle_observation_appends_goal():
    goals = np.array([[0.1, 0.2], [-0.3, 0.4]], dtype=np.float32)
    env = make_env(goals, oracle=True)
    assert env.single_observation_space.shape == (4,)
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs.numpy(), [[0, 0, 0.1, 0.2], [0, 0, -0.3, 0.4]])
    obs, *_ = env.step(np.full((2, 2), 0.1))
    np.testing.assert_allclose(obs.numpy(), [[0.1, 0.1, 0.1, 0.2], [0.1, 0.1, -0.3, 0.4]], atol=1e-7)


def test_returned_tensors_are_not_the_internal_state():
    env = make_env(np.full((2, 2), 0.4))
    obs, _ = env.reset(seed=0)
    obs += 1.0  # a caller writing into its observation must not move the point
    obs, *_ = env.step(np.zeros((2, 2)))
    np.testing.assert_array_equal(obs.numpy(), 0.0)


# --------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_raise(bad):
    env = make_env(np.zeros((2, 2)))
    env.reset(seed=0)
    actions = np.zeros((2, 2))
    actions[1, 0] = bad
    with pytest.raises(ValueError, match="finite"):
        env.step(actions)
    with pytest.raises(ValueError, match="finite"):
        env.step(torch.as_tensor(actions))


@pytest.mark.parametrize("shape", [(2,), (2, 3), (3, 2), (2, 2, 1)])
def test_bad_action_shape_raises(shape):
    env = make_env(np.zeros((2, 2)))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(shape))


@pytest.mark.parametrize(
    ("tasks", "match"),
    [
        ({"goal": np.zeros((3, 2))}, r"'goal'.*\[2, 2\]"),
        ({"goal": np.zeros((2, 3))}, r"'goal'.*\[2, 2\]"),
        ({"goal": np.zeros(2)}, r"'goal'.*\[2, 2\]"),
        ({"goal": np.array([[0.0, np.nan], [0.0, 0.0]])}, "finite"),
        ({}, "missing"),
        ({"goal": np.zeros((2, 2)), "mass": np.zeros(2)}, "unexpected"),
    ],
)
def test_bad_tasks_raise(tasks, match):
    env = Navigation2DFamily().make_vector_env(2)
    with pytest.raises(ValueError, match=match):
        env.set_tasks(tasks)


def test_call_order_is_enforced():
    env = Navigation2DFamily().make_vector_env(2)
    with pytest.raises(RuntimeError, match="set_tasks"):
        env.reset(seed=0)
    env.set_tasks({"goal": np.zeros((2, 2))})
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((2, 2)))
    env.reset(seed=0)
    env.step(np.zeros((2, 2)))
    env.set_tasks({"goal": np.ones((2, 2)) * 0.3})
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"reset_mask": np.ones(2, dtype=bool)})


def test_repeat_tasks_layout():
    family = Navigation2DFamily()
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    env = family.make_vector_env(6)
    env.set_tasks(repeat_tasks(tasks, 2))
    env.reset(seed=0)
    _, reward, *_ = env.step(np.zeros((6, 2)))
    expected = -np.repeat(np.linalg.norm(tasks["goal"], axis=1), 2)  # row m * 2 + e runs task m
    np.testing.assert_allclose(reward.numpy(), expected, atol=1e-6)


# ------------------------------------------------------------------------------------------ gymnasium API
_EXPECTED_WARNINGS = ("infinity", "different from the unwrapped")


def _check_env_quietly(env: gym.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    unexpected = [str(w.message) for w in caught if not any(s in str(w.message) for s in _EXPECTED_WARNINGS)]
    assert not unexpected


@pytest.mark.parametrize("task", [None, {"goal": np.array([0.2, -0.1])}])
def test_gymnasium_check_env(task):
    env = gym.make("Navigation2D-v0", task=task)
    _check_env_quietly(env.unwrapped)
    _check_env_quietly(env)
    assert env.spec.max_episode_steps == 100
    assert isinstance(env.unwrapped, Navigation2DEnv)


def test_single_env_episode():
    env = gym.make("Navigation2D-v0", task={"goal": [0.15, 0.0]})
    obs, info = env.reset(seed=1)
    assert obs.dtype == np.float32 and obs.shape == (2,) and info == {}
    obs, reward, terminated, truncated, _ = env.step(np.array([0.1, 0.0], dtype=np.float32))
    np.testing.assert_allclose(obs, [0.1, 0.0], atol=1e-7)
    assert reward == pytest.approx(-0.05, abs=1e-6) and not terminated and not truncated
    obs, reward, terminated, truncated, _ = env.step(np.array([0.05, 0.0], dtype=np.float32))
    assert terminated and not truncated and reward == pytest.approx(0.0, abs=1e-6)
    oracle = gym.make("Navigation2D-v0", oracle=True)
    obs, _ = oracle.reset(seed=0)
    assert obs.shape == (4,) and np.all(np.abs(obs[2:]) <= 0.5)
    for _ in range(99):
        *_, truncated, _ = oracle.step(np.zeros(2, dtype=np.float32))
        assert not truncated
    *_, truncated, _ = oracle.step(np.zeros(2, dtype=np.float32))
    assert truncated


# ----------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(5)
    goals = rng.uniform(-0.5, 0.5, size=(64, 2)).astype(np.float32)
    actions = rng.uniform(-0.15, 0.15, size=(20, 64, 2)).astype(np.float32)
    cpu, gpu = make_env(goals), make_env(goals, device="cuda")
    assert gpu.device.type == "cuda"
    cpu.reset(seed=0)
    obs_gpu, _ = gpu.reset(seed=0)
    assert obs_gpu.device.type == "cuda"
    for t in range(20):
        action = torch.as_tensor(actions[t], device="cuda") if t % 2 else actions[t]
        out_cpu, out_gpu = cpu.step(actions[t]), gpu.step(action)
        for a, b in zip(out_cpu[:4], out_gpu[:4], strict=True):
            assert b.device.type == "cuda" and a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(b.cpu().numpy(), a.numpy(), atol=1e-6)


def test_deferred_action_checks_raise_at_the_next_reset():
    """The CUDA mode (no host synchronization per step), exercised on the CPU."""
    env = make_env(np.array([[0.3, 0.3]], dtype=np.float32))
    env.deferred_action_checks = True
    env.reset(seed=0)
    obs, *_ = env.step(np.array([[np.nan, 0.0]], dtype=np.float32))  # no exception here
    assert torch.isnan(obs).any()
    with pytest.raises(ValueError, match="invalid actions"):
        env.reset(seed=0)
    env.reset(seed=0)  # the flag was cleared
    env.step(np.array([[0.05, 0.0]], dtype=np.float32))
    env.reset(seed=0)
