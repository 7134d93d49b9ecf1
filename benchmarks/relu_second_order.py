"""``nn.ReLU`` against ``MaskedReLU`` in the outer step: one Fisher-vector product and one whole MAML-TRPO step,
measured alternately on the same meta-batch.

    python benchmarks/relu_second_order.py [CONFIG] [--rounds 3] [--set KEY=VALUE ...]

``nn.ReLU``'s backward, differentiated again, materializes a zero derivative with respect to its input and
propagates it (``maml_rl.policies.MaskedReLU``); the masked form has the same values and first derivatives without
that branch. One meta-iteration gives a real meta-batch; then each round times, for either activation, the median
of three products and one whole step. Prints the medians over rounds, the ratios, and how far the two products and
the two steps' parameters are apart.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta_iteration import load_and_describe

from maml_rl.collect import MetaBatch
from maml_rl.metalearners.maml_trpo import MAMLTRPO
from maml_rl.optim.trpo import adapted_gauss_newton_vector_product
from maml_rl.policies import MaskedReLU, task_leaves
from maml_rl.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="navigation-2d/paper")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    config = load_and_describe(args.config, list(args.set))
    if config.policy.activation != "relu":
        raise SystemExit(f"{args.config} uses policy.activation={config.policy.activation}; this compares ReLUs")
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir)
        learner = trainer.metalearner
        if not isinstance(learner, MAMLTRPO) or not learner.adapts:
            raise SystemExit("relu_second_order.py profiles maml-trpo (algorithm.name: maml-trpo)")
        captured: list[MetaBatch] = []
        step = learner.step

        def capture(batch: MetaBatch):  # type: ignore[no-untyped-def]
            captured.append(batch)
            return step(batch)

        learner.step = capture  # type: ignore[method-assign]
        trainer.meta_iteration()
        learner.step = step  # type: ignore[method-assign]
        batch, m = captured[0], captured[0].num_tasks
        shared = {name: p.detach() for name, p in learner.policy.named_parameters()}
        vector = torch.randn(sum(p.numel() for p in shared.values()), generator=torch.Generator().manual_seed(0))
        layers = [i for i, module in enumerate(learner.policy.mean) if isinstance(module, (nn.ReLU, MaskedReLU))]

        def product() -> torch.Tensor:
            path = learner.adapted_path(task_leaves(shared, m), batch.train, m, create_graph=True)
            dist = learner._validation_dist(path[-1], batch.valid)
            old = tuple(x.detach() for x in dist)
            fvp = adapted_gauss_newton_vector_product([list(p.values()) for p in path], dist,
                                                      lambda d: learner.kl(old, d, batch.valid).sum() / m)
            fvp(vector)  # warm
            times = []
            for _ in range(3):
                start = time.perf_counter()
                result = fvp(vector)
                times.append(time.perf_counter() - start)
            product.last = result.sum(0)  # type: ignore[attr-defined]
            return torch.tensor(statistics.median(times))

        seconds: dict[str, dict[str, list[float]]] = {"nn.ReLU": {}, "MaskedReLU": {}}
        products, steps = {}, {}
        for _ in range(args.rounds):
            for name, activation in (("nn.ReLU", nn.ReLU), ("MaskedReLU", MaskedReLU)):
                for i in layers:
                    learner.policy.mean[i] = activation()
                seconds[name].setdefault("fvp", []).append(float(product()))
                products[name] = product.last  # type: ignore[attr-defined]
                start = time.perf_counter()
                new, _ = learner.step(batch)
                seconds[name].setdefault("step", []).append(time.perf_counter() - start)
                steps[name] = torch.cat([p.reshape(-1) for p in new.values()])
        trainer.close()
    for what in ("fvp", "step"):
        a, b = (statistics.median(seconds[name][what]) for name in ("nn.ReLU", "MaskedReLU"))
        print(f"{what:>5}: nn.ReLU {a:.3f} s, MaskedReLU {b:.3f} s, ratio {a / b:.2f}  "
              f"(per round: {[round(x, 3) for x in seconds['nn.ReLU'][what]]} / "
              f"{[round(x, 3) for x in seconds['MaskedReLU'][what]]})")
    relative = float((products["nn.ReLU"] - products["MaskedReLU"]).norm() / products["nn.ReLU"].norm())
    moved = float((steps["nn.ReLU"] - steps["MaskedReLU"]).abs().max())
    print(f"products' relative difference {relative:.2e}; parameters after the step differ by at most {moved:.2e}")


if __name__ == "__main__":
    main()
