"""The time-step loop never synchronizes with the host (issue 6: "no ``.item()``, ``.cpu()`` or numpy there").

Checked on the CPU by counting the calls that would synchronize on a GPU (``tests.host_sync``) while
collecting episodes of two horizons: with the device defaults (deferred action checks), the count must not
grow with the number of time steps. The warp backend's version is in ``tests/envs/test_warp_backend.py``.
On a GPU (``gpu`` tests), torch's own detector (``torch.cuda.set_sync_debug_mode``) counts instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch

import envs
from maml_rl.adaptation import adapt
from maml_rl.advantages import with_advantages
from maml_rl.policies import make_policy, task_params
from maml_rl.sampling import sample_episodes
from tests.host_sync import HostSyncCounter

M, E = 3, 4
SHORT, LONG = 3, 12
FAMILIES = {"navigation-2d": {}, "bernoulli-bandit": {"num_arms": 5}, "tabular-mdp": {}}


def sample_adapt_sample(name: str, options: dict, horizon: int, deferred: bool | None, device: str = "cpu",
                        with_learner: bool = False) -> Callable[[], None]:
    """Build ``M × E`` sub-environments of ``name`` and a policy on ``device``; return the run to count: one
    sampling pass (and, ``with_learner``, GAE, the inner step and a second pass). ``deferred=None`` keeps the
    environment's default action checks."""
    family = envs.make_family(name, **options)
    env = family.make_vector_env(M * E, max_episode_steps=horizon, device=family.env_device(device))
    if deferred is not None:
        env.deferred_action_checks = deferred
    env.set_tasks(envs.repeat_tasks(family.sample_tasks(M, np.random.default_rng(0)), E))
    space = family.single_action_space
    policy = make_policy(
        obs_dim=family.single_observation_space.shape[0],
        action_space_size=int(space.n) if family.is_discrete else space.shape[0],
        discrete=family.is_discrete,
        hidden_sizes=(8,),
        activation="relu",
        init_std=1.0,
        min_std=1e-6,
        generator=torch.Generator().manual_seed(0),
    ).to(device)
    params = task_params(dict(policy.named_parameters()), M)
    generator = torch.Generator(device).manual_seed(1)

    def run() -> None:
        episodes = sample_episodes(env, policy, params, M, generator, seed=2)
        if with_learner:
            episodes = with_advantages(episodes, gamma=0.99, gae_lambda=1.0)
            adapted = adapt(policy, params, [episodes], 0.1)
            sample_episodes(env, policy, adapted, M, generator, seed=3)

    return run


def episode_syncs(name: str, options: dict, horizon: int, deferred: bool, with_learner: bool = False) -> Counter:
    run = sample_adapt_sample(name, options, horizon, deferred, with_learner=with_learner)
    with HostSyncCounter() as counter:
        run()
    return counter.calls


@pytest.mark.parametrize("name", FAMILIES)
def test_sampling_syncs_do_not_grow_with_the_horizon(name):
    short = episode_syncs(name, FAMILIES[name], SHORT, deferred=True)
    long = episode_syncs(name, FAMILIES[name], LONG, deferred=True)
    assert short == long, f"host synchronizations per episode depend on the horizon: {dict(short)} vs {dict(long)}"
    assert sum(long.values()) <= 3, dict(long)  # the reset's deferred action check and the unstable count


@pytest.mark.parametrize("name", FAMILIES)
def test_sample_adapt_sample_syncs_do_not_grow_with_the_horizon(name):
    """Baseline fit, GAE and the inner step between two rollouts add a fixed number, not one per step."""
    short = episode_syncs(name, FAMILIES[name], SHORT, deferred=True, with_learner=True)
    long = episode_syncs(name, FAMILIES[name], LONG, deferred=True, with_learner=True)
    assert short == long, f"{dict(short)} vs {dict(long)}"


def test_the_counter_sees_per_step_synchronizations():
    """The control: with immediate action checks (the CPU default) every step reads a flag on the host."""
    short = episode_syncs("navigation-2d", {}, SHORT, deferred=False)
    long = episode_syncs("navigation-2d", {}, LONG, deferred=False)
    assert sum(long.values()) - sum(short.values()) >= LONG - SHORT, (dict(short), dict(long))


CUDA_FAMILIES = {**FAMILIES, "halfcheetah-vel": {"backend": "warp"}, "ant-dir": {"backend": "warp"}}


def cuda_syncs(name: str, horizon: int, deferred: bool | None = None) -> int:
    """Synchronizing CUDA calls that torch's own detector (``set_sync_debug_mode``) reports for a sample, adapt,
    sample pass (``deferred=None``: the CUDA defaults), after a first pass that loads kernels and captures graphs."""
    import warnings

    if CUDA_FAMILIES[name].get("backend") == "warp":
        pytest.importorskip("mujoco_warp")
    run = sample_adapt_sample(name, CUDA_FAMILIES[name], horizon, deferred, device="cuda", with_learner=True)
    run()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", CUDA_FAMILIES)
def test_cuda_time_step_loop_does_not_synchronize(name):
    """On a GPU, with the device defaults, the synchronizations torch detects do not grow with the horizon."""
    short, long = cuda_syncs(name, SHORT), cuda_syncs(name, LONG)
    assert short == long, (short, long)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_cuda_detector_sees_per_step_synchronizations():
    """The control: with immediate action checks every step reads a flag on the host, and torch reports it."""
    short, long = cuda_syncs("navigation-2d", SHORT, deferred=False), cuda_syncs("navigation-2d", LONG, deferred=False)
    assert long - short >= LONG - SHORT, (short, long)
