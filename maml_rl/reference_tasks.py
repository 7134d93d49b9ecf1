"""The held-out tasks of the MAML paper's evaluation scripts, drawn as they drew them (``maml-rl evaluate --tasks
reference``; docs/reproduction.md).

Each script of cbfinn/maml_rl behind the paper's RL table (``maml_examples/test_maml_*.py``) seeds numpy's global
generator, draws 40 goals with ``np.random.uniform`` and evaluates every row (MAML, pretrained, random, oracle) on
them in that order; its results files (``icml/icml_*_results_*.pkl``) list one return per goal in the same order.
numpy's legacy ``RandomState`` (MT19937, the generator behind ``np.random.seed``) keeps its stream fixed across numpy
versions, so ``RandomState(seed).uniform(low, high, size)`` gives those goals again, and per-task returns computed
here line up with the paper's, task for task.

The direction families draw a number and threshold it (the reference's ``HalfCheetahEnvRandDirec`` and
``AntEnvRandDirec``: backward below a threshold, forward from it), which is the ±1 ``direction`` of
``envs.locomotion``. For Ant direction the threshold is the one the paper's results show, not the committed
environment's (see ``REFERENCE_TASK_SETS``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # envs imports torch and mujoco; the evaluation's argument checks read this module without them
    from envs.base import Tasks

#: how many goals each reference script drew (``test_num_goals = 40``)
REFERENCE_TASK_COUNT = 40


def _float32(key: str) -> Callable[[np.ndarray], Tasks]:
    """The draws themselves as ``{key: draws}`` in float32 (the families' task dtype)."""
    return lambda draws: {key: draws.astype(np.float32)}


def _direction(threshold: float) -> Callable[[np.ndarray], Tasks]:
    """``{"direction": −1 where draw < threshold, else +1}`` in float32 (the reference's ``goal_direction``)."""
    return lambda draws: {"direction": np.where(draws < threshold, -1.0, 1.0).astype(np.float32)}


@dataclass(frozen=True)
class ReferenceTaskSet:
    """One script's held-out goals: ``np.random.seed(seed)`` then ``np.random.uniform(low, high, (40, *shape))``.

    Attributes:
        script: the cbfinn/maml_rl evaluation script that drew them.
        seed: its ``np.random.seed``.
        low: lower bound of its ``np.random.uniform``.
        high: upper bound.
        shape: shape of one draw (``()`` for a number, ``(2,)`` for a point).
        to_tasks: the draws ``[40, *shape]`` (float64) as this project's task dict.
        mapping: how a draw becomes a task, in words (recorded in ``adaptation.json``).
    """

    script: str
    seed: int
    low: float
    high: float
    shape: tuple[int, ...]
    to_tasks: Callable[[np.ndarray], Tasks]
    mapping: str

    def draws(self) -> np.ndarray:
        """``[40, *shape]`` float64: the script's goals, in its order."""
        generator = np.random.RandomState(self.seed)
        return generator.uniform(self.low, self.high, size=(REFERENCE_TASK_COUNT, *self.shape))

    def tasks(self) -> Tasks:
        """The goals as this project's tasks (``{key: [40, ...]}``), in the script's order."""
        return self.to_tasks(self.draws())


#: family name -> the evaluation script's task set; sources are cbfinn/maml_rl's ``maml_examples`` scripts (the
#: lines after ``test_num_goals = 40``) and, for the thresholds, ``rllab/envs/mujoco/*_rand_direc.py``
REFERENCE_TASK_SETS: dict[str, ReferenceTaskSet] = {
    "navigation-2d": ReferenceTaskSet("maml_examples/test_maml_point.py", 1, -0.5, 0.5, (2,), _float32("goal"),
                                      "each draw is a goal"),
    # the "post-ICML" goals (the script keeps the pre-ICML range 0.1 … 0.8 commented out)
    "halfcheetah-vel": ReferenceTaskSet("maml_examples/test_maml_cheetah.py", 1, 0.0, 2.0, (), _float32("velocity"),
                                        "each draw is a goal velocity"),
    # half_cheetah_env_rand_direc.py: goal_direction = -1.0 if goal_vel < 1.0 else 1.0
    "halfcheetah-dir": ReferenceTaskSet("maml_examples/test_maml_cheetah_direc.py", 1, 0.0, 2.0, (), _direction(1.0),
                                        "direction -1 below 1.0, +1 from it"),
    "ant-vel": ReferenceTaskSet("maml_examples/test_maml_ant.py", 1, 0.0, 3.0, (), _float32("velocity"),
                                "each draw is a goal velocity"),
    # this script seeds with 2. ant_env_rand_direc.py as committed says goal_direction = -1.0 if goal < 1.5, which
    # makes 25 of these tasks backward; the paper's results were evaluated with 20: in icml_antdirec_results_*.pkl
    # the random row takes one value on the tasks of each direction, the pretrained row likewise, and the MAML row's
    # pre-update return is positive exactly on the backward tasks (it walks backward), and all three put the five
    # draws between 1.306 and 1.483 (tasks 0, 3, 17, 30, 33) with the forward ones. Every threshold in
    # (1.284, 1.306] gives that split; 1.3 stands for them (tests/test_reference_tasks.py checks the split).
    "ant-dir": ReferenceTaskSet("maml_examples/test_maml_ant_direc.py", 2, 0.0, 3.0, (), _direction(1.3),
                                "direction -1 below 1.3, +1 from it (the split of the paper's results; the "
                                "committed environment's threshold is 1.5)"),
}


def reference_task_set(family: str) -> ReferenceTaskSet:
    """The reference's task set of ``family``.

    Raises:
        ValueError: the reference code evaluated no such family (one line naming the ones it did).
    """
    if family not in REFERENCE_TASK_SETS:
        raise ValueError(
            f"--tasks reference: the MAML reference code has no held-out tasks for family {family!r} (it evaluated "
            f"{', '.join(REFERENCE_TASK_SETS)}); pass a number of tasks instead"
        )
    return REFERENCE_TASK_SETS[family]
