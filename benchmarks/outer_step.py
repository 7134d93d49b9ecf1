"""Per-pass profile of one MAML-TRPO outer step: what each pass costs, in seconds and in meta-gradients.

    python benchmarks/outer_step.py [CONFIG] [--repeats 5] [--threads N] [--set key=value ...]

One meta-iteration is run to get a real meta-batch (training and validation episodes with advantages), then the
passes of ``MAMLTRPO.step`` are timed one by one on it, each the median of ``--repeats``:

- graph: the second-order inner step(s), the adapted policies on the validation batch and the surrogate (forward);
- gradient: the meta-gradient, per task (backward through that graph);
- fvp setup: the Gauss-Newton product's graph (``G u`` from the adapted parameters to the policy outputs, the
  KL's output gradient);
- fvp: one exact Fisher-vector product (conjugate gradient takes ``cg_iters`` of them), through the symmetric
  inner-step Jacobians (``adapted_gauss_newton_vector_product``, what the step uses);
- line-search evaluation: the surrogate and KL at a candidate (inner step without graph, no gradient);
- the whole step as the trainer runs it;
- for comparison, the general product (``gauss_newton_vector_product``: the double-vjp identity through the whole
  second-order graph) and its setup, which the step no longer uses; the two products' relative difference is
  printed.

``sᵀFs`` costs no product: conjugate gradient's final residual gives it (``maml_rl.optim.trpo``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta_iteration import load_and_describe

from maml_rl.collect import MetaBatch
from maml_rl.episodes import by_task
from maml_rl.metalearners.maml_trpo import MAMLTRPO, _Old
from maml_rl.optim.trpo import (
    adapted_gauss_newton_vector_product,
    conjugate_gradient,
    gauss_newton_vector_product,
    per_task_flat_grad,
)
from maml_rl.policies import task_leaves
from maml_rl.trainer import Trainer


def timed(function: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after one untimed call)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile(learner: MAMLTRPO, batch: MetaBatch, repeats: int) -> list[tuple[str, float, int]]:
    """``(pass, seconds, times per step)`` for the passes of one outer step on ``batch``."""
    train, valid, m = batch.train, batch.valid, batch.num_tasks
    shared = {name: p.detach() for name, p in learner.policy.named_parameters()}

    def graph() -> tuple[list[list[torch.Tensor]], tuple[torch.Tensor, ...], torch.Tensor, _Old]:
        params = task_leaves(shared, m)
        path = learner.adapted_path(params, train, m, create_graph=True)
        dist = learner._validation_dist(path[-1], valid)
        old_dist = tuple(x.detach() for x in dist)
        old = _Old(old_dist, learner.policy.log_prob(old_dist, by_task(valid.actions, m)))
        return [list(p.values()) for p in path], dist, learner.surrogate(dist, valid, old.log_probs), old

    path, dist, losses, old = graph()
    leaves = path[0]
    t_graph = timed(graph, repeats)
    t_grad = timed(lambda: per_task_flat_grad(losses.sum() / m, leaves, retain_graph=True), repeats)

    def kl(d: Sequence[torch.Tensor]) -> torch.Tensor:
        return learner.kl(old.dist, d, valid).sum() / m

    def setup():  # type: ignore[no-untyped-def]
        return adapted_gauss_newton_vector_product(path, dist, kl)

    def general_setup():  # type: ignore[no-untyped-def]
        return gauss_newton_vector_product(dist, leaves, kl, per_task=True)

    product, general = setup(), general_setup()
    t_setup, t_general_setup = timed(setup, repeats), timed(general_setup, repeats)
    vector = torch.randn(sum(p.numel() for p in shared.values()), generator=torch.Generator().manual_seed(0))
    t_fvp, t_general = timed(lambda: product(vector), repeats), timed(lambda: general(vector), repeats)
    fast, slow = product(vector).sum(0), general(vector).sum(0)
    print(f"fvp through symmetric inner-step Jacobians against the general double-vjp one: relative difference "
          f"{float((fast - slow).norm() / slow.norm()):.2e}")

    def evaluate() -> None:
        with torch.no_grad():
            candidate = {name: p + 1e-3 for name, p in shared.items()}
            _, new_dist = learner.objective(candidate, batch, old, create_graph=False)
            learner.kl(old.dist, new_dist, valid)

    t_eval = timed(evaluate, repeats)
    settings = learner.settings

    def fisher(v: torch.Tensor) -> torch.Tensor:
        return product(v).sum(0) + settings.cg_damping * v

    grad = per_task_flat_grad(losses.sum() / m, leaves, retain_graph=True).sum(0)
    cg = conjugate_gradient(fisher, grad, iterations=settings.cg_iters)
    direct = float(cg.x @ fisher(cg.x))
    print(f"sᵀFs from CG's residual {float(cg.x_a_x):.6g}, with one more product {direct:.6g} "
          f"(relative difference {abs(float(cg.x_a_x) - direct) / abs(direct):.2e})")
    return [("graph (second-order forward)", t_graph, 1), ("meta-gradient (backward)", t_grad, 1),
            ("fvp setup", t_setup, 1), ("fvp", t_fvp, settings.cg_iters),
            ("line-search evaluation", t_eval, 1),
            ("general fvp setup (not in step)", t_general_setup, 0), ("general fvp (not in step)", t_general, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="navigation-2d/paper")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="learner threads (train.num_threads)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = list(args.set)
    if args.threads is not None:
        overrides.append(f"train.num_threads={args.threads}")
    config = load_and_describe(args.config, overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir)
        learner = trainer.metalearner
        if not isinstance(learner, MAMLTRPO) or not learner.adapts:
            raise SystemExit("outer_step.py profiles maml-trpo (algorithm.name: maml-trpo)")
        captured: list[MetaBatch] = []
        step = learner.step

        def capture(batch: MetaBatch):  # type: ignore[no-untyped-def]
            captured.append(batch)
            return step(batch)

        learner.step = capture  # type: ignore[method-assign]
        row = trainer.meta_iteration()
        learner.step = step  # type: ignore[method-assign]
        batch = captured[0]
        passes = profile(learner, batch, args.repeats)
        whole = timed(lambda: learner.step(batch), max(1, args.repeats // 2))
        trainer.close()
    searched = int(row["trpo/line_search_steps"])
    unit = passes[0][1] + passes[1][1]  # one meta-gradient: forward graph + backward
    print(f"one outer step, median of {args.repeats} (line search took {searched} evaluation(s) in the iteration):")
    print(f"  {'pass':<32}{'seconds':>9}{'meta-gradients':>16}{'per step':>10}{'s per step':>12}")
    total = 0.0
    for name, seconds, count in passes:
        count = searched if name.startswith("line-search") else count
        total += seconds * count
        print(f"  {name:<32}{seconds:9.3f}{seconds / unit:16.2f}{count:10d}{seconds * count:12.3f}")
    print(f"  {'sum of passes':<32}{'':9}{total / unit:16.2f}{'':10}{total:12.3f}")
    print(f"  {'whole step (measured)':<32}{whole:9.3f}{whole / unit:16.2f}")


if __name__ == "__main__":
    main()
