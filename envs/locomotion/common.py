"""What the MuJoCo locomotion families share: the family base class and the batched vector environment.

A family (``envs.locomotion.half_cheetah``, ``envs.locomotion.ant``) is a robot (model, observation, robot
reward terms, health) plus a task (distribution and task reward term). ``LocomotionVectorEnv`` runs ``N``
sub-environments of one family on one ``BatchedSim``; every quantity is an ``[N, ...]`` array and one native
call steps all of them (docs/architecture.md §7).

Conventions (gymnasium MuJoCo v5, docs/architecture.md §3): frame skip 5, ``dt = 5 × timestep`` (0.05 s for
both robots);
actions are clipped to ``[-1, 1]`` and mapped linearly onto the actuators' ``ctrlrange`` (here also
``[-1, 1]``, so the control is the action itself); ``v_x = (x_after − x_before) / dt`` with ``x = qpos[0]``,
the torso's x position (HalfCheetah's ``rootx`` slide joint, Ant's free joint); resets draw
``qpos = qpos0 + U(−0.1, 0.1)`` and ``qvel = 0.1 · N(0, 1)``, per sub-environment in that order, from the
generator seeded by ``reset(seed=...)``.

Backends (family option ``backend``): ``"native"`` (default) steps MuJoCo on the CPU (``BatchedSim``) and returns
numpy arrays; ``"warp"`` steps ``mujoco_warp`` on a warp device (``envs.locomotion.warp_env``) and returns torch
tensors on that device. Observations, reward terms and health are written once, array-agnostically (numpy
float64 for the native backend, torch float32 for warp): the family hooks only use operations that ``numpy`` and
``torch`` share, through ``array_namespace``.
"""

from __future__ import annotations

import importlib.util
from abc import abstractmethod
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import mujoco
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from envs.base import MetaVectorEnv, TaskFamily, Tasks, check_positive_int, check_task_request
from envs.locomotion.batched_sim import BatchedSim, default_num_threads
from envs.locomotion.models import FRAME_SKIP, load_model

#: scale of gymnasium v5's reset noise (``reset_noise_scale``) for HalfCheetah and Ant
RESET_NOISE_SCALE = 0.1
#: the simulation backends of the locomotion families
BACKENDS = ("native", "warp")
#: how to install the warp backend's dependency
WARP_INSTALL_HINT = "pip install 'mujoco-warp>=4.0' (or pip install 'maml-rl[gpu]')"

#: numpy (native backend) or torch (warp backend); one call takes all of one kind
Array = TypeVar("Array", np.ndarray, torch.Tensor)


def array_namespace(x: np.ndarray | torch.Tensor) -> ModuleType:
    """``torch`` for a tensor, else ``numpy``: the module whose ``abs``, ``square``, ``clip``, ``isfinite``,
    ``zeros_like``, ``full_like`` and ``ones_like`` apply to ``x`` (the family hooks use only these)."""
    return torch if isinstance(x, torch.Tensor) else np


