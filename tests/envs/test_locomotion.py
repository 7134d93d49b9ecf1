"""MuJoCo locomotion families: physics and rewards against plain MjData stepping, batching, tasks, API."""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs.locomotion
from envs.base import make_family
from envs.locomotion import FAMILIES, LocomotionVectorEnv, load_model
from envs.locomotion.ant import AntDir
from envs.locomotion.models import ASSET_DIR

#: the families of the MAML paper, tested here; the newer ones in test_locomotion_new_families.py
MAML_PAPER = ("halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "ant-goal")
PAPER_FAMILIES = [family for family in FAMILIES if family.name in MAML_PAPER]
FAMILY_NAMES = [family.name for family in PAPER_FAMILIES]
DT = 0.05  # 5 x timestep 0.01, both robots


# --------------------------------------------------------------------------------- independent reference
@pytest.fixture(scope="module")
def plain_models() -> dict[str, mujoco.MjModel]:
    """The gymnasium XML files compiled directly (no cache, no added sensor), load warning muted."""
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: None)
    try:
        return {
            robot: mujoco.MjModel.from_xml_path(str(ASSET_DIR / f"{robot}.xml")) for robot in ("half_cheetah", "ant")
        }
    finally:
        mujoco.set_mju_user_warning(previous)


def _ant_tail(ctrl_cost: float, contact: float) -> float:
    return -0.005 * ctrl_cost - 0.0005 * contact + 0.05


#: family -> reward(task, v_x, xy, ‖a‖², ‖clip(cfrc_ext)‖²), written from docs/architecture.md §3
REFERENCE_REWARDS: dict[str, Callable[..., float]] = {
    "halfcheetah-vel": lambda task, vx, xy, a2, c: -abs(vx - task) - 0.05 * a2,
    "halfcheetah-dir": lambda task, vx, xy, a2, c: task * vx - 0.05 * a2,
    "ant-vel": lambda task, vx, xy, a2, c: -abs(vx - task) + 1.0 + _ant_tail(a2, c),
    "ant-dir": lambda task, vx, xy, a2, c: task * vx + _ant_tail(a2, c),
    "ant-goal": lambda task, vx, xy, a2, c: -np.abs(xy - task).sum() + 4.0 + _ant_tail(a2, c),
}


def reference_rollout(model, family_name, task, qpos0, qvel0, actions, contact_forces):
    """One sub-environment on a fresh plain MjData, ``mj_step`` 5 times per action.

    Returns:
        [(obs, reward, done)] per action, and the final qpos and qvel.
    """
    is_ant = family_name.startswith("ant")
    data = mujoco.MjData(model)
    mujoco.mj_resetData(model, data)
    data.qpos[:], data.qvel[:] = qpos0, qvel0
    mujoco.mj_forward(model, data)
    out, done = [], False
    for action in actions:
        if done:  # frozen
            out.append((out[-1][0], 0.0, True))
            continue
        a = np.clip(action.astype(np.float64), -1, 1)
        data.ctrl[:] = a  # ctrlrange is [-1, 1] for both robots
        x_before = data.qpos[0]
        mujoco.mj_step(model, data, nstep=4)
        # contact forces of the last physics step's constraint solve, at the state before it
        mujoco.mj_forward(model, data)
        mujoco.mj_rnePostConstraint(model, data)
        cfrc = np.clip(data.cfrc_ext, -1, 1)
        mujoco.mj_step(model, data, nstep=1)
        vx = (data.qpos[0] - x_before) / DT
        contact = float(np.square(cfrc).sum()) if contact_forces else 0.0
        reward = REFERENCE_REWARDS[family_name](task, vx, data.qpos[:2], float(np.square(a).sum()), contact)
        if is_ant:
            parts = [data.qpos[2:], data.qvel] + ([cfrc[1:].ravel()] if contact_forces else [])
            done = not (0.2 <= data.qpos[2] <= 1.0)
        else:
            parts = [data.qpos[1:], data.qvel]
        out.append((np.concatenate(parts).astype(np.float32), reward, done))
    return out, data.qpos.copy(), data.qvel.copy()


def mj_datas(model: mujoco.MjModel, qpos: np.ndarray, qvel: np.ndarray) -> list[mujoco.MjData]:
    """One plain ``MjData`` per row of ``qpos [n, nq]``, ``qvel [n, nv]``, forwarded."""
    datas = []
    for row_qpos, row_qvel in zip(qpos, qvel, strict=True):
        data = mujoco.MjData(model)
        data.qpos[:], data.qvel[:] = row_qpos, row_qvel
        mujoco.mj_forward(model, data)
        datas.append(data)
    return datas


def make_env(name: str, num_envs: int, seed: int = 0, **options) -> LocomotionVectorEnv:
    family = make_family(name, **options)
    env = family.make_vector_env(num_envs)
    env.set_tasks(family.sample_tasks(num_envs, np.random.default_rng(seed)))
    return env


