"""Hopper/Walker2d with randomized parameters, Humanoid 2-D direction, Ant 2-D direction: parity with gymnasium's
v5 robots, per-row model parameters, task distributions, oracle observations, gymnasium registration."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs.locomotion  # noqa: F401  (registers the families)
from envs.base import make_family
from envs.locomotion.hopper_walker import MULTIPLIER_BASES
from envs.locomotion.models import ASSET_DIR, ROBOT_XML

NEW_FAMILIES = {
    "hopper-params": ("HopperParams-v0", 11, 41),
    "walker2d-params": ("Walker2dParams-v0", 17, 65),
    "humanoid-dir": ("HumanoidDir-v0", 348, 2),
    "ant-dir2d": ("AntDir2D-v0", 27, 2),
}


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # gymnasium's model loads may write MUJOCO_LOG.TXT in the cwd


def one_env(name: str, task: dict[str, np.ndarray], **options):
    """A one-sub-environment vector env of ``name`` running ``task`` (arrays without the task dimension)."""
    env = make_family(name, num_threads=1, **options).make_vector_env(1)
    env.set_tasks({key: np.asarray(value)[None] for key, value in task.items()})
    return env


def scale_gymnasium_model(reference, multipliers: dict[str, np.ndarray]) -> None:
    """Multiply gymnasium's model fields in place and recompute MuJoCo's derived constants, written
    independently of the environment code: ``field *= multiplier``, then ``mj_setConst``."""
    model, data = reference.model, reference.data
    for name, multiplier in multipliers.items():
        getattr(model, name)[...] *= multiplier.astype(np.float64)
    mujoco.mj_setConst(model, data)


# ------------------------------------------------------------------------------------ parity with gymnasium
@pytest.mark.parametrize(("name", "gym_id"), [("hopper-params", "Hopper-v5"), ("walker2d-params", "Walker2d-v5")])
@pytest.mark.parametrize("randomized", [False, True], ids=["unit-multipliers", "random-multipliers"])
def test_rand_params_match_gymnasium_v5(name, gym_id, randomized):
    """Same seed and actions as gymnasium's v5 robot (with the same multiplied model parameters): identical reset
    noise, observations and terminations; rewards and terms equal up to float32 rounding."""
    family = make_family(name)
    if randomized:
        task = {key: value[0] for key, value in family.sample_tasks(1, np.random.default_rng(3)).items()}
    else:
        task = {key: np.ones(shape, np.float32) for key, shape in family.task_shapes.items()}
    env = one_env(name, task)
    reference = gym.make(gym_id).unwrapped
    if randomized:
        scale_gymnasium_model(reference, task)
    rng = np.random.default_rng(4)
    steps = 0
    for seed in (0, 9):
        obs, _ = env.reset(seed=seed)
        ref_obs, _ = reference.reset(seed=seed)
        np.testing.assert_array_equal(obs[0], ref_obs.astype(np.float32))
        for _ in range(60):
            action = rng.uniform(-1, 1, (1, family.model.nu)).astype(np.float32)
            obs, reward, terminated, _, info = env.step(action)
            ref_obs, ref_reward, ref_terminated, _, ref_info = reference.step(action[0])
            steps += 1
            np.testing.assert_array_equal(obs[0], ref_obs.astype(np.float32))
            np.testing.assert_allclose(reward[0], ref_reward, rtol=1e-5, atol=1e-6)
            assert terminated[0] == ref_terminated
            for key in ("reward_forward", "reward_survive", "reward_ctrl", "x_velocity"):
                np.testing.assert_allclose(info[key][0], ref_info[key], rtol=1e-5, atol=1e-6, err_msg=key)
            np.testing.assert_allclose(
                reward, info["reward_forward"] + info["reward_survive"] + info["reward_ctrl"], rtol=1e-6, atol=1e-6
            )
            if terminated[0]:
                break
    assert steps > 20


def test_humanoid_dir_matches_gymnasium_v5_along_x():
    """Direction (1, 0) is Humanoid-v5's task: same reset noise, observations (contact-force columns aside, see
    envs.locomotion.humanoid), centre-of-mass velocity, healthy reward, control cost and termination."""
    env = one_env("humanoid-dir", {"direction": np.array([1.0, 0.0])})
    reference = gym.make("Humanoid-v5").unwrapped
    rng = np.random.default_rng(5)
    no_contact = 348 - 78
    obs, _ = env.reset(seed=2)
    ref_obs, _ = reference.reset(seed=2)
    np.testing.assert_array_equal(obs[0, :no_contact], ref_obs[:no_contact].astype(np.float32))
    terminated_at, contact_costs = None, []
    for t in range(40):
        action = rng.uniform(-1, 1, (1, 17)).astype(np.float32)
        obs, reward, terminated, _, info = env.step(action)
        ref_obs, ref_reward, ref_terminated, _, ref_info = reference.step(0.4 * action[0].astype(np.float64))
        np.testing.assert_array_equal(obs[0, :no_contact], ref_obs[:no_contact].astype(np.float32), err_msg=str(t))
        for key in ("x_velocity", "y_velocity", "reward_survive", "reward_ctrl"):
            np.testing.assert_allclose(info[key][0], ref_info[key], rtol=1e-5, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(info["reward_task"][0], ref_info["reward_forward"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            reward[0] - info["reward_contact"][0], ref_reward - ref_info["reward_contact"], rtol=1e-5, atol=1e-5
        )
        # contact forces at the new state, Humanoid-v5's after the last Runge-Kutta stage (module docstring)
        np.testing.assert_allclose(info["reward_contact"][0], ref_info["reward_contact"], rtol=0.2, atol=2e-3)
        assert info["reward_contact"][0] <= 0
        contact_costs.append(-ref_info["reward_contact"])
        assert terminated[0] == ref_terminated
        if terminated[0]:
            terminated_at = t
            break
    assert terminated_at is None or terminated_at > 5
    assert max(contact_costs) > 0.05  # contact forces were compared


def test_humanoid_dir_rewards_the_projected_centre_of_mass_velocity():
    """Four sub-environments, same start state and controls, directions ±x and ±y: the task terms are
    1.25·(v_x, −v_x, v_y, −v_y) of the one shared trajectory; every other term is the same."""
    directions = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)
    env = make_family("humanoid-dir", num_threads=1).make_vector_env(4)
    env.set_tasks({"direction": directions})
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    env.set_state(np.repeat(qpos[:1], 4, 0), np.repeat(qvel[:1], 4, 0))
    rng = np.random.default_rng(0)
    for _ in range(5):
        _, reward, _, _, info = env.step(np.repeat(rng.uniform(-1, 1, (1, 17)), 4, 0))
        vx, vy = info["x_velocity"][0], info["y_velocity"][0]
        np.testing.assert_allclose(info["reward_task"], 1.25 * np.array([vx, -vx, vy, -vy]), rtol=1e-5, atol=1e-6)
        for key in ("x_velocity", "y_velocity", "reward_survive", "reward_ctrl", "reward_contact"):
            np.testing.assert_array_equal(info[key], info[key][0])
        np.testing.assert_allclose(
            reward, info["reward_task"] + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"],
            rtol=1e-6, atol=1e-6,
        )
    assert abs(vx) + abs(vy) > 0.01


def test_ant_dir2d_matches_gymnasium_ant_v5_and_rewards_xy_velocity_along_the_direction():
    direction = np.array([np.cos(2.0), np.sin(2.0)], np.float32)
    env = one_env("ant-dir2d", {"direction": direction})
    reference = gym.make("Ant-v5", include_cfrc_ext_in_observation=False).unwrapped
    rng = np.random.default_rng(6)
    obs, _ = env.reset(seed=1)
    ref_obs, _ = reference.reset(seed=1)
    np.testing.assert_array_equal(obs[0], ref_obs.astype(np.float32))
    for _ in range(15):
        action = rng.uniform(-1, 1, (1, 8)).astype(np.float32)
        xy_before = reference.data.qpos[:2].copy()
        obs, reward, terminated, _, info = env.step(action)
        ref_obs, _, ref_terminated, _, ref_info = reference.step(action[0])
        np.testing.assert_array_equal(obs[0], ref_obs.astype(np.float32))
        assert terminated[0] == ref_terminated
        velocity = (reference.data.qpos[:2] - xy_before) / 0.05  # the torso's xy velocity over dt = 0.05
        np.testing.assert_allclose(info["reward_task"][0], velocity @ direction, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(info["reward_ctrl"][0], 0.01 * ref_info["reward_ctrl"], rtol=1e-5)  # 0.005 / 0.5
        np.testing.assert_allclose(
            reward[0], velocity @ direction - 0.005 * np.square(action).sum() + 0.05, rtol=1e-5, atol=1e-6
        )


# ------------------------------------------------------------------------------- per-row model parameters
@pytest.mark.parametrize("name", ["hopper-params", "walker2d-params"])
def test_each_row_simulates_its_own_parameters(name):
    """Rows 1 and 2 share a task, row 0 has unit multipliers, row 3 another task; all start from one state under
    the same actions. Rows 1 and 2 stay identical, the others differ; each row's model holds its own values."""
    family = make_family(name, num_threads=2)
    drawn = family.sample_tasks(2, np.random.default_rng(7))
    tasks = {
        key: np.stack([np.ones_like(value[0]), value[0], value[0], value[1]]) for key, value in drawn.items()
    }
    env = family.make_vector_env(4)
    env.set_tasks(tasks)
    for key, multiplier in tasks.items():
        expected = getattr(family.model, key) * multiplier.astype(np.float64)
        np.testing.assert_array_equal(env.sim._batch.expanded(key), expected)
    fresh = mujoco.MjModel.from_xml_path(str(ASSET_DIR / ROBOT_XML[family.robot]))
    for key in tasks:  # the family's shared model is untouched
        np.testing.assert_array_equal(getattr(family.model, key), getattr(fresh, key))
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    env.set_state(np.repeat(qpos[:1], 4, 0), np.repeat(qvel[:1], 4, 0))
    rng = np.random.default_rng(8)
    for _ in range(8):
        env.step(np.repeat(rng.uniform(-1, 1, (1, family.model.nu)), 4, 0))
    qpos, _ = env.get_state()
    np.testing.assert_array_equal(qpos[1], qpos[2])
    assert np.abs(qpos[0] - qpos[1]).max() > 1e-4 and np.abs(qpos[3] - qpos[1]).max() > 1e-4
    # a new task set takes effect at the next reset, without rebuilding anything
    env.set_tasks({key: np.ones_like(value) for key, value in tasks.items()})
    np.testing.assert_array_equal(env.sim._batch.expanded("dof_damping"), np.tile(family.model.dof_damping, (4, 1)))


