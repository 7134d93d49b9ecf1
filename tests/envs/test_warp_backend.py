"""The ``warp`` backend of the locomotion families (``mujoco_warp``) against the native backend, on warp's CPU device.

``mujoco_warp`` computes in float32 and native MuJoCo in float64: from the same state and controls the joint
positions agree to about 1e-7 for a step or two, then drift apart chaotically, and an Ant world
whose float32 contact solve stops at a different iterate can jump to ~1e-3 in one step. So trajectories are
compared over two steps (tolerances below), contact states world by world, and longer rollouts by statistics.
Kernel compilation is slow on the CPU (tens of seconds, cached in ``~/.cache/warp``): every environment is built
once per module.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco_warp")

import envs.locomotion  # noqa: F401  (registers the families)
from envs.base import make_family
from envs.locomotion.common import LocomotionFamily

N = 8
#: float32 physics against float64 physics after two environment steps (10 physics steps)
QPOS_ATOL = 1e-5
#: observations hold qvel (up to ~10): float32 rounding and solver differences
OBS_ATOL = 1e-3
#: rewards hold v_x = Δx / 0.05, so 20 × the position error
REWARD_ATOL = 1e-4


class Pair:
    """A native and a warp vector env of one family (same tasks), built once per module."""

    def __init__(self, name: str, **options) -> None:
        self.native_family = make_family(name, **options)
        self.warp_family: LocomotionFamily = make_family(name, backend="warp", **options)
        self.native = self.native_family.make_vector_env(N)
        self.warp = self.warp_family.make_vector_env(N, device="cpu")
        tasks = self.native_family.sample_tasks(N, np.random.default_rng(0))
        self.native.set_tasks(tasks)
        self.warp.set_tasks(tasks)

    def start_states(self, seed: int, warmup_steps: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Native reset (and random steps) from ``seed``; the state rounded to float32 so both start alike."""
        self.native.reset(seed=seed)
        rng = np.random.default_rng(seed)
        for _ in range(warmup_steps):
            self.native.step(rng.uniform(-1, 1, self.native.action_space.shape))
        qpos, qvel = self.native.get_state()
        return qpos.astype(np.float32).astype(np.float64), qvel.astype(np.float32).astype(np.float64)

    def actions(self, seed: int, steps: int) -> np.ndarray:
        return np.random.default_rng(seed + 100).uniform(-1.2, 1.2, (steps, *self.native.action_space.shape))


PAIR_SPECS = {
    "halfcheetah-vel": ("halfcheetah-vel", {}),
    "halfcheetah-dir-oracle": ("halfcheetah-dir", {"oracle": True}),
    "ant-vel": ("ant-vel", {}),
    "ant-dir": ("ant-dir", {}),
    "ant-goal-oracle": ("ant-goal", {"oracle": True}),
    "ant-vel-contact": ("ant-vel", {"use_contact_forces": True}),
    "ant-vel-reference": ("ant-vel", {"reference_model": True}),  # 0.02 s in one step, softer contacts
    "hopper-params": ("hopper-params", {}),  # random per-world masses, inertias, damping, friction
    "ant-dir2d-oracle": ("ant-dir2d", {"oracle": True}),
}


@pytest.fixture(scope="module")
def pairs():
    """Lazily built ``Pair`` per key of ``PAIR_SPECS`` (the compiled kernels are shared by all)."""
    built: dict[str, Pair] = {}

    def get(key: str) -> Pair:
        if key not in built:
            name, options = PAIR_SPECS[key]
            built[key] = Pair(name, **options)
        return built[key]

    return get


def as_numpy(value) -> np.ndarray:
    assert isinstance(value, torch.Tensor) and value.device.type == "cpu"
    return value.numpy()


#: pairs whose worlds start in contact, compared in statistics instead (``test_longer_rollouts_agree_in_statistics``):
#: the reference's Ant starts standing on bent legs, and float32 contact solves part from float64 ones by 6e-5 in
#: qpos within two steps
STARTS_IN_CONTACT = ("ant-vel-reference",)


