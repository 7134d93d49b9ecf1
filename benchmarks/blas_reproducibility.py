"""What MKL's conditional numerical reproducibility costs: matrix products of 2D navigation's shapes with
``MKL_CBWR`` unset-like (empty), ``AUTO`` and ``AUTO,STRICT`` (what ``maml_rl`` sets), measured alternately.

    python benchmarks/blas_reproducibility.py [--rounds 3]

Each setting runs in a fresh process (MKL reads the variable once); each figure is the best of 30 calls, one
thread: a per-task forward ``bmm [20, 2000, 100] x [20, 100, 100]``, the weight gradient ``bmm [20, 100, 2000] x
[20, 2000, 100]`` and the sampler's small product ``[400, 2] x [2, 100]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = """
import time, torch
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
a = torch.randn(20, 2000, 100, generator=g); b = torch.randn(20, 100, 100, generator=g)
d = torch.randn(20, 2000, 100, generator=g); x = torch.randn(400, 2, generator=g); w = torch.randn(2, 100, generator=g)
def best(f, n):
    f(); t = 1e9
    for _ in range(n):
        s = time.perf_counter(); f(); t = min(t, time.perf_counter() - s)
    return t * 1e3
print(best(lambda: torch.bmm(a, b), 30), best(lambda: torch.bmm(a.transpose(1, 2), d), 30), best(lambda: x @ w, 3000))
"""
SETTINGS = ("", "AUTO", "AUTO,STRICT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[list[float]]] = {setting: [] for setting in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            out = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, "MKL_CBWR": setting},
                                 capture_output=True, text=True, check=True).stdout
            results[setting].append([float(x) for x in out.split()])
    print(f"{'MKL_CBWR':<14}{'forward bmm ms':>16}{'gradient bmm ms':>17}{'small mm µs':>14}   (median of rounds)")
    for setting, rows in results.items():
        medians = [sorted(column)[len(column) // 2] for column in zip(*rows, strict=True)]
        print(f"{setting or '(empty)':<14}{medians[0]:16.2f}{medians[1]:17.2f}{medians[2] * 1e3:14.1f}")


if __name__ == "__main__":
    main()
