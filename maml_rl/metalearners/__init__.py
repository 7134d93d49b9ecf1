"""Outer-loop meta-learners."""

from maml_rl.metalearners.maml_trpo import MAMLTRPO, NonFiniteError, TrpoSettings

__all__ = ["MAMLTRPO", "NonFiniteError", "TrpoSettings"]
