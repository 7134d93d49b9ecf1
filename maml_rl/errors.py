"""Errors shared across the learner's layers."""

from __future__ import annotations


class NonFiniteError(FloatingPointError):
    """A policy output, loss, gradient, parameter or observation became NaN or infinite; the message names it.

    The trainer turns it into a one-line "training stopped at iteration N" message, after restoring the
    parameters of the last completed iteration, so nothing non-finite is ever logged or checkpointed.
    """


class CheckpointError(RuntimeError):
    """A run directory has no usable checkpoint, or a checkpoint is unreadable or does not fit."""


class EvaluationError(ValueError):
    """An evaluation request cannot be carried out (bad run directory, incompatible runs, bad protocol)."""


class MetricsFileError(ValueError):
    """A ``metrics.csv`` is unreadable or corrupt before its last row; the message names the file and line."""


class PlotError(ValueError):
    """A plot request cannot be carried out (no metrics file, unknown metric)."""


class RunDirError(OSError):
    """A run directory or output path cannot be used; the message names it and says why."""


class TrainingError(RuntimeError):
    """Training stopped: the message names the iteration, the quantity and the last good checkpoint."""