@pytest.mark.parametrize("key", [key for key in PAIR_SPECS if key not in STARTS_IN_CONTACT])
def test_follows_native_for_two_steps(pairs, key):
    pair = pairs(key)
    qpos, qvel = pair.start_states(seed=1)
    native_obs = pair.native.set_state(qpos, qvel)
    warp_obs = pair.warp.set_state(qpos, qvel)
    np.testing.assert_allclose(as_numpy(warp_obs), native_obs, atol=1e-6)
    for t, action in enumerate(pair.actions(1, 2)):
        obs, reward, terminated, truncated, info = pair.native.step(action)
        w_obs, w_reward, w_terminated, w_truncated, w_info = pair.warp.step(torch.as_tensor(action))
        assert w_obs.dtype == torch.float32 and w_reward.dtype == torch.float32
        assert w_obs.shape == (N, pair.native_family.obs_dim) and w_terminated.dtype == torch.bool
        np.testing.assert_allclose(as_numpy(pair.warp.get_state()[0]), pair.native.get_state()[0], atol=QPOS_ATOL)
        np.testing.assert_allclose(as_numpy(w_obs), obs, atol=OBS_ATOL, err_msg=f"step {t}")
        np.testing.assert_allclose(as_numpy(w_reward), reward, atol=REWARD_ATOL, err_msg=f"step {t}")
        assert set(w_info) == set(info)
        for name in info:
            np.testing.assert_allclose(as_numpy(w_info[name]), info[name], atol=REWARD_ATOL, err_msg=name)
        np.testing.assert_array_equal(as_numpy(w_terminated), terminated)
        np.testing.assert_array_equal(as_numpy(w_truncated), truncated)
        # the reward is the sum of its reported terms
        terms = [as_numpy(value) for name, value in w_info.items() if name.startswith("reward_")]
        np.testing.assert_allclose(as_numpy(w_reward), np.sum(terms, axis=0), atol=1e-5)


def test_ant_in_contact_follows_native_world_by_world(pairs):
    """From mid-episode states (legs on the ground, contact forces in obs and reward), one step."""
    pair = pairs("ant-vel-contact")
    agreeing = []
    for seed in (1, 2):
        qpos, qvel = pair.start_states(seed=seed, warmup_steps=12)
        pair.native.set_state(qpos, qvel)
        pair.warp.set_state(qpos, qvel)
        action = pair.actions(seed, 1)[0]
        obs, reward, _, _, info = pair.native.step(action)
        w_obs, w_reward, _, _, w_info = pair.warp.step(action)
        close = np.abs(as_numpy(pair.warp.get_state()[0]) - pair.native.get_state()[0]).max(axis=1) < QPOS_ATOL
        agreeing.append(close)
        np.testing.assert_allclose(as_numpy(w_obs)[close], obs[close], atol=OBS_ATOL)
        np.testing.assert_allclose(as_numpy(w_reward)[close], reward[close], atol=REWARD_ATOL)
        assert (info["reward_contact"][close] < 0).any()  # contact forces were compared
        np.testing.assert_allclose(as_numpy(w_info["reward_contact"])[close], info["reward_contact"][close], atol=1e-6)
    assert np.concatenate(agreeing).mean() >= 0.75


@pytest.mark.parametrize("key", ["halfcheetah-vel", "ant-vel", *STARTS_IN_CONTACT])
def test_longer_rollouts_agree_in_statistics(pairs, key):
    """50 steps from the same states with the same actions: the trajectories decorrelate (chaos; Ant within a
    few steps, HalfCheetah within a few tens), the mean return over the worlds stays within 3 standard errors;
    HalfCheetah's returns over the first 10 steps still agree world by world."""
    pair = pairs(key)
    qpos, qvel = pair.start_states(seed=5)
    pair.native.set_state(qpos, qvel)
    pair.warp.set_state(qpos, qvel)
    native_return, warp_return = np.zeros(N), np.zeros(N)
    for t, action in enumerate(pair.actions(5, 50)):
        native_return += pair.native.step(action)[1]
        warp_return += as_numpy(pair.warp.step(action)[1])
        if t == 9 and key.startswith("halfcheetah"):
            np.testing.assert_allclose(warp_return, native_return, atol=1e-2)
    standard_error = np.std(np.concatenate([native_return, warp_return])) / np.sqrt(N)
    assert abs(warp_return.mean() - native_return.mean()) < 3 * standard_error


