"""Wall-clock of the evaluation protocol (DESIGN §6) on 2D navigation, paper preset.

40 held-out tasks × 20 episodes, horizon 100, K = 3 adaptation steps (4 rounds of sampling, 3 inner steps),
100×100 ReLU policy. The policy is a fresh initialization of ``experiments/navigation-2d/paper.yaml`` (or the
latest checkpoint of ``--run RUN_DIR``): navigation episodes always run the full horizon unless the goal is
reached, so the cost barely depends on the parameters.

    python benchmarks/evaluation_speed.py [--run RUN_DIR] [--repeats 3] [--threads N]

Target: under 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from maml_rl.config import load_config
from maml_rl.evaluation import Protocol, evaluate_row, load_run, random_row

PAPER = Path(__file__).resolve().parents[1] / "experiments" / "navigation-2d" / "paper.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="evaluate this run's latest checkpoint instead of a fresh policy")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch intra-op threads for adaptation (sampling always uses 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    protocol = Protocol(args.tasks, args.steps, args.episodes, seed=0)
    row = load_run(args.run) if args.run else random_row(load_config(PAPER), protocol)
    evaluate_row(row, Protocol(2, 1, 1, seed=0))  # warm-up: imports, vmap tracing
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        curve = evaluate_row(row, protocol)
        times.append(time.perf_counter() - start)
    horizon = row.config.env.horizon or 100
    steps = (args.steps + 1) * args.tasks * args.episodes * horizon
    print(f"{args.tasks} tasks x {args.episodes} episodes x {args.steps + 1} rounds, horizon {horizon}, "
          f"{torch.get_num_threads()} learner thread(s), {len(os.sched_getaffinity(0))} cores")
    print(f"seconds per evaluation: best {min(times):.2f}, all {', '.join(f'{t:.2f}' for t in times)} "
          f"({steps / min(times):,.0f} env steps/s)")
    print("mean return per step:", ", ".join(f"{m:.1f}" for m in curve.mean))


if __name__ == "__main__":
    main()
