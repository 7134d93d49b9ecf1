"""Shared fixtures: tiny policies and hand-made episode batches for the math tests; loading scripts as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import envs  # noqa: F401  (registers every task family)
from maml_rl.advantages import with_advantages
from maml_rl.episodes import Episodes
from maml_rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy


def random_episodes(
    num_tasks: int = 2,
    per_task: int = 3,
    steps: int = 5,
    obs_dim: int = 2,
    action_dim: int = 2,
    discrete_actions: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    terminate: bool = True,
) -> Episodes:
    """A random batch ``[T, N]`` with advantages; some episodes end early (mask) when ``terminate``."""
    g = torch.Generator().manual_seed(seed)
    n = num_tasks * per_task
    obs = torch.randn(steps, n, obs_dim, generator=g, dtype=dtype)
    if discrete_actions is None:
        actions = torch.randn(steps, n, action_dim, generator=g, dtype=dtype)
    else:
        actions = torch.randint(0, discrete_actions, (steps, n), generator=g)
    mask = torch.ones(steps, n, dtype=dtype)
    if terminate:
        lengths = torch.randint(2, steps + 1, (n,), generator=g)
        mask = (torch.arange(steps).unsqueeze(1) < lengths.unsqueeze(0)).to(dtype)
    rewards = torch.randn(steps, n, generator=g, dtype=dtype) * mask
    episodes = Episodes(observations=obs, actions=actions, rewards=rewards, mask=mask, num_tasks=num_tasks)
    return with_advantages(episodes, gamma=0.9, gae_lambda=0.95)


@pytest.fixture
def gaussian_policy() -> GaussianMLPPolicy:
    return GaussianMLPPolicy(2, 2, hidden_sizes=(6,), activation="tanh", init_std=0.8,
                             generator=torch.Generator().manual_seed(3)).double()


@pytest.fixture
def categorical_policy() -> CategoricalMLPPolicy:
    return CategoricalMLPPolicy(2, 3, hidden_sizes=(6,), activation="tanh",
                                generator=torch.Generator().manual_seed(4)).double()


def trpo_learner(policy, fast_lr: float, first_order: bool = False, estimator: str = "reinforce", **trpo):
    """A MAML-TRPO learner with inner step size ``fast_lr`` and TRPO settings ``trpo``."""
    from maml_rl.config import MamlConfig
    from maml_rl.metalearners.maml_trpo import MAMLTRPO, MAMLTRPOSettings

    return MAMLTRPO(policy, MamlConfig(fast_lr=fast_lr), MAMLTRPOSettings(first_order=first_order,
                                                                         estimator=estimator, **trpo))


def meta_batch(learner, train, valid):
    """The ``MetaBatch`` a collection with ``learner``'s inner loss would have produced from these batches."""
    from maml_rl.adaptation import adapt
    from maml_rl.collect import MetaBatch
    from maml_rl.policies import task_params

    shared = learner.shared_params()
    adapted = adapt(learner.policy, task_params(shared, valid.num_tasks), list(train), learner.maml.fast_lr,
                    create_graph=False, loss=learner.inner_loss)
    return MetaBatch(train=tuple(train), valid=valid, adapted=adapted)


def load_script(path: Path):  # type: ignore[no-untyped-def]
    """A script outside the packages (experiments/, benchmarks/) as a module, registered in ``sys.modules`` under
    its file name (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
