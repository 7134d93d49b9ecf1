"""The simulator interface under ``LocomotionVectorEnv``, and the choice of its implementation (the backend).

A ``Simulator`` holds ``N`` simulations of one MuJoCo model and exposes their state as ``[N, ...]`` torch
tensors that are zero-copy views of the simulator's own memory, so the families' observation, reward and
health code (written once, in torch) reads the physics where it lives:

=========  ==========================================  ===========================================================
backend    implementation                              state tensors
=========  ==========================================  ===========================================================
native     ``BatchedSim`` (``mujoco.batch``, CPU)      float64 CPU views (``torch.from_numpy``) of the batch's rows
warp       ``WarpSim`` (``mujoco_warp``, CPU or CUDA)  float32 views (``wp.to_torch``) of the device arrays
=========  ==========================================  ===========================================================

Usage (what ``LocomotionVectorEnv`` does; ``envs.locomotion.common.make_simulator`` picks the implementation)::

    sim = make_simulator("native", model, 800, frame_skip=5, fields=("cfrc_ext",))
    sim.set_model_fields({"body_mass": masses})       # optional per-row model parameters, [N, nbody]
    sim.set_state(mask, qpos, qvel)                    # [N] bool, [N, nq], [N, nv] (rows where mask is True)
    sim.ctrl.copy_(controls)                           # [N, nu]
    unstable = sim.step(active)                        # [N] bool; sim.qpos, sim.qvel, sim.fields[...] updated

This module only defines the interface; the implementations import it, never the reverse. ``warp`` is imported
by ``envs.locomotion.warp_sim`` itself, when its first simulator is built.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod

import torch
from torch import Tensor

#: the simulation backends of the locomotion families
BACKENDS = ("native", "warp")
#: how to install the warp backend's dependency
WARP_INSTALL_HINT = "pip install 'mujoco-warp>=4.0' (or pip install 'maml-rl[gpu]')"
#: MjData fields a family may read besides qpos/qvel/ctrl (``Simulator.fields``)
DATA_FIELDS = ("cfrc_ext", "cinert", "cvel", "qfrc_actuator", "sensordata", "xipos")
#: model fields a task may set per simulation (``Simulator.set_model_fields``)
MODEL_FIELDS = ("body_mass", "body_inertia", "dof_damping", "geom_friction")


class Simulator(ABC):
    """``num_envs`` simulations of one model, stepped ``frame_skip`` physics steps at a time (module docstring).

    Attributes:
        num_envs: ``N``.
        device: where the state tensors live.
        dtype: their float dtype (float64 native, float32 warp).
        host_arrays: True when the state tensors share memory with numpy arrays (native backend): the
            environment then returns numpy arrays (``Tensor.numpy()``, zero-copy) and draws its reset noise
            from numpy, as gymnasium does.
        sync_free: reset unstable simulations without asking the host whether there are any (CUDA).
        qpos, qvel: ``[N, nq]``, ``[N, nv]`` joint state (views).
        ctrl: ``[N, nu]`` controls applied by the next ``step`` (write into it).
        fields: ``{name: [N, ...]}`` views of the requested ``DATA_FIELDS``, as of the last physics step (for
            ``cfrc_ext``: the constraint solve of the last physics step, at the state before it), or of the
            last ``set_state``.
    """

    num_envs: int
    device: torch.device
    dtype: torch.dtype
    host_arrays: bool
    sync_free: bool = False
    qpos: Tensor
    qvel: Tensor
    ctrl: Tensor
    fields: dict[str, Tensor]

    @abstractmethod
    def set_state(self, mask: Tensor, qpos: Tensor, qvel: Tensor) -> None:
        """Reset the simulations where ``mask`` (``[N]`` bool) is True to joint state ``qpos [N, nq]``,
        ``qvel [N, nv]`` (the other rows are ignored); everything else in them goes back to the model's
        defaults (``mj_resetData``), and ``fields`` are recomputed at the new state."""

    @abstractmethod
    def step(self, active: Tensor) -> Tensor:
        """Advance the simulations where ``active`` (``[N]`` bool) is True under ``ctrl``; the others keep their
        state. Returns ``unstable`` ``[N]`` bool: active simulations whose state became invalid (non-finite,
        huge, or a MuJoCo warning/error); they have been put back at the model's default state."""

    @abstractmethod
    def set_model_fields(self, values: dict[str, Tensor]) -> None:
        """Give model fields (names in ``MODEL_FIELDS``) per-simulation values ``[N, *field_shape]`` and
        recompute the constants MuJoCo derives from them (``mj_setConst``)."""

    @abstractmethod
    def close(self) -> None:
        """Release threads and memory; the simulator cannot be used afterwards."""


def check_backend(backend: str) -> None:
    """Raise ``ValueError`` for an unknown backend, ``ImportError`` when the warp backend is not installed."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "warp" and importlib.util.find_spec("mujoco_warp") is None:
        raise ImportError(f"backend 'warp' needs mujoco_warp, which is not installed: {WARP_INSTALL_HINT}")
