"""Bernoulli multi-armed bandits (docs/architecture.md §3): a task is the vector of the arms' success probabilities.

>>> family = BernoulliBanditFamily(num_arms=5)
>>> env = family.make_vector_env(num_envs=800, max_episode_steps=100, device="cuda")
>>> env.set_tasks(repeat_tasks(family.sample_tasks(40, np.random.default_rng(0)), 20))
>>> obs, info = env.reset(seed=0)                                        # [800, 1] zeros
>>> obs, reward, terminated, truncated, info = env.step(torch.zeros(800, dtype=torch.int64))
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from envs._torch_vector import TorchMetaVectorEnv
from envs.base import (
    SingleTaskEnv,
    TaskFamily,
    Tasks,
    check_positive_int,
    check_task_request,
    family_names,
    register_family,
)


class BernoulliBanditFamily(TaskFamily):
    """K-armed Bernoulli bandits (Duan et al. 2016, "RL²", §4.1), as in pytorch-maml-rl's bandit env.

    * Task: arm means ``p ~ U[0, 1]^K``, key ``"means"`` float32 ``[n, K]``.
    * Horizon: ``n`` pulls; 10 by default (configs use 10 or 100).
    * Observation: a constant zero vector (1,) — the policy is state-independent, as in MAML's bandit
      setting; what it learns about the task lives in its adapted parameters.
    * Action: the arm, ``Discrete(K)``.
    * Reward: ``r ~ Bernoulli(p[a])``, drawn with the environment's torch generator.
    * Termination: never.

    Args:
        num_arms: ``K``.
    """

    name: ClassVar[str] = "bernoulli-bandit"
    gym_id: ClassVar[str] = "BernoulliBandit-v0"
    default_horizon: int = 10

    def __init__(self, num_arms: int = 5) -> None:
        self.num_arms = check_positive_int(num_arms, "num_arms")
        # bounds [0, 1] rather than [0, 0]: gymnasium's checker warns about a Box with low == high
        self._observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self._action_space = gym.spaces.Discrete(self.num_arms)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """Draw ``n`` bandits; returns ``{"means": [n, K] float32}`` uniform on ``[0, 1]``."""
        n = check_task_request(n, rng)
        return {"means": rng.uniform(0.0, 1.0, size=(n, self.num_arms)).astype(np.float32)}

    def make_vector_env(
        self, num_envs: int, *, max_episode_steps: int | None = None, device: Any = "cpu"
    ) -> BernoulliBanditVectorEnv:
        """``num_envs`` bandits on ``device``; ``max_episode_steps=None`` means 10 pulls."""
        horizon = self.default_horizon if max_episode_steps is None else max_episode_steps
        return BernoulliBanditVectorEnv(
            num_envs, max_episode_steps=horizon, device=device, num_arms=self.num_arms
        )

    @property
    def single_observation_space(self) -> gym.spaces.Box:
        """``Box(0, 1, (1,))`` float32; the observation is always zero."""
        return self._observation_space

    @property
    def single_action_space(self) -> gym.spaces.Discrete:
        """``Discrete(K)``."""
        return self._action_space


class BernoulliBanditVectorEnv(TorchMetaVectorEnv):
    """``num_envs`` Bernoulli bandits as torch tensors (see ``BernoulliBanditFamily``).

    Tasks: ``{"means": [N, K]}`` with entries in ``[0, 1]``. ``step`` takes arms ``[N]`` (integers in
    ``[0, K)``) and returns obs ``[N, 1]`` zeros, reward ``[N]`` in ``{0, 1}``, terminated ``[N]`` (always
    False), truncated ``[N]``. Each step draws ``u ~ U[0, 1)^N`` from ``self.generator``; ``r = (u < p[a])``.
    """

    def __init__(
        self, num_envs: int, *, max_episode_steps: int = 10, device: Any = "cpu", num_arms: int = 5
    ) -> None:
        family = BernoulliBanditFamily(num_arms=num_arms)
        super().__init__(
            num_envs,
            max_episode_steps,
            device,
            family.single_observation_space,
            family.single_action_space,
            task_shapes={"means": (family.num_arms,)},
        )
        self.num_arms = family.num_arms

    def _check_tasks(self, tasks: dict[str, np.ndarray]) -> None:
        means = tasks["means"]
        if means.min() < 0.0 or means.max() > 1.0:
            raise ValueError(f"task 'means' must lie in [0, 1], got values in [{means.min()}, {means.max()}]")

    def _observation(self) -> Tensor:
        return torch.zeros(self.num_envs, 1, device=self.device)

    def _reset_state(self) -> Tensor:
        return self._observation()

    def _step(self, actions: Tensor, active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        means = self._task("means").gather(1, actions[:, None]).squeeze(1)
        uniform = torch.rand(self.batch_rows, generator=self.generator, device=self.device)[self.own_rows]
        reward = (uniform < means).to(torch.float32)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self._observation(), reward, terminated


class BernoulliBanditEnv(SingleTaskEnv):
    """One bandit: ``gymnasium.make("BernoulliBandit-v0", task={"means": [...]}, num_arms=K)``.

    Args:
        task: ``{"means": (K,) or [1, K]}``; None draws new means at every ``reset``.
        max_episode_steps: horizon of the underlying vector env (None: 10).
        num_arms: ``K``.
    """

    def __init__(
        self, task: Tasks | None = None, max_episode_steps: int | None = None, num_arms: int = 5
    ) -> None:
        family = BernoulliBanditFamily(num_arms=num_arms)
        super().__init__(family, task=task, max_episode_steps=max_episode_steps)


if BernoulliBanditFamily.name not in family_names():
    register_family(BernoulliBanditFamily.name, BernoulliBanditFamily)
if BernoulliBanditFamily.gym_id not in gym.registry:
    gym.register(
        id=BernoulliBanditFamily.gym_id,
        entry_point="envs.bandit:BernoulliBanditEnv",
        max_episode_steps=BernoulliBanditFamily.default_horizon,
    )
