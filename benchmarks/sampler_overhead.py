"""What the sampler adds to the MuJoCo physics, per environment step, with the physics taken out.

    python benchmarks/sampler_overhead.py [--family halfcheetah-vel ant-vel] [--tasks 40] [--episodes 20]
                                          [--horizon 200] [--repeats 4]

``sampler_throughput.py``'s ratio b/a moves by a few percent between runs, which hides a change of a hundred
microseconds in a 15 ms step. This script measures the Python and torch work around the physics directly:

(s) ``Simulator.step`` with no active row: the physics call's own bookkeeping (instability checks, masks);
(e) ``LocomotionVectorEnv.step`` with the simulator's step replaced by one that simulates nothing: action
    checks, controls, rewards, observation, info;
(r) ``maml_rl.sampling.sample_episodes`` for a full meta-batch with the same stand-in: (e) plus the batched
    policy call (paper preset policy, 100×100 ReLU, per-task parameters), sampling and bookkeeping, per step.

Best of ``--repeats`` for each, in microseconds per environment step of all ``tasks × episodes``
sub-environments. Run it from two trees (the older on ``PYTHONPATH``) to compare code versions: it also runs
against the simulator of the tree before the locomotion refactor (numpy arrays in ``BatchedSim``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler_throughput import add_meta_batch_arguments

import envs
from maml_rl.policies import GaussianMLPPolicy, task_params
from maml_rl.sampling import sample_episodes


def best_of(repeats: int, calls: int, work: Callable[[], Any]) -> float:
    """The fastest of ``repeats`` timings of ``calls`` calls of ``work``, in microseconds per call."""
    work()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            work()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def measure(name: str, tasks: int, episodes: int, horizon: int, repeats: int) -> tuple[float, float, float]:
    """(s), (e) and (r) of the module docstring for one family, in microseconds per environment step."""
    n = tasks * episodes
    family = envs.make_family(name)
    env = family.make_vector_env(n, max_episode_steps=horizon)
    env.set_tasks(envs.repeat_tasks(family.sample_tasks(tasks, np.random.default_rng(0)), episodes))
    env.reset(seed=0)
    sim = env.sim
    numpy_sim = isinstance(sim.qpos, np.ndarray)  # the simulator before the refactor took numpy masks
    inactive: Any = np.zeros(n, dtype=bool) if numpy_sim else torch.zeros(n, dtype=torch.bool)
    sim_step = best_of(repeats, 500, lambda: sim.step(inactive))

    sim.step = lambda active: active & False  # simulates nothing, reports every row stable
    uniform = torch.rand(n, family.single_action_space.shape[0], generator=torch.Generator().manual_seed(0))
    actions = uniform * 2 - 1
    env_step = best_of(repeats, 500, lambda: env.step(actions))

    policy = GaussianMLPPolicy(family.single_observation_space.shape[0], family.single_action_space.shape[0],
                               generator=torch.Generator().manual_seed(0))
    params = task_params({k: v.detach() for k, v in policy.named_parameters()}, tasks)
    generator = torch.Generator().manual_seed(0)
    sampler = best_of(repeats, 1, lambda: sample_episodes(env, policy, params, tasks, generator, seed=0)) / horizon
    env.close()
    return sim_step, env_step, sampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_meta_batch_arguments(parser, repeats=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__} (1 thread); N = {args.tasks} tasks x {args.episodes} episodes = "
          f"{args.tasks * args.episodes}, horizon {args.horizon}; microseconds per environment step")
    for name in args.family:
        sim_step, env_step, sampler = measure(name, args.tasks, args.episodes, args.horizon, args.repeats)
        print(f"{name:<16} (s) sim.step, no active row {sim_step:6.0f}   (e) env.step without physics "
              f"{env_step:6.0f}   (r) sampler without physics {sampler:6.0f}")


if __name__ == "__main__":
    main()
