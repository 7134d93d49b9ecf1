"""Data-parallel training (``maml-rl train --nproc R``, gloo on CPU): 2 and 4 processes train like 1, checkpoints
move between numbers of processes, bad requests are one-line errors before any work.

Every learner sums per-task values in task order over the whole meta-batch (``Reducer.sum_over_tasks``), so the
parameters after several iterations are bit for bit those of one process, with the paper's conjugate-gradient
damping (1e-5), on 2D navigation and on a MuJoCo family. The logged metrics are means whose partial sums are taken
per rank, so they are compared to the issue's relative tolerance, 1e-5 (measured: about 1e-7).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from maml_rl.checkpoint import load_checkpoint
from maml_rl.cli import main
from maml_rl.distributed import Reducer, ShardError, World, check_shardable
from maml_rl.logging import read_metrics

TINY = ["--set", "maml.meta_batch_size=4", "--set", "maml.fast_batch_size=4", "--set", "env.horizon=10",
        "--set", "policy.hidden_sizes=[16]", "--no-progress"]
MUJOCO = ["--set", "maml.meta_batch_size=4", "--set", "maml.fast_batch_size=2", "--set", "env.horizon=20",
          "--set", "policy.hidden_sizes=[16]", "--no-progress"]
LEARNERS = {
    "maml-trpo": [],
    "maml-fo": ["--set", "algorithm.name=maml-fo", "--set", "algorithm.options={num_steps: 2, lr: 0.01}"],
    "reptile": ["--set", "algorithm.name=reptile", "--set", "algorithm.options={}"],
    "promp": ["--set", "algorithm.name=promp", "--set", "algorithm.options={num_steps: 2}"],
    # a step budget: every rank samples the rounds the slowest task needs (maml.step_budget; E × horizon = 40)
    "maml-trpo-budget": ["--set", "maml.step_budget=true"],
    # a fixed task pool (maml.task_pool): every rank draws the same pool from the seed and keeps its shard of it
    "maml-trpo-task-pool": ["--set", "maml.task_pool=3"],
}
RTOL, FLOOR = 1e-5, 1e-6


def train(path, iterations, *extra, config="navigation-2d/paper", size=TINY):
    code = main(["train", config, "--output", str(path), *size, "--set", f"train.num_iterations={iterations}",
                 *map(str, extra)])
    assert code == 0
    return path


def assert_same_run(a, b):
    rows_a, rows_b = read_metrics(a / "metrics.csv"), read_metrics(b / "metrics.csv")
    assert len(rows_a) == len(rows_b)
    for x, y in zip(rows_a, rows_b, strict=True):
        assert list(x) == list(y)
        for key in x:
            if key.startswith(("time/", "env/steps_per_second")):
                continue
            assert abs(x[key] - y[key]) <= RTOL * max(abs(x[key]), FLOOR), (x["iteration"], key, x[key], y[key])
    (_, state_a), (_, state_b) = load_checkpoint(a), load_checkpoint(b)
    assert state_a["iteration"] == state_b["iteration"]
    for name, value in state_a["policy"].items():
        assert torch.equal(value, state_b["policy"][name]), (name, float((value - state_b["policy"][name]).abs().max()))
    assert state_a.keys() == state_b.keys()


@pytest.mark.parametrize("learner", list(LEARNERS))
def test_two_processes_train_like_one(learner, tmp_path):
    one = train(tmp_path / "one", 3, *LEARNERS[learner])
    two = train(tmp_path / "two", 3, *LEARNERS[learner], "--nproc", 2)
    assert_same_run(one, two)
    assert not list(two.glob("events.*"))[1:], "one TensorBoard writer (rank 0)"


def test_four_processes_train_like_one(tmp_path):
    assert_same_run(train(tmp_path / "one", 3), train(tmp_path / "four", 3, "--nproc", 4))


def test_two_processes_train_a_mujoco_family_like_one(tmp_path):
    """HalfCheetah's dynamics are chaotic: any difference in the parameters would grow through the episodes."""
    one = train(tmp_path / "one", 3, config="halfcheetah-vel/paper", size=MUJOCO)
    two = train(tmp_path / "two", 3, "--nproc", 2, config="halfcheetah-vel/paper", size=MUJOCO)
    assert_same_run(one, two)


