"""2D navigation (docs/architecture.md §3): a point moves in the plane towards a task-specific goal.

>>> family = Navigation2DFamily()
>>> env = family.make_vector_env(num_envs=400, device="cuda")            # horizon 100
>>> env.set_tasks(repeat_tasks(family.sample_tasks(20, np.random.default_rng(0)), 20))
>>> obs, info = env.reset(seed=0)                                        # [400, 2] zeros
>>> obs, reward, terminated, truncated, info = env.step(torch.zeros(400, 2))
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from envs._torch_vector import TorchMetaVectorEnv
from envs.base import SingleTaskEnv, TaskFamily, Tasks, check_task_request, family_names, register_family

#: largest step per coordinate; actions are clipped to ``[-MAX_ACTION, MAX_ACTION]²``
MAX_ACTION = 0.1
#: goals are drawn uniformly from ``[-GOAL_RANGE, GOAL_RANGE]²``
GOAL_RANGE = 0.5
#: an episode terminates when ``‖p − g‖∞ < GOAL_TOLERANCE``
GOAL_TOLERANCE = 0.01


class Navigation2DFamily(TaskFamily):
    """2D point navigation to a goal (Finn, Abbeel, Levine 2017, "MAML", §5.3 and appendix).

    * Task: goal ``g ~ U[-0.5, 0.5]²``, key ``"goal"`` float32 ``[n, 2]``.
    * Horizon: 100 steps (the paper's).
    * Observation: the position ``p`` (2,), starting at the origin; with ``oracle=True`` the goal is
      appended, ``[p, g]`` (4,), for the oracle comparison row.
    * Action: a step ``a``, clipped to ``[-0.1, 0.1]²``; then ``p ← p + a``.
    * Reward: ``−‖p − g‖₂`` after the move.
    * Termination: ``‖p − g‖∞ < 0.01`` after the move.

    Same dynamics as pytorch-maml-rl's ``Navigation2DEnv``.

    Args:
        oracle: append the goal to the observation.
    """

    name: ClassVar[str] = "navigation-2d"
    gym_id: ClassVar[str] = "Navigation2D-v0"
    default_horizon: int = 100

    def __init__(self, oracle: bool = False) -> None:
        if not isinstance(oracle, bool | np.bool_):
            raise ValueError(f"oracle must be a bool, got {oracle!r}")
        self.oracle = bool(oracle)
        obs_dim = 4 if self.oracle else 2
        self._observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self._action_space = gym.spaces.Box(-MAX_ACTION, MAX_ACTION, (2,), np.float32)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """Draw ``n`` goals; returns ``{"goal": [n, 2] float32}`` uniform on ``[-0.5, 0.5]²``."""
        n = check_task_request(n, rng)
        return {"goal": rng.uniform(-GOAL_RANGE, GOAL_RANGE, size=(n, 2)).astype(np.float32)}

    def make_vector_env(
        self, num_envs: int, *, max_episode_steps: int | None = None, device: Any = "cpu"
    ) -> Navigation2DVectorEnv:
        """``num_envs`` sub-environments on ``device``; ``max_episode_steps=None`` means 100."""
        horizon = self.default_horizon if max_episode_steps is None else max_episode_steps
        return Navigation2DVectorEnv(num_envs, max_episode_steps=horizon, device=device, oracle=self.oracle)

    @property
    def single_observation_space(self) -> gym.spaces.Box:
        """``Box(-inf, inf, (2,))``, or ``(4,)`` with ``oracle``."""
        return self._observation_space

    @property
    def single_action_space(self) -> gym.spaces.Box:
        """``Box(-0.1, 0.1, (2,))`` float32."""
        return self._action_space


class Navigation2DVectorEnv(TorchMetaVectorEnv):
    """``num_envs`` 2D navigation sub-environments as ``[N, 2]`` torch tensors (see ``Navigation2DFamily``).

    Tasks: ``{"goal": [N, 2]}``. ``step`` takes actions ``[N, 2]`` (clipped to ``[-0.1, 0.1]``) and returns
    obs ``[N, 2]`` (``[N, 4]`` with ``oracle``), reward ``[N]``, terminated ``[N]``, truncated ``[N]``.
    Deterministic: the generator is seeded but never drawn from.
    """

    def __init__(
        self, num_envs: int, *, max_episode_steps: int = 100, device: Any = "cpu", oracle: bool = False
    ) -> None:
        family = Navigation2DFamily(oracle=oracle)
        super().__init__(
            num_envs,
            max_episode_steps,
            device,
            family.single_observation_space,
            family.single_action_space,
            task_shapes={"goal": (2,)},
        )
        self.oracle = family.oracle
        self._position = torch.zeros(self.num_envs, 2, device=self.device)

    def _observation(self) -> Tensor:
        if self.oracle:
            return torch.cat([self._position, self._task("goal")], dim=1)
        return self._position.clone()

    def _reset_state(self) -> Tensor:
        self._position = torch.zeros(self.num_envs, 2, device=self.device)
        return self._observation()

    def _step(self, actions: Tensor, active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        goal = self._task("goal")
        self._position = torch.where(active[:, None], self._position + actions, self._position)
        offset = self._position - goal
        reward = -torch.linalg.vector_norm(offset, dim=1)
        terminated = offset.abs().amax(dim=1) < GOAL_TOLERANCE
        return self._observation(), reward, terminated


class Navigation2DEnv(SingleTaskEnv):
    """One 2D navigation environment: ``gymnasium.make("Navigation2D-v0", task={"goal": [x, y]})``.

    Args:
        task: ``{"goal": (2,) or [1, 2]}``; None draws a new goal at every ``reset``.
        max_episode_steps: horizon of the underlying vector env (None: 100).
        oracle: append the goal to the observation.
    """

    def __init__(
        self, task: Tasks | None = None, max_episode_steps: int | None = None, oracle: bool = False
    ) -> None:
        super().__init__(Navigation2DFamily(oracle=oracle), task=task, max_episode_steps=max_episode_steps)


if Navigation2DFamily.name not in family_names():
    register_family(Navigation2DFamily.name, Navigation2DFamily)
if Navigation2DFamily.gym_id not in gym.registry:
    gym.register(
        id=Navigation2DFamily.gym_id,
        entry_point="envs.navigation:Navigation2DEnv",
        max_episode_steps=Navigation2DFamily.default_horizon,
    )
