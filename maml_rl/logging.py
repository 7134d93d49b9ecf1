"""The only place that writes metrics: TensorBoard event files and ``metrics.csv`` (DESIGN §8).

Metric names are ``section/name`` (``returns/post_adapt_mean``, ``trpo/kl_after``, ``time/sampling``); every
row of ``metrics.csv`` has the same columns, ``iteration`` first.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

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
            self._start_csv(self.columns)
            for row in kept:
                self._writer.writerow({k: _format(v) for k, v in row.items()})
            self._file.flush()
        purge_step = None if resume_after is None else resume_after + 1  # drop events of recomputed iterations
        self.tensorboard = SummaryWriter(str(self.run_dir), purge_step=purge_step)

    def _start_csv(self, columns: list[str]) -> None:
        self.columns = columns
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        self._writer.writeheader()

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        """Write ``metrics`` for ``iteration`` (1-based) to both sinks."""
        row = {"iteration": float(iteration), **metrics}
        if self._writer is None:
            self._start_csv(list(row))
        if list(row) != self.columns:
            missing = sorted(set(self.columns or []) ^ set(row))
            raise ValueError(f"metric names changed between iterations: {missing}")
        self._writer.writerow({k: _format(v) for k, v in row.items()})
        self._file.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, iteration)
        self.tensorboard.flush()

    def log_text(self, tag: str, text: str) -> None:
        """A text entry in TensorBoard (e.g. the resolved config)."""
        self.tensorboard.add_text(tag, text, 0)

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Record hyperparameters for TensorBoard's HPARAMS tab."""
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        self.tensorboard.add_hparams(clean, metrics, run_name=".")

    def close(self) -> None:
        self._file.close()
        self.tensorboard.close()


def _format(value: float) -> str:
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
