"""The reference's finite-difference Fisher-vector products against the exact ones, on one real meta-batch.

    python experiments/navigation-2d/fd_products.py [RUN_DIR --checkpoint N] [--fd-base-eps 1.0] [--set KEY=VALUE …]

Samples one meta-batch of ``navigation-2d/paper`` (or of RUN_DIR's config, with its checkpoint's policy), then
compares ``fisher: finite-difference`` at ``fd_base_eps`` with ``fisher: exact`` on it: the products of the
meta-gradient ``g`` and of a random vector of ``g``'s size (relative difference ``‖a − b‖ / ‖a‖``), and conjugate
gradient's solutions (cosine, norms, ``sᵀFs``). docs/results.md, "On the paper's own held-out tasks".
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from maml_rl.checkpoint import load_checkpoint
from maml_rl.collect import MetaBatch
from maml_rl.config import Config, load_config
from maml_rl.episodes import by_task
from maml_rl.metalearners.maml_trpo import MAMLTRPO, _Old
from maml_rl.optim.trpo import adapted_gauss_newton_vector_product, conjugate_gradient, per_task_flat_grad
from maml_rl.policies import Params, task_leaves
from maml_rl.trainer import Trainer

PRESET = Path(__file__).with_name("paper.yaml")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Finite-difference against exact products on one meta-batch."""

    theta_norm: float
    grad_norm: float
    grad_product_difference: float
    random_product_difference: float
    direction_cosine: float
    exact_step_norm: float
    fd_step_norm: float
    fd_step_finite: bool


@dataclasses.dataclass(frozen=True)
class Products:
    """One meta-batch at the learner's current policy ``θ`` (flat ``[P]``, ``names``/``like`` its pieces): the
    meta-gradient ``[P]``, both Fisher-vector products ``[P] -> [P]`` (damping included), the adapted path
    ``[θ_0 … θ_K]`` (per task ``[M, ...]``) and the step's constants ``old``."""

    names: list[str]
    like: list[torch.Tensor]
    theta: torch.Tensor
    grad: torch.Tensor
    exact: Callable[[torch.Tensor], torch.Tensor]
    finite_difference: Callable[[torch.Tensor], torch.Tensor]
    path: list[Params]
    old: _Old


def products(learner: MAMLTRPO, batch: MetaBatch, fd_base_eps: float | None = None) -> Products:
    """The meta-gradient and both products as ``MAMLTRPO.step`` builds them; the finite-difference one at
    ``fd_base_eps`` (default: the learner's own), whatever the learner's ``fisher``."""
    train, valid, m = batch.train, batch.valid, batch.num_tasks
    shared = {name: p.detach() for name, p in learner.policy.named_parameters()}
    with torch.enable_grad():
        path = learner.adapted_path(task_leaves(shared, m), train, m, create_graph=True)
        dist = learner._validation_dist(path[-1], valid)
        old_dist = tuple(x.detach() for x in dist)
        old = _Old(old_dist, learner.policy.log_prob(old_dist, by_task(valid.actions, m)))
        losses = learner.surrogate(dist, valid, old.log_probs)
        layers = [list(p.values()) for p in path]
        grad = per_task_flat_grad(losses.sum() / m, layers[0], retain_graph=True).sum(0)
        per_task = adapted_gauss_newton_vector_product(layers, dist,
                                                       lambda d: learner.kl(old_dist, d, valid).sum() / m)
    damping = learner.settings.cg_damping

    def exact(vector: torch.Tensor) -> torch.Tensor:
        return per_task(vector).sum(0).detach() + damping * vector

    names, like = list(shared), list(shared.values())
    theta = torch.cat([p.reshape(-1) for p in like])
    own = learner.settings
    if fd_base_eps is not None:
        learner.settings = dataclasses.replace(own, fisher="finite-difference", fd_base_eps=fd_base_eps)
    try:  # the product reads its ε from the settings when it is built
        finite_difference = learner._finite_difference_product(names, like, theta, batch, old_dist)
    finally:
        learner.settings = own
    return Products(names, like, theta, grad, exact, finite_difference, path, old)


def compare(learner: MAMLTRPO, batch: MetaBatch, seed: int = 0) -> Comparison:
    """Products and conjugate-gradient solutions of both kinds at the learner's current policy."""
    got = products(learner, batch)
    grad, exact, finite_difference, theta = got.grad, got.exact, got.finite_difference, got.theta
    noise = torch.randn(grad.shape, generator=torch.Generator().manual_seed(seed), dtype=grad.dtype)
    random = noise * float(grad.norm() / noise.norm())

    def difference(vector: torch.Tensor) -> float:
        want = exact(vector)
        return float((finite_difference(vector) - want).norm() / want.norm())

    exact_cg = conjugate_gradient(exact, grad, iterations=learner.settings.cg_iters)
    fd_cg = conjugate_gradient(finite_difference, grad, iterations=learner.settings.cg_iters)
    cosine = float(exact_cg.x @ fd_cg.x / (exact_cg.x.norm() * fd_cg.x.norm()))
    return Comparison(float(theta.norm()), float(grad.norm()), difference(grad), difference(random), cosine,
                      float(exact_cg.x.norm()), float(fd_cg.x.norm()), bool(torch.isfinite(fd_cg.x).all()))


def one_batch(config: Config, run_dir: str | None, checkpoint: int | None) -> tuple[Trainer, MetaBatch]:
    """A trainer of ``config`` holding the policy that sampled its one meta-batch (the run's checkpointed policy if
    given, else the initial one), and that batch."""
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(config, scratch)
        if run_dir is not None:
            _, state = load_checkpoint(run_dir, checkpoint)
            trainer.metalearner.policy.load_state_dict(state["policy"])
        captured: list[MetaBatch] = []
        learner = trainer.metalearner
        step = learner.step

        def capture(batch: MetaBatch):  # type: ignore[no-untyped-def]
            captured.append(batch)
            return step(batch)

        learner.step = capture  # type: ignore[method-assign]
        sampling_policy = {name: p.detach().clone() for name, p in learner.policy.state_dict().items()}
        trainer.meta_iteration()
        learner.step = step  # type: ignore[method-assign]
        learner.policy.load_state_dict(sampling_policy)  # compare at the policy that sampled the batch
        trainer.close()
    return trainer, captured[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a run directory whose config and checkpoint to use")
    parser.add_argument("--checkpoint", type=int, help="its checkpoint's iteration (default: the latest)")
    parser.add_argument("--fd-base-eps", type=float, default=1.0, help="fd_base_eps of the finite-difference side")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    source = Path(args.run_dir) / "config.yaml" if args.run_dir else PRESET
    overrides = [*args.set, "algorithm.options.fisher=finite-difference",
                 f"algorithm.options.fd_base_eps={args.fd_base_eps}", "train.num_threads=1"]
    config = load_config(source, overrides)
    trainer, batch = one_batch(config, args.run_dir, args.checkpoint)
    learner = trainer.metalearner
    if not isinstance(learner, MAMLTRPO) or not learner.adapts:
        print("fd_products: error: the config's algorithm must be maml-trpo", file=sys.stderr)
        return 2
    result = compare(learner, batch)
    for field in dataclasses.fields(result):
        print(f"{field.name}: {getattr(result, field.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