def test_tasks_spaces_and_oracle_as_native(pairs):
    pair = pairs("ant-goal-oracle")
    native, warp = pair.native_family, pair.warp_family
    assert type(pair.warp) is type(pair.native)  # one vector environment, two simulators
    assert type(pair.warp.sim).__name__ == "WarpSim" and type(pair.native.sim).__name__ == "BatchedSim"
    np.testing.assert_array_equal(
        warp.sample_tasks(5, np.random.default_rng(3))["goal"], native.sample_tasks(5, np.random.default_rng(3))["goal"]
    )
    assert warp.single_observation_space == native.single_observation_space
    assert warp.single_action_space == native.single_action_space
    obs, _ = pair.warp.reset(seed=0)
    np.testing.assert_array_equal(as_numpy(obs)[:, -2:], pair.native.task_rows["goal"].astype(np.float32))


def test_reset_noise_seeding_and_partial_reset(pairs):
    env = pairs("halfcheetah-vel").warp
    qpos0 = torch.as_tensor(env.family.model.qpos0, dtype=torch.float32)
    first, info = env.reset(seed=3)
    assert info == {} and first.dtype == torch.float32 and first.device == torch.device("cpu")
    qpos, qvel = env.get_state()
    assert ((qpos - qpos0).abs() <= 0.1 + 1e-6).all() and 0.05 < qvel.std() < 0.15
    torch.testing.assert_close(env.reset(seed=3)[0], first, rtol=0, atol=0)
    assert not torch.equal(env.reset(seed=4)[0], first)
    env.reset(seed=3)
    for _ in range(2):
        env.step(torch.zeros(N, 6))
    stepped = env.get_state()[0]
    mask = torch.zeros(N, dtype=torch.bool)
    mask[[1, 5]] = True
    env.reset(options={"reset_mask": mask})
    after = env.get_state()[0]
    torch.testing.assert_close(after[~mask], stepped[~mask], rtol=0, atol=0)
    assert not torch.equal(after[mask], stepped[mask])
    assert env._elapsed.tolist() == [0 if m else 2 for m in mask.tolist()]


def test_reference_model_start_states_on_the_device(pairs):
    """The reference's start (``reference_model``): its pose plus N(0, 0.01) on qpos and N(0, 0.1) on qvel, drawn by
    the device generator; seeded like every other reset."""
    env = pairs("ant-vel-reference").warp
    init = torch.as_tensor(env.family.init_qpos, dtype=torch.float32)
    assert init[2] == pytest.approx(0.55) and init[8] == pytest.approx(1.0)  # the torso's height, a bent ankle
    draws = []
    for seed in range(40):  # 40 × 8 worlds
        first, _ = env.reset(seed=seed)
        torch.testing.assert_close(env.reset(seed=seed)[0], first, rtol=0, atol=0)
        draws.append(env.get_state())
    qpos = torch.cat([q for q, _ in draws]) - init
    qvel = torch.cat([v for _, v in draws])
    assert qpos.abs().mean(0).max() < 0.012 and 0.009 < qpos.std() < 0.011  # mean |N(0, 0.01)| = 0.008
    assert 0.09 < qvel.std() < 0.11 and qvel.mean().abs() < 0.01


