"""The sampler with the policy in the loop against the MuJoCo physics limit, measured in one run.

    python benchmarks/sampler_throughput.py [--family halfcheetah-vel ant-vel] [--tasks 40] [--episodes 20]
                                            [--horizon 200] [--repeats 3]

(a) the physics limit: ``mujoco.rollout`` stepping ``N = tasks × episodes`` copies of the model with random
    controls, one thread per core (``benchmarks/locomotion_throughput.py``'s measurement);
(b) ``maml_rl.sampling.sample_episodes`` for a full meta-batch: the vectorized environment plus one batched policy
    call per time step (paper preset policy, 100×100 ReLU, each task with its own parameters), counting the
    environment steps actually simulated (Ant's terminated sub-environments are frozen and not counted);
and prints b/a. Both are the best of ``--repeats`` alternating measurements, after one untimed warm-up episode
(where the warp backend loads its kernels and captures its step graph). With ``--backend warp --device cuda``,
b/a compares the GPU sampler with the CPU's physics limit.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from locomotion_throughput import Rate, cpu_model, rollout_limit

import envs
from maml_rl.policies import GaussianMLPPolicy, task_params
from maml_rl.sampling import sample_episodes


def _sample_steps(env, policy, params, num_tasks, generator, seed) -> int:
    return sample_episodes(env, policy, params, num_tasks, generator, seed=seed).num_steps


def add_meta_batch_arguments(parser: argparse.ArgumentParser, repeats: int) -> None:
    """``--family``, ``--tasks``, ``--episodes``, ``--horizon`` (one paper-preset meta-batch) and ``--repeats``."""
    parser.add_argument("--family", nargs="+", default=["halfcheetah-vel", "ant-vel"])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_meta_batch_arguments(parser, repeats=3)
    parser.add_argument("--backend", choices=["native", "warp"], default="native")
    parser.add_argument("--device", default="cpu", help="learner device (and warp device with --backend warp)")
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(1)
    n = args.tasks * args.episodes
    print(f"machine: {cpu_model()}, {threads} cores; mujoco threads {threads}; torch {torch.__version__} (1 thread)")
    print(f"N = {args.tasks} tasks x {args.episodes} episodes = {n} sub-environments, horizon {args.horizon}")
    for name in args.family:
        rng = np.random.default_rng(0)
        family = envs.make_family(name, backend=args.backend)
        env = family.make_vector_env(n, max_episode_steps=args.horizon, device=family.env_device(args.device))
        env.set_tasks(envs.repeat_tasks(family.sample_tasks(args.tasks, rng), args.episodes))
        policy = GaussianMLPPolicy(family.single_observation_space.shape[0], family.single_action_space.shape[0],
                                   generator=torch.Generator().manual_seed(0)).to(args.device)
        params = task_params({k: v.detach() for k, v in policy.named_parameters()}, args.tasks)
        generator = torch.Generator(device=args.device).manual_seed(0)
        limit_prepare = rollout_limit(family, n, args.horizon, threads, rng, steps_per_call=args.horizon)
        limit, sampler = Rate(), Rate()
        _sample_steps(env, policy, params, args.tasks, generator, args.repeats)  # warm-up (warp: kernels, graph)
        for repeat in range(args.repeats):
            limit.measure(limit_prepare())

            sampler.measure(partial(_sample_steps, env, policy, params, args.tasks, generator, repeat))
        env.close()
        print(f"{name:<16} [{args.backend}, {args.device}] (a) physics limit {limit.wall:9.0f} steps/s   "
              f"(b) sampler+policy {sampler.wall:9.0f} "
              f"steps/s   b/a = {sampler.wall / limit.wall:.2f}")


if __name__ == "__main__":
    main()