@pytest.mark.parametrize(
    ("name", "contact_forces"),
    [(name, False) for name in FAMILY_NAMES] + [("ant-goal", True), ("ant-vel", True)],
)
def test_matches_plain_mujoco_stepping(plain_models, name, contact_forces):
    options = {"use_contact_forces": True} if contact_forces else {}
    env = make_env(name, 4, seed=1, **options)
    family = env.family
    model = plain_models[family.robot]
    rng = np.random.default_rng(3)
    for episode_seed in (2, 3):  # the second episode starts from a used simulator: nothing may carry over
        obs0, _ = env.reset(seed=episode_seed)
        assert obs0.shape == (4, family.obs_dim)
        qpos0, qvel0 = env.get_state()
        actions = rng.uniform(-1.3, 1.3, (30, 4, family.model.nu)).astype(np.float32)
        results = [env.step(a) for a in actions]
        qpos_end, qvel_end = env.get_state()
        for i in range(4):
            ref, ref_qpos, ref_qvel = reference_rollout(
                model, name, env.task_rows[family.task_key][i], qpos0[i], qvel0[i], actions[:, i], contact_forces
            )
            for t, ((obs, reward, terminated, _, info), (ref_obs, ref_reward, ref_done)) in enumerate(
                zip(results, ref, strict=True)
            ):
                np.testing.assert_array_equal(obs[i], ref_obs, err_msg=f"obs of env {i} at step {t}")
                np.testing.assert_allclose(reward[i], ref_reward, rtol=1e-6, atol=1e-6, err_msg=f"env {i} step {t}")
                assert terminated[i] == ref_done, (i, t)
                assert not info["unstable"][i]
            # bit-identical float64 physics (solver warm start included)
            np.testing.assert_array_equal(qpos_end[i], ref_qpos)
            np.testing.assert_array_equal(qvel_end[i], ref_qvel)
        # the reward is the sum of its reported terms
        for _, reward, _, _, info in results:
            terms = [value for key, value in info.items() if key.startswith("reward_")]
            np.testing.assert_allclose(reward, np.sum(terms, axis=0), rtol=1e-5, atol=1e-5)


def test_frame_skip_option_steps_the_physics_that_many_times(plain_models):
    # frame_skip=1 is the MAML reference's HalfCheetah step (rllab's MujocoEnv default): dt = timestep = 0.01 s
    env = make_env("halfcheetah-vel", 3, seed=1, frame_skip=1)
    model = plain_models["half_cheetah"]
    assert env.family.frame_skip == 1 and env.family.dt == pytest.approx(0.01) == model.opt.timestep
    env.reset(seed=4)
    qpos0, qvel0 = env.get_state()
    actions = np.random.default_rng(5).uniform(-1, 1, (6, 3, model.nu)).astype(np.float32)
    for i in range(3):
        data = mujoco.MjData(model)
        data.qpos[:], data.qvel[:] = qpos0[i], qvel0[i]
        mujoco.mj_forward(model, data)
        env.set_state(qpos0, qvel0)
        for t, action in enumerate(actions):
            _, reward, _, _, info = env.step(action)
            x_before = data.qpos[0]
            data.ctrl[:] = action[i]
            mujoco.mj_step(model, data, nstep=1)
            vx = (data.qpos[0] - x_before) / 0.01
            expected = -abs(vx - env.task_rows["velocity"][i]) - 0.05 * float(np.square(action[i]).sum())
            np.testing.assert_allclose(info["x_velocity"][i], vx, rtol=1e-5, err_msg=f"env {i} step {t}")
            np.testing.assert_allclose(reward[i], expected, rtol=1e-5, atol=1e-5, err_msg=f"env {i} step {t}")
        np.testing.assert_array_equal(env.get_state()[0][i], data.qpos)
    with pytest.raises(ValueError, match="frame_skip"):
        make_family("halfcheetah-vel", frame_skip=0)


#: the MAML reference's rllab Ant, written out from cbfinn/maml_rl ``vendor/mujoco_models/ant.xml`` (``timestep``,
#: the default class's ``solimp`` with MuJoCo's two trailing defaults, ``init_qpos``) and ``rllab/envs/mujoco/
#: mujoco_env.py`` (``reset_mujoco``'s noise), independently of ``envs.locomotion.models.REFERENCE_MODEL``
RLLAB_ANT_TIMESTEP = 0.02
RLLAB_ANT_SOLIMP = [0.8, 0.8, 0.01, 0.5, 2.0]
RLLAB_ANT_INIT_QPOS = np.array([0.0, 0.0, 0.55, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0])