def test_two_processes_train_ant_with_a_step_budget_like_one(tmp_path):
    """Gymnasium's Ant at its model's 0.05 s per step (the paper preset with the reference's environment switched
    off) falls after about 60 steps, so under a step budget its tasks need different numbers of rounds (3 or 4 for
    the first batch of seed 1 here, 2 or 3 for the second): each rank freezes its own finished tasks'
    sub-environments (frozen rounds) and packs its tasks' steps to the length every rank agrees on (packed steps)."""
    gymnasium_ant = [f"env.options.{key}" for key in ("reference_model=false", "centre_of_mass=false",
                                                       "use_contact_forces=false", "frame_skip=5")]
    budget = [*MUJOCO[:-5], "--set", "env.horizon=100", *(arg for key in gymnasium_ant for arg in ("--set", key)),
              "--set", "maml.step_budget=true", "--set", "policy.hidden_sizes=[16]", "--no-progress"]
    one = train(tmp_path / "one", 3, config="ant-vel/paper", size=budget)
    two = train(tmp_path / "two", 3, "--nproc", 2, config="ant-vel/paper", size=budget)
    assert_same_run(one, two)


def test_two_processes_evaluate_like_one(tmp_path, capsys):
    """Held-out tasks split over ranks: every curve (MAML, and a random policy beside it) equals one process's to
    the issue's tolerance (measured: equal, or 1 ulp apart where a per-task sum over 30 steps runs in another order
    for 2 tasks than for 4)."""
    run = train(tmp_path / "run", 1)
    results = {}
    for nproc in (1, 2):
        output = tmp_path / f"eval-{nproc}"
        code = main(["evaluate", str(run), "--tasks", "4", "--steps", "2", "--episodes", "3", "--random",
                     "--output", str(output), "--nproc", str(nproc)])
        assert code == 0, capsys.readouterr().err
        results[nproc] = json.loads((output / "adaptation.json").read_text())
    assert [p["label"] for p in results[1]["policies"]] == [p["label"] for p in results[2]["policies"]]
    for one, two in zip(results[1]["policies"], results[2]["policies"], strict=True):
        for a, b in zip(one["steps"], two["steps"], strict=True):
            assert b["returns"] == pytest.approx(a["returns"], rel=RTOL), (one["label"], a["step"])
    assert len(results[1]["policies"][0]["steps"]) == 3


