"""Errors shared across the learner's layers."""

from __future__ import annotations


class NonFiniteError(FloatingPointError):
    """A policy output, loss, gradient, parameter or observation became NaN or infinite; the message names it.

    The trainer turns it into a one-line "training stopped at iteration N" message, after restoring the
    parameters of the last completed iteration, so nothing non-finite is ever logged or checkpointed.
    """
