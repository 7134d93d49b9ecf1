"""Wall-clock of the evaluation protocol (docs/architecture.md §6), by default on 2D navigation, paper preset.

40 held-out tasks × 20 episodes, the config's horizon (100 for 2D navigation), K = 3 adaptation steps (4 rounds
of sampling, 3 inner steps). The policy is a fresh initialization of CONFIG (or the latest checkpoint of
``--run RUN_DIR``): navigation episodes always run the full horizon unless the goal is reached, so the cost
barely depends on the parameters.

    python benchmarks/evaluation_speed.py [CONFIG] [--run RUN_DIR] [--repeats 3] [--threads N]
                                          [--device cpu|cuda] [--backend native|warp]

Target (issue 5): under 10 s on 2 cores for 2D navigation.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from maml_rl.build import build_family, horizon_of, resolve_device
from maml_rl.cli import resolve_config_path
from maml_rl.config import ConfigError, load_config
from maml_rl.evaluation import Protocol, evaluate_row, load_run, random_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="navigation-2d/paper", help="config of the fresh policy")
    parser.add_argument("--run", help="evaluate this run's latest checkpoint instead of a fresh policy")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch intra-op threads for adaptation (sampling always uses 1)")
    parser.add_argument("--device", default="cpu", help="evaluation device: cpu, cuda, cuda:N")
    parser.add_argument("--backend", choices=["native", "warp"], help="MuJoCo backend (fresh policy only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    protocol = Protocol(args.tasks, args.steps, args.episodes, seed=0)
    if args.run and args.backend:
        parser.error("--backend applies to a fresh policy; a run evaluates with its own env.options")
    try:
        device = resolve_device(args.device)
        if args.run:
            row = load_run(args.run)
        else:
            overrides = [f"env.options.backend={args.backend}"] if args.backend else []
            row = random_row(load_config(resolve_config_path(args.config), overrides), protocol)
    except ConfigError as error:
        parser.error(str(error))
    evaluate_row(row, Protocol(2, 1, 1, seed=0), device)  # warm-up: imports, vmap tracing, warp kernels
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        curve = evaluate_row(row, protocol, device)  # returns host numbers: the device work is finished
        times.append(time.perf_counter() - start)
    horizon = horizon_of(row.config, build_family(row.config))
    steps = (args.steps + 1) * args.tasks * args.episodes * horizon
    print(f"{row.config.env.family}: {args.tasks} tasks x {args.episodes} episodes x {args.steps + 1} rounds, "
          f"horizon {horizon}, device {device}, {torch.get_num_threads()} learner thread(s), "
          f"{len(os.sched_getaffinity(0))} cores")
    print(f"seconds per evaluation: best {min(times):.2f}, all {', '.join(f'{t:.2f}' for t in times)} "
          f"({steps / min(times):,.0f} env steps/s)")
    print("mean return per step:", ", ".join(f"{m:.1f}" for m in curve.mean))


if __name__ == "__main__":
    main()
