"""Return of a 2D-navigation episode that hovers at its goal, as a function of the policy's standard deviation.

An idealized policy whose mean aims exactly at the goal from wherever the point is: each step then lands
``clip(scale·σ·ε, −MAX_ACTION, MAX_ACTION)`` from the goal (``ε ~ N(0, I₂)``, ``scale`` the preset's 1/10 action
scaling), earns ``−‖p − g‖₂``, and the episode ends once ``‖p − g‖∞ < GOAL_TOLERANCE`` (envs/navigation.py). The
printed mean is what hovering alone costs an adapted episode that reached its goal with ``steps`` steps left: an
estimate of how much of a median return a given σ accounts for (docs/results.md, "2D navigation: the reference's sample
budgets and evaluation batch").

    python experiments/navigation-2d/hover_return.py --sigma 0.43 0.62 --steps 95
"""

from __future__ import annotations

import argparse

import numpy as np

from envs.navigation import GOAL_TOLERANCE, MAX_ACTION


def hovering_returns(sigma: float, steps: int, episodes: int, action_scale: float, seed: int) -> np.ndarray:
    """Returns ``[episodes]`` of hovering for at most ``steps`` steps with policy std ``sigma`` (policy units)."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    for _ in range(steps):
        offset = np.clip(sigma / action_scale * rng.standard_normal((episodes, 2)), -MAX_ACTION, MAX_ACTION)
        returns -= alive * np.linalg.norm(offset, axis=1)
        alive &= ~(np.abs(offset).max(axis=1) < GOAL_TOLERANCE)
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, nargs="+", required=True, help="policy std before action scaling")
    parser.add_argument("--steps", type=int, default=95, help="steps left in the episode at the goal (default 95)")
    parser.add_argument("--episodes", type=int, default=200_000, help="Monte Carlo episodes (default 200000)")
    parser.add_argument("--action-scale", type=float, default=10.0, help="env.action_scale (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 1 or args.episodes < 1 or args.action_scale <= 0 or min(args.sigma) <= 0:
        parser.error("--sigma, --steps, --episodes and --action-scale must be positive")
    for sigma in args.sigma:
        returns = hovering_returns(sigma, args.steps, args.episodes, args.action_scale, args.seed)
        print(f"sigma {sigma:.2f}: hovering return mean {returns.mean():.2f}, median {np.median(returns):.2f} "
              f"({args.steps} steps left, {args.episodes} episodes)")


if __name__ == "__main__":
    main()
