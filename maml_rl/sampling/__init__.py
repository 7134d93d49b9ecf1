"""Rollout collection: all tasks x episodes stepped in lockstep, one batched policy call per time step."""

from maml_rl.sampling.rollout import sample_episodes

__all__ = ["sample_episodes"]
