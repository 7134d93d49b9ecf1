"""Nothing is lost and nothing poisoned: locking, atomic metrics, clean restarts, non-finite steps, full disks."""

import errno
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from maml_rl import checkpoint as checkpoint_module
from maml_rl.checkpoint import list_checkpoints, load_checkpoint
from maml_rl.cli import main
from maml_rl.logging import read_metrics
from maml_rl.metalearners import MAMLTRPO
from maml_rl.rundir import RunLock, atomic_write_text

TINY = ["--set", "maml.meta_batch_size=2", "--set", "maml.fast_batch_size=2", "--set", "env.horizon=5",
        "--set", "policy.hidden_sizes=[8]", "--set", "train.num_threads=1"]


def train(capsys, *args):
    code = main(["train", *map(str, args), "--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


def new_run(capsys, path, iterations, every=100, *extra):
    code, err = train(capsys, "navigation-2d/paper", "--output", path, *TINY, "--set",
                      f"train.num_iterations={iterations}", "--set", f"train.checkpoint_every={every}", *extra)
    assert code == 0, err
    return path


@pytest.fixture(scope="module")
def two_iterations(tmp_path_factory):
    run = tmp_path_factory.mktemp("base") / "run"
    assert main(["train", "navigation-2d/paper", "--output", str(run), *TINY, "--set", "train.num_iterations=2",
                 "--set", "train.checkpoint_every=1", "--no-progress"]) == 0
    return run


def copy_of(run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


# ------------------------------------------------------------------------------------------ locking


def test_a_second_process_on_a_locked_run_exits_2_naming_the_holder(two_iterations, tmp_path):
    run = copy_of(two_iterations, tmp_path)
    before = (run / "metrics.csv").read_bytes()
    with RunLock(run):
        result = subprocess.run([sys.executable, "-m", "maml_rl.cli", "train", "--resume", str(run), "--no-progress",
                                 "--set", "train.num_iterations=3"], capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and f"in use by another maml-rl process (pid {os.getpid()})" in lines[0]
    assert (run / "metrics.csv").read_bytes() == before


def test_the_lock_is_released_after_training(two_iterations, tmp_path, capsys):
    run = copy_of(two_iterations, tmp_path)
    code, err = train(capsys, "--resume", run, "--set", "train.num_iterations=3")
    assert code == 0, err
    with RunLock(run):  # would raise if the finished trainer still held it
        pass


# ------------------------------------------------------------------------------------------ metrics.csv


def test_an_interrupted_rewrite_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.csv"
    path.write_text("iteration,a\n1,2\n")

    def broken_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write_text(path, "iteration,a\n")
    assert path.read_text() == "iteration,a\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_a_truncated_last_row_is_dropped_with_a_warning(two_iterations, tmp_path, capsys):
    run = copy_of(two_iterations, tmp_path)
    text = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text(text + "3,-41.5,12")  # a row cut short by a crash mid-write
    rows = read_metrics(run / "metrics.csv")
    assert [row["iteration"] for row in rows] == [1, 2]
    assert "dropped the truncated last row (line 4" in capsys.readouterr().err
    code, err = train(capsys, "--resume", run, "--set", "train.num_iterations=3")
    assert code == 0, err
    assert [row["iteration"] for row in read_metrics(run / "metrics.csv")] == [1, 2, 3]


def test_a_corrupt_row_before_the_last_is_an_error(two_iterations, tmp_path, capsys):
    run = copy_of(two_iterations, tmp_path)
    lines = (run / "metrics.csv").read_text().splitlines()
    lines[1] = "garbage"
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    code = main(["plot", str(run), "--output", str(tmp_path / "p.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "metrics.csv line 2 is corrupt" in err[0], err


# ------------------------------------------------------------------------------------------ starts and restarts


def test_a_run_killed_before_its_first_checkpoint_restarts_cleanly(tmp_path, capsys):
    run = new_run(capsys, tmp_path / "run", 2, 100)
    reference = read_metrics(run / "metrics.csv")
    shutil.rmtree(run / "checkpoints")  # as if killed before iteration 2's checkpoint was written
    code, err = train(capsys, "--resume", run)
    assert code == 0, err
    assert any("has no checkpoint yet" in line and "restarting it from iteration 0" in line for line in err)
    rows = read_metrics(run / "metrics.csv")
    assert [row["iteration"] for row in rows] == [1, 2]
    assert rows[1]["returns/post_adapt_mean"] == reference[1]["returns/post_adapt_mean"]


def test_an_existing_run_without_resume_is_a_usage_error(two_iterations, capsys):
    before = (two_iterations / "metrics.csv").read_bytes()
    code, err = train(capsys, "navigation-2d/paper", "--output", two_iterations, *TINY)
    assert code == 2 and len(err) == 1 and "already holds a run; continue it with --resume" in err[0], err
    assert (two_iterations / "metrics.csv").read_bytes() == before


def test_a_changed_seed_is_refused_on_resume(two_iterations, tmp_path, capsys):
    run = copy_of(two_iterations, tmp_path)
    code, err = train(capsys, "--resume", run, "--seed", "5", "--allow-config-change")
    assert code == 2 and len(err) == 1 and "the seed cannot change" in err[0], err
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 1


def test_config_yaml_changes_only_once_the_resumed_run_has_started(two_iterations, tmp_path, capsys, monkeypatch):
    run = copy_of(two_iterations, tmp_path)
    original = (run / "config.yaml").read_text()

    def failing_step(self, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(MAMLTRPO, "step", failing_step)
    code, err = train(capsys, "--resume", run, "--allow-config-change", "--set", "maml.fast_lr=0.3",
                      "--set", "train.num_iterations=3")
    assert code == 130, err
    assert (run / "config.yaml").read_text() == original
    monkeypatch.undo()
    code, err = train(capsys, "--resume", run, "--allow-config-change", "--set", "maml.fast_lr=0.3",
                      "--set", "train.num_iterations=3")
    assert code == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["maml"]["fast_lr"] == 0.3


# ------------------------------------------------------------------------------------------ non-finite steps


def test_a_step_that_blows_up_the_std_stops_before_anything_is_written(tmp_path, capsys, monkeypatch):
    real_step = MAMLTRPO.step
    calls = {"n": 0}

    def exploding_step(self, batch):
        params, metrics = real_step(self, batch)
        calls["n"] += 1
        if calls["n"] == 2:  # what trpo.max_kl=1e9 did: log_std of 6120, std = inf
            params = {**params, "log_std": torch.full_like(params["log_std"], 6120.0)}
        return params, metrics

    monkeypatch.setattr(MAMLTRPO, "step", exploding_step)
    run = tmp_path / "run"
    code, err = train(capsys, "navigation-2d/paper", "--output", run, *TINY, "--set", "train.num_iterations=3",
                      "--set", "train.checkpoint_every=100")
    assert code == 1
    assert len(err) == 2 and err[0].startswith("run directory"), err
    assert err[1].startswith("maml-rl: training stopped at iteration 2: the outer step would make the policy "
                             "non-finite (std (log_std up to 6120)); step not applied"), err
    assert "the last completed iteration (1) is checkpointed" in err[1]
    assert [row["iteration"] for row in read_metrics(run / "metrics.csv")] == [1]
    assert list(list_checkpoints(run)) == [1]
    _, state = load_checkpoint(run)  # finite, loads
    assert float(state["policy"]["log_std"].max()) < 10
    monkeypatch.undo()
    code, err = train(capsys, "--resume", run)  # and the run goes on from there
    assert code == 0, err
    assert [row["iteration"] for row in read_metrics(run / "metrics.csv")] == [1, 2, 3]


def test_non_finite_policy_output_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "maml_rl.cli", "train", "tabular-mdp/paper", "--output", str(tmp_path / "run"),
         "--no-progress", "--set", "maml.fast_lr=1.0e+30", "--set", "maml.meta_batch_size=2",
         "--set", "maml.fast_batch_size=2", "--set", "train.num_iterations=2"],
        capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("maml-rl: training stopped at iteration 1: non-finite policy output"), lines


# ------------------------------------------------------------------------------------------ full disks


def test_a_full_disk_at_checkpoint_time_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    run = new_run(capsys, tmp_path / "run", 1, 1)
    good = (run / "checkpoints" / "iter_000001.pt").read_bytes()
    real_save = torch.save

    def full_disk_save(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk_save)
    code, err = train(capsys, "--resume", run, "--set", "train.num_iterations=2")
    assert code == 1
    assert err[-1].startswith("maml-rl: training stopped at iteration 2: cannot write in"), err
    assert "No space left on device" in err[-1] and "last good checkpoint: iteration 1" in err[-1]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000001.pt"]  # no temp file
    assert (run / "checkpoints" / "iter_000001.pt").read_bytes() == good


def test_a_full_disk_in_the_tensorboard_writer_is_one_line(tmp_path, capsys, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    code, err = train(capsys, "navigation-2d/paper", "--output", tmp_path / "run", *TINY,
                      "--set", "train.num_iterations=2")
    assert code == 1
    assert err[-1].startswith("maml-rl: training stopped at iteration 1: cannot write in"), err
    assert "No space left on device" in err[-1]


@pytest.fixture
def read_only_dir(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(target)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only file system here")
    yield target
    subprocess.run(["umount", str(target)], check=False)


def test_outputs_on_a_read_only_mount_are_refused_before_any_work(read_only_dir, two_iterations, capsys):
    for args in (["train", "--output", str(read_only_dir / "run"), *TINY, "--no-progress"],
                 ["evaluate", str(two_iterations), "--output", str(read_only_dir / "eval")],
                 ["plot", str(two_iterations), "--output", str(read_only_dir / "p.png")]):
        code = main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "cannot write in" in err[0], (args, err)


def test_atomically_written_files_get_the_usual_permissions(two_iterations, tmp_path, capsys):
    run = copy_of(two_iterations, tmp_path)
    code, err = train(capsys, "--resume", run, "--allow-config-change", "--set", "maml.fast_lr=0.3",
                      "--set", "train.num_iterations=3", "--set", "train.checkpoint_every=1")
    assert code == 0, err
    mask = os.umask(0)
    os.umask(mask)
    expected = 0o666 & ~mask  # what open(path, "w") would give; mkstemp alone would leave 0600
    for path in (run / "metrics.csv", run / "config.yaml", run / "checkpoints" / "iter_000003.pt"):
        assert path.stat().st_mode & 0o777 == expected, path


def deterministic_rows(run):
    return [{k: v for k, v in row.items() if not k.startswith(("time/", "env/steps_per_second"))}
            for row in read_metrics(run / "metrics.csv")]


def test_kill_9_at_any_point_then_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    """SIGKILL (no handler runs) twice mid-run, each followed by --resume: the same metrics as one clean run."""
    import signal
    import time

    args = ["navigation-2d/paper", *TINY, "--set", "train.num_iterations=12", "--set", "train.checkpoint_every=2",
            "--set", "env.horizon=20"]
    reference = tmp_path / "reference"
    assert main(["train", *args, "--output", str(reference), "--no-progress"]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    command = [sys.executable, "-m", "maml_rl.cli", "train", *args, "--output", str(run), "--no-progress"]
    for kill_after_rows in (3, 8):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            csv_path = run / "metrics.csv"
            rows = len(csv_path.read_text().splitlines()) - 1 if csv_path.exists() else 0
            if rows >= kill_after_rows:
                break
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        command = [sys.executable, "-m", "maml_rl.cli", "train", "--resume", str(run), "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert deterministic_rows(run) == deterministic_rows(reference)
    assert not list(run.rglob(".tmp_*"))
