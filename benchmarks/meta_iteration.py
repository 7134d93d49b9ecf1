"""Time meta-iterations of a config and print seconds per iteration and environment steps per second by phase.

    python benchmarks/meta_iteration.py [CONFIG] [--iterations 5] [--warmup 1] [--threads N] [--set key=value ...]

CONFIG defaults to the 2D-navigation paper preset (20 tasks x 20 episodes, horizon 100, one inner step).
Phases: sampling (environment + policy, train and validation episodes), adaptation (baseline fits, GAE and
the inner step during sampling), outer (the MAML-TRPO step: meta-gradient, CG, line search).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from locomotion_throughput import cpu_model

from maml_rl.cli import resolve_config_path
from maml_rl.config import Config, apply_overrides, from_dict, load_yaml
from maml_rl.trainer import Trainer


def load_and_describe(name: str, overrides: list[str]) -> Config:
    """The config ``name`` with ``overrides``, after printing its sizes and the machine (benchmark headers)."""
    config = from_dict(apply_overrides(load_yaml(resolve_config_path(name)), overrides))
    print(f"config: {name}  tasks={config.maml.meta_batch_size} episodes/task={config.maml.fast_batch_size} "
          f"horizon={config.env.horizon} policy={list(config.policy.hidden_sizes)} {config.policy.activation}")
    print(f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; torch {torch.__version__}; "
          f"device {config.train.device}; learner threads {config.train.num_threads}")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="navigation-2d/paper")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="learner threads (train.num_threads)")
    parser.add_argument("--device", default="cpu", help="learner (and warp) device: cpu, cuda, cuda:N")
    parser.add_argument("--backend", choices=["native", "warp"], help="MuJoCo backend (env.options.backend)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    overrides = [*args.set, f"train.device={args.device}"]
    if args.backend is not None:
        overrides.append(f"env.options.backend={args.backend}")
    if args.threads is not None:
        overrides.append(f"train.num_threads={args.threads}")
    config = load_and_describe(args.config, overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir)
        for _ in range(args.warmup):
            trainer.meta_iteration()
        rows = [trainer.meta_iteration() for _ in range(args.iterations)]
        trainer.logger.close()

    def med(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    steps = med("env/steps")
    print(f"median of {args.iterations} iterations (after {args.warmup} warm-up):")
    print(f"  seconds per meta-iteration     {med('time/iteration'):8.3f}")
    for phase in ("sampling", "adaptation", "outer"):
        print(f"  {phase:<30} {med(f'time/{phase}'):8.3f} s  ({med(f'time/{phase}') / med('time/iteration'):5.1%})")
    print(f"  environment steps / iteration  {steps:8.0f}")
    print(f"  env steps / s (sampling phase) {steps / med('time/sampling'):8.0f}")
    print(f"  env steps / s (whole iteration){steps / med('time/iteration'):8.0f}")


if __name__ == "__main__":
    main()