def test_reference_model_steps_and_starts_as_the_reference_ant(plain_models):
    """``reference_model``: one 0.02-s step per env step, every geom's contact impedance ``.8 .8 .01``, the start
    pose ``init_qpos`` plus N(0, 0.01) on qpos and N(0, 0.1) on qvel (qpos drawn first, from the seeded generator),
    and nothing else of gymnasium's model changed. Stepped against gymnasium's compiled model with those two fields
    written into it directly; the default contact impedance gives another trajectory, so the test sees it."""
    env = make_env("ant-vel", 3, seed=1, reference_model=True)
    family, plain = env.family, plain_models["ant"]
    assert family.frame_skip == 1 and family.dt == pytest.approx(RLLAB_ANT_TIMESTEP)
    assert family.model.opt.timestep == RLLAB_ANT_TIMESTEP
    np.testing.assert_array_equal(family.model.geom_solimp, np.tile(RLLAB_ANT_SOLIMP, (plain.ngeom, 1)))
    for field in ("body_mass", "body_inertia", "body_pos", "jnt_range", "dof_damping", "dof_armature", "geom_friction",
                  "geom_solref", "geom_margin", "geom_size", "actuator_gear", "actuator_ctrlrange", "qpos0"):
        np.testing.assert_array_equal(getattr(family.model, field), getattr(plain, field), err_msg=field)
    edited = mujoco.MjModel.from_xml_path(str(ASSET_DIR / "ant.xml"))
    edited.opt.timestep = RLLAB_ANT_TIMESTEP
    default_contacts = mujoco.MjModel.from_xml_path(str(ASSET_DIR / "ant.xml"))
    default_contacts.opt.timestep = RLLAB_ANT_TIMESTEP
    edited.geom_solimp[:] = RLLAB_ANT_SOLIMP

    env.reset(seed=9)
    rng, _ = gym.utils.seeding.np_random(9)
    expected_qpos = RLLAB_ANT_INIT_QPOS + 0.01 * rng.standard_normal((3, plain.nq))
    expected_qvel = 0.1 * rng.standard_normal((3, plain.nv))
    qpos0, qvel0 = env.get_state()
    np.testing.assert_array_equal(qpos0, expected_qpos)
    np.testing.assert_array_equal(qvel0, expected_qvel)

    actions = np.random.default_rng(4).uniform(-1.2, 1.2, (25, 3, plain.nu)).astype(np.float32)
    datas = [mj_datas(model, qpos0, qvel0) for model in (edited, default_contacts)]
    goal = env.task_rows["velocity"]
    for t, action in enumerate(actions):
        _, reward, terminated, _, _ = env.step(action)
        for model, row in zip((edited, default_contacts), datas, strict=True):
            for i, data in enumerate(row):
                a = np.clip(action[i], -1, 1).astype(np.float64)
                x_before = data.qpos[0]
                data.ctrl[:] = a
                mujoco.mj_step(model, data, nstep=1)
                if model is edited:
                    vx = (data.qpos[0] - x_before) / RLLAB_ANT_TIMESTEP
                    expected = -abs(vx - goal[i]) + 1.0 - 0.005 * float(np.square(a).sum()) + 0.05
                    np.testing.assert_allclose(reward[i], expected, rtol=1e-5, atol=1e-5, err_msg=f"env {i} step {t}")
                    assert terminated[i] == (not 0.2 <= data.qpos[2] <= 1.0), (i, t)
    qpos_end = env.get_state()[0]
    np.testing.assert_array_equal(qpos_end, np.stack([data.qpos for data in datas[0]]))
    assert np.abs(qpos_end - np.stack([data.qpos for data in datas[1]])).max() > 1e-3, "contacts should matter"


def test_reference_model_steps_its_time_step_once_per_env_step():
    with pytest.raises(ValueError, match="frame_skip must be 1 or unset, got 2"):
        make_family("ant-vel", reference_model=True, frame_skip=2)
    assert make_family("ant-vel", reference_model=True, frame_skip=1).dt == pytest.approx(RLLAB_ANT_TIMESTEP)
    with pytest.raises(ValueError, match="no reference model for 'hopper'"):
        load_model("hopper", reference_model=True)


def test_the_reference_half_cheetah_is_gymnasiums_physics_with_rllabs_start(plain_models):
    """rllab's ``half_cheetah.xml`` has gymnasium's physics (same time step and contact impedance, no ``init_qpos``),
    so ``reference_model`` steps gymnasium's compiled model once per env step from rllab's start: ``qpos0`` plus
    N(0, 0.01) on qpos and N(0, 0.1) on qvel, qpos drawn first (``rllab/envs/mujoco/mujoco_env.py``)."""
    plain = plain_models["half_cheetah"]
    env = make_env("halfcheetah-dir", 3, seed=1, reference_model=True)
    family = env.family
    assert (family.frame_skip, family.model.opt.timestep) == (1, 0.01) == (1, plain.opt.timestep)
    for field in ("geom_solimp", "geom_solref", "body_mass", "dof_damping", "jnt_stiffness", "actuator_gear", "qpos0"):
        np.testing.assert_array_equal(getattr(family.model, field), getattr(plain, field), err_msg=field)
    env.reset(seed=9)
    rng, _ = gym.utils.seeding.np_random(9)
    expected_qpos = 0.01 * rng.standard_normal((3, plain.nq))
    expected_qvel = 0.1 * rng.standard_normal((3, plain.nv))
    qpos0, qvel0 = env.get_state()
    np.testing.assert_array_equal(qpos0, expected_qpos)
    np.testing.assert_array_equal(qvel0, expected_qvel)
    actions = np.random.default_rng(4).uniform(-1, 1, (10, 3, plain.nu)).astype(np.float32)
    datas = mj_datas(plain, qpos0, qvel0)
    for action in actions:
        env.step(action)
        for i, data in enumerate(datas):
            data.ctrl[:] = action[i]
            mujoco.mj_step(plain, data, nstep=1)
    np.testing.assert_array_equal(env.get_state()[0], np.stack([data.qpos for data in datas]))


