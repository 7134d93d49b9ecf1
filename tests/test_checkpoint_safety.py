"""Checkpoints never run code, never hold non-finite values, and every malformed one is a one-line error."""

import builtins
import copy
import subprocess
import sys

import pytest
import torch

from maml_rl.build import Generators
from maml_rl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from maml_rl.cli import main
from maml_rl.rundir import remove_stale_temp_files

TINY = ["--set", "maml.meta_batch_size=2", "--set", "maml.fast_batch_size=2", "--set", "env.horizon=5",
        "--set", "policy.hidden_sizes=[8]", "--set", "train.num_iterations=1"]


class Payload:
    """Unpickling this object runs code (it writes ``marker``): what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("good") / "run"
    assert main(["train", "navigation-2d/paper", "--output", str(run), "--no-progress", *TINY]) == 0
    return run


def copy_run(good_run, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(good_run, target)
    return target


def checkpoint_file(run):
    return run / "checkpoints" / "iter_000001.pt"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "maml_rl.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(good_run, tmp_path, command):
    run = copy_run(good_run, tmp_path)
    marker = tmp_path / "PWNED"
    state = torch.load(checkpoint_file(run), weights_only=True)
    state["extra"] = Payload(marker)
    torch.save(state, checkpoint_file(run))
    # the file really is dangerous: an unrestricted load runs the payload
    torch.load(checkpoint_file(run), weights_only=False)
    assert marker.read_text() == "ran"
    marker.unlink()

    args = ["evaluate", run, "--tasks", "2", "--episodes", "1", "--steps", "0"] if command == "evaluate" else [
        "train", "--resume", run, "--no-progress"]
    result = cli(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("maml-rl: error: checkpoint "), lines
    assert "never loaded" in lines[0]
    assert not marker.exists()


def good_state(good_run):
    return torch.load(checkpoint_file(good_run), weights_only=True)


def corrupt_cases():
    def drop(key):
        return lambda s: s.pop(key)

    def set_generator(key, value):
        return lambda s: s["generators"].__setitem__(key, value)

    def nan_weight(s):
        name = next(iter(s["policy"]))
        s["policy"][name] = s["policy"][name].clone().fill_(float("nan"))

    def inf_log_std(s):
        s["policy"]["log_std"] = torch.full_like(s["policy"]["log_std"], float("inf"))

    return {
        "missing config": (drop("config"), "missing config"),
        "missing generators": (drop("generators"), "missing generators"),
        "missing policy": (drop("policy"), "missing policy"),
        "generators not a dict": (lambda s: s.__setitem__("generators", [1, 2]), "no generator states"),
        "task stream garbage": (set_generator("tasks", {"bit_generator": "PCG64", "state": {"state": "x"}}),
                                "generators.tasks"),
        "task stream missing": (lambda s: s["generators"].pop("tasks"), "generators.tasks"),
        "action stream wrong dtype": (set_generator("actions", torch.zeros(5)), "generators.actions"),
        "action stream truncated": (set_generator("actions", torch.zeros(7, dtype=torch.uint8)), "actions"),
        "iteration is a string": (lambda s: s.__setitem__("iteration", "1"), "malformed iteration"),
        "policy of strings": (lambda s: s.__setitem__("policy", {"w": "x"}), "malformed policy"),
        "NaN weight": (nan_weight, "non-finite"),
        "infinite log-std": (inf_log_std, "non-finite values in policy.log_std"),
    }


@pytest.mark.parametrize("case", list(corrupt_cases()))
def test_a_malformed_checkpoint_is_one_checkpoint_error(good_run, tmp_path, capsys, case):
    corrupt, message = corrupt_cases()[case]
    run = copy_run(good_run, tmp_path)
    state = good_state(good_run)
    corrupt(state)
    torch.save(state, checkpoint_file(run))
    for args in (["evaluate", str(run), "--tasks", "2", "--episodes", "1", "--steps", "0"],
                 ["train", "--resume", str(run), "--no-progress", "--set", "train.num_iterations=2"]):
        code = main(args)
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (args, lines)
        assert len(lines) == 1 and lines[0].startswith("maml-rl: error: ") and message in lines[0], lines
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000001.pt"]


def test_a_non_finite_checkpoint_is_never_written(good_run, tmp_path):
    state = good_state(good_run)
    state["policy"]["log_std"] = torch.full_like(state["policy"]["log_std"], float("nan"))
    with pytest.raises(CheckpointError, match=r"non-finite values in policy\.log_std"):
        save_checkpoint(tmp_path, 3, state)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_a_good_checkpoint_round_trips_with_safe_loading(good_run, tmp_path):
    state = good_state(good_run)
    save_checkpoint(tmp_path, 1, copy.deepcopy(state))
    iteration, loaded = load_checkpoint(tmp_path)
    assert iteration == 1
    assert all(torch.equal(loaded["policy"][k], v) for k, v in state["policy"].items())
    assert loaded["generators"]["tasks"] == state["generators"]["tasks"]


def test_generator_states_load_all_or_nothing():
    generators = Generators.from_seed(1, torch.device("cpu"))
    state = Generators.from_seed(2, torch.device("cpu")).state_dict()
    before = generators.state_dict()
    broken = {**state, "resets": {"bit_generator": "MT19937", "state": {}}}
    with pytest.raises(ValueError, match="malformed generator state 'resets'"):
        generators.load_state_dict(broken)
    assert generators.state_dict()["tasks"] == before["tasks"]  # unchanged: nothing half-restored
    generators.load_state_dict(state)
    assert generators.state_dict()["tasks"] == state["tasks"]


def test_stale_temporary_files_are_removed_on_the_next_start(good_run, tmp_path, capsys):
    run = copy_run(good_run, tmp_path)
    stale = [run / "checkpoints" / ".tmp_abc123.pt", run / ".tmp_metrics.csv"]
    for path in stale:
        path.write_bytes(b"partial")
    assert main(["train", "--resume", str(run), "--no-progress", "--set", "train.num_iterations=2"]) == 0, \
        capsys.readouterr().err
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000001.pt", "iter_000002.pt"]
    assert remove_stale_temp_files(run) == []