def test_termination_freezes_and_unstable_worlds_reset(pairs):
    env = pairs("ant-dir").warp
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    qpos[2, 2] = 1.5  # torso above the healthy range: terminates on the first step
    qvel[5, 3] = float("nan")  # non-finite: unstable
    env.set_state(qpos, qvel)
    action = torch.zeros(N, 8)
    obs, reward, terminated, _, info = env.step(action)
    assert terminated.tolist() == [i in (2, 5) for i in range(N)]
    assert info["unstable"].tolist() == [i == 5 for i in range(N)]
    assert reward[2] != 0 and reward[5] == 0 and torch.isfinite(obs).all()
    frozen_state = env.get_state()
    torch.testing.assert_close(frozen_state[0][5], torch.as_tensor(env.family.model.qpos0, dtype=torch.float32))
    obs2, reward2, terminated2, _, info2 = env.step(torch.ones(N, 8))
    for i in (2, 5):  # frozen: same state and observation, reward 0
        torch.testing.assert_close(obs2[i], obs[i], rtol=0, atol=0)
        torch.testing.assert_close(env.get_state()[0][i], frozen_state[0][i], rtol=0, atol=0)
        assert reward2[i] == 0 and terminated2[i]
    assert not info2["unstable"].any() and not torch.equal(obs2[0], obs[0])


def test_graph_replay_equals_eager_launches(pairs):
    family = pairs("halfcheetah-vel").warp_family
    from envs.locomotion import LocomotionVectorEnv

    envs_ = [LocomotionVectorEnv(family, 2, max_episode_steps=10, use_graph=flag) for flag in (True, False)]
    results = []
    for env in envs_:
        env.set_tasks({"velocity": np.ones(2)})
        env.reset(seed=0)
        results.append([env.step(torch.full((2, 6), 0.3 * k))[0] for k in range(3)])
    for graph_obs, eager_obs in zip(*results, strict=True):
        torch.testing.assert_close(graph_obs, eager_obs, rtol=0, atol=0)


