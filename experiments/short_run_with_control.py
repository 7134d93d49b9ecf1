"""Short meta-training runs beside their controls: does a setting make a family learn to adapt?

    python experiments/short_run_with_control.py ant-dir/modern --size ci --seeds 1 2 3 \\
        --set env.options.reference_model=[time_step]

For each seed, trains the preset (with the overrides) and its control: the same run whose outer steps are nil
(``algorithm.options.max_kl=1e-9``), so both sample the same tasks from the same starting policy. Prints, per seed,
the adaptation gain (post-adaptation minus pre-adaptation return of the meta-batch, ``returns/post_adapt_mean`` −
``returns/pre_adapt_mean``) averaged over the first and the last ``--window`` iterations, for the run and for the
control, and the last window's difference between them; then the mean of those differences over the seeds. This is
the measurement behind the CI-sized tests of ``tests/test_locomotion_learning.py`` (``--size ci``: 8 tasks × 8
episodes, horizon 40, 25 iterations). The run directories go to a temporary folder and are deleted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from maml_rl.config import load_config
from maml_rl.trainer import Trainer

#: the CI size of tests/test_locomotion_learning.py
SIZES = {"ci": ["maml.meta_batch_size=8", "maml.fast_batch_size=8", "env.horizon=40", "train.num_iterations=25"],
         "preset": []}
CONTROL = "algorithm.options.max_kl=1e-9"


def gains(preset: str, overrides: list[str]) -> np.ndarray:
    """Per-iteration adaptation gain ``[iterations]`` of one run (post − pre, meta-batch means)."""
    config = load_config(preset, [*overrides, "train.checkpoint_every=100000"])
    with tempfile.TemporaryDirectory() as run_dir:
        history = Trainer(config, Path(run_dir)).train(progress=False)
    return np.array([row["returns/post_adapt_mean"] - row["returns/pre_adapt_mean"] for row in history])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help="config path or name under experiments/, e.g. ant-dir/modern")
    parser.add_argument("--size", choices=sorted(SIZES), default="ci", help="ci (default) or the preset's own")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--window", type=int, default=5, help="iterations averaged at the start and at the end")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    preset = args.preset if args.preset.endswith(".yaml") else f"experiments/{args.preset}.yaml"
    base = [*SIZES[args.size], *args.overrides]
    print(f"{args.preset} {' '.join(args.overrides) or '(no overrides)'}, size {args.size}, adaptation gain "
          f"(post - pre), mean of the first / last {args.window} iterations")
    differences = []
    for seed in args.seeds:
        start = time.perf_counter()
        run = gains(preset, [*base, f"train.seed={seed}"])
        control = gains(preset, [*base, f"train.seed={seed}", CONTROL])
        w = args.window
        difference = float(run[-w:].mean() - control[-w:].mean())
        differences.append(difference)
        print(f"seed {seed}: run {run[:w].mean():.2f} -> {run[-w:].mean():.2f}, control {control[:w].mean():.2f} -> "
              f"{control[-w:].mean():.2f}, run - control at the end {difference:+.2f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"mean over {len(differences)} seeds of run - control at the end: {statistics.mean(differences):+.2f}")


if __name__ == "__main__":
    main()