@pytest.mark.parametrize(("extra", "message"), [
    (["--nproc", "0"], "--nproc: expected a number of processes >= 1, got 0"),
    (["--nproc", "3"], "--tasks=4 is not divisible by 3 processes"),
    (["--nproc", "5"], "5 processes for --tasks=4 tasks"),
])
def test_bad_evaluation_process_counts_are_one_line_errors(extra, message, tmp_path, capsys):
    run = train(tmp_path / "run", 1)
    capsys.readouterr()
    code = main(["evaluate", str(run), "--tasks", "4", "--output", str(tmp_path / "eval"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("maml-rl: error:") and message in err[0], err
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize(("first", "then"), [(2, 1), (1, 2)])
def test_a_checkpoint_moves_between_numbers_of_processes(first, then, tmp_path):
    reference = train(tmp_path / "reference", 3)
    run = train(tmp_path / "run", 2, "--nproc", first)
    code = main(["train", "--resume", str(run), "--set", "train.num_iterations=3", "--nproc", str(then),
                 "--no-progress"])
    assert code == 0
    assert_same_run(reference, run)


@pytest.mark.parametrize(("extra", "message"), [
    (["--nproc", "0"], "--nproc: expected a number of processes >= 1, got 0"),
    (["--nproc", "5"], "5 processes for maml.meta_batch_size=4 tasks"),
    (["--nproc", "3"], "maml.meta_batch_size=4 is not divisible by 3 processes"),
    (["--nproc", "2", "--set", "maml.baseline_scope=batch"],
     "maml.baseline_scope=batch fits one baseline over the whole meta-batch, which 2 processes would split"),
])
def test_bad_process_counts_are_one_line_errors(extra, message, tmp_path, capsys):
    code = main(["train", "navigation-2d/paper", "--output", str(tmp_path / "run"), *TINY, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("maml-rl: error:") and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_shards_are_contiguous_and_equal():
    shards = [World(size=2, rank=r).shard(6) for r in range(2)]
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 6)]
    assert shards[1].rows(4) == (12, 24)
    with pytest.raises(ShardError, match="not divisible"):
        check_shardable(6, 4)


def test_the_world_is_read_from_the_launcher_and_defaults_to_one_process():
    assert World.from_env({}) == World()
    world = World.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (world.size, world.rank, world.local_rank, world.local_size, world.is_main) == (4, 3, 1, 2, False)


ENTRY_POINTS = {"module": "runpy.run_module('maml_rl.cli', run_name='__main__')",  # python -m maml_rl.cli
                "command": "from maml_rl.cli import run; run()"}  # the maml-rl console script


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("world_size, finalized", [("2", False), ("1", True)])
def test_a_launched_worker_leaves_without_interpreter_finalization(world_size, finalized, entry):
    """``python -m maml_rl.cli`` or ``maml-rl`` under a launcher ends with ``exit_worker``: output flushed, status
    kept, no interpreter finalization (an ``atexit`` handler does not run), which is where gloo's worker thread can
    abort the process (see ``exit_worker``). One process exits normally."""
    code = ("import atexit, runpy, sys; atexit.register(print, 'finalized', flush=True); "
            "print('unflushed', end=''); sys.argv = ['maml-rl', 'train', 'no-such-config']; "
            + ENTRY_POINTS[entry])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WORLD_SIZE": world_size})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("maml-rl: error:") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout.startswith("unflushed")
    assert ("finalized" in done.stdout) == finalized


def test_one_process_reducer_sums_over_tasks_in_order():
    values = torch.tensor([[1.0, 2.0], [2.0, 3.0], [4.0, 5.0]])
    reducer = Reducer(3)
    assert torch.equal(reducer.sum_over_tasks(values), values.sum(0))
    assert torch.equal(reducer.mean_over_tasks(values), values.sum(0) / 3)
    assert reducer.sum(values) is values and reducer.sum_floats(1.0, 2.0) == [1.0, 2.0]
    assert Reducer(6, 2, 1).total_tasks(3) == 6


def _pid_of_rank(rank, parent_env_marker):
    """The pid of the worker process with ``RANK=rank`` started for this test (found by its environment)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")  # noqa: SIM115
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and parent_env_marker in environ:
            return int(pid)
    return None


def _signal_rank_1_of_a_running_job(tmp_path, sig, collective_timeout):
    """Start a long ``--nproc 2`` run, send ``sig`` to rank 1 once iteration 2 is checkpointed, and wait for the job
    to end (it must not hang). Returns ``(returncode, stderr, seconds from the signal to the end, run dir)``."""
    run = tmp_path / "run"
    marker = f"MAML_RL_TEST_MARKER={tmp_path.name}"
    command = [sys.executable, "-m", "maml_rl.cli", "train", "navigation-2d/paper", "--output", str(run), *TINY,
               "--set", "train.num_iterations=100000", "--set", "train.checkpoint_every=1", "--nproc", "2",
               "--collective-timeout", str(collective_timeout)]
    key, value = marker.split("=")
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, key: value})
    pid = None
    try:
        deadline = time.monotonic() + 60
        while not (run / "checkpoints" / "iter_000002.pt").exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        pid = _pid_of_rank(1, marker.encode())
        assert pid is not None
        os.kill(pid, sig)
        signalled = time.monotonic()
        _, err = process.communicate(timeout=90)  # ends, not hangs
        elapsed = time.monotonic() - signalled
    finally:
        if pid is not None:  # a stopped rank is killed, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
    return process.returncode, err, elapsed, run


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker through /proc")
def test_a_killed_rank_ends_the_job_with_a_message_naming_it(tmp_path):
    code, err, _, run = _signal_rank_1_of_a_running_job(tmp_path, signal.SIGKILL, collective_timeout=30)
    assert code != 0
    assert "rank      : 1 (local_rank: 1)" in err.split("Root Cause")[1]
    _, state = load_checkpoint(run)  # the last good checkpoint stays usable
    assert state["iteration"] >= 2


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker through /proc")
def test_a_hung_rank_ends_the_job_within_the_collective_timeout(tmp_path):
    """Rank 1 stops (SIGSTOP: alive, silent); rank 0's next collective times out and names itself and the cause."""
    code, err, elapsed, run = _signal_rank_1_of_a_running_job(tmp_path, signal.SIGSTOP, collective_timeout=5)
    assert code != 0
    assert elapsed < 60, elapsed
    assert "rank 0:" in err and "another rank probably stopped or hung" in err, err[-2000:]
    _, state = load_checkpoint(run)  # the last good checkpoint stays usable
    assert state["iteration"] >= 2


def test_sigterm_to_a_data_parallel_run_checkpoints_and_exits_like_one_process(tmp_path):
    """SIGTERM to ``maml-rl train --nproc 2`` reaches the workers; rank 0 checkpoints the last completed iteration,
    and the job ends with the single-process status (130) and message, without the launcher's traceback."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "maml_rl.cli", "train", "navigation-2d/paper", "--output", str(run), *TINY,
               "--set", "train.num_iterations=100000", "--set", "train.checkpoint_every=1000", "--nproc", "2"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(read_metrics(run / "metrics.csv")) < 2 if (run / "metrics.csv").exists() else True:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err[-2000:]
    assert "interrupted; the last completed iteration" in err and "Traceback" not in err, err[-2000:]
    iteration, state = load_checkpoint(run)
    # the last logged iteration, or the one before it when the signal fell between writing a metrics row and
    # taking that iteration's state (the resume then drops the row and repeats the iteration exactly)
    logged = len(read_metrics(run / "metrics.csv"))
    assert logged >= 2 and iteration in (logged - 1, logged) and state["iteration"] == iteration, (logged, iteration)


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nodes_on_one_machine_train_like_one_process(tmp_path):
    """Two `torchrun --nnodes 2` invocations (one process each) meeting at 127.0.0.1, as on two machines."""
    one = train(tmp_path / "one", 3)
    two = tmp_path / "two"
    port = _free_port()
    nodes = []
    for node in range(2):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
                   "-m", "maml_rl.cli", "train", "navigation-2d/paper", "--output", str(two), *TINY,
                   "--set", "train.num_iterations=3"]
        nodes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [node.communicate(timeout=240) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert "(2 processes)" in outputs[0][1]
    assert_same_run(one, two)


def test_batch_baseline_scope_reaches_the_learner_and_is_refused_under_a_launcher(tmp_path):
    # One process: the scope changes the advantages the TRPO step sees, so the same seed ends elsewhere.
    task = train(tmp_path / "task", 1, config="navigation-2d/pretrained")
    batch = train(tmp_path / "batch", 1, "--set", "maml.baseline_scope=batch", config="navigation-2d/pretrained")
    (_, state_task), (_, state_batch) = load_checkpoint(task), load_checkpoint(batch)
    assert any(not torch.equal(value, state_batch["policy"][name]) for name, value in state_task["policy"].items())
    # Several processes started by the user's own launcher reach the trainer, which refuses before any work.
    import dataclasses

    from maml_rl.config import load_config
    from maml_rl.trainer import Trainer

    config = load_config(task / "config.yaml")
    config = dataclasses.replace(config, maml=dataclasses.replace(config.maml, baseline_scope="batch"))
    with pytest.raises(ShardError, match="which 2 processes would split"):
        Trainer(config, tmp_path / "ranked", world=World(size=2, local_size=2))
    assert not (tmp_path / "ranked").exists()
