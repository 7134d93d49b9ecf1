"""The task-family contract (docs/architecture.md §3) shared by every family in ``envs``.

A *task family* is a task distribution plus a natively vectorized environment:

>>> family = make_family("navigation-2d")
>>> tasks = family.sample_tasks(20, np.random.default_rng(0))      # dict of arrays, 20 rows
>>> env = family.make_vector_env(num_envs=400)                     # 20 tasks x 20 episodes
>>> env.set_tasks(repeat_tasks(tasks, 20))                         # sub-env i runs row i
>>> obs, info = env.reset(seed=0)                                  # [N, obs_dim]
>>> obs, reward, terminated, truncated, info = env.step(actions)   # [N, ...] arrays

Conventions every vectorized environment follows:

* ``reset`` and ``step`` return batched arrays, sub-environment first: ``numpy.ndarray`` for CPU physics,
  ``torch.Tensor`` (on ``env.device``) for the torch-native families. Observations are float32
  ``[N, obs_dim]``, rewards float32 ``[N]``, terminations/truncations bool ``[N]``.
* Autoreset is disabled (``metadata["autoreset_mode"] == AutoresetMode.DISABLED``): a sub-environment that has
  terminated is not advanced any more; it returns its last observation, reward 0 and ``terminated=True``
  until the next ``reset``. Samplers mask those steps.
* ``truncated`` becomes True for every sub-environment after ``max_episode_steps`` steps.
* Actions are validated: non-finite actions raise ``ValueError``; continuous actions outside the action
  space are clipped to it (documented per family); discrete actions out of range raise ``ValueError``.
* ``info[UNSTABLE]`` (``"unstable"``, bool ``[N]``) is the one info key with a meaning outside its family.
  Environments whose simulation can fail (the MuJoCo families) always report it; the others may omit it. It is
  True in the step where a sub-environment's simulation became invalid (non-finite or exploding state, a
  physics-engine warning or error). That sub-environment scores reward 0 (and 0 in every reported reward term)
  in that step, is terminated (``terminated=True``) and frozen at a finite state (the model's default) until its
  next reset, so no NaN ever leaves the environment. Samplers mask it like any termination and count it
  (``Episodes.num_unstable``), so a run can tell a physics failure from a fall.
* All randomness comes from generators seeded by ``reset(seed=...)`` or passed in; never from global state.
  Random draws are made for all rows of the batch the environment belongs to (``set_rows``) and sliced, so
  a batch split over processes draws what one process would.

``envs`` never imports ``maml_rl``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

Tasks = dict[str, np.ndarray]
#: the ``info`` key that flags sub-environments whose simulation became invalid (see the module docstring)
UNSTABLE = "unstable"


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1, else raise ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_task_request(n: Any, rng: Any) -> int:
    """Validate the arguments of ``sample_tasks(n, rng)``; returns ``n`` as an ``int``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return check_positive_int(n, "n (number of tasks)")


def repeat_tasks(tasks: Tasks, repeats: int) -> Tasks:
    """Repeat every task row ``repeats`` times, task-major: row ``m * repeats + e`` is task ``m``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return {key: np.repeat(value, repeats, axis=0) for key, value in tasks.items()}


def num_tasks(tasks: Tasks) -> int:
    """Number of task rows in ``tasks``; raises ``ValueError`` if the arrays disagree."""
    sizes = {key: len(value) for key, value in tasks.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"task arrays have different numbers of rows: {sizes}")
    return next(iter(sizes.values()))


class MetaVectorEnv(VectorEnv):
    """A vectorized environment whose sub-environment ``i`` runs task row ``i`` (see module docstring)."""

    # gymnasium declares ``metadata`` on instances; a class-level default is its own convention
    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.DISABLED}  # type: ignore[misc]

    #: where observations/rewards live: "cpu" for numpy-returning envs, a torch device for torch envs.
    device: Any = "cpu"
    max_episode_steps: int
    #: this environment's sub-environments are rows ``row_offset … row_offset + num_envs − 1`` of a batch of
    #: ``total_rows`` (None: ``num_envs``) split across processes; see :meth:`set_rows`
    row_offset: int = 0
    total_rows: int | None = None
    #: ``reset(options={"frozen_mask": mask})`` starts the sub-environments where ``mask`` ([N] bool) is True
    #: terminated, so that they are not simulated this episode (a step-budget round that a task does not need);
    #: every random draw is made as without the option, so the other sub-environments are unchanged
    freezes_rows: ClassVar[bool] = False

    def set_rows(self, offset: int, total: int) -> None:
        """Declare this environment one shard of a larger batch: its sub-environment ``i`` is row ``offset + i``
        of ``total`` rows (data-parallel training, where each process owns a contiguous shard).

        Every random draw (reset noise, reward and transition noise) is made for all ``total`` rows from the
        environment's generator and this shard's rows are kept, so with the same seed a batch split over any
        number of processes draws exactly what one process stepping all rows would. One process: offset 0,
        total ``num_envs`` (the default).

        Raises:
            ValueError: the shard does not fit in ``total`` rows.
        """
        offset, total = int(offset), int(total)
        if offset < 0 or total < 1 or offset + self.num_envs > total:
            raise ValueError(f"rows {offset} … {offset + self.num_envs - 1} do not fit in a batch of {total} rows")
        self.row_offset, self.total_rows = offset, total

    @property
    def batch_rows(self) -> int:
        """``total_rows`` of :meth:`set_rows` (``num_envs`` when the environment is not a shard)."""
        return self.num_envs if self.total_rows is None else self.total_rows

    @property
    def own_rows(self) -> slice:
        """This shard's rows in a draw made for all :attr:`batch_rows` rows."""
        return slice(self.row_offset, self.row_offset + self.num_envs)

    @abstractmethod
    def set_tasks(self, tasks: Tasks) -> None:
        """Give sub-environment ``i`` the task in row ``i`` of every array (``num_envs`` rows)."""