def test_reference_model_parts_take_one_difference_each(plain_models):
    """``reference_model: [part, ...]`` takes only the parts named, the rest staying gymnasium's: the time step
    (stepped once per env step), the contact impedance, the start state (pose and normal noise); all three are
    ``True``."""
    plain = plain_models["ant"]
    time_step = make_family("ant-vel", reference_model=["time_step"])
    assert (time_step.model.opt.timestep, time_step.frame_skip) == (RLLAB_ANT_TIMESTEP, 1)
    np.testing.assert_array_equal(time_step.model.geom_solimp, plain.geom_solimp)
    np.testing.assert_array_equal(time_step.init_qpos, plain.qpos0)
    assert time_step.qpos_noise == ("uniform", 0.1)

    contacts = make_family("ant-vel", reference_model=["contact_impedance"], frame_skip=2)
    assert (contacts.model.opt.timestep, contacts.frame_skip) == (plain.opt.timestep, 2)
    np.testing.assert_array_equal(contacts.model.geom_solimp, np.tile(RLLAB_ANT_SOLIMP, (plain.ngeom, 1)))
    np.testing.assert_array_equal(contacts.init_qpos, plain.qpos0)

    start = make_family("ant-vel", reference_model=["start_state"])
    assert (start.model.opt.timestep, start.frame_skip) == (plain.opt.timestep, 5)
    np.testing.assert_array_equal(start.model.geom_solimp, plain.geom_solimp)
    np.testing.assert_array_equal(start.init_qpos, RLLAB_ANT_INIT_QPOS)
    assert (start.qpos_noise, start.qvel_noise) == (("normal", 0.01), ("normal", 0.1))

    every = make_family("ant-vel", reference_model=["start_state", "contact_impedance", "time_step"])
    whole = make_family("ant-vel", reference_model=True)
    assert every.reference_model is True and every.model is whole.model and every.frame_skip == whole.frame_skip
    assert contacts.reference_model == ("contact_impedance",) and make_family("ant-vel").reference_model is False
    env = make_env("ant-vel", 2, seed=1, reference_model=["start_state"])
    env.reset(seed=9)
    rng, _ = gym.utils.seeding.np_random(9)
    np.testing.assert_array_equal(env.get_state()[0], RLLAB_ANT_INIT_QPOS + 0.01 * rng.standard_normal((2, plain.nq)))


@pytest.mark.parametrize(("value", "message"), [
    (["time_step", "friction"], r"unknown part\(s\) \['friction'\]; valid parts: \['time_step', 'contact_impedance', "
                                r"'start_state'\]"),
    (["start_state", "start_state"], "a part is named twice"),
    ("time_step", "must be a bool or a list of parts"),
])
def test_reference_model_parts_are_checked(value, message):
    with pytest.raises(ValueError, match=message):
        make_family("ant-vel", reference_model=value)


def test_reference_model_parts_without_the_time_step_keep_the_frame_skip():
    with pytest.raises(ValueError, match="frame_skip must be 1 or unset, got 2"):
        make_family("ant-vel", reference_model=["time_step", "start_state"], frame_skip=2)
    assert make_family("ant-vel", reference_model=["contact_impedance"], frame_skip=2).dt == pytest.approx(0.02)


def test_matches_gymnasium_v5_resets_and_observations(tmp_path, monkeypatch):
    """Same seed and actions as gymnasium's HalfCheetah-v5 / Ant-v5: identical reset noise, states, v_x."""
    monkeypatch.chdir(tmp_path)  # gymnasium's HalfCheetah load writes MUJOCO_LOG.TXT in the cwd
    cases = [
        ("halfcheetah-vel", "HalfCheetah-v5", {}),
        ("ant-dir", "Ant-v5", {"include_cfrc_ext_in_observation": False}),
    ]
    rng = np.random.default_rng(0)
    for name, gym_id, kwargs in cases:
        env = make_env(name, 1)
        reference = gym.make(gym_id, **kwargs).unwrapped
        for seed in (0, 7):
            obs, _ = env.reset(seed=seed)
            ref_obs, _ = reference.reset(seed=seed)
            np.testing.assert_array_equal(obs[0], ref_obs.astype(np.float32))
            for _ in range(10):
                action = rng.uniform(-1, 1, (1, env.family.model.nu)).astype(np.float32)
                obs, _, terminated, _, info = env.step(action)
                ref_obs, _, ref_terminated, _, ref_info = reference.step(action[0])
                np.testing.assert_array_equal(obs[0], ref_obs.astype(np.float32))
                assert terminated[0] == ref_terminated
                if name.startswith("halfcheetah"):  # Ant-v5 measures v_x on the lagging body xpos
                    np.testing.assert_allclose(info["x_velocity"][0], ref_info["x_velocity"], rtol=1e-6)
                    np.testing.assert_allclose(info["reward_ctrl"][0], 0.5 * ref_info["reward_ctrl"], rtol=1e-6)


# ---------------------------------------------------------------------------------------------- batching
@pytest.mark.parametrize(
    ("name", "options"),
    [("halfcheetah-dir", {}), ("ant-goal", {}), ("ant-vel", {"use_contact_forces": True})],
)
def test_batched_equals_each_alone(name, options):
    n, steps = 5, 25
    env = make_env(name, n, seed=4, **options)
    env.reset(seed=5)
    qpos0, qvel0 = env.get_state()
    actions = np.random.default_rng(6).uniform(-1, 1, (steps, n, env.family.model.nu))
    batched = [env.step(a) for a in actions]
    batched_state = env.get_state()
    for i in range(n):
        alone = make_family(name, num_threads=1, **options).make_vector_env(1)
        alone.set_tasks({key: value[i : i + 1] for key, value in env.task_rows.items()})
        alone.set_state(qpos0[i : i + 1], qvel0[i : i + 1])
        for t in range(steps):
            obs, reward, terminated, _truncated, _ = alone.step(actions[t, i : i + 1])
            np.testing.assert_array_equal(obs[0], batched[t][0][i])
            assert reward[0] == batched[t][1][i] and terminated[0] == batched[t][2][i]
        qpos, qvel = alone.get_state()
        np.testing.assert_allclose(qpos[0], batched_state[0][i], rtol=0, atol=1e-9)
        np.testing.assert_allclose(qvel[0], batched_state[1][i], rtol=0, atol=1e-9)


