"""``BatchedSim``: N copies of one MuJoCo model stepped together in native code on all cores.

The hot path is one call per environment step: ``mujoco.batch.Batch.step(nstep=frame_skip)`` advances every
selected simulation by ``frame_skip`` calls to ``mj_step`` on a native thread pool, with the GIL released.
Each simulation is one row of a state array (MuJoCo's integration state: time, qpos, qvel, act, solver warm
start, ctrl, ...), so ``qpos``/``qvel``/``ctrl`` are ``[N, ...]`` numpy views and no Python code runs per
sub-environment. MuJoCo documents the results as bit-identical to stepping one ``MjData`` per simulation
with ``mj_step``, at any thread count; the solver warm start is part of the row, so trajectories are those
of gymnasium's ``MujocoEnv`` given the same states and controls.

Why not ``mujoco.rollout``: it returns the full-physics state but not the warm start (stepping it once per
environment step restarts the constraint solver cold, a small deviation from ``mj_step``), not the contact
forces, and not the warning counters; measured on 2 cores it was no faster
(``benchmarks/locomotion_throughput.py`` prints both).

Instability: MuJoCo checks ``qpos``/``qvel``/``qacc`` at every substep; on NaN, infinity or a huge value it
warns, resets the simulation to the model defaults and carries on. ``step`` therefore reports a simulation
as unstable when its warning counters rose (or an error was raised in it, or its state is not finite
afterwards), and puts it back at the model's default state (finite) with cleared counters.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from envs.locomotion.models import FRAME_SKIP

try:
    from mujoco import batch as mjbatch
except ImportError as error:  # mujoco.batch is new in mujoco 4.0
    raise ImportError(f"envs.locomotion needs mujoco >= 4.0 (mujoco.batch), found {mujoco.__version__}") from error

_STAGE_NONE = int(mujoco.mjtStage.mjSTAGE_NONE)


def default_num_threads() -> int:
    """Cores this process may run on (``len(os.sched_getaffinity(0))``; ``os.cpu_count()`` elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class BatchedSim:
    """``num_envs`` simulations of ``model``, stepped ``frame_skip`` physics steps at a time.

    >>> sim = BatchedSim(model, 800)
    >>> sim.set_state(np.ones(800, bool), qpos, qvel)     # [800, nq], [800, nv]
    >>> sim.ctrl[:] = controls                             # [800, nu]
    >>> unstable = sim.step(active)                        # [800] bool; sim.qpos, sim.qvel updated

    Args:
        model: the MuJoCo model (copied by ``mujoco.batch``; never modified).
        num_envs: number of simulations ``N``.
        num_threads: native threads, the caller's included (None: the cores available to the process).
        frame_skip: physics steps per ``step``.
        contact_forces: keep ``cfrc_ext`` ``[N, nbody, 6]`` up to date; the model must compute it during the
            step (see ``envs.locomotion.models``), as of the state before the last physics step.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        num_envs: int,
        *,
        num_threads: int | None = None,
        frame_skip: int = FRAME_SKIP,
        contact_forces: bool = False,
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
        self.qpos: np.ndarray = self._batch.bind("qpos")
        #: ``[N, nv]`` joint velocities, a live view of the state rows (float64)
        self.qvel: np.ndarray = self._batch.bind("qvel")
        #: ``[N, nu]`` actuator controls, applied by the next ``step`` (write into it)
        self.ctrl: np.ndarray = self._batch.bind("ctrl")
        #: ``[N, nbody, 6]`` external (contact) forces of the last step, or None without ``contact_forces``
        self.cfrc_ext: np.ndarray | None = self._batch.bind("cfrc_ext") if contact_forces else None
        self._warning_counts = self._batch.warning[:, :, 1]  # [N, mjNWARNING] occurrence counters (view)

    def set_state(self, mask: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Reset the simulations where ``mask`` is True to joint state ``(qpos, qvel)``.

        Everything else in their state (time, actuator activations, solver warm start, controls, warning
        counters) goes back to the model's defaults, as ``mj_resetData`` followed by writing qpos/qvel.

        Args:
            mask: ``[N]`` bool.
            qpos: ``[mask.sum(), nq]``.
            qvel: ``[mask.sum(), nv]``.
        """
        if not mask.any():
            return
        self._batch.reset(mask, stage=_STAGE_NONE)
        self.qpos[mask] = qpos
        self.qvel[mask] = qvel
        if self.cfrc_ext is not None:
            self._batch.forward(mask)  # contact forces at the new state

    def reset_to_defaults(self, mask: np.ndarray) -> None:
        """Put the simulations where ``mask`` is True at the model's default state (``qpos0``, rest)."""
        if mask.any():
            self._batch.reset(mask)

    def step(self, active: np.ndarray) -> np.ndarray:
        """Advance the simulations where ``active`` is True by ``frame_skip`` physics steps under ``ctrl``.

        Args:
            active: ``[N]`` bool; the others are left untouched.

        Returns:
            ``unstable`` ``[N]`` bool: simulations that raised a MuJoCo warning or error, or whose state is
            not finite after the step. They have been reset to the model's default state.
        """
        failed = np.zeros(self.num_envs, dtype=bool)
        try:
            self._batch.step(active, nstep=self.frame_skip)
        except mjbatch.SimulationError as error:  # those simulations kept their state from before the call
            failed[error.ids] = True
        unstable = self._warning_counts.any(axis=1)
        unstable |= failed
        unstable |= ~np.isfinite(self.qpos).all(axis=1)
        unstable |= ~np.isfinite(self.qvel).all(axis=1)
        unstable &= active
        self.reset_to_defaults(unstable)
        return unstable

    def close(self) -> None:
        """Release the native thread pool and the state (the bound arrays keep the batch alive)."""
        del self._batch, self.qpos, self.qvel, self.ctrl, self.cfrc_ext, self._warning_counts
