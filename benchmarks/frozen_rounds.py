"""What freezing finished tasks saves a step-budget batch: one batch sampled with the sub-environments of tasks whose
budget is met frozen in later rounds (``env.freezes_rows``, the default for locomotion) and one without, alternately.

    python benchmarks/frozen_rounds.py SOURCE [--repeats 2] [--set KEY=VALUE ...]

SOURCE is a preset (its initial policy) or a run directory (its latest checkpoint's policy; the run is copied first)
whose config sets ``maml.step_budget``. Prints rounds, kept env steps, the sub-environment steps the simulator took
and the seconds of each batch, and checks that the two batches keep the same episodes. Each repeat draws new
tasks' episodes from the same seed for both (the same batch twice).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packed_steps import source_arguments, trainer_for

import envs
from maml_rl.build import Generators, pool_meta_batch
from maml_rl.collect import sample
from maml_rl.policies import task_params


def main() -> None:
    args = source_arguments(__doc__ or "", "batches")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = trainer_for(args.source, args.set, Path(scratch))
        if trainer.step_budget is None:
            sys.exit("the config samples E episodes per task (maml.step_budget is false): nothing to freeze")
        env, m = trainer.env, trainer.num_tasks
        if not env.freezes_rows:
            sys.exit(f"{type(env).__name__} does not freeze sub-environments")
        tasks = (trainer.family.sample_tasks(m, trainer.generators.tasks) if trainer.task_pool is None
                 else pool_meta_batch(trainer.task_pool, m))
        env.set_tasks(envs.repeat_tasks(tasks, trainer.per_task))
        params = task_params(trainer.metalearner.shared_params(), m)
        simulated = [0]
        step = env.sim.step

        def counting_step(active: torch.Tensor) -> torch.Tensor:
            simulated[0] += int(active.sum())
            return step(active)

        env.sim.step = counting_step  # type: ignore[method-assign]
        kind_of_env = type(env)
        seconds: dict[bool, list[float]] = {True: [], False: []}
        batches = {}
        print(f"iteration {trainer.iteration}: {m} tasks x {trainer.per_task} episodes, budget {trainer.step_budget} "
              "env steps per task")
        for repeat in range(args.repeats):
            for freezes in (True, False):
                kind_of_env.freezes_rows = freezes  # type: ignore[misc]
                simulated[0] = 0
                generators = Generators.from_seed(repeat, torch.device("cpu"))
                start = time.perf_counter()
                batch = sample(env, trainer.policy, params, m, generators, trainer.config.env.action_scale,
                               budget=trainer.step_budget)
                seconds[freezes].append(time.perf_counter() - start)
                batches[freezes] = batch
                print(f"  {'frozen' if freezes else 'all rows':8s}: {batch.episodes_per_task // trainer.per_task} "
                      f"rounds, {batch.num_steps:,} kept env steps, {simulated[0]:,} simulated, "
                      f"{seconds[freezes][-1]:.2f} s")
            kept = batches[True].mask > 0
            same = (torch.equal(batches[True].mask, batches[False].mask)
                    and all(torch.equal(getattr(batches[True], name)[kept], getattr(batches[False], name)[kept])
                            for name in ("observations", "actions", "rewards")))
            print(f"  the same kept episodes: {same}")
        kind_of_env.freezes_rows = True  # type: ignore[misc]
        frozen, plain = statistics.median(seconds[True]), statistics.median(seconds[False])
        print(f"sampling: {frozen:.2f} s frozen, {plain:.2f} s all rows (median); speed-up {plain / frozen:.2f}x")
        trainer.close()


if __name__ == "__main__":
    main()
