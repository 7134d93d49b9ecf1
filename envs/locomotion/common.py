"""What the MuJoCo locomotion families share: the family base class and the one batched vector environment.

A family (``envs.locomotion.half_cheetah``, ``ant``, ``hopper_walker``, ``humanoid``) is a robot (model,
observation, robot reward terms, health) plus a task (distribution and task reward term, and optionally
per-row model parameters). ``LocomotionVectorEnv`` runs ``N`` sub-environments of one family on one
``Simulator`` (``envs.locomotion.simulator``); every quantity is an ``[N, ...]`` tensor and one call steps all of
them (docs/architecture.md §7).

The family hooks are written once, in torch, on the simulator's zero-copy state views: float64 CPU tensors
that share memory with ``mujoco.batch``'s rows (native backend) or float32 tensors on a warp device (warp
backend). The native backend's outputs are numpy arrays (``Tensor.numpy()``, no copy). A step runs a few dozen
small torch operations around the physics call; each costs microseconds of dispatch, so the step keeps their
number small (one ``addcmul`` writes the controls, one ``stack`` and one ``where`` mask all the outputs).

Conventions (gymnasium MuJoCo v5, docs/architecture.md §3): the robot's frame skip (``dt = frame_skip ×
timestep``); actions are clipped to ``[-1, 1]`` and mapped linearly onto the actuators' ``ctrlrange``; the
velocity of a family's tracked position (``_position``: the root's x for planar robots, the torso's xy for Ant,
the centre of mass's xy for Humanoid) is ``(p_after − p_before) / dt``; resets draw ``qpos = qpos0 +
U(−s, s)`` and ``qvel = s · N(0, 1)`` (HalfCheetah, Ant) or ``U(−s, s)`` (Hopper, Walker2d, Humanoid), per
sub-environment in that order, with the robot's ``reset_noise_scale`` ``s``, from the generator seeded by
``reset(seed=...)``; with ``reference_model`` (or its part ``start_state``), the MAML reference's start state instead
(its pose plus normal noise, ``models.REFERENCE_MODEL``).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
import torch
from gymnasium.vector.utils import batch_space
from torch import Tensor

from envs._actions import ActionValidator
from envs.base import UNSTABLE, MetaVectorEnv, TaskFamily, Tasks, check_positive_int, check_task_request
from envs.locomotion.batched_sim import BatchedSim, default_num_threads
from envs.locomotion.models import (
    REFERENCE_MODEL,
    REFERENCE_PARTS,
    ROBOT_FRAME_SKIP,
    centre_of_mass_adr,
    load_model,
    reference_parts,
)
from envs.locomotion.simulator import DATA_FIELDS, MODEL_FIELDS, Simulator, check_backend
from envs.locomotion.warp_sim import WarpSim

#: info names of the tracked velocity's components
_VELOCITY_NAMES = ("x_velocity", "y_velocity")
#: the noise distributions of gymnasium v5's ``reset_model`` for qvel
RESET_QVEL_NOISE = ("normal", "uniform")


def sum_rows(x: Tensor) -> Tensor:
    """``[N]``: the sum over the last axis of an ``[N, k]`` tensor (torch's order; the native rewards may differ
    from numpy's pairwise sums in the last bit)."""
    return x.sum(dim=1)


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


def sample_unit_circle(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 2]`` float32 unit vectors with angle ``θ ~ U[0, 2π)``: ``(cos θ, sin θ)``."""
    theta = rng.uniform(0.0, 2 * np.pi, size=check_task_request(n, rng))
    return np.stack([np.cos(theta), np.sin(theta)], axis=1).astype(np.float32)


def check_tasks(family: LocomotionFamily, num_envs: int, tasks: Tasks) -> dict[str, np.ndarray]:
    """``tasks`` as float64 numpy arrays ``{key: [num_envs, *shape]}`` for the keys of ``family.task_shapes``;
    ``ValueError`` when the keys, shapes or values (finite numbers, numpy or torch) are wrong."""
    shapes = family.task_shapes
    if set(tasks) != set(shapes):
        raise ValueError(f"tasks must have exactly the keys {sorted(shapes)}, got {sorted(tasks)}")
    arrays = {}
    for key, task_shape in shapes.items():
        value, shape = tasks[key], (num_envs, *task_shape)
        array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
        if array.shape != shape:
            raise ValueError(f"task {key!r} must have shape {list(shape)}, got {list(array.shape)}")
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise ValueError(f"task {key!r} must hold finite numbers")
        arrays[key] = array.astype(np.float64)
    return arrays


def _mask_option(options: dict[str, Any], key: str, num_envs: int) -> np.ndarray | Tensor | None:
    mask = options.pop(key, None)
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        mask = np.asarray(mask)
    if mask.dtype not in (np.bool_, torch.bool) or tuple(mask.shape) != (num_envs,):
        raise ValueError(f"options[{key!r}] must be a bool array of shape [{num_envs}]")
    return mask


def reset_mask_options(options: dict[str, Any] | None, num_envs: int
                       ) -> tuple[np.ndarray | Tensor | None, np.ndarray | Tensor | None]:
    """The ``reset_mask`` and ``frozen_mask`` of ``reset``'s options (bool ``[num_envs]`` numpy arrays or tensors),
    each None where absent.

    Raises ``ValueError`` on other options or a mask of the wrong dtype or shape.
    """
    options = dict(options or {})
    reset_mask = _mask_option(options, "reset_mask", num_envs)
    frozen_mask = _mask_option(options, "frozen_mask", num_envs)
    if options:
        raise ValueError(f"unknown reset options {sorted(options)}; valid: 'reset_mask', 'frozen_mask'")
    return reset_mask, frozen_mask


def make_simulator(
    backend: str,
    model: mujoco.MjModel,
    num_envs: int,
    *,
    frame_skip: int,
    fields: tuple[str, ...] = (),
    model_fields: tuple[str, ...] = (),
    device: Any = "cpu",
    num_threads: int | None = None,
    use_graph: bool = True,
    fields_after_step: tuple[str, ...] = (),
) -> Simulator:
    """The simulator of ``backend`` ("native": ``BatchedSim`` on the CPU; "warp": ``WarpSim`` on ``device``).

    Args:
        backend: one of ``BACKENDS``.
        model: the MuJoCo model (never modified; each simulator copies it).
        num_envs: ``N``.
        frame_skip: physics steps per ``step``.
        fields: the ``DATA_FIELDS`` to expose in ``Simulator.fields`` (``cfrc_ext`` needs a model that computes
            it during the step, see ``envs.locomotion.models``).
        model_fields: the ``MODEL_FIELDS`` that ``set_model_fields`` will be given.
        device: "cpu" for native; "cpu", "cuda" or "cuda:N" for warp.
        num_threads: native threads (native only; None: the cores available to the process).
        use_graph: replay the physics as a captured warp graph (warp only).
        fields_after_step: the ``fields`` computed at the new state after each step, the others as the step left
            them (native only; see ``BatchedSim``).
    """
    check_backend(backend)
    unknown = sorted(set(fields) - set(DATA_FIELDS)) + sorted(set(model_fields) - set(MODEL_FIELDS))
    if unknown:
        raise ValueError(f"unsupported simulator fields {unknown}; data: {DATA_FIELDS}, model: {MODEL_FIELDS}")
    if backend == "warp":
        if fields_after_step:
            names = ", ".join(fields_after_step)
            raise ValueError(f"fields after the step ({names}) are read by the native backend only")
        return WarpSim(
            model, num_envs, device=device, frame_skip=frame_skip, fields=fields, model_fields=model_fields,
            use_graph=use_graph,
        )
    if str(device) != "cpu":
        raise ValueError(
            f"the native backend simulates on the CPU and returns numpy; got device {device!r} "
            "(the family option backend='warp' simulates on a GPU)"
        )
    return BatchedSim(
        model, num_envs, num_threads=num_threads, frame_skip=frame_skip, fields=fields,
        fields_after_step=fields_after_step,
    )


class LocomotionFamily(TaskFamily):
    """Base of the MuJoCo locomotion families: a robot with a task-dependent reward term.

    Subclasses set the class attributes and implement the robot hooks (``_state_obs_dim``,
    ``_write_state_obs``, ``_robot_reward_terms``, optionally ``_healthy`` and ``_position``) and the task hooks
    (``sample_tasks``, ``_task_reward``, optionally ``_model_field_values``). Hooks receive the ``Simulator``
    (``sim.qpos [N, nq]``, ``sim.qvel [N, nv]``, ``sim.ctrl [N, nu]``, ``sim.fields[name]``) and the task rows
    ``{key: [N, *shape]}`` as torch tensors of the simulator's dtype and device, and return tensors.

    Args:
        oracle: append the task parameters (all keys, flattened, in ``task_shapes`` order) to the observation.
        num_threads: native threads that step the simulations (None: the cores available to the process).
        use_contact_forces: compute the contact cost and append the contact forces to the observation (only
            robots with ``supports_contact_forces``).
        backend: ``"native"`` (MuJoCo on the CPU, numpy outputs) or ``"warp"`` (``mujoco_warp`` on the device
            given to ``make_vector_env``, torch outputs there; needs the ``gpu`` extra).
        frame_skip: physics steps per environment step; ``dt = timestep × frame_skip`` (None: the robot's
            gymnasium v5 value, ``ROBOT_FRAME_SKIP``). The MAML reference's rllab models stepped once per environment
            step (rllab's ``MujocoEnv`` default): ``frame_skip: 1`` gives its 0.01 s HalfCheetah step
            (docs/reproduction.md).
        centre_of_mass: track the torso subtree's centre of mass as the MAML reference's rllab environments did
            (only robots with ``supports_centre_of_mass``; native backend): the rewarded velocity is its linear
            velocity at the state after the step (rllab's ``get_body_comvel``) instead of the tracked position's
            displacement over the step, and the observation appends its position ``[x, y, z]`` (rllab's
            ``get_body_com``) after the state part (docs/reproduction.md).
        reference_model: the MAML reference's rllab model of the robot (only robots with
            ``supports_reference_model``; ``models.REFERENCE_MODEL``): its time step stepped once per env step
            (``frame_skip`` must be 1 or unset), its contact impedance, and its start state (``init_qpos`` with
            normal noise, as rllab's ``reset_mujoco``) instead of gymnasium's. ``True`` takes all three; a list of
            ``models.REFERENCE_PARTS`` (``time_step``, ``contact_impedance``, ``start_state``) takes those only,
            the rest staying gymnasium's (without ``time_step``, ``frame_skip`` applies as usual).
    """

    default_horizon: int = 200
    #: key of ``ROBOT_XML``
    robot: ClassVar[str]
    #: weight ``w`` of the control cost ``w‖ctrl‖²``
    ctrl_cost_weight: ClassVar[float]
    #: the task key and the shape of one task row (families with one task array)
    task_key: ClassVar[str]
    task_shape: ClassVar[tuple[int, ...]] = ()
    supports_contact_forces: ClassVar[bool] = False
    supports_centre_of_mass: ClassVar[bool] = False
    supports_reference_model: ClassVar[bool] = False
    #: gymnasium v5's ``reset_noise_scale`` and the distribution of the qvel noise (``RESET_QVEL_NOISE``)
    reset_noise_scale: ClassVar[float] = 0.1
    reset_qvel_noise: ClassVar[str] = "normal"
    #: MjData fields the hooks read from ``sim.fields`` (``cfrc_ext`` is added with ``use_contact_forces``)
    data_fields: ClassVar[tuple[str, ...]] = ()
    #: model fields the tasks set per sub-environment (``_model_field_values``)
    model_fields: ClassVar[tuple[str, ...]] = ()
    #: read ``cfrc_ext`` at the state after the step (native ``BatchedSim(fields_after_step=("cfrc_ext",))``) rather
    #: than from the last physics step's constraint solve
    contact_forces_after_step: ClassVar[bool] = False

    def __init__(
        self,
        *,
        oracle: bool = False,
        num_threads: int | None = None,
        use_contact_forces: bool = False,
        backend: str = "native",
        frame_skip: int | None = None,
        centre_of_mass: bool = False,
        reference_model: bool | list[str] | tuple[str, ...] = False,
    ) -> None:
        flags = (("oracle", oracle), ("use_contact_forces", use_contact_forces), ("centre_of_mass", centre_of_mass))
        for name, flag in flags:
            if not isinstance(flag, bool | np.bool_):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        if centre_of_mass and backend == "warp":
            raise ValueError("centre_of_mass is implemented by the native backend only (it reads the centre of mass "
                             "at the state after each step)")
        check_backend(backend)
        if num_threads is not None:
            num_threads = check_positive_int(num_threads, "num_threads")
        if use_contact_forces and not self.supports_contact_forces:
            raise ValueError(f"{self.name} has no contact-force option")
        if centre_of_mass and not self.supports_centre_of_mass:
            raise ValueError(f"{self.name} has no centre_of_mass option")
        parts = reference_parts(reference_model)
        if parts and not self.supports_reference_model:
            raise ValueError(f"{self.name} has no reference_model option")
        if "time_step" in parts and frame_skip not in (None, 1):
            raise ValueError(f"reference_model steps the reference's time step once per env step, as rllab did: "
                             f"frame_skip must be 1 or unset, got {frame_skip!r}")
        self.oracle = bool(oracle)
        self.num_threads = default_num_threads() if num_threads is None else num_threads
        self.use_contact_forces = bool(use_contact_forces)
        self.backend = backend
        self.centre_of_mass = bool(centre_of_mass)
        #: the parts of the reference model taken, in ``models.REFERENCE_PARTS`` order
        self.reference_parts = parts
        #: the shared, read-only MuJoCo model
        self.model: mujoco.MjModel = load_model(self.robot, self.use_contact_forces, self.centre_of_mass, parts)
        #: where the centre-of-mass position (3) and linear velocity (3) start in ``sensordata``
        self._com_adr = centre_of_mass_adr(self.model) if self.centre_of_mass else -1
        #: physics steps per environment step, the environment step in seconds, the start pose ``[nq]`` and the reset
        #: noise: (distribution, scale) of the qpos and the qvel noise, each "uniform" on ``[-scale, scale]`` or
        #: "normal" with standard deviation ``scale``
        if "time_step" in parts:
            self.frame_skip = 1
        else:
            self.frame_skip = (ROBOT_FRAME_SKIP[self.robot] if frame_skip is None
                               else check_positive_int(frame_skip, "frame_skip"))
        if "start_state" in parts:
            reference = REFERENCE_MODEL[self.robot]
            self.init_qpos = np.array(reference.init_qpos, dtype=np.float64)
            self.qpos_noise = ("normal", reference.qpos_noise_std)
            self.qvel_noise = ("normal", reference.qvel_noise_std)
        else:
            self.init_qpos = self.model.qpos0.copy()
            self.qpos_noise = ("uniform", self.reset_noise_scale)
            self.qvel_noise = (self.reset_qvel_noise, self.reset_noise_scale)
        self.dt = float(self.model.opt.timestep) * self.frame_skip
        self.task_dim = sum(int(np.prod(shape)) for shape in self.task_shapes.values())
        #: observation columns of the robot's state, then with the centre of mass (``centre_of_mass``): the columns
        #: before the oracle's
        self._robot_obs_dim = self._state_obs_dim()
        self.state_dim = self._robot_obs_dim + (3 if self.centre_of_mass else 0)
        self.obs_dim = self.state_dim + (self.task_dim if self.oracle else 0)
        self._observation_space = gym.spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self._action_space = gym.spaces.Box(-1.0, 1.0, (self.model.nu,), np.float32)
        self._constants: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    @property
    def reference_model(self) -> bool | tuple[str, ...]:
        """The option as runs are compared by it: True (all parts), False (none) or the tuple of parts taken."""
        return True if self.reference_parts == REFERENCE_PARTS else self.reference_parts or False

    @property
    def task_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{task key: shape of one row}``; by default the single ``task_key`` with ``task_shape``."""
        return {self.task_key: self.task_shape}

    @property
    def sim_fields(self) -> tuple[str, ...]:
        """The MjData fields the simulator must expose: ``data_fields``, ``cfrc_ext`` with contact forces and
        ``sensordata`` with the centre of mass."""
        extra = ("cfrc_ext",) if self.use_contact_forces and "cfrc_ext" not in self.data_fields else ()
        return self.data_fields + extra + (("sensordata",) if self.centre_of_mass else ())

    @property
    def sim_fields_after_step(self) -> tuple[str, ...]:
        """The ``sim_fields`` read at the state after each step (``make_simulator``'s ``fields_after_step``)."""
        contact = ("cfrc_ext",) if self.contact_forces_after_step and self.use_contact_forces else ()
        return contact + (("sensordata",) if self.centre_of_mass else ())

    # ------------------------------------------------------------------------------------------ robot hooks
    @abstractmethod
    def _state_obs_dim(self) -> int:
        """Observation size without the oracle columns."""

    @abstractmethod
    def _write_state_obs(self, sim: Simulator, out: Tensor) -> None:
        """Write the state part of the observation into ``out`` ``[N, _state_obs_dim()]`` float32."""

    @abstractmethod
    def _robot_reward_terms(self, sim: Simulator) -> dict[str, Tensor]:
        """Task-independent reward terms ``[N]`` (the simulator's dtype) by info name (``reward_ctrl``, ...)."""

    def _healthy(self, sim: Simulator) -> Tensor | None:
        """``[N]`` bool, False where the episode terminates; None: the robot never terminates (the default)."""
        return None

    def _position(self, sim: Simulator) -> Tensor:
        """``[N, k]``, k = 1 or 2: the tracked position whose velocity the task rewards (default: the root's x,
        ``qpos[0]``)."""
        return sim.qpos[:, :1]

    # ------------------------------------------------------------------------------------------- task hooks
    @abstractmethod
    def _task_reward(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> Tensor:
        """The task term ``[N]`` from the task rows, the tracked velocity ``[N, k]`` and the new state."""

    def _model_field_values(self, tasks: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-row values ``[N, *field_shape]`` of ``model_fields`` for the task rows (default: none)."""
        return {}

    # ----------------------------------------------------------------------------------------- the contract
    def make_vector_env(
        self, num_envs: int, *, max_episode_steps: int | None = None, device: Any = "cpu"
    ) -> LocomotionVectorEnv:
        """``num_envs`` sub-environments; None: horizon ``default_horizon``.

        The native backend steps on the CPU and returns numpy (``device`` must be "cpu"); the warp backend
        steps on ``device`` ("cpu", "cuda", "cuda:N" or a ``torch.device``) and returns torch tensors there.
        """
        horizon = self.default_horizon if max_episode_steps is None else max_episode_steps
        return LocomotionVectorEnv(self, num_envs, max_episode_steps=horizon, device=device)

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
    def constant(self, name: str, value: np.ndarray, like: Tensor) -> Tensor:
        """``value`` as a tensor with ``like``'s dtype and device, converted once and cached under ``name``."""
        key = (name, like.device, like.dtype)
        if key not in self._constants:
            self._constants[key] = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        return self._constants[key]

    def observe(self, sim: Simulator, tasks: dict[str, Tensor]) -> Tensor:
        """A fresh observation ``[N, obs_dim]`` float32 on the simulator's device: the state part, then the task
        rows (flattened, in ``task_shapes`` order) if ``oracle``."""
        n = sim.qpos.shape[0]
        obs = torch.empty((n, self.obs_dim), dtype=torch.float32, device=sim.qpos.device)
        robot_dim = self._robot_obs_dim
        self._write_state_obs(sim, obs if robot_dim == self.obs_dim else obs[:, :robot_dim])
        if self.centre_of_mass:
            obs[:, robot_dim : self.state_dim] = sim.fields["sensordata"][:, self._com_adr : self._com_adr + 3]
        if self.oracle:
            obs[:, self.state_dim :] = torch.cat([tasks[key].reshape(n, -1) for key in self.task_shapes], dim=1)
        return obs

    def position(self, sim: Simulator) -> Tensor:
        """``[N, k]`` the tracked position (see ``_position``)."""
        return self._position(sim)

    def velocity(self, sim: Simulator, before: Tensor, dt: float) -> Tensor:
        """``[N, k]`` the rewarded velocity after a step that started at tracked position ``before`` ``[N, k]``:
        ``(position − before) / dt``, or with ``centre_of_mass`` the first ``k`` components of the centre of mass's
        linear velocity at the new state."""
        if self.centre_of_mass:
            start = self._com_adr + 3
            return sim.fields["sensordata"][:, start : start + before.shape[1]]
        return (self._position(sim) - before) / dt

    def reward_terms(self, tasks: dict[str, Tensor], velocity: Tensor, sim: Simulator) -> dict[str, Tensor]:
        """All reward terms ``[N]`` by info name (the simulator's dtype); the reward is their sum."""
        return {"reward_task": self._task_reward(tasks, velocity, sim), **self._robot_reward_terms(sim)}

    def healthy(self, sim: Simulator) -> Tensor | None:
        """``[N]`` bool, False where the state ends the episode; None where the robot never terminates."""
        return self._healthy(sim)

    def model_field_values(self, tasks: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-row model parameters for the task rows (see ``_model_field_values``)."""
        return self._model_field_values(tasks)


class LocomotionVectorEnv(MetaVectorEnv):
    """``N`` sub-environments of a locomotion family, stepped together by one ``Simulator``.

    >>> family = AntGoal()
    >>> env = family.make_vector_env(800)
    >>> env.set_tasks(repeat_tasks(family.sample_tasks(40, rng), 20))     # {"goal": [800, 2]}
    >>> obs, info = env.reset(seed=0)                                      # [800, 27] float32
    >>> obs, reward, terminated, truncated, info = env.step(actions)       # actions [800, 8]

    * ``step`` takes ``[N, act_dim]`` actions (numpy or torch, any float dtype); non-finite values raise
      ``ValueError`` (deferred to the next ``reset`` with ``deferred_action_checks``, the default on CUDA);
      values outside ``[-1, 1]`` are clipped.
    * Outputs are fresh arrays: numpy for the native backend, torch tensors on ``env.device`` for warp; obs
      float32 ``[N, obs_dim]``, reward float32 ``[N]``, terminated and truncated bool ``[N]``. A
      sub-environment that terminated is frozen (not simulated; same observation, reward 0, ``terminated`` True)
      until it is reset. ``truncated`` is True once a sub-environment has taken ``max_episode_steps`` steps
      since its reset.
    * ``info`` (``[N]``, 0 where frozen, float32): ``x_velocity`` (and ``y_velocity`` where the tracked position
      is planar), the reward terms (``reward_task``, ``reward_ctrl``, and the robot's others; their sum is the
      reward) and ``unstable`` (bool, the ``envs.base`` contract): the simulation became unstable; the
      sub-environment was put back at the model's default state, scores 0 and is terminated.
    * ``reset(seed=..., options={"reset_mask": mask})`` resets only the sub-environments where ``mask``
      ([N] bool) is True (the first reset after ``set_tasks`` must be a full one). ``"frozen_mask": mask`` starts
      those sub-environments terminated: frozen from the first step (``freezes_rows``).
    * Reset noise: native: numpy ``self.np_random`` (as gymnasium, so one sub-environment reproduces
      gymnasium's v5 start states for a seed); warp: a torch generator on the device (same distribution).

    Args:
        family: the task family.
        num_envs: ``N``.
        max_episode_steps: steps after which ``truncated`` is True.
        device: "cpu" for the native backend; "cpu" (warp's CPU device) or "cuda"/"cuda:N" for warp.
        use_graph: replay the warp physics as a captured graph (see ``WarpSim``; ignored by native).
    """

    freezes_rows = True

    def __init__(
        self,
        family: LocomotionFamily,
        num_envs: int,
        *,
        max_episode_steps: int,
        device: Any = "cpu",
        use_graph: bool = True,
    ) -> None:
        self.family = family
        self.num_envs = check_positive_int(num_envs, "num_envs")
        self.max_episode_steps = check_positive_int(max_episode_steps, "max_episode_steps")
        model = family.model
        self.sim: Simulator = make_simulator(
            family.backend, model, self.num_envs, frame_skip=family.frame_skip, fields=family.sim_fields,
            model_fields=family.model_fields, device=device, num_threads=family.num_threads, use_graph=use_graph,
            fields_after_step=family.sim_fields_after_step,
        )
        sim = self.sim
        self.device = "cpu" if sim.host_arrays else sim.device
        #: seconds per environment step
        self.dt = family.dt
        self.single_observation_space = family.single_observation_space
        self.single_action_space = family.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        dtype, sim_device = sim.dtype, sim.device
        low, high = (torch.as_tensor(model.actuator_ctrlrange[:, i], dtype=dtype, device=sim_device) for i in (0, 1))
        self._ctrl_center, self._ctrl_half_range = (high + low) / 2, (high - low) / 2
        self._init_qpos = torch.as_tensor(family.init_qpos, dtype=dtype, device=sim_device)
        self._init_qvel = torch.zeros(model.nv, dtype=dtype, device=sim_device)
        #: reset noise on the device (warp), seeded by ``reset(seed=...)``; None: numpy ``np_random`` (native)
        self.generator: torch.Generator | None = None
        if not sim.host_arrays:
            self.generator = torch.Generator(device=sim.device)
            self.generator.seed()  # from OS entropy until reset(seed=...)
        #: validates actions (``envs._actions``); value checks deferred on CUDA
        self.validate_actions = ActionValidator(self.single_action_space, self.num_envs, device=sim_device, dtype=dtype)
        self._tasks: dict[str, Tensor] | None = None
        self._needs_reset = True
        self._terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=sim.device)
        self._elapsed = torch.zeros(self.num_envs, dtype=torch.int64, device=sim.device)

    @property
    def deferred_action_checks(self) -> bool:
        """Check actions without a host synchronization (default on CUDA): non-finite actions set a device flag
        (and propagate into the state, which is then flagged unstable) and the next ``reset()`` raises."""
        return self.validate_actions.deferred

    @deferred_action_checks.setter
    def deferred_action_checks(self, value: bool) -> None:
        self.validate_actions.deferred = bool(value)

    @property
    def task_rows(self) -> dict[str, Any]:
        """The current task rows ``{key: [N, *shape]}`` (numpy float64 native, torch float32 warp)."""
        if self._tasks is None:
            raise RuntimeError("no tasks set: call set_tasks(tasks)")
        return {key: self._output(value) for key, value in self._tasks.items()}

    # ---------------------------------------------------------------------------------------------- the API
    def set_tasks(self, tasks: Tasks) -> None:
        """Give sub-environment ``i`` the task in row ``i`` (and its model parameters, for families that set
        them); the next call must be a full ``reset``.

        Args:
            tasks: ``{key: [N, *shape]}`` for the keys of ``family.task_shapes`` (numpy or torch), finite.
        """
        arrays = check_tasks(self.family, self.num_envs, tasks)
        self._tasks = {
            key: torch.as_tensor(array, dtype=self.sim.dtype, device=self.sim.device) for key, array in arrays.items()
        }
        model_values = self.family.model_field_values(self._tasks)
        if model_values:
            self.sim.set_model_fields(model_values)
        self._needs_reset = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Draw new start states (gymnasium v5 reset noise) for all, or the masked, sub-environments.

        Args:
            seed: seeds the reset noise; None continues its stream.
            options: None, or ``{"reset_mask": [N] bool}`` (numpy or torch) to reset only those.

        Returns:
            The observation ``[N, obs_dim]`` float32 of every sub-environment and an empty info dict.
        """
        if self.closed:
            raise RuntimeError("the environment is closed")
        if self._tasks is None:
            raise RuntimeError("call set_tasks(tasks) before reset()")
        option, frozen = reset_mask_options(options, self.num_envs)
        device = self.sim.device
        mask = torch.ones(self.num_envs, dtype=torch.bool, device=device) if option is None else (
            torch.as_tensor(option, device=device))
        if self._needs_reset and not bool(mask.all()):
            raise RuntimeError("the first reset after set_tasks must reset every sub-environment")
        self.validate_actions.raise_deferred()  # one synchronization per episode when deferred
        super().reset(seed=seed)  # seeds self.np_random
        if seed is not None and self.generator is not None:
            self.generator.manual_seed(int(seed))
        qpos, qvel = self._reset_noise()
        obs = self._start(mask, qpos, qvel)
        if frozen is not None:  # after the draws, so that the other sub-environments get what they would without it
            self._terminated |= torch.as_tensor(frozen, device=device)
        return obs, {}

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Advance every sub-environment that has not terminated by one step (``frame_skip`` physics steps).

        Args:
            actions: ``[N, act_dim]`` real numbers, numpy or torch (any device).

        Returns:
            ``obs [N, obs_dim]`` float32, ``reward [N]`` float32, ``terminated [N]``, ``truncated [N]`` and
            ``info`` (see the class docstring).
        """
        if self.closed:
            raise RuntimeError("the environment is closed")
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (after construction and after every set_tasks)")
        assert self._tasks is not None
        family, sim = self.family, self.sim
        action = self.validate_actions(actions)
        active = ~self._terminated
        torch.addcmul(self._ctrl_center, action, self._ctrl_half_range, out=sim.ctrl)  # center + action·half
        before = family.position(sim).clone()
        unstable = sim.step(active)
        velocity = family.velocity(sim, before, self.dt)
        terms = family.reward_terms(self._tasks, velocity, sim)
        scored = active & ~unstable
        healthy = family.healthy(sim)
        self._terminated |= active & (unstable if healthy is None else unstable | ~healthy)
        self._elapsed += 1

        # reward, terms and velocities masked and cast in one go: [k, N] float32, one row each
        values = list(terms.values())
        total = values[0]
        for term in values[1:]:
            total = total + term
        rows = torch.cat([torch.stack([total, *values]), velocity.T])  # the tracked position is 1-D or planar
        scored_rows = self._output(torch.where(scored, rows, 0.0).to(torch.float32))
        reward = scored_rows[0]
        names = [*terms, *_VELOCITY_NAMES[: velocity.shape[1]]]
        info: dict[str, Any] = dict(zip(names, scored_rows[1:], strict=True))
        info[UNSTABLE] = self._output(unstable)
        obs = family.observe(sim, self._tasks)
        truncated = self._elapsed >= self.max_episode_steps
        return self._output(obs), reward, self._output(self._terminated.clone()), self._output(truncated), info

    def get_state(self) -> tuple[Any, Any]:
        """Copies of the joint state: ``qpos [N, nq]`` and ``qvel [N, nv]`` (numpy float64 native, torch float32
        on the device for warp)."""
        return self._output(self.sim.qpos.clone()), self._output(self.sim.qvel.clone())

    def set_state(self, qpos: Any, qvel: Any) -> Any:
        """Start every sub-environment from a given joint state, as ``reset`` does from a random one.

        Values are not validated (tests use this to force an unstable simulation).

        Args:
            qpos: ``[N, nq]`` (numpy or torch).
            qvel: ``[N, nv]``.

        Returns:
            The observation ``[N, obs_dim]`` float32.
        """
        if self._tasks is None:
            raise RuntimeError("call set_tasks(tasks) before set_state()")
        sim = self.sim
        qpos, qvel = (
            torch.as_tensor(value if isinstance(value, Tensor) else np.asarray(value), dtype=sim.dtype,
                            device=sim.device)
            for value in (qpos, qvel)
        )
        if qpos.shape != sim.qpos.shape or qvel.shape != sim.qvel.shape:
            raise ValueError(
                f"qpos and qvel must have shapes {list(sim.qpos.shape)} and "
                f"{list(sim.qvel.shape)}, got {list(qpos.shape)} and {list(qvel.shape)}"
            )
        return self._start(torch.ones(self.num_envs, dtype=torch.bool, device=sim.device), qpos, qvel)

    def close_extras(self, **kwargs: Any) -> None:
        """Release the simulator's threads and memory; the environment cannot be used afterwards."""
        self.sim.close()

    # ------------------------------------------------------------------------------------------- internals
    def _output(self, value: Tensor) -> Any:
        """What the API returns: numpy (zero-copy) for the native backend, the tensor itself for warp."""
        return value.numpy() if self.sim.host_arrays else value

    def _reset_noise(self) -> tuple[Tensor, Tensor]:
        """Start states ``qpos [N, nq]``, ``qvel [N, nv]``: the family's start pose and zero velocities plus its
        reset noise (``family.qpos_noise``, ``family.qvel_noise``), drawn for every row of the batch (``set_rows``),
        this shard's rows kept; qpos first, then qvel, as gymnasium and rllab draw them."""
        rows, own = self.batch_rows, self.own_rows
        shapes = ((rows, len(self._init_qpos)), (rows, len(self._init_qvel)))
        noise = [self._draw(kind, scale, shape)[own] for (kind, scale), shape in
                 zip((self.family.qpos_noise, self.family.qvel_noise), shapes, strict=True)]
        return self._init_qpos + noise[0], self._init_qvel + noise[1]

    def _draw(self, kind: str, scale: float, shape: tuple[int, int]) -> Tensor:
        """``shape`` noise, "uniform" on ``[-scale, scale]`` or "normal" with standard deviation ``scale``: numpy's
        ``np_random`` natively (gymnasium's calls, so one sub-environment reproduces its start states), the torch
        generator on the device for warp."""
        if self.generator is None:
            rng = self.np_random
            if kind == "uniform":
                return torch.from_numpy(rng.uniform(-scale, scale, shape))
            return scale * torch.from_numpy(rng.standard_normal(shape))
        device, generator = self.sim.device, self.generator
        if kind == "uniform":
            return scale * (2 * torch.rand(shape, generator=generator, device=device) - 1)
        return scale * torch.randn(shape, generator=generator, device=device)

    def _start(self, mask: Tensor, qpos: Tensor, qvel: Tensor) -> Any:
        assert self._tasks is not None
        self.sim.set_state(mask, qpos, qvel)
        self._terminated = self._terminated & ~mask
        self._elapsed = torch.where(mask, 0, self._elapsed)
        self._needs_reset = False
        return self._output(self.family.observe(self.sim, self._tasks))