def test_thread_count_does_not_change_results():
    outputs = []
    for threads in (1, 2, 3):
        env = make_env("ant-vel", 7, num_threads=threads)
        env.reset(seed=0)
        rng = np.random.default_rng(1)
        outputs.append([env.step(rng.uniform(-1, 1, (7, 8)))[:3] for _ in range(10)])
    for other in outputs[1:]:
        for step_a, step_b in zip(outputs[0], other, strict=True):
            for a, b in zip(step_a, step_b, strict=True):
                np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------ task sampling
@pytest.mark.parametrize(("name", "high"), [("halfcheetah-vel", 2.0), ("ant-vel", 3.0)])
def test_velocity_tasks_uniform(name, high):
    family = make_family(name)
    v = family.sample_tasks(20000, np.random.default_rng(0))["velocity"]
    assert v.shape == (20000,) and v.dtype == np.float32
    assert v.min() >= 0 and v.max() <= high and v.min() < 0.01 * high and v.max() > 0.99 * high
    assert abs(v.mean() - high / 2) < 0.02 * high  # sd of the mean: 0.002 * high
    assert abs(np.mean(v < high / 4) - 0.25) < 0.015
    np.testing.assert_array_equal(v, family.sample_tasks(20000, np.random.default_rng(0))["velocity"])
    assert not np.array_equal(v, family.sample_tasks(20000, np.random.default_rng(1))["velocity"])


@pytest.mark.parametrize("name", ["halfcheetah-dir", "ant-dir"])
def test_direction_tasks_fair_signs(name):
    family = make_family(name)
    d = family.sample_tasks(20000, np.random.default_rng(0))["direction"]
    assert d.shape == (20000,) and set(np.unique(d)) == {-1.0, 1.0}
    assert abs(d.mean()) < 0.03  # sd of the mean: 0.007
    np.testing.assert_array_equal(d, family.sample_tasks(20000, np.random.default_rng(0))["direction"])
    assert not np.array_equal(d, family.sample_tasks(20000, np.random.default_rng(1))["direction"])


def test_goal_tasks_uniform_in_disc():
    family = make_family("ant-goal")
    g = family.sample_tasks(20000, np.random.default_rng(0))["goal"]
    assert g.shape == (20000, 2) and g.dtype == np.float32
    r = np.linalg.norm(g, axis=1)
    assert r.max() <= 3.0 + 1e-6 and r.max() > 2.98
    assert abs(r.mean() - 2.0) < 0.02  # uniform by area: E r = 2R/3; sd of the mean 0.005
    assert abs(np.mean(r < 1.5) - 0.25) < 0.015  # P(r < R/2) = 1/4
    assert abs(np.mean(r < 3 / np.sqrt(2)) - 0.5) < 0.015
    angle = np.arctan2(g[:, 1], g[:, 0])
    np.testing.assert_allclose([np.cos(angle).mean(), np.sin(angle).mean()], 0.0, atol=0.02)
    np.testing.assert_array_equal(g, family.sample_tasks(20000, np.random.default_rng(0))["goal"])


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_sample_tasks_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n"):
        make_family("ant-goal").sample_tasks(n, np.random.default_rng(0))


# --------------------------------------------------------------------------------------------- gymnasium
@pytest.mark.filterwarnings("ignore:.*Box observation space m:UserWarning")
@pytest.mark.parametrize("family", PAPER_FAMILIES, ids=FAMILY_NAMES)
def test_gymnasium_registration_passes_check_env(family):
    env = gym.make(family.gym_id)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
    task = {key: value[0] for key, value in family().sample_tasks(1, np.random.default_rng(0)).items()}
    fixed = gym.make(family.gym_id, task=task, oracle=True)
    obs, _ = fixed.reset(seed=1)
    assert obs.shape == (family().obs_dim + family().task_dim,)
    np.testing.assert_array_equal(obs[-family().task_dim :], np.reshape(next(iter(task.values())), -1))
    assert env.spec is not None and env.spec.max_episode_steps == 200


# --------------------------------------------------------------------------------------- API behaviours
def test_termination_freezes_and_partial_reset_restarts():
    env = make_env("ant-dir", 3)
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    qpos[1, 2] = 1.6  # torso above the healthy range
    env.set_state(qpos, qvel)
    obs, reward, terminated, _, info = env.step(np.zeros((3, 8)))
    assert terminated.tolist() == [False, True, False] and reward[1] != 0  # terminating step is scored
    frozen_obs = obs[1].copy()
    frozen_state = env.get_state()[0][1]
    for _ in range(3):
        obs, reward, terminated, _truncated, info = env.step(np.ones((3, 8)))
        np.testing.assert_array_equal(obs[1], frozen_obs)
        np.testing.assert_array_equal(env.get_state()[0][1], frozen_state)
        assert reward[1] == 0 and terminated[1] and info["reward_survive"][1] == 0
        assert not terminated[0] and reward[0] != 0
    last_obs = obs.copy()
    obs, _ = env.reset(options={"reset_mask": np.array([False, True, False])})
    np.testing.assert_array_equal(obs[0], last_obs[0])  # not reset: the observation of its unchanged state
    assert not np.array_equal(obs[1], last_obs[1])
    _, _, terminated, _, _ = env.step(np.zeros((3, 8)))
    assert not terminated[1]


