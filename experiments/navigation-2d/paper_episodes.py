"""The policy noise and episode ends of the paper's own 2D-navigation evaluation, from the episodes it saved.

    python experiments/navigation-2d/paper_episodes.py PATH/TO/maml_rl/icml [--prefix maml pretrain rand oracle]

cbfinn/maml_rl keeps the episodes of one evaluation task per row and step (``icml/<prefix>_paths_itr<k>.pkl``, a
list of rllab paths with ``observations`` and ``agent_infos["log_std"]``). For each file this prints the number of
episodes, the policy's standard deviation (``exp(log_std)``, per action dimension, mean over steps) and the mean
position where the episodes end. The pickles hold numpy arrays; they are read with an unpickler that admits
numpy's array constructors and nothing else. docs/results.md, "On the paper's own held-out tasks".
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: the only globals the pickles may name: numpy's array and scalar reconstruction
ALLOWED = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
           for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}
#: Python 3's pickles of bytes (array buffers) call _codecs.encode, which only turns a string into bytes
ALLOWED |= {("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refused to import {module}.{name}")
        return super().find_class(module, name)


def summary(path: Path) -> tuple[int, np.ndarray, np.ndarray]:
    """``(episodes, std [act], mean end position [obs])`` of one saved paths file."""
    with path.open("rb") as file:
        paths = _ArraysOnly(file, encoding="latin1").load()
    log_std = np.concatenate([p["agent_infos"]["log_std"] for p in paths])
    ends = np.array([p["observations"][-1] for p in paths])
    return len(paths), np.exp(log_std).mean(0), ends.mean(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("icml", type=Path, help="cbfinn/maml_rl's icml directory")
    parser.add_argument("--prefix", nargs="+", default=["maml", "pretrain", "rand", "oracle"])
    args = parser.parse_args(argv)
    try:
        for prefix in args.prefix:
            for path in sorted(args.icml.glob(f"{prefix}_paths_itr*.pkl")):
                episodes, std, end = summary(path)
                print(f"{path.name}: {episodes} episodes, std {np.round(std.astype(np.float64), 3).tolist()}, "
                      f"mean end {np.round(end[:2].astype(np.float64), 3).tolist()}")
    except (OSError, KeyError, pickle.UnpicklingError) as error:
        print(f"paper_episodes: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
