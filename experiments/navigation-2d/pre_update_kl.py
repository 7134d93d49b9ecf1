"""How far MAML-TRPO's steps move the pre-update policy, which its trust region does not bound.

    python experiments/navigation-2d/pre_update_kl.py [--iterations N] [--seed S] [--fisher F] [--fd-base-eps E]
        [--set KEY=VALUE …]

Trains ``navigation-2d/paper`` for N iterations with the reference's finite-difference products (``--fisher
finite-difference``, the default, at ``fd_base_eps`` E, default 1.0) or the exact ones (``--fisher exact``).
Before every step it also computes, on the same meta-batch and from the same policy, the full step (before the
line search) of both products, exact and finite-difference (at E), and prints per iteration:

- ``post``: the mean KL(π_old' ‖ π_new') of the adapted policies on the validation batch, the quantity TRPO bounds
  by ``max_kl``;
- ``pre``: the mean KL(π_θ ‖ π_θ_new) of the policy before adaptation on the training batch, which nothing bounds;
- ``cos``: the cosine between the two full steps; ``inner``: the inner step's mean norm ``‖θ'_m − θ‖``;
- the meta-batch's returns before and after adaptation as sampled (before this iteration's step).

docs/results.md, "On the paper's own held-out tasks", paragraph "The reference's ε".
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from maml_rl.collect import MetaBatch
from maml_rl.config import load_config
from maml_rl.episodes import by_task
from maml_rl.losses import mean_kl
from maml_rl.metalearners.maml_trpo import MAMLTRPO
from maml_rl.optim.trpo import conjugate_gradient
from maml_rl.policies import Params, batched_forward, task_params
from maml_rl.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fd_products import products  # a sibling script, not a package

PRESET = Path(__file__).with_name("paper.yaml")


@dataclasses.dataclass(frozen=True)
class StepKL:
    """One full step's KLs: ``post`` (bounded by ``max_kl``) and ``pre`` (not bounded); NaN where CG overflowed."""

    post: float
    pre: float
    norm: float


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Both products' full steps on one meta-batch."""

    exact: StepKL
    finite_difference: StepKL
    cosine: float
    inner_norm: float


def pre_update_kl(learner: MAMLTRPO, old: Params, new: Params, batch: MetaBatch) -> float:
    """Mean over tasks of the masked mean KL(π_old ‖ π_new) of the unadapted policies on the first training batch's
    observations ``[M, T, E, obs_dim]``."""
    train, m = batch.train[0], batch.num_tasks
    obs, mask = by_task(train.observations, m), by_task(train.mask, m)
    with torch.no_grad():
        before = batched_forward(learner.policy, task_params(old, m), obs)
        after = batched_forward(learner.policy, task_params(new, m), obs)
        return float(mean_kl(learner.policy.kl(before, after), mask).mean())


def _full_step(product: Callable[[Tensor], Tensor], grad: Tensor, learner: MAMLTRPO, reference: bool) -> Tensor:
    """The step before the line search, as :meth:`MAMLTRPO.step` scales it (``√(2 max_kl / sᵀFs) · s``)."""
    settings = learner.settings
    cg = conjugate_gradient(product, grad, iterations=settings.cg_iters)
    if not bool(torch.isfinite(cg.x).all()):
        return torch.full_like(grad, float("nan"))
    shs = float(cg.x @ product(cg.x)) + 1e-8 if reference else float(cg.x_a_x)
    return math.sqrt(2 * settings.max_kl / shs) * cg.x if shs > 0 else cg.x


def measure(learner: MAMLTRPO, batch: MetaBatch, fd_base_eps: float = 1.0) -> Measurement:
    """Both products' full steps from the learner's current policy on ``batch`` (the learner's own meta-gradient);
    the finite-difference one at ``fd_base_eps``, whatever the learner's own ``fisher``."""
    got = products(learner, batch, fd_base_eps)
    names, like, theta, path, old = got.names, got.like, got.theta, got.path, got.old
    shared = dict(zip(names, like, strict=True))
    with torch.enable_grad():
        steps = {"exact": _full_step(got.exact, got.grad, learner, False),
                 "fd": _full_step(got.finite_difference, got.grad, learner, True)}
    inner = torch.stack([torch.cat([(path[-1][n][i] - shared[n]).reshape(-1) for n in names]).norm()
                         for i in range(batch.num_tasks)]).mean()

    def kls(step: Tensor) -> StepKL:
        if not bool(torch.isfinite(step).all()):
            return StepKL(float("nan"), float("nan"), float("nan"))
        new = learner._unflatten(names, like, theta - step)
        with torch.no_grad():
            _, new_dist = learner.objective(new, batch, old, create_graph=False)
            post = float(learner.kl(old.dist, new_dist, batch.valid).mean())
        return StepKL(post, pre_update_kl(learner, shared, new, batch), float(step.norm()))

    a, b = steps["exact"], steps["fd"]
    cosine = float(a @ b / (a.norm() * b.norm())) if bool(torch.isfinite(b).all()) else float("nan")
    return Measurement(kls(a), kls(b), cosine, float(inner.detach()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=10, help="meta-iterations to train and measure")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fisher", choices=("finite-difference", "exact"), default="finite-difference",
                        help="the products of the run's own steps")
    parser.add_argument("--fd-base-eps", type=float, default=1.0, help="fd_base_eps of the finite-difference products")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        print("pre_update_kl: error: --iterations must be >= 1", file=sys.stderr)
        return 2
    own = [f"algorithm.options.fisher={args.fisher}"]
    if args.fisher == "finite-difference":
        own.append(f"algorithm.options.fd_base_eps={args.fd_base_eps}")
    config = load_config(PRESET, [*args.set, f"train.seed={args.seed}", *own, "train.num_threads=1"])
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(config, scratch)
        learner = trainer.metalearner
        if not isinstance(learner, MAMLTRPO) or not learner.adapts:
            print("pre_update_kl: error: the config's algorithm must be maml-trpo", file=sys.stderr)
            return 2
        step = learner.step
        found: list[Measurement] = []

        def measured_step(batch: MetaBatch):  # type: ignore[no-untyped-def]
            found.append(measure(learner, batch, args.fd_base_eps))
            return step(batch)

        learner.step = measured_step  # type: ignore[method-assign]
        print("iteration  return_pre  return_post  exact_post  exact_pre  fd_post  fd_pre  cos  inner  accepted")
        for iteration in range(1, args.iterations + 1):
            metrics = trainer.meta_iteration()
            got = found[-1]
            pre, post = metrics["returns/pre_adapt_mean"], metrics["returns/post_adapt_mean"]
            print(f"{iteration:9d}  {pre:10.1f}  {post:11.1f}"
                  f"  {got.exact.post:10.4f}  {got.exact.pre:9.4f}  {got.finite_difference.post:7.4f}"
                  f"  {got.finite_difference.pre:6.4f}  {got.cosine:4.2f}  {got.inner_norm:5.3f}"
                  f"  {int(metrics['trpo/step_accepted'])}", flush=True)
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