def test_frozen_sub_environments_are_not_simulated_and_leave_the_others_unchanged():
    """``reset(options={"frozen_mask": m})`` (a step-budget round a task does not need): the frozen rows start
    terminated and keep their start state; the others step exactly as without the option."""
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 3, 8))
    runs = []
    for frozen in (None, np.array([False, True, False])):
        env = make_env("ant-dir", 3)
        env.reset(seed=0)
        obs, _ = env.reset(seed=5, options=None if frozen is None else {"frozen_mask": frozen})
        start = env.get_state()[0].copy()
        steps = [env.step(a) for a in actions]
        runs.append((obs, start, steps, env.get_state()[0]))
    (obs, start, steps, end), (obs_f, start_f, steps_f, end_f) = runs
    np.testing.assert_array_equal(obs_f, obs)  # the same start states (reset noise drawn for every row)
    np.testing.assert_array_equal(end_f[1], start_f[1])  # never simulated
    assert not np.array_equal(end[1], start[1])
    for (o, r, term, _, _), (o_f, r_f, term_f, _, _) in zip(steps, steps_f, strict=True):
        assert term_f[1] and r_f[1] == 0
        for row in (0, 2):
            np.testing.assert_array_equal(o_f[row], o[row])
            assert r_f[row] == r[row] and term_f[row] == term[row]
    env = make_env("ant-dir", 3)
    with pytest.raises(ValueError, match=r"options\['frozen_mask'\] must be a bool array of shape \[3\]"):
        env.reset(seed=0, options={"frozen_mask": np.array([1, 0, 0])})


def test_halfcheetah_never_terminates_and_truncates_at_horizon():
    family = make_family("halfcheetah-vel")
    env = family.make_vector_env(2, max_episode_steps=3)
    env.set_tasks({"velocity": np.array([0.5, 1.5])})
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    qpos[:, 1] = 20.0  # any pose is healthy for the cheetah
    env.set_state(qpos, qvel)
    for t in range(3):
        _, _, terminated, truncated, _ = env.step(np.zeros((2, 6)))
        assert not terminated.any() and truncated.tolist() == [t == 2] * 2
    assert family.make_vector_env(1).max_episode_steps == 200


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_raise(bad):
    env = make_env("halfcheetah-dir", 2)
    env.reset(seed=0)
    actions = np.zeros((2, 6))
    actions[1, 3] = bad
    with pytest.raises(ValueError, match="finite"):
        env.step(actions)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((3, 6)))


def test_torch_and_numpy_actions_agree_and_clip():
    results = []
    for make_actions in (
        lambda a: a,
        lambda a: torch.as_tensor(a, dtype=torch.float32),
        lambda a: np.clip(a, -1, 1).astype(np.float32),
    ):
        env = make_env("ant-goal", 3)
        env.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-2, 2, (5, 3, 8)).astype(np.float32)
        results.append([env.step(make_actions(a))[:2] for a in actions])
    for other in results[1:]:
        for (obs_a, rew_a), (obs_b, rew_b) in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(obs_a, obs_b)
            np.testing.assert_array_equal(rew_a, rew_b)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_oracle_appends_task(name):
    base = make_env(name, 3, seed=2)
    oracle = make_env(name, 3, seed=2, oracle=True)
    obs_base, _ = base.reset(seed=0)
    obs_oracle, _ = oracle.reset(seed=0)
    task = oracle.task_rows[oracle.family.task_key].reshape(3, -1).astype(np.float32)
    dim = {"half_cheetah": 17, "ant": 27}[base.family.robot]
    assert obs_base.shape == (3, dim) and obs_oracle.shape == (3, dim + task.shape[1])
    assert oracle.single_observation_space.shape == (dim + task.shape[1],)
    np.testing.assert_array_equal(obs_oracle[:, :dim], obs_base)
    np.testing.assert_array_equal(obs_oracle[:, dim:], task)


def test_ant_contact_force_observation_layout():
    env = make_env("ant-goal", 2, use_contact_forces=True, oracle=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 27 + 78 + 2)
    for _ in range(20):  # let it land
        obs, _, _, _, info = env.step(np.zeros((2, 8)))
    contact = obs[:, 27:105]
    assert np.abs(contact).max() <= 1 and np.abs(contact).max() > 0
    assert (info["reward_contact"] < 0).all()
    plain = make_env("ant-goal", 1)
    plain.reset(seed=0)
    assert (plain.step(np.zeros((1, 8)))[4]["reward_contact"] == 0).all()


@pytest.mark.parametrize("poison", ["nan", "huge"])
def test_unstable_simulation_is_flagged_reset_and_terminated(tmp_path, monkeypatch, poison):
    monkeypatch.chdir(tmp_path)  # MuJoCo's instability warning goes to MUJOCO_LOG.TXT in the cwd
    env = make_env("halfcheetah-vel", 3)
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    clean = make_env("halfcheetah-vel", 3)
    clean.set_state(qpos, qvel)
    qvel[1, 4] = np.nan if poison == "nan" else 1e12
    env.set_state(qpos, qvel)
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 6))
    obs, reward, terminated, _, info = env.step(actions)
    ref_obs, ref_reward, _, _, _ = clean.step(actions)
    assert info["unstable"].tolist() == [False, True, False]
    assert terminated.tolist() == [False, True, False] and reward[1] == 0
    assert np.isfinite(obs).all() and np.isfinite(env.get_state()[1]).all()
    np.testing.assert_array_equal(obs[[0, 2]], ref_obs[[0, 2]])
    np.testing.assert_array_equal(reward[[0, 2]], ref_reward[[0, 2]])
    # reset to the model's default (finite) state, then frozen
    np.testing.assert_array_equal(env.get_state()[0][1], env.family.model.qpos0)
    obs2, reward2, terminated2, _, info2 = env.step(actions)
    np.testing.assert_array_equal(obs2[1], obs[1])
    assert reward2[1] == 0 and terminated2[1] and not info2["unstable"].any()