def sample_uniform(n: int, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """``[n]`` float32 draws from ``U[low, high]``."""
    return rng.uniform(low, high, size=check_task_request(n, rng)).astype(np.float32)


def sample_direction(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` float32 values −1 or +1, each with probability ½."""
    return (2 * rng.integers(0, 2, size=check_task_request(n, rng)) - 1).astype(np.float32)


def sample_disc(n: int, rng: np.random.Generator, radius: float) -> np.ndarray:
    """``[n, 2]`` float32 points uniform (by area) in the disc of ``radius``: ``r = R√u``, ``θ = 2πu'``."""
    u = rng.random((check_task_request(n, rng), 2))
    r, theta = radius * np.sqrt(u[:, 0]), 2 * np.pi * u[:, 1]
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1).astype(np.float32)


def check_tasks(family: LocomotionFamily, num_envs: int, tasks: Tasks) -> np.ndarray:
    """``tasks[family.task_key]`` as float64 numpy ``[num_envs, *task_shape]``; ``ValueError`` when the key,
    shape or values (finite numbers, numpy or torch) are wrong."""
    key, shape = family.task_key, (num_envs, *family.task_shape)
    if set(tasks) != {key}:
        raise ValueError(f"tasks must have exactly the key {key!r}, got {sorted(tasks)}")
    value = tasks[key]
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if array.shape != shape:
        raise ValueError(f"task {key!r} must have shape {list(shape)}, got {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ValueError(f"task {key!r} must hold finite numbers")
    return array.astype(np.float64)


def reset_mask_option(options: dict[str, Any] | None, num_envs: int) -> np.ndarray | torch.Tensor | None:
    """The ``reset_mask`` of ``reset``'s options (a bool ``[num_envs]`` numpy array or tensor), or None.

    Raises ``ValueError`` on other options or a mask of the wrong dtype or shape.
    """
    options = dict(options or {})
    mask = options.pop("reset_mask", None)
    if options:
        raise ValueError(f"unknown reset options {sorted(options)}; the only one is 'reset_mask'")
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        mask = np.asarray(mask)
    if mask.dtype not in (np.bool_, torch.bool) or tuple(mask.shape) != (num_envs,):
        raise ValueError(f"options['reset_mask'] must be a bool array of shape [{num_envs}]")
    return mask


class LocomotionFamily(TaskFamily):
    """Base of the MuJoCo locomotion families: a robot with a task-dependent reward term.

    Subclasses set the class attributes and implement the robot hooks (``_state_obs_dim``,
    ``_write_state_obs``, ``_robot_reward_terms``, ``_healthy``) and the task hooks (``sample_tasks``,
    ``_task_reward``).

    Args:
        oracle: append the task parameters to the observation.
        num_threads: native threads that step the simulations (None: the cores available to the process).
        use_contact_forces: compute the contact cost and append the clipped contact forces to the
            observation (only robots with ``supports_contact_forces``).
        backend: ``"native"`` (MuJoCo on the CPU, numpy outputs) or ``"warp"`` (``mujoco_warp`` on the device
            given to ``make_vector_env``, torch outputs there; needs the ``gpu`` extra).
    """

    default_horizon: int = 200
    #: key of ``ROBOT_XML``
    robot: ClassVar[str]
    #: weight ``w`` of the control cost ``w‖a‖²``
    ctrl_cost_weight: ClassVar[float]
    #: the single task key and the shape of one task row
    task_key: ClassVar[str]
    task_shape: ClassVar[tuple[int, ...]] = ()
    supports_contact_forces: ClassVar[bool] = False

    def __init__(
        self,
        *,
        oracle: bool = False,
        num_threads: int | None = None,
        use_contact_forces: bool = False,
        backend: str = "native",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        if backend == "warp" and importlib.util.find_spec("mujoco_warp") is None:
            raise ImportError(f"backend 'warp' needs mujoco_warp, which is not installed: {WARP_INSTALL_HINT}")
        for name, flag in (("oracle", oracle), ("use_contact_forces", use_contact_forces)):
            if not isinstance(flag, bool | np.bool_):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        if num_threads is not None:
            num_threads = check_positive_int(num_threads, "num_threads")
        if use_contact_forces and not self.supports_contact_forces:
            raise ValueError(f"{self.name} has no contact-force option")
        self.oracle = bool(oracle)
        self.num_threads = default_num_threads() if num_threads is None else num_threads
        self.use_contact_forces = bool(use_contact_forces)
        self.backend = backend
        #: the shared, read-only MuJoCo model
        self.model: mujoco.MjModel = load_model(self.robot, self.use_contact_forces)
        self.task_dim = int(np.prod(self.task_shape))
        self.obs_dim = self._state_obs_dim() + (self.task_dim if self.oracle else 0)
        self._observation_space = gym.spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self._action_space = gym.spaces.Box(-1.0, 1.0, (self.model.nu,), np.float32)

    # ------------------------------------------------------------------------------------------ robot hooks
    @abstractmethod
    def _state_obs_dim(self) -> int:
        """Observation size without the oracle columns."""

    @abstractmethod
    def _write_state_obs(self, qpos: Array, qvel: Array, cfrc_ext: Array | None, out: Array) -> None:
        """Write the state part of the observation into ``out`` ``[N, _state_obs_dim()]`` float32."""

    @abstractmethod
    def _robot_reward_terms(self, action: Array, cfrc_ext: Array | None) -> dict[str, Array]:
        """Task-independent reward terms ``[N]`` (the inputs' float dtype) by info name (``reward_ctrl``, ...)."""

    def _healthy(self, qpos: Array, qvel: Array) -> Array:
        """``[N]`` bool, False where the episode terminates (default: never)."""
        return array_namespace(qpos).ones_like(qpos[:, 0], dtype=bool)

    # ------------------------------------------------------------------------------------------- task hooks
    @abstractmethod
    def _task_reward(self, task: Array, x_velocity: Array, qpos: Array) -> Array:
        """The task term ``[N]`` from the task rows ``[N, *task_shape]`` and the new state."""

    # ----------------------------------------------------------------------------------------- the contract
    def make_vector_env(
        self, num_envs: int, *, max_episode_steps: int | None = None, device: Any = "cpu"
    ) -> MetaVectorEnv:
        """``num_envs`` sub-environments; None: horizon 200.

        The native backend steps on the CPU and returns numpy (``device`` must be "cpu"); the warp backend
        steps on ``device`` ("cpu", "cuda", "cuda:N" or a ``torch.device``) and returns torch tensors there.
        """
        horizon = self.default_horizon if max_episode_steps is None else max_episode_steps
        if self.backend == "warp":
            from envs.locomotion.warp_env import WarpLocomotionVectorEnv  # imports mujoco_warp

            return WarpLocomotionVectorEnv(self, num_envs, max_episode_steps=horizon, device=device)
        if str(device) != "cpu":
            raise ValueError(
                f"{self.name} simulates natively on the CPU and returns numpy; got device {device!r} "
                "(the family option backend='warp' simulates on a GPU)"
            )
        return LocomotionVectorEnv(self, num_envs, max_episode_steps=horizon)

    def env_device(self, learner_device: Any) -> Any:
        """The native backend simulates on the CPU whatever the learner's device; warp on the learner's device."""
        return learner_device if self.backend == "warp" else "cpu"

    @property
    def single_observation_space(self) -> gym.spaces.Box:
        """``Box(-inf, inf, (obs_dim,), float32)``."""
        return self._observation_space

    @property
    def single_action_space(self) -> gym.spaces.Box:
        """``Box(-1, 1, (nu,), float32)``; rescaled to the actuator ``ctrlrange``."""
        return self._action_space

    # ------------------------------------------------------------------------------- used by the vector env
    def observe(self, qpos: Array, qvel: Array, cfrc_ext: Array | None, task: Array) -> Array:
        """A fresh observation ``[N, obs_dim]`` float32 (numpy, or torch on ``qpos``'s device): the state part,
        then the task if ``oracle``."""
        if isinstance(qpos, torch.Tensor):
            obs = torch.empty((len(qpos), self.obs_dim), dtype=torch.float32, device=qpos.device)
        else:
            obs = np.empty((len(qpos), self.obs_dim), dtype=np.float32)
        state_dim = self.obs_dim - (self.task_dim if self.oracle else 0)
        self._write_state_obs(qpos, qvel, cfrc_ext, obs[:, :state_dim])
        if self.oracle:
            obs[:, state_dim:] = task.reshape(len(qpos), self.task_dim)
        return obs

    def reward_terms(
        self, task: Array, x_velocity: Array, qpos: Array, action: Array, cfrc_ext: Array | None
    ) -> dict[str, Array]:
        """All reward terms ``[N]`` by info name (float64 numpy natively, float32 torch on warp); the reward is
        their sum."""
        return {
            "reward_task": self._task_reward(task, x_velocity, qpos),
            **self._robot_reward_terms(action, cfrc_ext),
        }

    def healthy(self, qpos: Array, qvel: Array) -> Array:
        """``[N]`` bool, False where the state ends the episode."""
        return self._healthy(qpos, qvel)


class LocomotionVectorEnv(MetaVectorEnv):
    """``N`` sub-environments of a locomotion family, stepped together by one ``BatchedSim``.

    >>> family = AntGoal()
    >>> env = family.make_vector_env(800)
    >>> env.set_tasks(repeat_tasks(family.sample_tasks(40, rng), 20))     # {"goal": [800, 2]}
    >>> obs, info = env.reset(seed=0)                                      # [800, 27] float32
    >>> obs, reward, terminated, truncated, info = env.step(actions)       # actions [800, 8]

    * ``step`` takes ``[N, act_dim]`` actions (numpy or torch, any float dtype); non-finite values raise
      ``ValueError``; values outside ``[-1, 1]`` are clipped.
    * Outputs are fresh numpy arrays: obs float32 ``[N, obs_dim]``, reward float32 ``[N]``, terminated and
      truncated bool ``[N]``. A sub-environment that terminated is frozen (not simulated; same observation,
      reward 0, ``terminated`` True) until it is reset. ``truncated`` is True once a sub-environment has
      taken ``max_episode_steps`` steps since its reset.
    * ``info`` (arrays ``[N]``, 0 where frozen): ``x_velocity``, the reward terms (``reward_task``,
      ``reward_ctrl``, and for Ant ``reward_contact`` and ``reward_survive``; their sum is the reward) and
      ``unstable`` (bool): the simulation became unstable (MuJoCo warning or error, non-finite state); the
      sub-environment was put back at the model's default state, scores 0 and is terminated.
    * ``reset(seed=..., options={"reset_mask": mask})`` resets only the sub-environments where ``mask``
      ([N] bool) is True (the first reset after ``set_tasks`` must be a full one).
    """

    def __init__(self, family: LocomotionFamily, num_envs: int, *, max_episode_steps: int) -> None:
        self.family = family
        self.num_envs = check_positive_int(num_envs, "num_envs")
        self.max_episode_steps = check_positive_int(max_episode_steps, "max_episode_steps")
        self.device = "cpu"
        model = family.model
        self.sim = BatchedSim(
            model, self.num_envs, num_threads=family.num_threads, contact_forces=family.use_contact_forces
        )
        #: seconds per environment step
        self.dt = float(model.opt.timestep) * FRAME_SKIP
        self.single_observation_space = family.single_observation_space
        self.single_action_space = family.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
        self._ctrl_center, self._ctrl_half_range = (high + low) / 2, (high - low) / 2
        self._init_qpos = model.qpos0.copy()
        self._init_qvel = np.zeros(model.nv)
        self._task: np.ndarray | None = None  # float64 [N, *task_shape]
        self._needs_reset = True
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)

    # ---------------------------------------------------------------------------------------------- the API
    def set_tasks(self, tasks: Tasks) -> None:
        """Give sub-environment ``i`` the task in row ``i``; the next call must be a full ``reset``.

        Args:
            tasks: ``{task_key: [N, *task_shape]}`` (numpy or torch), finite numbers.
        """
        self._task = check_tasks(self.family, self.num_envs, tasks)
        self._needs_reset = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw new start states (gymnasium v5 reset noise) for all, or the masked, sub-environments.

        Args:
            seed: seeds ``self.np_random``; None continues its stream.
            options: None, or ``{"reset_mask": [N] bool}`` to reset only those sub-environments.

        Returns:
            The observation ``[N, obs_dim]`` float32 of every sub-environment and an empty info dict.
        """
        if self.closed:
            raise RuntimeError("the environment is closed")
        if self._task is None:
            raise RuntimeError("call set_tasks(tasks) before reset()")
        mask = self._reset_mask(options)
        super().reset(seed=seed)
        # noise for every row of the batch (set_rows), then this shard's masked rows
        rng, rows, own = self.np_random, self.batch_rows, self.own_rows
        uniform = rng.uniform(-RESET_NOISE_SCALE, RESET_NOISE_SCALE, (rows, len(self._init_qpos)))[own][mask]
        normal = rng.standard_normal((rows, len(self._init_qvel)))[own][mask]
        qpos = self._init_qpos + uniform
        qvel = self._init_qvel + RESET_NOISE_SCALE * normal
        return self._start(mask, qpos, qvel), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every sub-environment that has not terminated by one step (5 physics steps).

        Args:
            actions: ``[N, act_dim]`` floats, numpy or torch.

        Returns:
            ``obs [N, obs_dim]`` float32, ``reward [N]`` float32, ``terminated [N]``, ``truncated [N]`` and
            ``info`` (see the class docstring).
        """
        if self.closed:
            raise RuntimeError("the environment is closed")
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (after construction and after every set_tasks)")
        assert self._task is not None
        action = self._prepare_actions(actions)
        active = ~self._terminated
        sim = self.sim
        sim.ctrl[:] = self._ctrl_center + action * self._ctrl_half_range
        x_before = sim.qpos[:, 0].copy()
        unstable = sim.step(active)
        qpos, qvel = sim.qpos, sim.qvel
        x_velocity = (qpos[:, 0] - x_before) / self.dt
        terms = self.family.reward_terms(self._task, x_velocity, qpos, action, sim.cfrc_ext)
        scored = active & ~unstable
        self._terminated |= active & (unstable | ~self.family.healthy(qpos, qvel))
        self._elapsed += 1

        reward = np.where(scored, sum(terms.values()), 0.0).astype(np.float32)
        info: dict[str, Any] = {"x_velocity": np.where(scored, x_velocity, 0.0).astype(np.float32)}
        info.update({name: np.where(scored, term, 0.0).astype(np.float32) for name, term in terms.items()})
        info["unstable"] = unstable
        obs = self.family.observe(qpos, qvel, sim.cfrc_ext, self._task)
        truncated = self._elapsed >= self.max_episode_steps
        return obs, reward, self._terminated.copy(), truncated, info

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the joint state: ``qpos [N, nq]`` and ``qvel [N, nv]`` float64."""
        return self.sim.qpos.copy(), self.sim.qvel.copy()

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Start every sub-environment from a given joint state, as ``reset`` does from a random one.

        Values are not validated (tests use this to force an unstable simulation).

        Args:
            qpos: ``[N, nq]``.
            qvel: ``[N, nv]``.

        Returns:
            The observation ``[N, obs_dim]`` float32.
        """
        if self._task is None:
            raise RuntimeError("call set_tasks(tasks) before set_state()")
        qpos, qvel = np.asarray(qpos, dtype=np.float64), np.asarray(qvel, dtype=np.float64)
        if qpos.shape != self.sim.qpos.shape or qvel.shape != self.sim.qvel.shape:
            raise ValueError(
                f"qpos and qvel must have shapes {list(self.sim.qpos.shape)} and "
                f"{list(self.sim.qvel.shape)}, got {list(qpos.shape)} and {list(qvel.shape)}"
            )
        return self._start(np.ones(self.num_envs, dtype=bool), qpos, qvel)

    def close_extras(self, **kwargs: Any) -> None:
        """Release the simulator's threads and memory; the environment cannot be used afterwards."""
        self.sim.close()

    # ------------------------------------------------------------------------------------------- internals
    def _start(self, mask: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        assert self._task is not None
        self.sim.set_state(mask, qpos, qvel)
        self._terminated[mask] = False
        self._elapsed[mask] = 0
        self._needs_reset = False
        return self.family.observe(self.sim.qpos, self.sim.qvel, self.sim.cfrc_ext, self._task)

    def _reset_mask(self, options: dict[str, Any] | None) -> np.ndarray:
        mask = reset_mask_option(options, self.num_envs)
        if mask is None:
            return np.ones(self.num_envs, dtype=bool)
        mask = np.asarray(mask)
        if self._needs_reset and not mask.all():
            raise RuntimeError("the first reset after set_tasks must reset every sub-environment")
        return mask

    def _prepare_actions(self, actions: Any) -> np.ndarray:
        """Validated actions as float64 ``[N, act_dim]`` clipped to ``[-1, 1]``."""
        if hasattr(actions, "detach"):
            actions = actions.detach().cpu().numpy()
        array = np.asarray(actions)
        expected = (self.num_envs, *(self.single_action_space.shape or ()))
        if array.shape != expected:
            raise ValueError(f"actions must have shape {list(expected)}, got {list(array.shape)}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"actions must be real numbers, got dtype {array.dtype}")
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError("actions must be finite (got NaN or infinity)")
        return np.clip(array, -1.0, 1.0)
