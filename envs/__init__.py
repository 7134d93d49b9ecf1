"""Task families for meta-reinforcement learning (docs/architecture.md §3).

``make_family(name, **options)`` builds a family; ``family_names()`` lists them. Importing this package
registers every family and its single-environment gymnasium id (``gymnasium.make("<Family>-v0", task=...)``).
"""

from envs import bandit, locomotion, navigation, tabular_mdp  # noqa: F401  (registers the families)
from envs.base import (
    UNSTABLE,
    MetaVectorEnv,
    SingleTaskEnv,
    TaskFamily,
    Tasks,
    family_names,
    make_family,
    num_tasks,
    register_family,
    repeat_tasks,
)

__all__ = [
    "UNSTABLE",
    "MetaVectorEnv",
    "SingleTaskEnv",
    "TaskFamily",
    "Tasks",
    "family_names",
    "make_family",
    "num_tasks",
    "register_family",
    "repeat_tasks",
]
