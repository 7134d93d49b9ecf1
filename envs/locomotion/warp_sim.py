"""``WarpSim``: N worlds of one MuJoCo model stepped by ``mujoco_warp`` on a warp device (CPU or CUDA GPU).

The ``warp`` implementation of ``envs.locomotion.simulator.Simulator`` (the counterpart of ``BatchedSim``,
docs/architecture.md §7): one ``mujoco_warp`` model and one ``Data`` with ``nworld = N``; ``qpos``/``qvel``/``ctrl``
and ``fields`` are zero-copy torch views (``wp.to_torch``) of the device arrays, float32, so observations and
rewards are computed by torch where the physics lives and nothing is copied to the host.
* Per-world model parameters: the fields named in ``model_fields``, and the constants ``mujoco_warp.set_const``
  derives from them (``SET_CONST_OUTPUTS``), are put on the device with one row per world
  (``put_model(batch_sizes=...)``); ``set_model_fields`` writes them and runs ``mujoco_warp.set_const``.

* Stepping: ``frame_skip`` calls to ``mujoco_warp.step`` advance every world. They are captured once in a
  warp graph (``wp.ScopedCapture``) and replayed with ``wp.capture_launch``: a CUDA graph on a GPU; on warp's
  CPU device (warp >= 1.19 replays CPU captures too) replay is bit-identical to eager launches and removes the
  Python launch overhead that dominates there. ``use_graph=False`` launches eagerly.
* Streams (CUDA): every warp launch and graph replay runs on torch's current stream, so the torch code that
  reads observations and writes controls around a step is ordered with it without a host synchronization.
  The one capture runs on a side stream, because CUDA cannot capture the legacy default stream.
* Frozen worlds: ``mujoco_warp`` has no per-world "skip"; ``step(active)`` steps every world and then puts the
  inactive ones back to their state before the step (integration state and contact forces), so they are
  untouched, as in ``BatchedSim``.
* Instability: ``mujoco_warp`` does not check the state as MuJoCo does (no warnings, no automatic reset).
  After a step a world is unstable when ``qpos``, ``qvel`` or ``qacc`` is not finite or exceeds MuJoCo's
  ``mjMAXVAL`` (1e10), or its contact/constraint buffers overflowed; it is reset to the model's defaults.
* Float32: ``mujoco_warp`` computes in float32, native MuJoCo in float64. From the same state and controls
  ``qpos`` agrees to about 1e-7 after one or two environment steps and then drifts apart chaotically
  (docs/architecture.md §7), so the two backends agree in distribution, not trajectory by trajectory.

This module imports without ``warp``: ``mujoco_warp`` and ``warp`` (the ``gpu`` extra) are imported when the first
``WarpSim`` is built (``load_warp``), so the locomotion package imports both simulators at module level and never
imports warp unless the warp backend is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mujoco
import torch
from torch import Tensor

from envs.locomotion.simulator import WARP_INSTALL_HINT, Simulator

#: ``mujoco_warp`` and ``warp``, imported by ``load_warp`` when the first warp simulator is built
mjw: Any = None
wp: Any = None


def load_warp() -> None:
    """Import ``mujoco_warp`` and ``warp`` (once) and set warp's log level to warnings, so that kernel loads are
    not printed on every run. Raises ``ImportError`` with the install command when they are missing."""
    global mjw, wp
    if wp is not None:
        return
    try:
        import mujoco_warp
        import warp
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(f"the warp backend needs mujoco_warp and warp-lang: {WARP_INSTALL_HINT}") from error
    warp.config.log_level = max(warp.config.log_level, warp.LOG_WARNING)
    mjw, wp = mujoco_warp, warp

#: the model fields ``mujoco_warp.set_const`` writes: with per-world parameters they need a row per world too
SET_CONST_OUTPUTS = (
    "body_subtreemass", "body_invweight0", "dof_invweight0", "tendon_invweight0", "actuator_acc0", "geom_aabb",
    "geom_rbound", "tendon_length0", "eq_data", "cam_pos0", "cam_poscom0", "cam_mat0", "light_pos0",
    "light_poscom0", "light_dir0",
)

#: MuJoCo's ``mjMAXVAL``: a larger |qpos|, |qvel| or |qacc| counts as unstable (MuJoCo warns and resets there)
MAX_VALUE = 1e10


def warp_devices(device: Any) -> tuple[torch.device, str]:
    """The torch device and the matching warp device name for ``device`` ("cpu", "cuda", "cuda:N").

    Raises:
        ValueError: unknown device, or CUDA requested where torch or warp sees no GPU.
    """
    load_warp()
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"bad device {device!r} for the warp backend: {error}") from error
    if torch_device.type == "cpu":
        return torch.device("cpu"), "cpu"
    if torch_device.type != "cuda":
        raise ValueError(f"the warp backend runs on 'cpu' or 'cuda[:N]', got device {device!r}")
    if not torch.cuda.is_available() or not wp.is_cuda_available():
        raise ValueError(
            f"device {device!r} requested for the warp backend, but CUDA is not available "
            f"(torch: {torch.cuda.is_available()}, warp: {wp.is_cuda_available()}); use device 'cpu'"
        )
    index = torch.cuda.current_device() if torch_device.index is None else torch_device.index
    if index >= wp.get_cuda_device_count():
        raise ValueError(f"device {device!r}: warp sees only {wp.get_cuda_device_count()} CUDA devices")
    return torch.device("cuda", index), f"cuda:{index}"


class WarpSim(Simulator):
    """``num_envs`` worlds of ``model`` on a warp device, stepped ``frame_skip`` physics steps at a time.

    >>> sim = WarpSim(model, 4096, device="cuda:0", frame_skip=5)
    >>> sim.set_state(mask, qpos, qvel)           # [N] bool, [N, nq], [N, nv] tensors on sim.device
    >>> sim.ctrl.copy_(controls)                  # [N, nu]
    >>> unstable = sim.step(active)               # [N] bool; sim.qpos, sim.qvel updated in place

    Args:
        model: the MuJoCo model (copied to the device; never modified).
        num_envs: number of worlds ``N``.
        device: torch-style device ("cpu", "cuda", "cuda:N"); see ``warp_devices``.
        frame_skip: physics steps per ``step``.
        fields: ``Data`` fields exposed in ``fields`` (``cfrc_ext`` needs a model that computes it in the step,
            see ``envs.locomotion.models``).
        model_fields: model fields that ``set_model_fields`` gives one value per world.
        use_graph: capture the ``frame_skip`` physics steps in a warp graph and replay it (else launch eagerly).
    """

    dtype = torch.float32
    host_arrays = False

    def __init__(
        self,
        model: mujoco.MjModel,
        num_envs: int,
        *,
        device: Any = "cpu",
        frame_skip: int,
        fields: tuple[str, ...] = (),
        model_fields: tuple[str, ...] = (),
        use_graph: bool = True,
    ) -> None:
        self.device, warp_device = warp_devices(device)
        self.warp_device = wp.get_device(warp_device)
        self.num_envs = int(num_envs)
        self.frame_skip = int(frame_skip)
        self.use_graph = bool(use_graph)
        #: Reset unstable worlds without asking the host whether there are any (a masked reset every step).
        #: On by default on CUDA, where that question would synchronize the stream every step.
        self.sync_free = self.warp_device.is_cuda
        with wp.ScopedDevice(self.warp_device):
            batched = (*model_fields, *SET_CONST_OUTPUTS) if model_fields else ()
            self._model = mjw.put_model(model, batch_sizes={name: self.num_envs for name in batched})
            self._data = mjw.make_data(model, nworld=self.num_envs)
        # The uploads above ran on warp's own stream, every later launch runs on torch's: wait for them once here,
        # so that no torch operation on the views can overtake them (a no-op on the CPU).
        wp.synchronize_device(self.warp_device)
        data = self._data
        #: ``[N, nq]`` joint positions, a zero-copy view of the device array (float32)
        self.qpos: torch.Tensor = wp.to_torch(data.qpos)
        #: ``[N, nv]`` joint velocities (view, float32)
        self.qvel: torch.Tensor = wp.to_torch(data.qvel)
        #: ``[N, nu]`` controls applied by the next ``step`` (write into it)
        self.ctrl: torch.Tensor = wp.to_torch(data.ctrl)
        #: ``{name: [N, ...]}`` views of the requested ``Data`` fields
        self.fields: dict[str, Tensor] = {name: wp.to_torch(getattr(data, name)) for name in fields}
        self._qacc = wp.to_torch(data.qacc)
        self._overflow = wp.to_torch(data.overflow)
        #: what a frozen world must keep across a step: its integration state (and the exposed fields)
        state = [data.qpos, data.qvel, data.qacc_warmstart, data.time] + ([data.act] if model.na else [])
        self._frozen_state = [wp.to_torch(array) for array in state] + list(self.fields.values())
        self._graph: Any = None
        self._capture_stream: torch.cuda.Stream | None = None

    def set_state(self, mask: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        """Reset the worlds where ``mask`` is True to joint state ``(qpos, qvel)`` (rows of the other worlds are
        ignored); everything else in them goes back to the model's defaults (``mujoco_warp.reset_data``).

        Args:
            mask: ``[N]`` bool on ``self.device``.
            qpos: ``[N, nq]``.
            qvel: ``[N, nv]``.
        """
        if not bool(mask.any()):
            return
        self.reset_to_defaults(mask)
        column = mask[:, None]
        self.qpos.copy_(torch.where(column, qpos.to(self.qpos), self.qpos))
        self.qvel.copy_(torch.where(column, qvel.to(self.qvel), self.qvel))
        if self.fields:  # the fields at the new state; the other worlds keep theirs
            kept = {name: value.clone() for name, value in self.fields.items()}
            with self._on_torch_stream():
                mjw.forward(self._model, self._data)
            for name, value in self.fields.items():
                shape = (self.num_envs,) + (1,) * (value.dim() - 1)
                value.copy_(torch.where(mask.view(shape), value, kept[name]))

    def reset_to_defaults(self, mask: torch.Tensor) -> None:
        """Put the worlds where ``mask`` (``[N]`` bool) is True at the model's default state."""
        with self._on_torch_stream():
            mjw.reset_data(self._model, self._data, wp.from_torch(mask.contiguous()))

    def step(self, active: torch.Tensor) -> torch.Tensor:
        """Advance the worlds where ``active`` is True by ``frame_skip`` physics steps under ``ctrl``.

        Args:
            active: ``[N]`` bool on ``self.device``; the other worlds are left untouched.

        Returns:
            ``unstable`` ``[N]`` bool: active worlds whose state is not finite or huge after the step, or whose
            contact buffers overflowed. They have been reset to the model's default state.
        """
        before = [value.clone() for value in self._frozen_state]
        self._physics()
        frozen = ~active
        for value, old in zip(self._frozen_state, before, strict=True):
            shape = (self.num_envs,) + (1,) * (value.dim() - 1)
            value.copy_(torch.where(frozen.view(shape), old, value))
        unstable = self._overflow != 0
        for value in (self.qpos, self.qvel, self._qacc):
            unstable |= ~(value.abs() <= MAX_VALUE).all(dim=1)  # NaN compares False
        unstable &= active
        if self.sync_free or bool(unstable.any()):
            self.reset_to_defaults(unstable)
        return unstable

    def set_model_fields(self, values: dict[str, Tensor]) -> None:
        """Per-world model parameters (fields named in ``model_fields`` at construction), then
        ``mujoco_warp.set_const`` so that the constants derived from them follow."""
        for name, rows in values.items():
            wp.to_torch(getattr(self._model, name)).copy_(rows.to(device=self.device, dtype=torch.float32))
        with self._on_torch_stream():
            mjw.set_const(self._model, self._data)

    def close(self) -> None:
        """Drop the device arrays and the graph (the views keep their memory alive until released), after the
        work queued on them has finished (a whole-device synchronization on CUDA)."""
        wp.synchronize_device(self.warp_device)
        self._graph = None
        del self._model, self._data, self.qpos, self.qvel, self.ctrl, self.fields, self._qacc, self._frozen_state

    # ------------------------------------------------------------------------------------------ internals
    def _physics(self) -> None:
        """``frame_skip`` × ``mujoco_warp.step`` for every world: graph replay, or eager launches."""
        with self._on_torch_stream():
            if not self.use_graph:
                self._launch()
                return
            if self._graph is None:
                self._graph = self._capture()
            wp.capture_launch(self._graph)  # on the current stream: torch's (see _on_torch_stream)

    def _capture(self) -> Any:
        """Record ``frame_skip`` steps as a warp graph (a CUDA graph on a GPU); recording runs nothing.

        CUDA cannot capture the legacy default stream, which is torch's current stream unless the caller chose
        another, so on a GPU the capture runs on a side stream of its own; replays run on torch's current stream.
        """
        if not self.warp_device.is_cuda:
            with wp.ScopedCapture(device=self.warp_device) as capture:
                self._launch()
            return capture.graph
        self._capture_stream = torch.cuda.Stream(self.device)  # kept alive with the graph
        side = wp.stream_from_torch(self._capture_stream)
        with (
            wp.ScopedStream(side, sync_enter=False, sync_exit=False),
            wp.ScopedCapture(device=self.warp_device, stream=side) as capture,
        ):
            self._launch()
        return capture.graph

    @contextmanager
    def _on_torch_stream(self) -> Iterator[None]:
        """Warp launches inside go to ``self.device``, on CUDA to torch's current stream, so that they are ordered
        with the torch operations that read and write the same arrays (without a host synchronization)."""
        with wp.ScopedDevice(self.warp_device):
            if not self.warp_device.is_cuda:
                yield
                return
            with wp.ScopedStream(wp.stream_from_torch(self.device)):
                yield

    def _launch(self) -> None:
        for _ in range(self.frame_skip):
            mjw.step(self._model, self._data)

