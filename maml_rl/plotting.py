"""Figures: adaptation curves (docs/architecture.md §6) and learning curves from ``metrics.csv``
(docs/architecture.md §8).

Figures are drawn on matplotlib's Agg canvas directly (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), with no
pyplot state, so plotting works headless and never opens a window.

>>> figure = learning_curves_figure([("seed1", iterations, values)], "returns/post_adapt_mean")
>>> save_png(figure, "runs/learning-curves.png")
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from maml_rl.errors import PlotError
from maml_rl.logging import METRICS_FILE, read_metrics
from maml_rl.rundir import atomic_write

DEFAULT_METRIC = "returns/post_adapt_mean"


def _new_figure(width: float = 6.4, height: float = 4.4) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


#: characters per line of an adaptation figure's title: longer titles wrap rather than run off the figure
TITLE_WIDTH = 60


def adaptation_figure(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str = "") -> Figure:
    """Mean return vs. adaptation step with standard-error bars, one line per policy.

    Args:
        curves: ``(label, mean [K + 1], stderr [K + 1])`` per policy; a one-point curve (an oracle, evaluated
            at ``k = 0`` only) is drawn as a dashed horizontal line with a shaded ±stderr band.
        title: the axes title, wrapped at :data:`TITLE_WIDTH` characters.
    """
    figure = _new_figure()
    axes = figure.add_subplot()
    last_step = max(len(mean) for _, mean, _ in curves) - 1
    for index, (label, mean, stderr) in enumerate(curves):
        color = f"C{index % 10}"
        if len(mean) == 1 and last_step > 0:
            axes.axhline(mean[0], color=color, linestyle="--", label=label)
            axes.axhspan(mean[0] - stderr[0], mean[0] + stderr[0], color=color, alpha=0.15, linewidth=0)
        else:
            axes.errorbar(np.arange(len(mean)), mean, yerr=stderr, color=color, marker="o", capsize=3, label=label)
    axes.set_xticks(np.arange(last_step + 1))
    axes.set_xlabel("adaptation steps k")
    axes.set_ylabel("mean return per episode")
    axes.set_title("\n".join(textwrap.wrap(title, TITLE_WIDTH)), fontsize="medium")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def learning_curves_figure(series: Sequence[tuple[str, np.ndarray, np.ndarray]], metric: str) -> Figure:
    """One line per run: ``metric`` against the meta-iteration.

    Args:
        series: ``(label, iterations [I], values [I])`` per run.
        metric: the metric name, for the axis label.
    """
    figure = _new_figure()
    axes = figure.add_subplot()
    for label, iterations, values in series:
        axes.plot(iterations, values, label=label, marker="." if len(values) < 30 else None)
    axes.set_xlabel("meta-iteration")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def learning_curves(run_dirs: Sequence[str | Path], metric: str | Sequence[str] = DEFAULT_METRIC) -> Figure:
    """The learning curves of one or more metrics for several runs, read from their ``metrics.csv``.

    Raises:
        PlotError: a run has no ``metrics.csv`` (or an empty one), or lacks a metric (the message lists the
            metrics it has).
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    series = []
    names = [Path(run_dir).name or str(run_dir) for run_dir in run_dirs]
    for run_dir, name in zip(run_dirs, names, strict=True):
        path = Path(run_dir) / METRICS_FILE
        if not path.is_file():
            raise PlotError(f"{run_dir} has no {METRICS_FILE}")
        rows = read_metrics(path)
        if not rows:
            raise PlotError(f"{path} has no rows yet")
        label = name if names.count(name) == 1 else str(run_dir)
        for one in metrics:
            if one not in rows[0]:
                available = ", ".join(key for key in rows[0] if key != "iteration")
                raise PlotError(f"unknown metric {one!r} in {path}; available: {available}")
            line = label if len(metrics) == 1 else f"{label}: {one}"
            series.append((line, np.array([row["iteration"] for row in rows]), np.array([row[one] for row in rows])))
    return learning_curves_figure(series, metrics[0] if len(metrics) == 1 else "value")


def figure_to_rgb(figure: Figure) -> np.ndarray:
    """Render ``figure``: ``[H, W, 3]`` uint8."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG (through a temporary file and a rename, so a crash leaves no partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, FigureCanvasAgg(figure).print_png)