def test_rand_params_trajectories_are_deterministic_under_a_seed():
    def run(seed: int) -> np.ndarray:
        family = make_family("hopper-params", num_threads=1)
        env = family.make_vector_env(3)
        env.set_tasks(family.sample_tasks(3, np.random.default_rng(seed)))
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        for _ in range(10):
            obs, *_ = env.step(rng.uniform(-1, 1, (3, 3)))
        return obs

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


# ------------------------------------------------------------------------------------------ task sampling
@pytest.mark.parametrize("name", ["hopper-params", "walker2d-params"])
def test_multipliers_are_log_uniform_per_element(name):
    family = make_family(name)
    tasks = family.sample_tasks(4000, np.random.default_rng(0))
    assert list(tasks) == list(MULTIPLIER_BASES)  # the sampling order
    for key, base in MULTIPLIER_BASES.items():
        value = tasks[key]
        assert value.dtype == np.float32 and value.shape == (4000, *getattr(family.model, key).shape)
        exponent = np.log(value.astype(np.float64)) / np.log(base)  # U[-3, 3] elementwise
        assert exponent.min() >= -3 - 1e-5 and exponent.max() <= 3 + 1e-5
        assert exponent.min() < -2.99 and exponent.max() > 2.99
        assert abs(exponent.mean()) < 0.05 and abs(exponent.std() - np.sqrt(3)) < 0.02  # sd of U[-3, 3]: √3
        assert abs(np.mean(exponent < -1.5) - 0.25) < 0.01
        flat = exponent.reshape(4000, -1)
        if flat.shape[1] > 1:  # independent elements
            assert abs(np.corrcoef(flat[:, 0], flat[:, -1])[0, 1]) < 0.05
    again = family.sample_tasks(4000, np.random.default_rng(0))
    other = family.sample_tasks(4000, np.random.default_rng(1))
    for key in tasks:
        np.testing.assert_array_equal(tasks[key], again[key])
        assert not np.array_equal(tasks[key], other[key])


