"""Per-task comparison of an evaluation on the reference's held-out tasks with the paper's own per-task returns.

``maml-rl evaluate RUN … --tasks reference`` evaluates on the 40 tasks the MAML paper's evaluation scripts used, in
their order (``maml_rl.reference_tasks``); experiments/paper-results.json holds the paper's return on each of them
(experiments/paper_results.py). So every task can be compared with itself: for each pair (a row of the evaluation,
a row of the paper) and each step k this prints the two means ± standard errors over tasks, the paired difference
(ours − paper) ± its standard error, medians, worst tasks, and on how many tasks ours is the higher.

    python experiments/compare_with_paper.py EVAL_DIR [--pair 0=maml --pair 1=pretrained …]

``--pair I=ROW``: the evaluation's I-th row (0-based, the order of its table) against the paper's ROW (``maml``,
``pretrained``, ``random``, ``oracle``); default ``0=maml``.

``--split EDGES`` (comma-separated, increasing): also compare within groups of tasks cut at those values of the
task parameter (families with one number per task: the velocity families' goal velocity, the direction families'
±1), e.g. ``--split 1,2`` for goal velocities in [0, 1), [1, 2) and [2, 3]: per group and step, the number of
tasks, both means and the paired difference ± its standard error.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PAPER_RESULTS = Path(__file__).with_name("paper-results.json")
ROWS = ("maml", "pretrained", "random", "oracle")


def standard_error(x: np.ndarray) -> float:
    """The standard error of the mean of ``x`` ``[n]`` (sample standard deviation / √n)."""
    return float(np.std(x, ddof=1) / np.sqrt(len(x)))


@dataclass(frozen=True)
class StepComparison:
    """One step ``k`` of one pair, over the same ``n`` tasks."""

    k: int
    ours: np.ndarray
    paper: np.ndarray

    def cells(self) -> list[str]:
        difference = self.ours - self.paper
        return [
            f"{self.k}",
            f"{self.ours.mean():.2f} ± {standard_error(self.ours):.2f}",
            f"{self.paper.mean():.2f} ± {standard_error(self.paper):.2f}",
            f"{difference.mean():+.2f} ± {standard_error(difference):.2f}",
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


def task_values(evaluation: dict[str, Any]) -> np.ndarray:
    """``[n]`` the task parameter of each of the evaluation's tasks; ``ValueError`` unless it is one number per task."""
    tasks = evaluation["protocol"].get("tasks") or {}
    if len(tasks) != 1:
        raise ValueError(f"--split needs one task parameter, the evaluation has {sorted(tasks) or 'none'}")
    (name, values), = tasks.items()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"--split needs one number per task; {name!r} has shape {list(array.shape)[1:]} per task")
    return array


def split_rows(steps: list[StepComparison], values: np.ndarray, edges: list[float]) -> list[list[str]]:
    """Table rows (group, k, n, ours, paper, paired difference ± SE) of the tasks cut at ``edges`` of ``values``."""
    group_of = np.searchsorted(np.asarray(edges), values, side="right")  # group g: edges[g-1] <= value < edges[g]
    bounds = [-np.inf, *edges, np.inf]
    rows = []
    for group in range(len(edges) + 1):
        members = group_of == group
        label = f"[{bounds[group]:g}, {bounds[group + 1]:g})"
        for step in steps:
            if not members.any():
                rows.append([label, str(step.k), "0", "", "", ""])
                continue
            difference = step.ours[members] - step.paper[members]
            stderr = standard_error(difference) if members.sum() > 1 else float("nan")
            rows.append([label, str(step.k), str(int(members.sum())), f"{step.ours[members].mean():.2f}",
                         f"{step.paper[members].mean():.2f}", f"{difference.mean():+.2f} ± {stderr:.2f}"])
    return rows


SPLIT_HEADER = ["tasks with parameter in", "k", "n", "ours", "paper", "ours − paper (paired)"]


def _edges(text: str) -> list[float]:
    try:
        edges = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(b <= a for a, b in itertools.pairwise(edges)) or not all(np.isfinite(edges)):
        raise argparse.ArgumentTypeError(f"edges must be finite and increasing, got {text!r}")
    return edges


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
    parser.add_argument("--split", type=_edges, metavar="EDGES",
                        help="also compare within groups of tasks cut at these values of the task parameter, e.g. 1,2")
    args = parser.parse_args(argv)
    try:
        evaluation = json.loads((args.evaluation / "adaptation.json").read_text())
        paper = json.loads(args.paper.read_text())
        for index, row in args.pair or [(0, "maml")]:
            steps = compare(evaluation, paper, index, row)
            print(f"{evaluation['policies'][index]['label']} against the paper's {row} row "
                  f"({evaluation['protocol']['family']}, the reference's {len(steps[0].ours)} tasks)")
            print(_table([HEADER, *(step.cells() for step in steps)]))
            if args.split is not None:
                print(_table([SPLIT_HEADER, *split_rows(steps, task_values(evaluation), args.split)]))
    except (OSError, ValueError, KeyError) as error:
        print(f"compare_with_paper: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
