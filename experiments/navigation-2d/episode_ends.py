"""Where a 2D-navigation run's evaluation episodes end, per adaptation step: which held-out tasks fail, and how.

Runs ``maml-rl evaluate``'s protocol for one run (its held-out tasks, seed, episodes and step budget, α then the
later steps) and reports, per step ``k``, for the tasks whose return at ``k = 2`` is below ``--tail`` and for the
rest: the mean return, episodes per task, the fraction of episodes that reached the goal (ended before the
horizon), their mean length and the mean distance from the goal where they ended. Then the end position of the
``k = 0`` episodes (one policy for every task: its drift) and the mean end position of every tail task at
``k = 1`` and ``k = 2``. docs/results.md, "2D navigation: the reference's sample budgets and evaluation batch".

    python experiments/navigation-2d/episode_ends.py results/navigation-2d-fisher-compare/exact-seed1 \\
        --episodes 40 --budget-steps 4000
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch

from envs.navigation import MAX_ACTION
from maml_rl.build import build_family, horizon_of
from maml_rl.distributed import World
from maml_rl.episodes import Episodes, by_task
from maml_rl.evaluation import evaluation_batch, held_out_tasks, load_run, protocol_for


@dataclass(frozen=True)
class EpisodeEnds:
    """Per task ``m`` and episode slot ``e`` of one batch: ``positions [M, E', 2]`` where the point ended (after its
    last action), ``lengths [M, E']`` in steps and ``valid [M, E']`` (slots that hold an episode; a step budget
    drops some)."""

    positions: np.ndarray
    lengths: np.ndarray
    valid: np.ndarray


def episode_ends(episodes: Episodes, action_scale: float) -> EpisodeEnds:
    """End positions of a navigation batch: the observation (the position) at each episode's last step plus that
    step's move, ``clip(action / action_scale, −MAX_ACTION, MAX_ACTION)`` (envs/navigation.py)."""
    mask = by_task(episodes.mask, episodes.num_tasks).numpy()  # [M, T, E']
    # float64 for the printed sums; oracle runs append the goal to the position
    observations = by_task(episodes.observations, episodes.num_tasks).numpy().astype(np.float64)[..., :2]
    actions = by_task(episodes.actions, episodes.num_tasks).numpy().astype(np.float64)
    lengths = mask.sum(axis=1).astype(np.int64)  # [M, E']
    last = np.clip(lengths - 1, 0, None)
    tasks, slots = np.arange(mask.shape[0])[:, None], np.arange(mask.shape[2])[None, :]
    move = np.clip(actions[tasks, last, slots] / action_scale, -MAX_ACTION, MAX_ACTION)
    return EpisodeEnds(observations[tasks, last, slots] + move, lengths, lengths > 0)


def _per_task_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean over each task's valid slots: ``[M, E'] -> [M]``."""
    return (values * valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", type=int, default=None, help="iteration (default: the latest)")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=None, help="per task and step (default: the run's)")
    parser.add_argument("--budget-steps", type=int, default=None, help="as maml-rl evaluate (default: the run's)")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0, as maml-rl evaluate)")
    parser.add_argument("--tail", type=float, default=-10.0, help="return at k = 2 below which a task is tail")
    args = parser.parse_args()
    if args.tasks < 1 or (args.episodes is not None and args.episodes < 1):
        parser.error("--tasks and --episodes must be positive")
    row = load_run(args.run_dir, args.checkpoint)
    config = row.config
    if config.env.family != "navigation-2d":
        parser.error(f"{args.run_dir} is a {config.env.family} run; this script reads 2D-navigation positions")
    steps = 3
    protocol = protocol_for(config, args.tasks, steps, args.seed, args.episodes, args.budget_steps)
    family = build_family(config)
    batch = evaluation_batch(row.policy, config, protocol, steps, torch.device("cpu"), World())
    goals = held_out_tasks(family, protocol)["goal"].astype(np.float64)
    horizon = horizon_of(config, family)
    returns = [episodes.task_returns().numpy() for episodes in batch.batches]
    ends = [episode_ends(episodes, config.env.action_scale) for episodes in batch.batches]
    tail = returns[2] < args.tail
    print(f"{row.label}: {int(tail.sum())} of {args.tasks} tasks below {args.tail} at k = 2 "
          f"(‖g‖∞ {np.round(np.abs(goals[tail]).max(axis=1), 2).tolist()})")
    for k, (task_returns, end) in enumerate(zip(returns, ends, strict=True)):
        reached = _per_task_mean(end.lengths < horizon, end.valid)
        length = _per_task_mean(end.lengths, end.valid)
        distance = _per_task_mean(np.linalg.norm(end.positions - goals[:, None, :], axis=-1), end.valid)
        for name, selected in (("tail", tail), ("rest", ~tail)):
            if selected.any():
                print(f"k={k} {name}: return {task_returns[selected].mean():7.2f}  episodes/task "
                      f"{end.valid.sum(axis=1)[selected].mean():6.1f}  reached {reached[selected].mean():.2f}  "
                      f"length {length[selected].mean():5.1f}  end distance {distance[selected].mean():.3f}")
    start = ends[0].positions[ends[0].valid]
    print(f"k=0 end position, all tasks: mean {np.round(start.mean(axis=0), 3).tolist()}, "
          f"std {np.round(start.std(axis=0), 3).tolist()}")
    for task in np.flatnonzero(tail):
        means = [np.round(ends[k].positions[task][ends[k].valid[task]].mean(axis=0), 2).tolist() for k in (1, 2)]
        print(f"tail task {task}: goal {np.round(goals[task], 2).tolist()}, mean end at k=1 {means[0]}, "
              f"at k=2 {means[1]}")


if __name__ == "__main__":
    main()