@pytest.mark.parametrize("name", ["humanoid-dir", "ant-dir2d"])
def test_directions_are_uniform_on_the_unit_circle(name):
    family = make_family(name)
    d = family.sample_tasks(20000, np.random.default_rng(0))["direction"]
    assert d.shape == (20000, 2) and d.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-6)
    angle = np.arctan2(d[:, 1], d[:, 0])
    for k in range(8):  # octants: 1/8 each, sd 0.0023
        low = -np.pi + k * np.pi / 4
        assert abs(np.mean((angle >= low) & (angle < low + np.pi / 4)) - 0.125) < 0.01
    np.testing.assert_allclose(d.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_array_equal(d, family.sample_tasks(20000, np.random.default_rng(0))["direction"])
    assert not np.array_equal(d, family.sample_tasks(20000, np.random.default_rng(1))["direction"])
    with pytest.raises(ValueError, match="n"):
        family.sample_tasks(0, np.random.default_rng(0))


# ------------------------------------------------------------------------------------ observations, spaces
@pytest.mark.parametrize("name", sorted(NEW_FAMILIES))
def test_oracle_appends_the_task(name):
    _, state_dim, task_dim = NEW_FAMILIES[name]
    family = make_family(name)
    tasks = family.sample_tasks(2, np.random.default_rng(1))
    observations = []
    for oracle in (False, True):
        env = make_family(name, oracle=oracle, num_threads=1).make_vector_env(2)
        env.set_tasks(tasks)
        obs, _ = env.reset(seed=0)
        obs, *_ = env.step(np.zeros((2, family.model.nu)))
        assert env.single_observation_space.shape == (state_dim + oracle * task_dim,) == obs.shape[1:]
        observations.append(obs)
    np.testing.assert_array_equal(observations[1][:, :state_dim], observations[0])
    flat = np.concatenate([tasks[key].reshape(2, -1) for key in family.task_shapes], axis=1)
    np.testing.assert_array_equal(observations[1][:, state_dim:], flat)


def test_humanoid_without_contact_forces():
    family = make_family("humanoid-dir", use_contact_forces=False)
    env = family.make_vector_env(2)
    env.set_tasks(family.sample_tasks(2, np.random.default_rng(0)))
    env.reset(seed=0)
    obs, _, _, _, info = env.step(np.zeros((2, 17)))
    assert obs.shape == (2, 270) and (info["reward_contact"] == 0).all()


@pytest.mark.filterwarnings("ignore:.*Box observation space m:UserWarning")
@pytest.mark.parametrize("name", sorted(NEW_FAMILIES))
def test_gymnasium_registration_passes_check_env(name):
    gym_id, state_dim, task_dim = NEW_FAMILIES[name]
    env = gym.make(gym_id)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (state_dim,) and obs.dtype == np.float32
    assert env.spec is not None and env.spec.max_episode_steps == 200
    family = make_family(name)
    task = {key: value[0] for key, value in family.sample_tasks(1, np.random.default_rng(0)).items()}
    fixed = gym.make(gym_id, task=task, oracle=True)
    obs, _ = fixed.reset(seed=1)
    assert obs.shape == (state_dim + task_dim,)
    flat = np.concatenate([np.reshape(task[key], -1) for key in family.task_shapes])
    np.testing.assert_array_equal(obs[state_dim:], flat)


# ------------------------------------------------------------------------------------------------ training
TINY_RUN = ["--set", "maml.meta_batch_size=2", "--set", "maml.fast_batch_size=2", "--set", "env.horizon=10",
            "--set", "policy.hidden_sizes=[8]", "--set", "train.num_threads=1", "--set", "train.num_iterations=2",
            "--no-progress"]


@pytest.mark.parametrize("config", ["hopper-params/modern", "walker2d-params/paper", "humanoid-dir/modern",
                                    "ant-dir2d/modern"])
def test_maml_rl_train_runs_two_iterations(tmp_path, capsys, config):
    """``maml-rl train <config> --set ...``: two tiny meta-iterations write finite metrics."""
    import math

    from maml_rl.cli import main
    from maml_rl.logging import read_metrics

    out = tmp_path / "run"
    assert main(["train", config, "--output", str(out), *TINY_RUN]) == 0, capsys.readouterr().err
    rows = read_metrics(out / "metrics.csv")
    assert [row["iteration"] for row in rows] == [1, 2]
    for row in rows:
        assert 0 < row["env/steps"] <= 2 * 2 * 2 * 10
        for name in ("returns/pre_adapt_mean", "returns/post_adapt_mean", "policy/std"):
            assert math.isfinite(row[name]), name
    assert f"family: {config.split('/')[0]}" in (out / "config.yaml").read_text()
