"""What the reference's finite-difference Fisher-vector products cost against the exact ones: one meta-batch, the
MAML-TRPO step with ``fisher: exact`` and with ``fisher: finite-difference`` at ``fd_base_eps`` (default 1.0, the
reference's), timed alternately.

    python benchmarks/fisher_products.py SOURCE [--repeats 2] [--fd-base-eps 1.0] [--set KEY=VALUE ...]

SOURCE is a preset (``navigation-2d/paper``: its initial policy) or a run directory (its latest checkpoint's policy,
the run left untouched: it is copied first). Prints the seconds to sample the meta-batch (the same for both steps),
then the seconds of each outer step (repeats alternate the two after one untimed round of each, one learner
thread), their ratio, and the cosine between the two steps taken.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packed_steps import one_meta_batch, trainer_for

from maml_rl.collect import pack_batch
from maml_rl.learner_settings import FD_BASE_EPS
from maml_rl.metalearners.maml_trpo import MAMLTRPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="SOURCE", help="preset (e.g. navigation-2d/paper) or run directory")
    parser.add_argument("--repeats", type=int, default=2, help="steps of each kind, alternately (default 2)")
    parser.add_argument("--fd-base-eps", type=float, default=1.0, help="the finite-difference side's fd_base_eps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        trainer = trainer_for(args.source, [*args.set, "train.num_threads=1"], Path(scratch))
        config, learner = trainer.config, trainer.metalearner
        if not isinstance(learner, MAMLTRPO):
            sys.exit(f"{config.algorithm.name} takes no TRPO step: use a maml-trpo or pretrained config")
        batch = one_meta_batch(trainer)
        data = pack_batch(batch) if learner.packs_steps(learner.settings) else batch
        own = learner.settings
        kinds = {"exact": dataclasses.replace(own, fisher="exact", fd_base_eps=FD_BASE_EPS),
                 "finite-difference": dataclasses.replace(own, fisher="finite-difference",
                                                          fd_base_eps=args.fd_base_eps)}
        theta = torch.cat([p.detach().reshape(-1).clone() for p in learner.shared_params().values()])
        seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
        steps: dict[str, torch.Tensor] = {}
        accepted: dict[str, float] = {}
        for repeat in range(args.repeats + 1):  # the first round warms up and is not timed
            for kind, settings in kinds.items():
                learner.settings = settings
                start = time.perf_counter()
                new, metrics = learner.step(data)
                if repeat:
                    seconds[kind].append(time.perf_counter() - start)
                steps[kind] = torch.cat([p.reshape(-1) for p in new.values()]) - theta
                accepted[kind] = metrics["trpo/step_accepted"]
        learner.settings = own
        for kind, times in seconds.items():
            print(f"outer step, {kind:17s}: {statistics.median(times):8.2f} s  (each: "
                  f"{', '.join(f'{t:.2f}' for t in times)}; step accepted: {bool(accepted[kind])})")
        ratio = statistics.median(seconds["finite-difference"]) / statistics.median(seconds["exact"])
        print(f"finite-difference / exact: {ratio:.2f}x")
        a, b = steps["exact"], steps["finite-difference"]
        if bool(a.any()) and bool(b.any()):
            print(f"cosine between the two steps: {float(a @ b / (a.norm() * b.norm())):.3f}")
        trainer.close()


if __name__ == "__main__":
    main()
