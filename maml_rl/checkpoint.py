"""Atomic checkpoints: ``checkpoints/iter_NNNNNN.pt`` in a run directory (docs/architecture.md §8).

A checkpoint is written to a temporary file in the same directory, flushed to disk and renamed over its final
name, so a crash mid-write never leaves a truncated checkpoint under a final name. A checkpoint holds only plain
data (tensors, numbers, strings, lists, dicts) and is loaded with ``torch.load(weights_only=True)``: loading a
file never runs code from it. Only finite tensors are ever written, and a checkpoint with a non-finite tensor,
a missing entry or a malformed generator state is refused on load with one :class:`CheckpointError` line.

Contents: ``iteration`` (int), ``policy`` (the policy's ``state_dict``), ``generators``
(:meth:`maml_rl.build.Generators.state_dict`), ``config`` (the resolved config as a dict), ``family`` (str), and
optionally ``metalearner`` (the meta-learner's own state, plain data).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maml_rl.errors import CheckpointError
from maml_rl.rundir import atomic_write

CHECKPOINT_DIR = "checkpoints"
_PATTERN = re.compile(r"^iter_(\d{6,})\.pt$")
_CUDA_GENERATOR_STATE_BYTES = 16  # torch's CUDA (Philox) generator state: seed and offset, 8 bytes each


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    """Where the checkpoint of ``iteration`` lives."""
    return Path(run_dir) / CHECKPOINT_DIR / f"iter_{iteration:06d}.pt"


def list_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """Checkpoints in ``run_dir`` by iteration."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = _PATTERN.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def save_checkpoint(run_dir: str | Path, iteration: int, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` as the checkpoint of ``iteration``; returns its path."""
    bad = non_finite_entries(state)
    if bad:
        raise CheckpointError(f"refusing to write a checkpoint of iteration {iteration} with non-finite values in "
                              f"{', '.join(bad[:3])}")
    path = checkpoint_path(run_dir, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(run_dir: str | Path, iteration: int | None = None) -> tuple[int, dict[str, Any]]:
    """Load the checkpoint of ``iteration`` (None: the latest); raises :class:`CheckpointError` if impossible."""
    available = list_checkpoints(run_dir)
    if not available:
        raise CheckpointError(f"no checkpoints in {Path(run_dir) / CHECKPOINT_DIR}")
    if iteration is None:
        iteration = max(available)
    if iteration not in available:
        raise CheckpointError(f"no checkpoint for iteration {iteration} in {run_dir}; available: {sorted(available)}")
    path = available[iteration]
    try:
        # weights_only: the unpickler accepts tensors and plain containers only, never code or arbitrary objects
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            reason = "it contains objects other than tensors and plain data, which are never loaded"
        raise CheckpointError(f"checkpoint {path} is unreadable: {reason}") from error
    problem = state_problem(state, iteration)
    if problem:
        raise CheckpointError(f"checkpoint {path} {problem}")
    return iteration, state


def non_finite_entries(state: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors and floats in a nested ``state`` that hold NaN or infinity."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            return [] if bool(torch.isfinite(state).all()) else [prefix or "tensor"]
        return []
    if isinstance(state, float):
        return [] if math.isfinite(state) else [prefix or "value"]
    if isinstance(state, dict):
        return [name for key, value in state.items()
                for name in non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(state, (list, tuple)):
        return [name for i, value in enumerate(state) for name in non_finite_entries(value, f"{prefix}[{i}]")]
    return []


def _generator_problem(generators: Any) -> str | None:
    if not isinstance(generators, dict):
        return "has no generator states"
    for key in ("tasks", "resets"):
        try:  # a throwaway generator takes the state or says why not
            np.random.default_rng().bit_generator.state = generators.get(key)  # type: ignore[assignment]
        except (TypeError, ValueError, KeyError) as error:
            return f"has a malformed generator state generators.{key} ({type(error).__name__})"
    actions = generators.get("actions")
    if not (isinstance(actions, torch.Tensor) and actions.dtype == torch.uint8 and actions.dim() == 1):
        return "has a malformed generator state generators.actions (expected a 1-D uint8 tensor)"
    cpu_size = torch.Generator().get_state().numel()
    if actions.numel() == cpu_size:
        try:
            torch.Generator().set_state(actions)
        except RuntimeError:
            return "has a malformed generator state generators.actions"
    elif actions.numel() != _CUDA_GENERATOR_STATE_BYTES:
        return f"has a malformed generator state generators.actions ({actions.numel()} bytes)"
    if not isinstance(generators.get("init_seed"), int) or isinstance(generators.get("init_seed"), bool):
        return "has a malformed generator state generators.init_seed"
    return None


def state_problem(state: Any, iteration: int | None = None) -> str | None:
    """Why ``state`` is not a usable maml-rl checkpoint (a phrase for a message), or None if it is."""
    if not isinstance(state, dict):
        return "is not a maml-rl checkpoint (not a mapping)"
    required = ("iteration", "policy", "generators", "config", "family")
    missing = [key for key in required if key not in state]
    if len(missing) == len(required):
        return "is not a maml-rl checkpoint (none of its entries: " + ", ".join(required) + ")"
    if missing:
        return f"is not a complete maml-rl checkpoint (missing {', '.join(missing)})"
    if not isinstance(state["iteration"], int) or isinstance(state["iteration"], bool) or state["iteration"] < 0:
        return f"has a malformed iteration {state['iteration']!r}"
    if iteration is not None and state["iteration"] != iteration:
        return f"says iteration {state['iteration']} but is named for iteration {iteration}"
    policy = state["policy"]
    if not (isinstance(policy, dict) and policy
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in policy.items())):
        return "has a malformed policy (expected a mapping of names to tensors)"
    if not isinstance(state["config"], dict):
        return "has a malformed config (expected a mapping)"
    if not isinstance(state["family"], str):
        return "has a malformed family (expected a string)"
    problem = _generator_problem(state["generators"])
    if problem:
        return problem
    bad = non_finite_entries(state)
    if bad:
        return f"holds non-finite values in {', '.join(bad[:3])}"
    return None


def check_fits(state: dict[str, Any], family: str, policy: torch.nn.Module, where: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``state`` comes from ``family`` and matches ``policy``'s shapes.

    Args:
        state: a loaded checkpoint (:func:`load_checkpoint`).
        family: the task family the run's config names.
        policy: a policy built from the run's config; its parameter names and shapes are compared.
        where: the checkpoint's path or run directory, for the message.
    """
    saved_family = state.get("family")
    if saved_family != family:
        raise CheckpointError(f"checkpoint {where} is from task family {saved_family!r}, the config says {family!r}")
    expected = {name: tuple(value.shape) for name, value in policy.state_dict().items()}
    saved = {name: tuple(getattr(value, "shape", ())) for name, value in state["policy"].items()}
    if saved != expected:
        differ = sorted(name for name in expected.keys() | saved.keys() if expected.get(name) != saved.get(name))
        details = ", ".join(f"{name}: {list(saved[name]) if name in saved else 'missing'} vs "
                            f"{list(expected[name]) if name in expected else 'unexpected'}" for name in differ[:3])
        raise CheckpointError(
            f"checkpoint {where} does not fit the config's policy (checkpoint vs config: {details})"
        )
