"""Every bad input to ``maml-rl train | evaluate | plot``, driven as a user would: a subprocess.

Each case must exit with status 2, print exactly one line on stderr (``maml-rl: error: …``) and no traceback,
and write nothing: the directory the command was pointed at is byte-for-byte what it was before.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from maml_rl.cli import main

TINY = ["--set", "maml.meta_batch_size=2", "--set", "maml.fast_batch_size=2", "--set", "env.horizon=5",
        "--set", "policy.hidden_sizes=[8]", "--set", "train.num_iterations=1"]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "maml_rl.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A directory with a finished tiny run, config files a user might get wrong, and a plain file."""
    root = tmp_path_factory.mktemp("bad-input")
    assert main(["train", "navigation-2d/paper", "--output", str(root / "run"), "--no-progress", *TINY]) == 0
    (root / "a-file").write_text("not a directory\n")
    (root / "latin1.yaml").write_bytes("# caf\xe9\nmaml: {fast_lr: 0.1}\n".encode("latin-1"))
    (root / "empty.yaml").write_text("# nothing here\n")
    (root / "duplicate.yaml").write_text("maml:\n  fast_lr: 0.1\n  fast_lr: 0.5\n")
    return root


TRAIN = "train"
EVALUATE = "evaluate"
PLOT = "plot"

# (command, arguments with {ws} for the workspace, a fragment of the one error line)
CASES = {
    # numbers that would poison a run
    "max_kl nan": (TRAIN, ["--set", "algorithm.options.max_kl=.nan"], "algorithm.options.max_kl"),
    "fast_lr inf": (TRAIN, ["--set", "maml.fast_lr=.inf"], "maml.fast_lr"),
    "init_std nan": (TRAIN, ["--set", "policy.init_std=.nan"], "policy.init_std"),
    "min_std inf": (TRAIN, ["--set", "policy.min_std=.inf"], "policy.min_std"),
    "action_scale inf": (TRAIN, ["--set", "env.action_scale=.inf"], "env.action_scale"),
    "cg_damping nan": (TRAIN, ["--set", "algorithm.options.cg_damping=.nan"], "algorithm.options.cg_damping"),
    "gamma -inf": (TRAIN, ["--set", "maml.gamma=-.inf"], "maml.gamma"),
    "hidden sizes empty": (TRAIN, ["--set", "policy.hidden_sizes=[]"], "policy.hidden_sizes"),
    # resources
    "huge meta-batch": (TRAIN, ["--set", "maml.meta_batch_size=10000000"], "maml.meta_batch_size"),
    "huge horizon": (TRAIN, ["--set", "env.horizon=1e9"], "env.horizon"),
    "huge policy": (TRAIN, ["--set", "policy.hidden_sizes=[1000000,1000000]"], "policy.hidden_sizes"),
    "huge bandit": (TRAIN, ["bandit/k5-n10", "--set", "env.options={num_arms: 1000000000}"], "num_arms"),
    # files and directories
    "output under a file": (TRAIN, ["--output", "{ws}/a-file/run"], "a-file"),
    "output in /proc": (TRAIN, ["--output", "/proc/maml-rl-run"], "/proc"),
    "output in /sys": (TRAIN, ["--output", "/sys/maml-rl-run"], "/sys"),
    "existing run": (TRAIN, ["--output", "{ws}/run"], "already holds a run"),
    "empty config name": (TRAIN, [""], "CONFIG is empty"),
    "non-UTF-8 config": (TRAIN, ["{ws}/latin1.yaml"], "UTF-8"),
    "empty config file": (TRAIN, ["{ws}/empty.yaml"], "empty"),
    "duplicate keys": (TRAIN, ["{ws}/duplicate.yaml"], "duplicate key"),
    "resume a file": (TRAIN, ["--resume", "{ws}/a-file"], "not a run directory"),
    "resume with a new seed": (TRAIN, ["--resume", "{ws}/run", "--seed", "5", "--allow-config-change"],
                               "the seed cannot change"),
    "device tpu": (TRAIN, ["--device", "tpu"], "expected cpu, cuda or cuda:N"),
    "device cuda:abc": (TRAIN, ["--device", "cuda:abc"], "expected cpu, cuda or cuda:N"),
    # evaluate
    "evaluate device tpu": (EVALUATE, ["{ws}/run", "--device", "tpu"], "--device: expected cpu, cuda or cuda:N"),
    "evaluate device cuda:abc": (EVALUATE, ["{ws}/run", "--device", "cuda:abc"], "--device: expected"),
    "evaluate huge --tasks": (EVALUATE, ["{ws}/run", "--tasks", "10000000"], "--tasks"),
    "evaluate huge --episodes": (EVALUATE, ["{ws}/run", "--episodes", "10000000"], "--episodes"),
    "evaluate output in /proc": (EVALUATE, ["{ws}/run", "--output", "/proc/maml-rl-eval"], "/proc"),
    "evaluate output under a file": (EVALUATE, ["{ws}/run", "--output", "{ws}/a-file/eval"], "a-file"),
    "evaluate one task": (EVALUATE, ["{ws}/run", "--tasks", "1"], "--tasks must be >= 2"),
    "evaluate no run": (EVALUATE, ["{ws}/missing"], "not a run directory"),
    # plot
    "plot output is a directory": (PLOT, ["{ws}/run", "--output", "{ws}/run"], "is a directory"),
    "plot output in /proc": (PLOT, ["{ws}/run", "--output", "/proc/maml-rl.png"], "/proc"),
    "plot unknown metric": (PLOT, ["{ws}/run", "--metric", "returns/nope", "--output", "{ws}/p.png"], "returns/nope"),
    "plot no run": (PLOT, ["{ws}/missing", "--output", "{ws}/p.png"], "missing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workspace, case):
    command, args, fragment = CASES[case]
    args = [arg.replace("{ws}", str(workspace)) for arg in args]
    if command == TRAIN and not any(a.startswith("--resume") for a in args):
        if not args or args[0].startswith("--"):
            args = ["navigation-2d/paper", *args]
        if "--output" not in args:
            args += ["--output", str(workspace / "new-run")]
        args += ["--no-progress"]
    before = snapshot(workspace)
    result = cli(command, *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("maml-rl: error: "), lines
    assert fragment in lines[0], lines
    assert snapshot(workspace) == before
    assert not (workspace / "new-run").exists()


def test_every_float_form_a_user_writes_is_accepted(tmp_path):
    config = tmp_path / "forms.yaml"
    config.write_text("env: {family: navigation-2d, horizon: 5}\npolicy: {hidden_sizes: [8]}\n"
                      "maml: {meta_batch_size: 2, fast_batch_size: 2, fast_lr: 1e-3}\ntrpo: {cg_damping: 1E-5}\n"
                      "train: {num_iterations: 1e0}\n")
    result = cli("train", config, "--output", tmp_path / "run", "--no-progress",
                 "--set", "algorithm.options.max_kl=1e-2")
    assert result.returncode == 0, result.stderr
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "fast_lr: 0.001" in saved and "max_kl: 0.01" in saved and "num_iterations: 1\n" in saved


def test_too_many_threads_are_capped_with_a_warning(tmp_path):
    result = cli("train", "navigation-2d/paper", "--output", tmp_path / "run", "--no-progress", *TINY,
                 "--set", "train.num_threads=100000")
    assert result.returncode == 0, result.stderr
    cores = len(os.sched_getaffinity(0))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("maml-rl: warning:")]
    assert len(warnings) == 1 and "100000" in warnings[0] and str(cores) in warnings[0], result.stderr
