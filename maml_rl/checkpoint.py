"""Atomic checkpoints: ``checkpoints/iter_NNNNNN.pt`` in a run directory (DESIGN §8, STYLE example 9).

A checkpoint is written to a temporary file in the same directory, flushed to disk and renamed over its final
name, so a crash mid-write never leaves a truncated checkpoint under a final name.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = "checkpoints"
_PATTERN = re.compile(r"^iter_(\d{6,})\.pt$")


class CheckpointError(RuntimeError):
    """A run directory has no usable checkpoint, or a checkpoint is unreadable or does not fit."""


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
    path = checkpoint_path(run_dir, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp:
            torch.save(state, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


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
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for corrupt files
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or not isinstance(state.get("policy"), dict) or "iteration" not in state:
        raise CheckpointError(f"checkpoint {path} is not a maml-rl checkpoint")
    return iteration, state


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
