"""Outer-loop meta-learners."""

from maml_rl.metalearners.maml_trpo import MAMLTRPO, NonFiniteError

__all__ = ["MAMLTRPO", "NonFiniteError"]
