"""Per-task comparison of an evaluation on the reference's held-out tasks with the paper's own per-task returns.

``maml-rl evaluate RUN … --tasks reference`` evaluates on the 40 tasks the MAML paper's evaluation scripts used, in
their order (``maml_rl.reference_tasks``); experiments/paper-results.json holds the paper's return on each of them
(experiments/paper_results.py). So every task can be compared with itself: for each pair (a row of the evaluation,
a row of the paper) and each step k this prints the two means ± standard errors over tasks, the paired difference
(ours − paper) ± its standard error, medians, worst tasks, and on how many tasks ours is the higher.

    python experiments/compare_with_paper.py EVAL_DIR [--pair 0=maml --pair 1=pretrained …]

``--pair I=ROW``: the evaluation's I-th row (0-based, the order of its table) against the paper's ROW (``maml``,
``pretrained``, ``random``, ``oracle``); default ``0=maml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PAPER_RESULTS = Path(__file__).with_name("paper-results.json")
ROWS = ("maml", "pretrained", "random", "oracle")


@dataclass(frozen=True)
class StepComparison:
    """One step ``k`` of one pair, over the same ``n`` tasks."""

    k: int
    ours: np.ndarray
    paper: np.ndarray

    @staticmethod
    def _stderr(x: np.ndarray) -> float:
        return float(np.std(x, ddof=1) / np.sqrt(len(x)))

    def cells(self) -> list[str]:
        difference = self.ours - self.paper
        return [
            f"{self.k}",
            f"{self.ours.mean():.2f} ± {self._stderr(self.ours):.2f}",
            f"{self.paper.mean():.2f} ± {self._stderr(self.paper):.2f}",
            f"{difference.mean():+.2f} ± {self._stderr(difference):.2f}",
            f"{np.median(self.ours):.2f} / {np.median(self.paper):.2f}",
            f"{self.ours.min():.2f} / {self.paper.min():.2f}",
            f"{int((self.ours > self.paper).sum())} of {len(self.ours)}",
        ]


HEADER = ["k", "ours (mean ± SE)", "paper (mean ± SE)", "ours − paper (paired)", "median ours / paper",
          "worst ours / paper", "tasks ours higher"]


def compare(evaluation: dict[str, Any], paper: dict[str, Any], index: int, row: str) -> list[StepComparison]:
    """The steps both have, for the evaluation's ``index``-th policy against the paper's ``row``.

    Raises:
        ValueError: the evaluation is not on the reference's tasks, or the pair does not exist.
    """
    protocol = evaluation["protocol"]
    if protocol.get("task_set") != "reference":
        raise ValueError("the evaluation is not on the reference's tasks: rerun maml-rl evaluate with --tasks "
                         "reference (only then is task i the paper's task i)")
    family = protocol.get("family")
    if family not in paper["families"]:
        raise ValueError(f"the paper has no per-task results for family {family!r}")
    policies = evaluation["policies"]
    if not 0 <= index < len(policies):
        raise ValueError(f"--pair {index}={row}: the evaluation has rows 0 … {len(policies) - 1}")
    if row not in paper["families"][family]:
        raise ValueError(f"--pair {index}={row}: the paper's rows are {', '.join(paper['families'][family])}")
    ours = [np.asarray(step["returns"], dtype=np.float64) for step in policies[index]["steps"]]
    theirs = [np.asarray(step, dtype=np.float64) for step in paper["families"][family][row]["returns"]]
    return [StepComparison(k, a, b) for k, (a, b) in enumerate(zip(ours, theirs, strict=False))]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)


def _pair(text: str) -> tuple[int, str]:
    index, _, row = text.partition("=")
    if not index.isdigit() or row not in ROWS:
        raise argparse.ArgumentTypeError(f"expected I=ROW with ROW one of {', '.join(ROWS)}, got {text!r}")
    return int(index), row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("evaluation", type=Path, help="an evaluation directory (its adaptation.json)")
    parser.add_argument("--pair", type=_pair, action="append", metavar="I=ROW",
                        help="the evaluation's I-th row against the paper's ROW (default: 0=maml); repeatable")
    parser.add_argument("--paper", type=Path, default=PAPER_RESULTS, help="the paper's per-task results")
    args = parser.parse_args(argv)
    try:
        evaluation = json.loads((args.evaluation / "adaptation.json").read_text())
        paper = json.loads(args.paper.read_text())
        for index, row in args.pair or [(0, "maml")]:
            steps = compare(evaluation, paper, index, row)
            print(f"{evaluation['policies'][index]['label']} against the paper's {row} row "
                  f"({evaluation['protocol']['family']}, the reference's {len(steps[0].ours)} tasks)")
            print(_table([HEADER, *(step.cells() for step in steps)]))
    except (OSError, ValueError, KeyError) as error:
        print(f"compare_with_paper: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
