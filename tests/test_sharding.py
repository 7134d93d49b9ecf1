"""A batch split into shards draws exactly what one process stepping the whole batch draws.

Data-parallel training gives each process a contiguous shard of the sub-environments (``set_rows``); every random
draw (reset noise, reward and transition noise, action noise) is made for the whole batch and sliced, so results
do not depend on the number of processes.
"""

import numpy as np
import pytest
import torch

import envs
from maml_rl.build import build_family, build_policy
from maml_rl.config import load_config
from maml_rl.policies import CategoricalMLPPolicy, batch_draw, task_params
from maml_rl.sampling import sample_episodes

FAMILIES = {
    "navigation-2d": {},
    "bernoulli-bandit": {"num_arms": 5},
    "tabular-mdp": {},
    "halfcheetah-vel": {},
    "ant-dir": {},
}
TASKS, PER_TASK, HORIZON = 4, 3, 6


def make_env(family, n, tasks, offset=0, total=None):
    env = family.make_vector_env(n, max_episode_steps=HORIZON)
    env.set_tasks(tasks)
    if total is not None:
        env.set_rows(offset, total)
    return env


def as_numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_two_shards_step_like_the_whole_batch(name):
    family = envs.make_family(name, **FAMILIES[name])
    n = TASKS * PER_TASK
    tasks = envs.repeat_tasks(family.sample_tasks(TASKS, np.random.default_rng(0)), PER_TASK)
    half = {key: value[: n // 2] for key, value in tasks.items()}
    rest = {key: value[n // 2:] for key, value in tasks.items()}
    whole = make_env(family, n, tasks)
    shards = [make_env(family, n // 2, half, 0, n), make_env(family, n // 2, rest, n // 2, n)]
    space = family.single_action_space
    actions_rng = np.random.default_rng(1)
    obs = as_numpy(whole.reset(seed=7)[0])
    shard_obs = np.concatenate([as_numpy(env.reset(seed=7)[0]) for env in shards])
    np.testing.assert_array_equal(obs, shard_obs)
    for _ in range(HORIZON):
        if isinstance(space, envs.base.gym.spaces.Discrete):
            actions = actions_rng.integers(0, space.n, size=n)
        else:
            actions = actions_rng.uniform(-1, 1, size=(n, *space.shape)).astype(np.float32)
        expected = whole.step(actions)
        parts = [env.step(actions[i * (n // 2):(i + 1) * (n // 2)]) for i, env in enumerate(shards)]
        for index in range(4):  # obs, reward, terminated, truncated
            np.testing.assert_array_equal(as_numpy(expected[index]),
                                          np.concatenate([as_numpy(part[index]) for part in parts]))


def test_a_shard_that_does_not_fit_is_refused():
    env = envs.make_family("navigation-2d").make_vector_env(4, max_episode_steps=3)
    with pytest.raises(ValueError, match="do not fit in a batch of 5"):
        env.set_rows(2, 5)


@pytest.mark.parametrize("config_name", ["navigation-2d/paper", "bandit/k5-n10", "halfcheetah-vel/paper"])
def test_sampled_episodes_do_not_depend_on_the_split(config_name):
    config = load_config(f"experiments/{config_name}.yaml", ["policy.hidden_sizes=[8]"])
    family = build_family(config)
    policy = build_policy(config, family, torch.Generator().manual_seed(0))
    tasks = family.sample_tasks(TASKS, np.random.default_rng(3))
    params = task_params({k: v.detach() for k, v in policy.named_parameters()}, TASKS)
    n = TASKS * PER_TASK

    def sample(task_rows, offset, total):
        shard_tasks = {key: value[task_rows] for key, value in tasks.items()}
        count = len(range(*task_rows.indices(TASKS)))
        env = make_env(family, count * PER_TASK, envs.repeat_tasks(shard_tasks, PER_TASK), offset, total)
        shard_params = {key: value[task_rows] for key, value in params.items()}
        return sample_episodes(env, policy, shard_params, count, torch.Generator().manual_seed(11), seed=5)

    whole = sample(slice(0, TASKS), 0, n)
    first, second = sample(slice(0, 1), 0, n), sample(slice(1, TASKS), PER_TASK, n)
    for name in ("observations", "actions", "rewards", "mask"):
        joined = torch.cat([getattr(first, name), getattr(second, name)], dim=1)
        assert torch.equal(getattr(whole, name), joined), name


def test_batch_draw_slices_the_whole_batch_draw():
    like = torch.zeros(())
    whole = torch.randn((10, 3), generator=torch.Generator().manual_seed(4))
    part = batch_draw(torch.randn, (2, 2, 3), 1, (4, 10), torch.Generator().manual_seed(4), like)
    assert torch.equal(part.reshape(4, 3), whole[4:8])
    unsplit = batch_draw(torch.randn, (5, 2, 3), 1, None, torch.Generator().manual_seed(4), like)
    assert torch.equal(unsplit.reshape(10, 3), whole)


def test_categorical_sampling_follows_the_probabilities():
    policy = CategoricalMLPPolicy(1, 4, hidden_sizes=(2,))
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits = probs.log().expand(200_000, 4)
    actions = policy.sample((logits,), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(actions, minlength=4).double() / len(actions)
    # standard error of each frequency is at most sqrt(0.25 / 2e5) = 0.0011: 0.006 is over five of them
    torch.testing.assert_close(frequencies, probs.double(), atol=0.006, rtol=0)
    assert actions.min() >= 0 and actions.max() <= 3