def test_actions_validated_and_clipped(pairs):
    env = pairs("halfcheetah-vel").warp
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    with pytest.raises(ValueError, match="finite"):
        env.step(torch.full((N, 6), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(N, 5))
    clipped = env.step(torch.ones(N, 6))[0]
    env.set_state(qpos, qvel)
    torch.testing.assert_close(env.step(np.full((N, 6), 3.0))[0], clipped, rtol=0, atol=0)


def test_backend_option_and_device_errors(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        make_family("ant-vel", backend="jax")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            make_family("halfcheetah-vel", backend="warp").make_vector_env(2, device="cuda")
    with pytest.raises(ValueError, match="cpu"):
        make_family("halfcheetah-vel", backend="warp").make_vector_env(2, device="meta")
    with pytest.raises(ValueError, match="device"):
        make_family("halfcheetah-vel").make_vector_env(2, device="cuda")
    with pytest.raises(ValueError, match="PGS"):  # humanoid.xml's solver is not in mujoco_warp
        make_family("humanoid-dir", backend="warp")
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mujoco_warp" else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError, match="pip install"):
        make_family("ant-goal", backend="warp")


def test_per_world_parameters_and_derived_constants_as_native(pairs):
    """Each world's masses, damping and the constants ``set_const`` derives from them (subtree masses, inverse
    weights) equal the native simulator's per-simulation values (``mujoco.batch``'s ``mj_setConst``)."""
    pair = pairs("hopper-params")
    for name in ("body_mass", "body_inertia", "dof_damping", "geom_friction", "body_subtreemass", "dof_invweight0"):
        warp_values = getattr(pair.warp.sim._model, name).numpy()
        native_values = pair.native.sim._batch.expanded(name)
        assert warp_values.shape == native_values.shape == (N, *native_values.shape[1:])
        np.testing.assert_allclose(warp_values, native_values, rtol=1e-5, err_msg=name)
        assert np.abs(native_values[0] - native_values[1]).max() > 0, name  # the worlds differ


def test_env_device_is_the_learner_device():
    assert make_family("ant-goal", backend="warp").env_device("cuda:1") == "cuda:1"


def test_single_env_registration(pairs):
    import gymnasium as gym

    pairs("halfcheetah-vel")  # kernels compiled
    env = gym.make("HalfCheetahVel-v0", task={"velocity": 1.0}, backend="warp")
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.shape == (17,)
    obs, reward, terminated, _, _ = env.step(env.action_space.sample())
    assert np.isfinite(obs).all() and isinstance(reward, float) and not terminated


# ----------------------------------------------------------------------------------------------- GPU (CUDA)


@pytest.mark.parametrize("use_graph", [True, False])
@pytest.mark.parametrize("name", ["halfcheetah-vel", "ant-vel"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_follows_native(name, use_graph):
    """warp on CUDA (graph replay or eager launches, sync-free defaults) against native MuJoCo: two steps from
    the same state under the same actions, with the tolerances of the CPU-device comparison above."""
    from envs.locomotion import LocomotionVectorEnv

    native_family, warp_family = make_family(name), make_family(name, backend="warp")
    native = native_family.make_vector_env(N)
    cuda = LocomotionVectorEnv(warp_family, N, max_episode_steps=200, device="cuda", use_graph=use_graph)
    assert cuda.sim.sync_free and cuda.deferred_action_checks
    tasks = native_family.sample_tasks(N, np.random.default_rng(0))
    native.set_tasks(tasks)
    cuda.set_tasks(tasks)
    native.reset(seed=1)
    qpos, qvel = (value.astype(np.float32).astype(np.float64) for value in native.get_state())
    native.set_state(qpos, qvel)
    cuda.set_state(qpos, qvel)
    for t, action in enumerate(np.random.default_rng(1).uniform(-1, 1, (2, N, native_family.model.nu))):
        obs, reward, terminated, _, info = native.step(action)
        c_obs, c_reward, c_terminated, _, c_info = cuda.step(torch.as_tensor(action, device="cuda"))
        assert c_obs.device.type == "cuda" and c_info["unstable"].device.type == "cuda"
        np.testing.assert_allclose(cuda.get_state()[0].cpu().numpy(), native.get_state()[0], atol=QPOS_ATOL)
        np.testing.assert_allclose(c_obs.cpu().numpy(), obs, atol=OBS_ATOL, err_msg=f"step {t}")
        np.testing.assert_allclose(c_reward.cpu().numpy(), reward, atol=REWARD_ATOL, err_msg=f"step {t}")
        np.testing.assert_array_equal(c_terminated.cpu().numpy(), terminated)
        assert set(c_info) == set(info) and not c_info["unstable"].any()
        for key in info:
            np.testing.assert_allclose(c_info[key].cpu().numpy(), info[key], atol=REWARD_ATOL, err_msg=key)
    cuda.close()


@pytest.mark.parametrize("cuda_defaults", [False, True], ids=["cpu-defaults", "cuda-defaults"])
def test_training_through_the_learner_with_the_warp_backend(tmp_path, cuda_defaults):
    """The learner consumes the warp backend's device tensors unchanged: one tiny meta-iteration trains, also
    with the CUDA defaults (sync-free instability resets, deferred action checks) switched on."""
    import math

    from maml_rl.config import load_config
    from maml_rl.trainer import Trainer

    config = load_config(
        "experiments/halfcheetah-vel/paper.yaml",
        ["env.options={backend: warp}", "maml.meta_batch_size=2", "maml.fast_batch_size=2", "env.horizon=6",
         "policy.hidden_sizes=[8]", "train.num_iterations=1"],
    )
    trainer = Trainer(config, tmp_path)
    trainer.env.sim.sync_free = trainer.env.deferred_action_checks = cuda_defaults
    (row,) = trainer.train(progress=False)
    assert row["env/steps"] == 2 * 2 * 2 * 6  # train + validation, no early terminations for HalfCheetah
    for name in ("returns/pre_adapt_mean", "returns/post_adapt_mean", "trpo/surrogate_before"):
        assert math.isfinite(row[name]), name
    assert row["trpo/step_accepted"] == 1.0


def test_sync_free_mode_resets_unstable_worlds_and_defers_action_checks(pairs):
    """The CUDA defaults (no host synchronization per step), exercised on warp's CPU device."""
    env = pairs("ant-dir").warp
    env.sim.sync_free, env.deferred_action_checks = True, True
    try:
        env.reset(seed=0)
        qpos, qvel = env.get_state()
        qvel[5, 3] = float("nan")
        env.set_state(qpos, qvel)
        obs, reward, terminated, _, info = env.step(torch.zeros(N, 8))
        assert info["unstable"].tolist() == [i == 5 for i in range(N)]
        assert terminated[5] and reward[5] == 0 and torch.isfinite(obs).all()
        torch.testing.assert_close(env.get_state()[0][5], torch.as_tensor(env.family.model.qpos0, dtype=torch.float32))
        env.reset(seed=0)
        bad = torch.zeros(N, 8)
        bad[1, 0] = float("nan")
        env.step(bad)  # no exception here: the check is deferred
        with pytest.raises(ValueError, match="non-finite actions"):
            env.reset(seed=0)
        env.reset(seed=0)  # the flag was cleared
    finally:
        env.sim.sync_free, env.deferred_action_checks = False, False
        env.reset(seed=0)


@pytest.mark.parametrize("key", ["halfcheetah-vel", "ant-dir"])
def test_sync_free_time_step_loop(pairs, key):
    """With the CUDA defaults, collecting an episode synchronizes a fixed number of times, whatever its length
    (counted on warp's CPU device with ``tests.host_sync``); with the CPU defaults, once or more per step."""
    from maml_rl.policies import make_policy, task_params
    from maml_rl.sampling import sample_episodes
    from tests.host_sync import HostSyncCounter

    env = pairs(key).warp
    family = pairs(key).warp_family
    policy = make_policy(
        obs_dim=family.single_observation_space.shape[0], action_space_size=family.model.nu, discrete=False,
        hidden_sizes=(8,), activation="relu", init_std=1.0, min_std=1e-6, generator=torch.Generator().manual_seed(0),
    )
    params = task_params(dict(policy.named_parameters()), 2)

    def syncs(horizon: int, sync_free: bool) -> int:
        env.max_episode_steps = horizon
        env.sim.sync_free = env.deferred_action_checks = sync_free
        with HostSyncCounter() as counter:
            sample_episodes(env, policy, params, 2, torch.Generator().manual_seed(1), seed=2)
        return counter.total

    try:
        syncs(3, True)  # the first reset after set_tasks checks its mask once
        assert syncs(3, True) == syncs(12, True) <= 3
        assert syncs(12, False) - syncs(3, False) >= 9
    finally:
        env.max_episode_steps = 200
        env.sim.sync_free = env.deferred_action_checks = False
        env.reset(seed=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_with_the_warp_backend(tmp_path):
    """Physics, sampling and the learner on one GPU: two tiny HalfCheetah meta-iterations train."""
    import math

    from maml_rl.config import load_config
    from maml_rl.trainer import Trainer

    config = load_config(
        "experiments/halfcheetah-vel/paper.yaml",
        ["env.options={backend: warp}", "maml.meta_batch_size=4", "maml.fast_batch_size=4", "env.horizon=20",
         "train.num_iterations=2", "train.device=cuda"],
    )
    trainer = Trainer(config, tmp_path)
    assert trainer.env.device.type == "cuda"
    rows = trainer.train(progress=False)
    assert [row["env/steps"] for row in rows] == [2 * 4 * 4 * 20] * 2
    assert all(math.isfinite(row["returns/post_adapt_mean"] + row["trpo/surrogate_after"]) for row in rows)
    assert all(p.device.type == "cuda" for p in trainer.policy.parameters())
