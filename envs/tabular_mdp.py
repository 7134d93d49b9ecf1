"""Random tabular MDPs (docs/architecture.md §3): a task is a transition tensor and a table of mean rewards.

>>> family = TabularMDPFamily(num_states=10, num_actions=5)
>>> env = family.make_vector_env(num_envs=800, device="cuda")           # horizon 10
>>> env.set_tasks(repeat_tasks(family.sample_tasks(40, np.random.default_rng(0)), 20))
>>> obs, info = env.reset(seed=0)                                        # [800, 10] one-hot of state 0
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

#: allowed deviation of a transition row's sum from 1 in ``set_tasks``
_ROW_SUM_TOLERANCE = 1e-4


class TabularMDPFamily(TaskFamily):
    """Random finite MDPs (Duan et al. 2016, "RL²", §4.2; as in pytorch-maml-rl's ``TabularMDPEnv``).

    * Task: transitions ``P[s, a] ~ Dirichlet(1, …, 1)`` (uniform on the simplex), key ``"transitions"``
      float32 ``[n, S, A, S]``; mean rewards ``R[s, a] ~ N(1, 1)``, key ``"reward_means"`` float32
      ``[n, S, A]``.
    * Horizon: 10 steps.
    * Observation: one-hot of the current state (S,); every episode starts in state 0.
    * Action: ``Discrete(A)``.
    * Reward: ``r ~ N(R[s, a], 1)``; next state ``s' ~ Categorical(P[s, a])``.
    * Termination: never.

    Args:
        num_states: ``S`` (10 in RL²).
        num_actions: ``A`` (5 in RL²).
    """

    name: ClassVar[str] = "tabular-mdp"
    gym_id: ClassVar[str] = "TabularMDP-v0"
    default_horizon: int = 10

    def __init__(self, num_states: int = 10, num_actions: int = 5) -> None:
        self.num_states = check_positive_int(num_states, "num_states")
        self.num_actions = check_positive_int(num_actions, "num_actions")
        self._observation_space = gym.spaces.Box(0.0, 1.0, (self.num_states,), np.float32)
        self._action_space = gym.spaces.Discrete(self.num_actions)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """Draw ``n`` MDPs: ``{"transitions": [n, S, A, S], "reward_means": [n, S, A]}`` float32."""
        n = check_task_request(n, rng)
        s, a = self.num_states, self.num_actions
        transitions = rng.dirichlet(np.ones(s), size=(n, s, a))
        reward_means = rng.normal(1.0, 1.0, size=(n, s, a))
        return {
            "transitions": transitions.astype(np.float32),
            "reward_means": reward_means.astype(np.float32),
        }

    def make_vector_env(
        self, num_envs: int, *, max_episode_steps: int | None = None, device: Any = "cpu"
    ) -> TabularMDPVectorEnv:
        """``num_envs`` MDPs on ``device``; ``max_episode_steps=None`` means 10."""
        horizon = self.default_horizon if max_episode_steps is None else max_episode_steps
        return TabularMDPVectorEnv(
            num_envs,
            max_episode_steps=horizon,
            device=device,
            num_states=self.num_states,
            num_actions=self.num_actions,
        )

    @property
    def single_observation_space(self) -> gym.spaces.Box:
        """``Box(0, 1, (S,))`` float32 (one-hot states)."""
        return self._observation_space

    @property
    def single_action_space(self) -> gym.spaces.Discrete:
        """``Discrete(A)``."""
        return self._action_space


class TabularMDPVectorEnv(TorchMetaVectorEnv):
    """``num_envs`` tabular MDPs as torch tensors (see ``TabularMDPFamily``).

    Tasks: ``{"transitions": [N, S, A, S]`` (non-negative rows summing to 1), ``"reward_means": [N, S, A]}``.
    ``step`` takes actions ``[N]`` (integers in ``[0, A)``) and returns obs ``[N, S]`` one-hot, reward
    ``[N]``, terminated ``[N]`` (always False), truncated ``[N]``. Each step draws, from ``self.generator``,
    ``z ~ N(0, 1)^N`` (reward ``R[s, a] + z``) and then ``u ~ U[0, 1)^N`` (next state by inverse CDF of
    ``P[s, a]``).
    """

    def __init__(
        self,
        num_envs: int,
        *,
        max_episode_steps: int = 10,
        device: Any = "cpu",
        num_states: int = 10,
        num_actions: int = 5,
    ) -> None:
        family = TabularMDPFamily(num_states=num_states, num_actions=num_actions)
        s, a = family.num_states, family.num_actions
        super().__init__(
            num_envs,
            max_episode_steps,
            device,
            family.single_observation_space,
            family.single_action_space,
            task_shapes={"transitions": (s, a, s), "reward_means": (s, a)},
        )
        self.num_states, self.num_actions = s, a
        self._rows = torch.arange(self.num_envs, device=self.device)
        self._state = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    def _check_tasks(self, tasks: dict[str, np.ndarray]) -> None:
        transitions = tasks["transitions"]
        if transitions.min() < 0.0:
            raise ValueError("task 'transitions' must be non-negative")
        sums = transitions.sum(axis=-1, dtype=np.float64)
        if np.abs(sums - 1.0).max() > _ROW_SUM_TOLERANCE:
            raise ValueError(
                "task 'transitions' rows P[i, s, a, :] must sum to 1, "
                f"got sums in [{sums.min()}, {sums.max()}]"
            )

    def _observation(self) -> Tensor:
        return torch.nn.functional.one_hot(self._state, self.num_states).to(torch.float32)

    def _reset_state(self) -> Tensor:
        self._state = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        return self._observation()

    def _step(self, actions: Tensor, active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        probs = self._task("transitions")[self._rows, self._state, actions]  # [N, S]
        mean = self._task("reward_means")[self._rows, self._state, actions]  # [N]
        noise = torch.randn(self.batch_rows, generator=self.generator, device=self.device)[self.own_rows]
        uniform = torch.rand(self.batch_rows, 1, generator=self.generator, device=self.device)[self.own_rows]
        cdf = probs.cumsum(dim=1)
        cdf = cdf / cdf[:, -1:]  # last entry exactly 1 > u, so the index below is always < S
        next_state = (cdf <= uniform).sum(dim=1)
        self._state = torch.where(active, next_state, self._state)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self._observation(), mean + noise, terminated


class TabularMDPEnv(SingleTaskEnv):
    """One MDP: ``gymnasium.make("TabularMDP-v0", task={"transitions": ..., "reward_means": ...})``.

    Args:
        task: ``{"transitions": (S, A, S), "reward_means": (S, A)}`` (or with a leading 1); None draws a
            new MDP at every ``reset``.
        max_episode_steps: horizon of the underlying vector env (None: 10).
        num_states: ``S``.
        num_actions: ``A``.
    """

    def __init__(
        self,
        task: Tasks | None = None,
        max_episode_steps: int | None = None,
        num_states: int = 10,
        num_actions: int = 5,
    ) -> None:
        family = TabularMDPFamily(num_states=num_states, num_actions=num_actions)
        super().__init__(family, task=task, max_episode_steps=max_episode_steps)


if TabularMDPFamily.name not in family_names():
    register_family(TabularMDPFamily.name, TabularMDPFamily)
if TabularMDPFamily.gym_id not in gym.registry:
    gym.register(
        id=TabularMDPFamily.gym_id,
        entry_point="envs.tabular_mdp:TabularMDPEnv",
        max_episode_steps=TabularMDPFamily.default_horizon,
    )
