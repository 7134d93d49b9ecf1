"""Write the MAML paper's per-task RL results as JSON (experiments/paper-results.json), from cbfinn/maml_rl's
``icml`` directory.

Each ``icml/icml_<family>_results_<row>.pkl`` there is what an evaluation script (``maml_examples/test_maml_*.py``)
saved: ``{"task_avg_returns": [[return of task i after k steps for i in 0..39] for k in 0..n_itr-1]}``, the tasks in
the order of the script's goals (``maml_rl.reference_tasks``). These lists are the paper's table and figures. The
pickles hold only lists and floats; they are read with an unpickler that refuses every import, so reading them runs
no code from them.

    python experiments/paper_results.py PATH/TO/maml_rl/icml --commit HASH [--output experiments/paper-results.json]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pickle
import re
import sys
from pathlib import Path
from typing import Any

#: this project's family -> (the pickles' family prefix, {row: the pickles' row suffix}); the 2D-navigation
#: pretrained row is ``sens0`` (its means are the paper's pretrained row, −40.8 / −19.7 / −11.7 / −8.5)
FILES: dict[str, tuple[str, dict[str, str]]] = {
    "navigation-2d": ("point", {"maml": "maml", "pretrained": "sens0", "random": "random", "oracle": "oracle"}),
    "halfcheetah-vel": ("cheetah", {"maml": "maml", "pretrained": "pretrain", "random": "random",
                                    "oracle": "oracle"}),
    "halfcheetah-dir": ("cheetahdirec", {"maml": "maml", "pretrained": "pretrain", "random": "random",
                                         "oracle": "oracle"}),
    "ant-vel": ("ant", {"maml": "maml", "pretrained": "pretrain", "random": "random", "oracle": "oracle"}),
    "ant-dir": ("antdirec", {"maml": "maml", "pretrained": "pretrain", "random": "random", "oracle": "oracle"}),
}
TASKS = 40


class _NoImports(pickle.Unpickler):
    """An unpickler for plain data: any class or function the pickle names is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to import {module}.{name}: only lists and numbers are expected")


def read_returns(path: Path) -> list[list[float]]:
    """``[k][task]`` returns of one results pickle; checks the shape (40 tasks per step) and finiteness."""
    content = _NoImports(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    returns = [[float(x) for x in step] for step in content["task_avg_returns"]]
    if not returns or any(len(step) != TASKS for step in returns):
        raise ValueError(f"{path}: expected {TASKS} returns per step, got {[len(step) for step in returns]}")
    if not all(math.isfinite(x) for step in returns for x in step):
        raise ValueError(f"{path}: non-finite return")
    return returns


def collect(icml: Path, commit: str) -> dict[str, Any]:
    """The JSON document: every family's rows, with where each came from."""
    families: dict[str, Any] = {}
    for family, (prefix, rows) in FILES.items():
        families[family] = {
            row: {"file": f"icml/icml_{prefix}_results_{suffix}.pkl",
                  "returns": read_returns(icml / f"icml_{prefix}_results_{suffix}.pkl")}
            for row, suffix in rows.items()
        }
    return {
        "source": f"cbfinn/maml_rl at {commit}, icml/icml_*_results_*.pkl (written by maml_examples/test_maml_*.py)",
        "layout": "families[family][row].returns[k][task]: mean return of task i (the reference's i-th held-out "
                  "task, maml_rl.reference_tasks) after k adaptation steps; oracle rows have k = 0 only",
        "families": families,
    }


def _dumps(document: dict[str, Any]) -> str:
    """JSON with each step's 40 returns on one line (readable diffs, a tenth of ``indent``'s size)."""
    text = json.dumps(document, indent=1)
    return re.sub(r"\[\s+(-?[0-9][^\[\]]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("icml", type=Path, help="cbfinn/maml_rl's icml directory")
    parser.add_argument("--commit", required=True, help="the cbfinn/maml_rl commit the directory is from")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("paper-results.json"))
    args = parser.parse_args(argv)
    try:
        document = collect(args.icml, args.commit)
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as error:
        print(f"paper_results: error: {error}", file=sys.stderr)
        return 2
    temporary = args.output.with_name(args.output.name + ".tmp")
    temporary.write_text(_dumps(document) + "\n")
    temporary.replace(args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
