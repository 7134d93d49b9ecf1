"""``BatchedSim``: N copies of one MuJoCo model stepped together in native code on all cores (the ``native``
implementation of ``envs.locomotion.simulator.Simulator``).

The hot path is one call per environment step: ``mujoco.batch.Batch.step(nstep=frame_skip)`` advances every
selected simulation by ``frame_skip`` calls to ``mj_step`` on a native thread pool, with the GIL released.
Each simulation is one row of a state array (MuJoCo's integration state: time, qpos, qvel, act, solver warm
start, ctrl, ...), so ``qpos``/``qvel``/``ctrl`` are ``[N, ...]`` numpy views and no Python code runs per
sub-environment. The same rows are exposed as torch tensors (``torch.from_numpy``: zero-copy, float64) for the
families' torch code. MuJoCo documents the results as bit-identical to stepping one ``MjData`` per simulation
with ``mj_step``, at any thread count; the solver warm start is part of the row, so trajectories are those
of gymnasium's ``MujocoEnv`` given the same states and controls.

Why not ``mujoco.rollout``: it returns the full-physics state but not the warm start (stepping it once per
environment step restarts the constraint solver cold, a small deviation from ``mj_step``), not the contact
forces, and not the warning counters; measured on 2 cores it was no faster
(``benchmarks/locomotion_throughput.py`` prints both).

Per-row model parameters: ``mujoco.batch.Batch.expand(name)`` gives a model field per-simulation values (a live
``[N, ...]`` array read by the native step), and ``Batch.set_const()`` runs ``mj_setConst`` per simulation so that
the constants derived from masses and inertias follow. No model is rebuilt or copied per task.

Instability: MuJoCo checks ``qpos``/``qvel``/``qacc`` at every substep; on NaN, infinity or a huge value it
warns, resets the simulation to the model defaults and carries on. ``step`` therefore reports a simulation
as unstable when its warning counters rose (or an error was raised in it, or its state is not finite
afterwards), and puts it back at the model's default state (finite) with cleared counters.
"""

from __future__ import annotations

import os
import warnings

import mujoco
import numpy as np
import torch
from torch import Tensor

from envs.locomotion.simulator import Simulator

try:
    from mujoco import batch as mjbatch
except ImportError as error:  # mujoco.batch is new in mujoco 4.0
    raise ImportError(f"envs.locomotion needs mujoco >= 4.0 (mujoco.batch), found {mujoco.__version__}") from error

_STAGE_NONE = int(mujoco.mjtStage.mjSTAGE_NONE)
#: model fields that mj_setConst reads: writing one calls for ``Batch.set_const()``
_SETCONST_INPUTS = frozenset(mujoco.MjModel._setconst_inputs)