def test_set_tasks_and_reset_validation():
    env = make_family("ant-goal").make_vector_env(2)
    with pytest.raises(RuntimeError, match="set_tasks"):
        env.reset(seed=0)
    with pytest.raises(ValueError, match="goal"):
        env.set_tasks({"velocity": np.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        env.set_tasks({"goal": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="finite"):
        env.set_tasks({"goal": np.full((2, 2), np.nan)})
    env.set_tasks({"goal": torch.zeros(2, 2)})  # torch accepted
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((2, 8)))
    with pytest.raises(RuntimeError, match="first reset"):
        env.reset(options={"reset_mask": np.array([True, False])})
    with pytest.raises(ValueError, match="reset option"):
        env.reset(options={"bogus": 1})
    first, _ = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, env.reset(seed=4)[0])


def test_family_options():
    with pytest.raises(ValueError, match="bad options"):
        make_family("halfcheetah-vel", use_contact_forces=True)
    with pytest.raises(ValueError, match="bad options"):
        make_family("ant-vel", frameskip=3)
    assert make_family("ant-vel", frame_skip=3).dt == pytest.approx(0.03)  # timestep 0.01 x 3
    assert make_family("ant-vel").dt == pytest.approx(0.05)  # gymnasium v5's frame skip 5 by default
    with pytest.raises(ValueError, match="num_threads"):
        make_family("ant-dir", num_threads=0)
    with pytest.raises(ValueError, match="device"):
        make_family("ant-dir").make_vector_env(2, device="cuda")
    assert make_family("ant-dir").num_threads == len(os.sched_getaffinity(0))
    assert set(FAMILY_NAMES) <= set(envs.family_names())


def test_model_load_keeps_cwd_clean_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_model.cache_clear()
    model = load_model("half_cheetah")
    assert load_model("half_cheetah") is model
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    np.testing.assert_allclose(model.body_mass.sum(), 14.0)  # settotalmass still applies


def test_close_releases_and_blocks_use():
    env = make_env("ant-vel", 2)
    env.reset(seed=0)
    env.close()
    env.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        env.step(np.zeros((2, 8)))
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


def test_env_device_follows_the_backend():
    """A learner on a GPU: native MuJoCo still simulates on the CPU, the torch families on the GPU (warp: in
    tests/envs/test_warp_backend.py)."""
    assert make_family("halfcheetah-vel").env_device("cuda") == "cpu"
    assert make_family("navigation-2d").env_device("cuda") == "cuda"


# -------------------------------------------------------------------------------------------- refactor parity
#: obs[:, :4], rewards and terminations after 10 steps, recorded with the two separate vector environments that
#: preceded the unified one (commit 12f9fa9; identical to the last bit there, also over 40 steps for six configs)
BEFORE_UNIFICATION = {
    "halfcheetah-vel": (
        [[0.11213850975036621, 0.36491140723228455, 0.018777061253786087, -0.17420783638954163],
         [-0.04093165323138237, 0.01843305677175522, -0.11735694855451584, 0.1532594859600067],
         [-0.12727929651737213, 0.2746962010860443, 0.07394706457853317, -0.3354741036891937]],
        [-0.2414187341928482, -1.8088282346725464, -0.826497495174408],
    ),
    "ant-goal": (
        [[0.6625192165374756, 0.9549840092658997, 0.19271127879619598, -0.05348731204867363],
         [0.7645830512046814, 0.985496997833252, 0.1634976714849472, 0.03780163452029228],
         [0.6811585426330566, 0.9721776843070984, 0.19270458817481995, -0.02959658019244671]],
        [2.4978549480438232, 1.3962516784667969, 2.731949806213379],
    ),
}


@pytest.mark.parametrize("name", sorted(BEFORE_UNIFICATION))
def test_unified_env_reproduces_the_trajectories_of_the_old_one(name):
    options = {"use_contact_forces": True} if name == "ant-goal" else {}
    family = make_family(name, num_threads=1, **options)
    env = family.make_vector_env(3)
    env.set_tasks(family.sample_tasks(3, np.random.default_rng(11)))
    env.reset(seed=5)
    rng = np.random.default_rng(12)
    for _ in range(10):
        obs, reward, terminated, _, _ = env.step(rng.uniform(-1.2, 1.2, env.action_space.shape).astype(np.float32))
    expected_obs, expected_reward = BEFORE_UNIFICATION[name]
    assert obs.dtype == np.float32 and reward.dtype == np.float32 and isinstance(terminated, np.ndarray)
    np.testing.assert_allclose(obs[:, :4], np.float32(expected_obs), rtol=1e-6, atol=0)
    np.testing.assert_allclose(reward, np.float32(expected_reward), rtol=1e-6, atol=0)
    assert not terminated.any()


def _rllab_centre_of_mass(model: mujoco.MjModel, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
    """The torso subtree's centre of mass and its linear velocity as rllab computed them after ``mj_forward``
    (cbfinn/maml_rl ``rllab/mujoco_py/mjcore.py`` ``_compute_subtree``: each body's velocity from
    ``mj_objectVelocity``, momenta summed up the tree, divided by the subtree's mass), and the position as the
    mass-weighted mean of the bodies' ``xipos`` (rllab read MuJoCo's ``com_subtree``)."""
    velocities = np.zeros((model.nbody, 6))
    for body in range(model.nbody):
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, body, velocities[body], 0)
    mass = model.body_mass.copy()
    momenta = velocities[:, 3:] * mass[:, None]
    position = data.xipos * mass[:, None]
    for body in range(model.nbody - 1, 0, -1):
        parent = model.body_parentid[body]
        momenta[parent] += momenta[body]
        position[parent] += position[body]
        mass[parent] += mass[body]
    return position[1] / mass[1], momenta[1] / mass[1]


#: family -> (robot, the reference's frame skip, observation size without the centre of mass, task term of the
#: reward from the centre of mass's x velocity and the task, control cost weight, survive bonus)
RLLAB_CENTRE_OF_MASS = {
    "halfcheetah-vel": ("half_cheetah", 1, 17, lambda vx, goal: -abs(vx - goal), 0.05, 0.0),
    "halfcheetah-dir": ("half_cheetah", 1, 17, lambda vx, direction: direction * vx, 0.05, 0.0),
    "ant-vel": ("ant", 2, 27, lambda vx, goal: -abs(vx - goal) + 1.0, 0.005, 0.05),
    "ant-dir": ("ant", 2, 27, lambda vx, direction: direction * vx, 0.005, 0.05),
}


@pytest.mark.parametrize("name", sorted(RLLAB_CENTRE_OF_MASS))
def test_centre_of_mass_option_observes_and_rewards_as_rllab(plain_models, name):
    # the MAML reference's HalfCheetahEnvRand(Direc) and AntEnvRand(Direc): obs [state, com], reward on the com's x
    # velocity after the step (at the reference's time step); the trajectory itself is the plain one (the extra
    # mj_forward after each step changes nothing)
    robot, frame_skip, state_dim, task_term, ctrl_cost, survive = RLLAB_CENTRE_OF_MASS[name]
    env = make_env(name, 3, seed=2, frame_skip=frame_skip, centre_of_mass=True)
    plain = make_env(name, 3, seed=2, frame_skip=frame_skip)
    model = plain_models[robot]
    assert env.family.obs_dim == state_dim + 3 and env.observation_space.shape == (3, state_dim + 3)
    env.reset(seed=4)
    qpos0, qvel0 = env.get_state()
    plain.set_state(qpos0, qvel0)
    actions = np.random.default_rng(6).uniform(-1.2, 1.2, (20, 3, model.nu)).astype(np.float32)
    datas = mj_datas(model, qpos0, qvel0)
    obs = env.set_state(qpos0, qvel0)
    for i, data in enumerate(datas):
        np.testing.assert_allclose(obs[i, state_dim:], _rllab_centre_of_mass(model, data)[0], rtol=1e-6, atol=1e-7)
    task = env.task_rows[env.family.task_key]
    for t, action in enumerate(actions):
        obs, reward, terminated, _, info = env.step(action)
        plain_obs, plain_reward, *_ = plain.step(action)
        assert not terminated.any()
        np.testing.assert_array_equal(obs[:, :state_dim], plain_obs)
        for i, data in enumerate(datas):
            a = np.clip(action[i], -1, 1).astype(np.float64)
            data.ctrl[:] = a
            mujoco.mj_step(model, data, nstep=frame_skip)
            mujoco.mj_forward(model, data)
            com, com_velocity = _rllab_centre_of_mass(model, data)
            vx = com_velocity[0]
            expected = task_term(vx, task[i]) - ctrl_cost * float(np.square(a).sum()) + survive
            message = f"env {i} step {t}"
            np.testing.assert_allclose(obs[i, state_dim:], com, rtol=1e-6, atol=1e-7, err_msg=message)
            np.testing.assert_allclose(info["x_velocity"][i], vx, rtol=1e-5, atol=1e-6, err_msg=message)
            np.testing.assert_allclose(reward[i], expected, rtol=1e-5, atol=1e-5, err_msg=message)
        assert not np.allclose(reward, plain_reward, atol=1e-3), "the two velocities should differ"
    np.testing.assert_array_equal(env.get_state()[0], plain.get_state()[0])
    np.testing.assert_array_equal(env.get_state()[0], np.stack([data.qpos for data in datas]))


#: robot option -> a family that does not take it at all
NOT_TAKEN_BY = {"centre_of_mass": "hopper-params", "reference_model": "hopper-params"}


@pytest.mark.parametrize("option", sorted(NOT_TAKEN_BY))
def test_robot_options_are_refused_where_they_are_not_built(option):
    without = type("AntDirWithout", (AntDir,), {f"supports_{option}": False})
    with pytest.raises(ValueError, match=f"ant-dir has no {option} option"):
        without(**{option: True})
    with pytest.raises(ValueError, match=rf"bad options .*'{option}'.* for task family '{NOT_TAKEN_BY[option]}'"):
        make_family(NOT_TAKEN_BY[option], **{option: True})
    with pytest.raises(ValueError, match=f"{option} must be a bool"):
        make_family("ant-vel", **{option: "yes"})


def test_centre_of_mass_needs_the_native_backend():
    with pytest.raises(ValueError, match="native backend only"):
        make_family("halfcheetah-vel", centre_of_mass=True, backend="warp")
