"""Checkpoints and ``maml-rl train --resume``: exact continuation, Ctrl-C/SIGTERM, atomic writes, bad input."""

import os
import signal

import pytest
import torch
import yaml

from maml_rl import checkpoint
from maml_rl.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from maml_rl.cli import main
from maml_rl.logging import read_metrics
from maml_rl.metalearners import MAMLTRPO

TINY = ["--set", "maml.meta_batch_size=4", "--set", "maml.fast_batch_size=4", "--set", "env.horizon=10",
        "--set", "policy.hidden_sizes=[16]", "--set", "train.num_threads=1"]


def train(capsys, *args):
    code = main(["train", *map(str, args), "--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


def new_run(capsys, path, iterations, checkpoint_every=100, *extra):
    code, err = train(capsys, "navigation-2d/paper", "--output", path, *TINY, "--set",
                      f"train.num_iterations={iterations}", "--set", f"train.checkpoint_every={checkpoint_every}",
                      *extra)
    assert code == 0, err
    return path


def deterministic_metrics(run_dir):
    """The rows of ``metrics.csv`` without wall-clock columns."""
    return [{k: v for k, v in row.items() if not k.startswith(("time/", "env/steps_per_second"))}
            for row in read_metrics(run_dir / "metrics.csv")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 4-iteration run (checkpoints only at the end)."""
    path = tmp_path_factory.mktemp("reference") / "run"
    code = main(["train", "navigation-2d/paper", "--output", str(path), *TINY, "--set", "train.num_iterations=4",
                 "--set", "train.checkpoint_every=100", "--no-progress"])
    assert code == 0
    return path


def test_resume_after_a_finished_shorter_run_matches_the_uninterrupted_run(reference, tmp_path, capsys):
    run = new_run(capsys, tmp_path / "run", 2)
    assert list(list_checkpoints(run)) == [2]
    # extending a run changes nothing already computed: no --allow-config-change needed
    code, err = train(capsys, "--resume", run, "--set", "train.num_iterations=4")
    assert code == 0, err
    assert deterministic_metrics(run) == deterministic_metrics(reference)
    assert list(list_checkpoints(run)) == [2, 4]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["num_iterations"] == 4
    code, err = train(capsys, "--resume", run)  # config.yaml follows the run: no change now, nothing to do
    assert code == 0 and deterministic_metrics(run) == deterministic_metrics(reference)
    assert "the run has completed its 4 iterations" in err[-1]


@pytest.mark.parametrize("how", ["keyboard-interrupt", "sigterm"])
def test_interrupted_run_checkpoints_the_last_completed_iteration_and_resumes_exactly(
    reference, tmp_path, capsys, monkeypatch, how
):
    real_step = MAMLTRPO.step
    calls = {"n": 0}

    def interrupted_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 3 and how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer turns it into KeyboardInterrupt
        result = real_step(self, batch)  # the generators have moved
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(MAMLTRPO, "step", interrupted_step)
    run = tmp_path / "run"
    code, err = train(capsys, "navigation-2d/paper", "--output", run, *TINY, "--set", "train.num_iterations=4",
                      "--set", "train.checkpoint_every=100")
    assert code == 130 and err[-1] == (f"interrupted; the last completed iteration (2) is checkpointed in {run}; "
                                       f"continue with maml-rl train --resume {run}")
    assert list(list_checkpoints(run)) == [2]  # saved by the interrupt handler, not by the schedule
    assert len(read_metrics(run / "metrics.csv")) == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    monkeypatch.setattr(MAMLTRPO, "step", real_step)

    code, err = train(capsys, "--resume", run)
    assert code == 0, err
    assert deterministic_metrics(run) == deterministic_metrics(reference)
    _, final = load_checkpoint(run)
    _, expected = load_checkpoint(reference)
    for name, value in expected["policy"].items():
        torch.testing.assert_close(final["policy"][name], value, rtol=0, atol=0)


def test_interrupt_in_the_first_iteration_leaves_no_checkpoint(tmp_path, capsys, monkeypatch):
    def interrupted(self, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(MAMLTRPO, "step", interrupted)
    run = tmp_path / "run"
    code, err = train(capsys, "navigation-2d/paper", "--output", run, *TINY)
    assert code == 130 and err[-1] == "interrupted before the first iteration completed; nothing to resume"
    assert not list_checkpoints(run)
    monkeypatch.undo()
    code, err = train(capsys, "--resume", run, "--set", "train.num_iterations=1")  # a clean restart, said so
    assert code == 0 and "has no checkpoint yet" in err[0] and "restarting it from iteration 0" in err[0], err
    assert list(list_checkpoints(run)) == [1]


def test_interrupt_during_a_checkpoint_write_keeps_the_previous_state(reference, tmp_path, capsys, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def save_interrupted_once(state, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the end-of-run checkpoint of iteration 4
            handle.write(b"PK\x03\x04 half a zip file")
            raise KeyboardInterrupt
        return real_save(state, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_interrupted_once)
    run = tmp_path / "run"
    code, _ = train(capsys, "navigation-2d/paper", "--output", run, *TINY, "--set", "train.num_iterations=4",
                    "--set", "train.checkpoint_every=2")
    assert code == 130
    assert list(list_checkpoints(run)) == [2, 3]  # 4 failed; the handler saved iteration 3, the last completed
    assert not list((run / "checkpoints").glob(".tmp_*"))
    monkeypatch.setattr(torch, "save", real_save)
    assert train(capsys, "--resume", run)[0] == 0
    assert deterministic_metrics(run) == deterministic_metrics(reference)


# ------------------------------------------------------------------------------------------- atomic writes


def state_of(iteration, weight):
    """A complete checkpoint state around one policy tensor."""
    from maml_rl.build import Generators

    generators = Generators.from_seed(1, torch.device("cpu")).state_dict()
    return {"iteration": iteration, "policy": {"w": weight}, "generators": generators, "config": {},
            "family": "navigation-2d"}


def test_a_failed_write_never_replaces_or_hides_the_latest_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, state_of(1, torch.ones(3)))
    save_checkpoint(tmp_path, 2, state_of(2, torch.full((3,), 2.0)))
    real_save = torch.save

    def dies_midway(state, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 truncated")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", dies_midway)
    for iteration in (2, 3):  # over an existing checkpoint, and as a new one
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint(tmp_path, iteration, state_of(iteration, torch.zeros(3)))
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["iter_000001.pt", "iter_000002.pt"]
    iteration, state = load_checkpoint(tmp_path)
    assert iteration == 2 and torch.equal(state["policy"]["w"], torch.full((3,), 2.0))

    # a process killed outright (SIGKILL) can leave its temporary file behind: it is never taken for a checkpoint
    (tmp_path / "checkpoints" / ".tmp_killed.pt").write_bytes(b"PK\x03\x04 partial")
    assert list(list_checkpoints(tmp_path)) == [1, 2] and load_checkpoint(tmp_path)[0] == 2


def test_a_truncated_latest_checkpoint_is_reported_not_loaded(tmp_path):
    path = save_checkpoint(tmp_path, 5, state_of(5, torch.ones(1000)))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"iter_000005.pt is unreadable"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def finished(tmp_path, capsys):
    return new_run(capsys, tmp_path / "run", 2, 1)


def snapshot(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_edited_config_is_refused_unless_allowed(finished, capsys):
    config = yaml.safe_load((finished / "config.yaml").read_text())
    config["maml"]["fast_lr"] = 0.3
    (finished / "config.yaml").write_text(yaml.safe_dump(config))
    before = snapshot(finished)
    code, err = train(capsys, "--resume", finished, "--set", "train.num_iterations=3")
    assert code == 2 and len(err) == 1
    assert err[0].startswith("maml-rl: error: --resume: the config differs") and "maml.fast_lr" in err[0], err
    assert snapshot(finished) == before
    code, err = train(capsys, "--resume", finished, "--set", "train.num_iterations=3", "--allow-config-change")
    assert code == 0, err
    assert len(read_metrics(finished / "metrics.csv")) == 3
    assert load_checkpoint(finished)[1]["config"]["maml"]["fast_lr"] == 0.3


@pytest.mark.parametrize(
    ("breakage", "extra", "message"),
    [
        ("truncated", [], "iter_000002.pt is unreadable"),
        ("other-family", ["--allow-config-change"], "is from task family 'bernoulli-bandit', the config says"),
        ("other-policy-shape", ["--allow-config-change"], "does not fit the config's policy"),
        ("no-config", [], "is not a run directory (no config.yaml)"),
        ("gpu-generator", [], "the run drew its action noise on a GPU, this learner is on cpu; resume on the same"),
    ],
)
def test_bad_resume_gives_one_clear_error_and_overwrites_nothing(finished, capsys, breakage, extra, message):
    latest = finished / "checkpoints" / "iter_000002.pt"
    if breakage == "no-checkpoints":
        for path in (finished / "checkpoints").iterdir():
            path.unlink()
    elif breakage == "truncated":
        latest.write_bytes(latest.read_bytes()[:-100])
    elif breakage in ("other-family", "other-policy-shape"):
        state = torch.load(latest, weights_only=False)
        if breakage == "other-family":
            state["family"] = "bernoulli-bandit"
        else:
            state["policy"] = {name: torch.zeros(3) for name in state["policy"]}
        torch.save(state, latest)
    elif breakage == "no-config":
        (finished / "config.yaml").unlink()
    elif breakage == "gpu-generator":  # a CUDA generator's state: seed and offset, 16 bytes
        state = torch.load(latest, weights_only=False)
        state["generators"]["actions"] = torch.zeros(16, dtype=torch.uint8)
        torch.save(state, latest)
    before = snapshot(finished)
    code, err = train(capsys, "--resume", finished, "--set", "train.num_iterations=3", *extra)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("maml-rl: error: ") and message in err[0], err
    assert snapshot(finished) == before
