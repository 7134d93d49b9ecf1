"""What a step budget costs for a preset's initial policy: one batch with ``E`` episodes per task, and one with the
budget ``E × horizon`` (``maml.step_budget``), sampled from the same tasks.

    python benchmarks/step_budget_rounds.py ant-vel/paper [more presets] [--set KEY=VALUE ...]

Prints episode slots and episodes per task, mean episode length, env steps and seconds for both. Episodes that
end early (Ant falling) make the budget take several rounds of ``E`` episodes; every slot of a round spans the
whole horizon in the learner's ``[T, slots]`` tensors, masked where no episode runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import envs
from maml_rl.build import Generators, build_family, build_policy
from maml_rl.collect import sample
from maml_rl.config import load_config
from maml_rl.policies import task_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="+", metavar="PRESET", help="e.g. ant-vel/paper")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for preset in args.presets:
        config = load_config(f"experiments/{preset}.yaml", list(args.set))
        family = build_family(config)
        m, e = config.maml.meta_batch_size, config.maml.fast_batch_size
        horizon = config.env.horizon or family.default_horizon
        env = family.make_vector_env(m * e, max_episode_steps=horizon)
        env.set_tasks(envs.repeat_tasks(family.sample_tasks(m, np.random.default_rng(args.seed)), e))
        generators = Generators.from_seed(args.seed, torch.device("cpu"))
        policy = build_policy(config, family, generators.init_generator())
        params = task_params({name: p.detach() for name, p in policy.named_parameters()}, m)
        for budget in (None, e * horizon):
            start = time.perf_counter()
            batch = sample(env, policy, params, m, generators, config.env.action_scale, budget=budget)
            seconds = time.perf_counter() - start
            lengths = batch.mask.sum(0)[batch.mask[0] > 0]
            print(f"{preset} {'E episodes' if budget is None else f'budget {budget} steps':>18}: "
                  f"{batch.episodes_per_task} slots/task, {float(batch.episode_counts().mean()):.1f} episodes/task, "
                  f"mean length {float(lengths.mean()):.1f} (shortest {int(lengths.min())}), "
                  f"{batch.num_steps} env steps, {seconds:.1f} s")
        env.close()


if __name__ == "__main__":
    main()
