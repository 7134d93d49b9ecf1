"""The evaluation protocol and the checks of ``maml-rl evaluate``'s arguments, torch-free.

``maml-rl evaluate`` runs these checks (flags, output directory, run directories) before it imports torch, so a
bad argument fails in a fraction of a second; :mod:`maml_rl.evaluation` does the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maml_rl.errors import EvaluationError
from maml_rl.reference_tasks import REFERENCE_TASK_COUNT
from maml_rl.rundir import CONFIG_FILE, RunDirError, check_writable

#: the files an evaluation writes into its output directory (besides TensorBoard events)
RESULT_FILES = ("adaptation.json", "adaptation.csv", "adaptation.png")
#: where held-out tasks come from (:attr:`Protocol.task_set`)
TASK_SETS = ("sampled", "reference")


@dataclass(frozen=True)
class Protocol:
    """The evaluation protocol (docs/architecture.md §6).

    Attributes:
        num_tasks: held-out tasks ``n`` (standard errors need at least 2).
        num_steps: adaptation steps ``K``; the curve has ``K + 1`` points.
        episodes_per_task: episodes ``E`` sampled per task at every step (per round, with ``budget_steps``).
        seed: evaluation seed; the same seed gives the same tasks to every evaluated policy.
        budget_steps: environment steps per task at every step (``--budget-steps``): rounds of ``E`` episodes
            until each task's episodes reach it (``maml_rl.collect.sample``), as the reference code's evaluation
            sampled ``batch_size`` steps (4000 for 2D navigation and HalfCheetah, 8000 for Ant direction in
            cbfinn/maml_rl). None: ``E`` episodes.
        task_set: ``sampled``: ``num_tasks`` tasks drawn from the evaluation seed; ``reference``: the 40 tasks the
            MAML reference code's evaluation script drew for the family (:mod:`maml_rl.reference_tasks`), in its
            order (``--tasks reference``). Resets and action noise come from the evaluation seed either way.
    """

    num_tasks: int = 40
    num_steps: int = 3
    episodes_per_task: int = 20
    seed: int = 0
    budget_steps: int | None = None
    task_set: str = "sampled"

    def __post_init__(self) -> None:
        if self.task_set not in TASK_SETS:
            raise EvaluationError(f"task set must be one of {', '.join(TASK_SETS)}, got {self.task_set!r}")
        if self.task_set == "reference" and self.num_tasks != REFERENCE_TASK_COUNT:
            raise EvaluationError(f"--tasks reference is the reference's {REFERENCE_TASK_COUNT} tasks, got "
                                  f"num_tasks = {self.num_tasks}")
        if self.num_tasks < 2:
            raise EvaluationError(f"--tasks must be >= 2 (the standard error is over tasks), got {self.num_tasks}")
        if self.num_steps < 0:
            raise EvaluationError(f"--steps must be >= 0, got {self.num_steps}")
        if self.episodes_per_task < 1:
            raise EvaluationError(f"--episodes must be >= 1, got {self.episodes_per_task}")
        if self.seed < 0:
            raise EvaluationError(f"--seed must be >= 0, got {self.seed}")
        if self.budget_steps is not None and self.budget_steps < 1:
            raise EvaluationError(f"--budget-steps must be >= 1, got {self.budget_steps}")


def check_output(output: str | Path) -> Path:
    """Refuse an output directory that already holds evaluation results, is not a directory or cannot be
    written (checked before any evaluation work, without creating anything)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise EvaluationError(f"--output {output} exists and is not a directory")
    try:
        check_writable(output, "--output")
    except RunDirError as error:
        raise EvaluationError(str(error)) from error
    taken = [name for name in RESULT_FILES if (output / name).exists()]
    if taken or any(output.glob("events.out.tfevents.*")):
        raise EvaluationError(f"--output {output} already holds evaluation results; choose another directory")
    return output


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a path; raises :class:`EvaluationError` unless it holds a run's ``config.yaml``."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise EvaluationError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return run_dir
