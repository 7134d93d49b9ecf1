"""The only place that writes metrics: TensorBoard event files and ``metrics.csv`` (docs/architecture.md §8), and the
evaluation results ``adaptation.json`` / ``adaptation.csv`` (docs/architecture.md §6).

Metric names are ``section/name`` (``returns/post_adapt_mean``, ``trpo/kl_after``, ``time/sampling``); every
row of ``metrics.csv`` has the same columns, ``iteration`` first.

Each run writes its event files into its own directory, so runs started with the same ``--output`` parent
(``runs/a``, ``runs/b``) show side by side with ``tensorboard --logdir runs``; an evaluation directory inside a
run (``runs/a/eval-iter000100``) shows as one more run beside them.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

METRICS_FILE = "metrics.csv"


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as dicts of floats."""
    with open(path, newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


class MetricsLogger:
    """Writes one row of scalars per iteration to TensorBoard and ``metrics.csv`` in ``run_dir``.

    Args:
        run_dir: the run directory.
        resume_after: when resuming, keep the CSV rows up to this iteration and drop later ones (they belong
            to iterations that will be recomputed); None starts a new file.
    """

    def __init__(self, run_dir: str | Path, resume_after: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / METRICS_FILE
        self.columns: list[str] | None = None
        kept: list[dict[str, float]] = []
        if resume_after is not None and self.csv_path.exists():
            kept = [row for row in read_metrics(self.csv_path) if row["iteration"] <= resume_after]
            if kept:
                self.columns = list(kept[0])
        self._file = open(self.csv_path, "w", newline="")  # noqa: SIM115 (closed in close())
        self._writer: csv.DictWriter | None = None
        if self.columns is not None:
            writer = self._start_csv(self.columns)
            for row in kept:
                writer.writerow({k: _format(v) for k, v in row.items()})
            self._file.flush()
        purge_step = None if resume_after is None else resume_after + 1  # drop events of recomputed iterations
        self.tensorboard = SummaryWriter(str(self.run_dir), purge_step=purge_step)

    def _start_csv(self, columns: list[str]) -> csv.DictWriter:
        self.columns = columns
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        self._writer.writeheader()
        return self._writer

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        """Write ``metrics`` for ``iteration`` (1-based) to both sinks."""
        row = {"iteration": float(iteration), **metrics}
        writer = self._writer if self._writer is not None else self._start_csv(list(row))
        if list(row) != self.columns:
            missing = sorted(set(self.columns or []) ^ set(row))
            raise ValueError(f"metric names changed between iterations: {missing}")
        writer.writerow({k: _format(v) for k, v in row.items()})
        self._file.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, iteration)
        self.tensorboard.flush()

    def log_text(self, tag: str, text: str) -> None:
        """A text entry in TensorBoard (e.g. the resolved config)."""
        self.tensorboard.add_text(tag, text, 0)

    def log_hparams(self, hparams: dict[str, Any], metric_tags: Sequence[str]) -> None:
        """Record hyperparameters for TensorBoard's HPARAMS tab, in this run's own event file.

        Args:
            hparams: a possibly nested mapping (the resolved config); keys are flattened to ``section.key``,
                values other than numbers, strings and booleans are written as strings.
            metric_tags: scalar tags logged by :meth:`log` that the HPARAMS tab shows beside them (their
                values are read from the run's scalars, so nothing is logged twice).
        """
        flat = {key: (v if isinstance(v, (int, float, str, bool)) else str(v)) for key, v in _flatten(hparams)}
        file_writer = self.tensorboard.file_writer
        assert file_writer is not None  # set by SummaryWriter.__init__ until close()
        for summary in hparams_summaries(flat, dict.fromkeys(metric_tags, 0.0)):
            file_writer.add_summary(summary)
        self.tensorboard.flush()

    def close(self) -> None:
        self._file.close()
        self.tensorboard.close()


def tag_of(label: str) -> str:
    """A TensorBoard-friendly form of a label: runs of other characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", label).strip("_")


def write_adaptation_results(output_dir: str | Path, results: dict[str, Any], image: np.ndarray | None = None) -> None:
    """Write evaluation results (docs/architecture.md §6): ``adaptation.json``, ``adaptation.csv`` and TensorBoard.

    Args:
        output_dir: the evaluation directory (created).
        results: ``{"protocol": {...}, "policies": [{"label", …, "steps": [{"step", "mean", "stderr",
            "returns": [n]}]}]}`` (:func:`maml_rl.evaluation.results`).
        image: the curve as ``[H, W, 3]`` uint8 (:func:`maml_rl.plotting.figure_to_rgb`), logged as an image.

    TensorBoard gets ``adaptation/<label>/return_mean`` and ``…/return_stderr`` with the adaptation step ``k``
    as the global step, the figure as ``adaptation/curve`` and the table as text.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "adaptation.json").write_text(json.dumps(results, indent=1) + "\n")
    num_tasks = results["protocol"]["num_tasks"]
    with open(output_dir / "adaptation.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["policy", "step", "mean_return", "stderr", *(f"task_{i}" for i in range(num_tasks))])
        for policy in results["policies"]:
            for step in policy["steps"]:
                writer.writerow([policy["label"], step["step"], repr(step["mean"]), repr(step["stderr"]),
                                 *(repr(r) for r in step["returns"])])
    with SummaryWriter(str(output_dir)) as tensorboard:
        lines = ["| policy | step | mean return | stderr |", "|---|---|---|---|"]
        for policy in results["policies"]:
            tag = tag_of(policy["label"])
            for step in policy["steps"]:
                tensorboard.add_scalar(f"adaptation/{tag}/return_mean", step["mean"], step["step"])
                tensorboard.add_scalar(f"adaptation/{tag}/return_stderr", step["stderr"], step["step"])
                lines.append(f"| {policy['label']} | {step['step']} | {step['mean']:.3f} | {step['stderr']:.3f} |")
        tensorboard.add_text("adaptation/table", "\n".join(lines), 0)
        tensorboard.add_text("adaptation/protocol", "```\n" + json.dumps(results["protocol"], indent=1) + "\n```", 0)
        if image is not None:
            tensorboard.add_image("adaptation/curve", image, 0, dataformats="HWC")


def _flatten(mapping: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _format(value: float) -> str:
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
