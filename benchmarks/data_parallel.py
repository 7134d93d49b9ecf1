"""Seconds per meta-iteration with 1 and with 2 processes (``maml-rl train --nproc``), measured alternately.

    python benchmarks/data_parallel.py navigation-2d/paper --iterations 3 --rounds 2 [--set KEY=VALUE …]

Each round trains a fresh run with ``--nproc 1`` and then ``--nproc 2`` for ``--iterations`` iterations and reads
``time/iteration`` from its ``metrics.csv`` (rank 0's clock), dropping the first iteration (warm-up). Prints the
median per process count and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maml_rl.logging import read_metrics  # noqa: E402


def seconds_per_iteration(config: str, nproc: int, iterations: int, overrides: list[str], where: Path) -> list[float]:
    """Train a fresh run; its ``time/iteration`` after the first iteration."""
    run = where / f"run-{nproc}"
    command = [sys.executable, "-m", "maml_rl.cli", "train", config, "--output", str(run), "--no-progress",
               "--nproc", str(nproc), "--set", f"train.num_iterations={iterations}",
               *[item for override in overrides for item in ("--set", override)]]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return [row["time/iteration"] for row in read_metrics(run / "metrics.csv")[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    for round_ in range(args.rounds):
        for nproc in (1, 2):
            with tempfile.TemporaryDirectory() as where:
                times[nproc] += seconds_per_iteration(args.config, nproc, args.iterations, args.set, Path(where))
            print(f"round {round_ + 1}, {nproc} process(es): {times[nproc][-(args.iterations - 1):]}", flush=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"{args.config}: seconds per meta-iteration (median)  1 process {one:.2f}  2 processes {two:.2f}  "
          f"speed-up {one / two:.2f}x")


if __name__ == "__main__":
    main()