class TaskFamily(ABC):
    """A parameterized environment family: a task distribution and its vectorized environment."""

    #: the family name used in configs, e.g. "navigation-2d"
    name: ClassVar[str]
    #: gymnasium id of the single-environment registration, e.g. "Navigation2D-v0"
    gym_id: ClassVar[str]

    #: episode length used when a config does not set one (the paper's horizon)
    default_horizon: int

    @abstractmethod
    def sample_tasks(self, n: int, rng: np.random.Generator) -> Tasks:
        """Draw ``n`` tasks using only ``rng``; returns a dict of arrays with ``n`` rows each."""

    @abstractmethod
    def make_vector_env(
        self, num_envs: int, *, max_episode_steps: int | None = None, device: Any = "cpu"
    ) -> MetaVectorEnv:
        """Create a vectorized environment with ``num_envs`` sub-environments (tasks set later)."""

    def env_device(self, learner_device: Any) -> Any:
        """Where this family's vector environment runs when the learner is on ``learner_device``: there, unless
        the environment can only simulate on the CPU (then "cpu"; the sampler moves its arrays to the learner)."""
        return learner_device

    @property
    def is_discrete(self) -> bool:
        """True when actions are integers (``Discrete`` space)."""
        return isinstance(self.single_action_space, gym.spaces.Discrete)

    @property
    @abstractmethod
    def single_observation_space(self) -> gym.spaces.Box:
        """Observation space of one sub-environment."""

    @property
    @abstractmethod
    def single_action_space(self) -> gym.spaces.Space:
        """Action space of one sub-environment."""


_FAMILIES: dict[str, Callable[..., TaskFamily]] = {}


def register_family(name: str, factory: Callable[..., TaskFamily]) -> None:
    """Make ``make_family(name, **options)`` build ``factory(**options)``."""
    if name in _FAMILIES:
        raise ValueError(f"task family {name!r} is already registered")
    _FAMILIES[name] = factory


def family_names() -> list[str]:
    """Names of all registered task families, sorted."""
    return sorted(_FAMILIES)


def make_family(name: str, **options: Any) -> TaskFamily:
    """Build a task family by name; unknown names or options raise ``ValueError`` listing valid ones."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown task family {name!r}; valid families: {', '.join(family_names())}")
    try:
        return _FAMILIES[name](**options)
    except TypeError as error:
        raise ValueError(f"bad options {options} for task family {name!r}: {error}") from error


class SingleTaskEnv(gym.Env):
    """A single-environment gymnasium view of a family's vector environment (``num_envs=1``, CPU).

    ``task`` is one task: a dict of scalars/arrays *without* the task dimension (e.g. ``{"goal": [0.2, -0.1]}``);
    when it is None a task is drawn from the environment's own ``np_random`` at every ``reset``. Observations
    are float32 numpy arrays. The episode length is left to gymnasium's ``TimeLimit`` wrapper
    (``gymnasium.make(id, max_episode_steps=...)``); by itself the environment never truncates unless
    ``max_episode_steps`` is given.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}  # type: ignore[misc]  # as above

    def __init__(
        self, family: TaskFamily, task: Tasks | None = None, max_episode_steps: int | None = None
    ) -> None:
        self.family = family
        self.vector_env = family.make_vector_env(1, max_episode_steps=max_episode_steps or _NEVER)
        self.observation_space = family.single_observation_space
        self.action_space = family.single_action_space
        self._fixed_task = None if task is None else _one_row(task)
        if self._fixed_task is not None:
            self.vector_env.set_tasks(self._fixed_task)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._fixed_task is None:
            self.vector_env.set_tasks(self.family.sample_tasks(1, self.np_random))
        env_seed = int(self.np_random.integers(2**31 - 1))
        obs, info = self.vector_env.reset(seed=env_seed, options=options)
        return _first(obs), _unbatch_info(info)

    def step(self, action):
        batched = np.asarray(action)[None]
        obs, reward, terminated, truncated, info = self.vector_env.step(batched)
        return (_first(obs), float(_first(reward)), bool(_first(terminated)), bool(_first(truncated)),
                _unbatch_info(info))


_NEVER = 2**62  # "no truncation": the vector env's step counter never reaches it


def _one_row(task: Tasks) -> Tasks:
    """Turn one task (arrays without the task dimension) into a one-row task dict."""
    return {key: np.asarray(value)[None] for key, value in task.items()}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _first(value: Any) -> Any:
    return _to_numpy(value)[0]


def _unbatch_info(info: dict[str, Any]) -> dict[str, Any]:
    return {key: _first(value) for key, value in info.items() if not key.startswith("_")}