def default_num_threads() -> int:
    """Cores this process may run on (``len(os.sched_getaffinity(0))``; ``os.cpu_count()`` elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class BatchedSim(Simulator):
    """``num_envs`` simulations of ``model``, stepped ``frame_skip`` physics steps at a time.

    >>> sim = BatchedSim(model, 800, frame_skip=5)
    >>> sim.set_state(torch.ones(800, dtype=torch.bool), qpos, qvel)     # [800, nq], [800, nv] float64
    >>> sim.ctrl.copy_(controls)                                         # [800, nu]
    >>> unstable = sim.step(active)                                      # [800] bool; sim.qpos, sim.qvel updated

    Args:
        model: the MuJoCo model (copied by ``mujoco.batch``; never modified).
        num_envs: number of simulations ``N``.
        num_threads: native threads, the caller's included (None: the cores available to the process).
        frame_skip: physics steps per ``step``.
        fields: MjData fields to read back after every call (``Simulator.fields``); ``cfrc_ext`` is only
            computed during the step by a model that asks for it (see ``envs.locomotion.models``).
        fields_after_step: the ``fields`` to compute at the new state after each step (one ``mj_forward`` of the
            stepped simulations, which does not change the trajectory) instead of reading them as the step left
            them (``mj_step`` computes them at the state before its last physics step); the other fields keep the
            values the step left.
    """

    device = torch.device("cpu")
    dtype = torch.float64
    host_arrays = True

    def __init__(
        self,
        model: mujoco.MjModel,
        num_envs: int,
        *,
        num_threads: int | None = None,
        frame_skip: int,
        fields: tuple[str, ...] = (),
        fields_after_step: tuple[str, ...] = (),
    ) -> None:
        if num_threads is None:
            num_threads = default_num_threads()
        if isinstance(num_threads, bool) or not isinstance(num_threads, int | np.integer) or num_threads < 1:
            raise ValueError(f"num_threads must be an integer >= 1 or None, got {num_threads!r}")
        self.model = model
        self.num_envs = int(num_envs)
        self.frame_skip = int(frame_skip)
        self._batch = mjbatch.Batch(model, self.num_envs, nthread=int(num_threads))
        self.num_threads = self._batch.nthread
        #: ``[N, nq]`` joint positions, a live view of the state rows (float64)
        self.qpos = torch.from_numpy(self._batch.bind("qpos"))
        #: ``[N, nv]`` joint velocities, a live view of the state rows (float64)
        self.qvel = torch.from_numpy(self._batch.bind("qvel"))
        #: ``[N, nu]`` actuator controls, applied by the next ``step`` (write into it)
        self.ctrl = torch.from_numpy(self._batch.bind("ctrl"))
        bound = {name: self._batch.bind(name) for name in fields}
        unknown = sorted(set(fields_after_step) - set(fields))
        if unknown:
            raise ValueError(f"fields_after_step {unknown} must be among the fields {list(fields)}")
        #: ``mj_forward`` the stepped simulations after each step
        self._forward_after_step = bool(fields_after_step)
        #: with ``fields_after_step``: the other fields as the step left them (own copies)
        self._kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if fields_after_step:
            self._kept = {name: (array, array.copy()) for name, array in bound.items() if name not in fields_after_step}
            bound.update({name: copy for name, (_, copy) in self._kept.items()})
        #: ``{name: [N, ...]}`` MjData outputs, copied out by the batch after every call (read-only views of those
        #: copies: torch warns that it cannot mark a tensor read-only; nothing writes to them)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
            self.fields = {name: torch.from_numpy(array) for name, array in bound.items()}
        self._warning_counts = self._batch.warning[:, :, 1]  # [N, mjNWARNING] occurrence counters (view)

    def set_state(self, mask: Tensor, qpos: Tensor, qvel: Tensor) -> None:
        """Reset the simulations where ``mask`` is True to joint state ``(qpos, qvel)`` (rows elsewhere ignored).

        Everything else in their state (time, actuator activations, solver warm start, controls, warning
        counters) goes back to the model's defaults, as ``mj_resetData`` followed by writing qpos/qvel; with
        ``fields``, ``mj_forward`` then computes them at the new state.

        Args:
            mask: ``[N]`` bool.
            qpos: ``[N, nq]`` float64.
            qvel: ``[N, nv]`` float64.
        """
        rows = mask.numpy()
        if not rows.any():
            return
        self._batch.reset(rows, stage=_STAGE_NONE)
        self.qpos.numpy()[rows] = qpos.numpy()[rows]
        self.qvel.numpy()[rows] = qvel.numpy()[rows]
        if self.fields:
            self._batch.forward(rows)
            self._keep_fields()

    def reset_to_defaults(self, mask: np.ndarray) -> None:
        """Put the simulations where ``mask`` is True at the model's default state (``qpos0``, rest)."""
        if mask.any():
            self._batch.reset(mask)

    def step(self, active: Tensor) -> Tensor:
        """Advance the simulations where ``active`` is True by ``frame_skip`` physics steps under ``ctrl``.

        Args:
            active: ``[N]`` bool; the others are left untouched.

        Returns:
            ``unstable`` ``[N]`` bool: simulations that raised a MuJoCo warning or error, or whose state is
            not finite after the step. They have been reset to the model's default state.
        """
        rows = active.numpy()
        failed = np.zeros(self.num_envs, dtype=bool)
        try:
            self._batch.step(rows, nstep=self.frame_skip)
        except mjbatch.SimulationError as error:  # those simulations kept their state from before the call
            failed[error.ids] = True
        if self._forward_after_step:  # keep the step's fields, then the others at the new state
            self._keep_fields()
            stepped = rows & ~failed
            if stepped.any():
                self._batch.forward(stepped)
        qpos, qvel = self.qpos.numpy(), self.qvel.numpy()
        if not (failed.any() or self._warning_counts.any()) and np.isfinite(qpos).all() and np.isfinite(qvel).all():
            return torch.from_numpy(failed)  # the usual case, checked on whole arrays (per-row reductions are slow)
        unstable = self._warning_counts.any(axis=1)
        unstable |= failed
        unstable |= ~np.isfinite(qpos).all(axis=1)
        unstable |= ~np.isfinite(qvel).all(axis=1)
        unstable &= rows
        self.reset_to_defaults(unstable)
        return torch.from_numpy(unstable)

    def _keep_fields(self) -> None:
        for bound, copy in self._kept.values():
            np.copyto(copy, bound)

    def set_model_fields(self, values: dict[str, Tensor]) -> None:
        """Per-simulation model parameters (``Batch.expand``), then ``mj_setConst`` per simulation if any of them
        is one of its inputs (masses, inertias)."""
        for name, rows in values.items():
            self._batch.expand(name)[...] = rows.numpy()
        if _SETCONST_INPUTS.intersection(values):
            self._batch.set_const()

    def close(self) -> None:
        """Release the native thread pool and the state (the bound arrays keep the batch alive)."""
        del self._batch, self.qpos, self.qvel, self.ctrl, self.fields, self._warning_counts, self._kept
