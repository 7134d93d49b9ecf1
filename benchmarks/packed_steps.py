"""What packing a meta-batch's steps saves the outer step: one meta-batch, the learner's step on its episodes and on
its packed steps (``maml_rl.episodes.pack_steps``), timed alternately.

    python benchmarks/packed_steps.py SOURCE [--repeats 2] [--set KEY=VALUE ...]

SOURCE is a preset (``ant-vel/paper``: its initial policy) or a run directory (its latest checkpoint's policy, the
run left untouched: it is copied first). Prints, per batch, the slots ``[T, M × slots]`` against the packed
``[L, M]`` and the unmasked steps; then the seconds of each step (repeats alternate episodes and packed steps, one
learner thread), and how far the packed step's parameters are from the other's, relative to the step's size
(float32 rounding, amplified by conjugate gradient where it does not converge).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta_iteration import load_and_describe

import envs
from maml_rl.build import pool_meta_batch
from maml_rl.collect import MetaBatch, collect, pack_batch
from maml_rl.config import load_config
from maml_rl.trainer import Trainer


def trainer_for(source: str, overrides: list[str], scratch: Path) -> Trainer:
    """A trainer at ``source``: a copy of a run directory resumed from its latest checkpoint, or a preset's start."""
    if Path(source).is_dir():
        run = scratch / "run"
        shutil.copytree(source, run)
        config = load_config(str(run / "config.yaml"), overrides)
        print(f"run: {source} (latest checkpoint)")
        return Trainer(config, run, resume=True)
    return Trainer(load_and_describe(source, overrides), scratch / "run")


def one_meta_batch(trainer: Trainer) -> MetaBatch:
    """Draw the trainer's next tasks and sample one meta-batch with its policy, as an iteration does; prints the
    seconds it took."""
    config, learner, m = trainer.config, trainer.metalearner, trainer.num_tasks
    tasks = (trainer.family.sample_tasks(m, trainer.generators.tasks) if trainer.task_pool is None
             else pool_meta_batch(trainer.task_pool, m))
    trainer.env.set_tasks(envs.repeat_tasks(tasks, trainer.per_task))
    start = time.perf_counter()
    batch = collect(trainer.env, trainer.policy, learner.shared_params(), config, m,
                    [config.maml.fast_lr] * learner.num_inner_steps, trainer.generators, learner.inner_loss,
                    budget=trainer.step_budget, baseline_scope=config.maml.baseline_scope)
    print(f"iteration {trainer.iteration}: sampled in {time.perf_counter() - start:.1f} s")
    return batch


def source_arguments(description: str, what: str) -> argparse.Namespace:
    """``SOURCE [--repeats R] [--set KEY=VALUE ...]`` from the command line; ``what`` is timed R times each way."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="SOURCE", help="preset (e.g. ant-vel/paper) or run directory")
    parser.add_argument("--repeats", type=int, default=2, help=f"{what} of each kind, alternately (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    return parser.parse_args()


def main() -> None:
    args = source_arguments(__doc__ or "", "steps")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = trainer_for(args.source, args.set, Path(scratch))
        config, learner = trainer.config, trainer.metalearner
        if not learner.packs_steps(learner.settings):
            sys.exit(f"{config.algorithm.name} with these options needs episodes: the trainer does not pack its "
                     "batches")
        m = trainer.num_tasks
        batch = one_meta_batch(trainer)
        start = time.perf_counter()
        packed = pack_batch(batch)
        print(f"packing: {time.perf_counter() - start:.3f} s")
        for name, episodes, steps in zip([*(f"D_{k}" for k in range(len(batch.train))), "D'"], batch.batches,
                                         packed.batches, strict=True):
            slots, entries = episodes.mask.numel(), steps.mask.numel()
            print(f"{name}: episodes [{episodes.horizon}, {episodes.mask.shape[1]}] = {slots:,} entries, "
                  f"packed [{steps.horizon}, {m}] = {entries:,}; {episodes.num_steps:,} steps "
                  f"({episodes.num_steps / slots:.0%} of the episodes' entries, {episodes.num_steps / entries:.0%} "
                  "of the packed)")
        theta = torch.cat([p.detach().reshape(-1).clone() for p in learner.shared_params().values()])
        state = copy.deepcopy(learner.state_dict())
        seconds: dict[str, list[float]] = {"episodes": [], "packed": []}
        steps_taken: dict[str, torch.Tensor] = {}
        for _ in range(args.repeats):
            for kind, data in (("episodes", batch), ("packed", packed)):
                learner.load_state_dict(copy.deepcopy(state))
                start = time.perf_counter()
                new, _ = learner.step(data)
                seconds[kind].append(time.perf_counter() - start)
                steps_taken[kind] = torch.cat([p.reshape(-1) for p in new.values()]) - theta
        for kind, times in seconds.items():
            print(f"outer step on {kind:8s}: {statistics.median(times):8.2f} s  (each: "
                  f"{', '.join(f'{t:.2f}' for t in times)})")
        print(f"speed-up: {statistics.median(seconds['episodes']) / statistics.median(seconds['packed']):.2f}x")
        size = float(steps_taken["episodes"].norm())
        difference = float((steps_taken["packed"] - steps_taken["episodes"]).norm())
        print(f"step size {size:.4g}; packed step differs by {difference / max(size, 1e-30):.2e} of it")
        trainer.close()


if __name__ == "__main__":
    main()
