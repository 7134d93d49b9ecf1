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
import io
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maml_rl.errors import MetricsFileError, NonFiniteError
from maml_rl.rundir import atomic_write_text

if TYPE_CHECKING:  # TensorBoard's writer imports torch: the writers import it late, so `plot` needs no torch
    from torch.utils.tensorboard import SummaryWriter

METRICS_FILE = "metrics.csv"


def read_metrics(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as dicts of floats.

    A last row cut short by a crash mid-write (missing cells, an unparsable number, no final newline) is
    dropped and reported through ``warn`` (default: one ``maml-rl: warning:`` line on stderr). Anything else
    that does not parse raises :class:`MetricsFileError`.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MetricsFileError(f"{path} is unreadable ({error})") from error
    lines = text.splitlines()
    if not lines:
        return []
    header = next(csv.reader([lines[0]]))
    if not header or header[0] != "iteration":
        raise MetricsFileError(f"{path} is not a maml-rl metrics file (its first column is not 'iteration')")
    rows: list[dict[str, float]] = []
    for number, line in enumerate(lines[1:], start=2):
        cells = next(csv.reader([line]), [])
        try:
            if len(cells) != len(header):
                raise ValueError(f"{len(cells)} cells for {len(header)} columns")
            rows.append({key: float(value) for key, value in zip(header, cells, strict=True)})
        except ValueError as error:
            if number == len(lines):  # a partial last write: drop it
                (warn or _warn)(f"{path}: dropped the truncated last row (line {number}: {error})")
                break
            raise MetricsFileError(f"{path} line {number} is corrupt ({error})") from error
    return rows


def _warn(message: str) -> None:
    print(f"maml-rl: warning: {message}", file=sys.stderr)


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
        self._writer: csv.DictWriter | None = None
        kept: list[dict[str, float]] = []
        if resume_after is not None and self.csv_path.exists():
            kept = [row for row in read_metrics(self.csv_path) if row["iteration"] <= resume_after]
        if kept:
            # Rewrite the kept rows to a temporary file and rename it over metrics.csv: a crash during the
            # rewrite leaves the old file whole. Then append.
            self.columns = list(kept[0])
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=self.columns)
            writer.writeheader()
            for row in kept:
                writer.writerow({k: _format(v) for k, v in row.items()})
            atomic_write_text(self.csv_path, buffer.getvalue())
            self._file = open(self.csv_path, "a", newline="")  # noqa: SIM115 (closed in close())
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        else:
            self._file = open(self.csv_path, "w", newline="")  # noqa: SIM115 (closed in close())
        purge_step = None if resume_after is None else resume_after + 1  # drop events of recomputed iterations
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard: SummaryWriter = SummaryWriter(str(self.run_dir), purge_step=purge_step)

    def _start_csv(self, columns: list[str]) -> csv.DictWriter:
        self.columns = columns
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        self._writer.writeheader()
        return self._writer

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        """Write ``metrics`` for ``iteration`` (1-based) to both sinks."""
        row = {"iteration": float(iteration), **metrics}
        bad = [name for name, value in metrics.items() if not math.isfinite(value)]
        if bad:  # checked before anything is written: nothing non-finite ever reaches the files
            raise NonFiniteError(f"non-finite metric {', '.join(bad)}")
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
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        flat = {key: (v if isinstance(v, (int, float, str, bool)) else str(v)) for key, v in _flatten(hparams)}
        file_writer = self.tensorboard.file_writer
        assert file_writer is not None  # set by SummaryWriter.__init__ until close()
        for summary in hparams_summaries(flat, dict.fromkeys(metric_tags, 0.0)):
            file_writer.add_summary(summary)
        self.tensorboard.flush()

    def close(self) -> None:
        try:
            self._file.close()
        finally:
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
    bad = non_finite_values(results)
    if bad:
        raise NonFiniteError(f"non-finite evaluation results ({', '.join(bad[:3])}); nothing written")
    atomic_write_text(output_dir / "adaptation.json", json.dumps(results, indent=1, allow_nan=False) + "\n")
    num_tasks = results["protocol"]["num_tasks"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["policy", "step", "mean_return", "stderr", *(f"task_{i}" for i in range(num_tasks))])
    for policy in results["policies"]:
        for step in policy["steps"]:
            writer.writerow([policy["label"], step["step"], repr(step["mean"]), repr(step["stderr"]),
                             *(repr(r) for r in step["returns"])])
    atomic_write_text(output_dir / "adaptation.csv", buffer.getvalue())
    from torch.utils.tensorboard import SummaryWriter

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


def non_finite_values(data: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the NaN or infinite floats in nested dicts and lists (``data`` as for JSON)."""
    if isinstance(data, float):
        return [] if math.isfinite(data) else [prefix or "value"]
    if isinstance(data, dict):
        return [p for key, value in data.items() for p in non_finite_values(value, f"{prefix}.{key}".strip("."))]
    if isinstance(data, (list, tuple)):
        return [p for i, value in enumerate(data) for p in non_finite_values(value, f"{prefix}[{i}]")]
    return []


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
