"""The benchmark scripts run and print their tables (tiny sizes: this checks the scripts, not the figures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def run_script(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_meta_iteration_prints_phases():
    out = run_script(
        "meta_iteration.py", "navigation-2d/paper", "--iterations", "1", "--warmup", "0",
        "--set", "maml.meta_batch_size=2", "--set", "maml.fast_batch_size=2", "--set", "env.horizon=5",
    )
    assert "tasks=2 episodes/task=2 horizon=5" in out
    assert "seconds per meta-iteration" in out and "environment steps / iteration        40" in out, out


def test_outer_step_prints_its_passes_and_the_cg_identity():
    out = run_script(
        "outer_step.py", "navigation-2d/paper", "--repeats", "1", "--set", "maml.meta_batch_size=2",
        "--set", "maml.fast_batch_size=2", "--set", "env.horizon=5", "--set", "policy.hidden_sizes=[8]",
    )
    for name in ("graph (second-order forward)", "meta-gradient (backward)", "fvp setup", "fvp ",
                 "line-search evaluation", "whole step (measured)"):
        assert name in out, out
    products = float(out.split("general double-vjp one: relative difference ")[1].split()[0])
    assert products < 1e-4, out  # the symmetric-Jacobian product equals the general one
    difference = float(out.split("(relative difference ")[1].split(")")[0])
    assert difference < 1e-3, out  # sᵀFs from CG's residual agrees with one more product


def test_sampler_throughput_prints_ratio():
    out = run_script(
        "sampler_throughput.py", "--family", "halfcheetah-vel", "--tasks", "2", "--episodes", "2",
        "--horizon", "5", "--repeats", "1",
    )
    assert "halfcheetah-vel" in out and "b/a" in out


def test_sampler_overhead_prints_the_three_figures():
    out = run_script(
        "sampler_overhead.py", "--family", "ant-vel", "--tasks", "2", "--episodes", "2", "--horizon", "5",
        "--repeats", "1",
    )
    line = next(line for line in out.splitlines() if line.startswith("ant-vel"))
    figures = [float(part.split()[0]) for part in line.split("physics")[1:]]
    assert "no active row" in line and len(figures) == 2 and all(f > 0 for f in figures), out


def test_locomotion_throughput_native_and_argument_errors():
    out = run_script("locomotion_throughput.py", "--family", "ant-vel", "--num-envs", "4", "--steps", "5",
                     "--repeats", "1")
    assert out.count("ant-vel") == 1
    for args, message in [
        (["--num-envs", "4", "8"], "the native backend takes one --num-envs"),
        (["--largest"], "--largest and --seconds need --backend warp"),
        (["--seconds", "2"], "--largest and --seconds need --backend warp"),
        (["--device", "cuda"], "--device cuda needs --backend warp"),
    ]:
        result = subprocess.run([sys.executable, str(BENCHMARKS / "locomotion_throughput.py"), *args], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_evaluation_speed_prints_seconds():
    out = run_script("evaluation_speed.py", "--tasks", "2", "--episodes", "2", "--steps", "1", "--repeats", "1")
    assert "navigation-2d: 2 tasks x 2 episodes x 2 rounds, horizon 100, device cpu" in out, out
    assert "seconds per evaluation" in out and "mean return per step" in out, out


def test_evaluation_speed_on_the_warp_backend_and_its_errors():
    pytest.importorskip("mujoco_warp")
    out = run_script("evaluation_speed.py", "halfcheetah-vel/paper", "--backend", "warp", "--tasks", "2",
                     "--episodes", "1", "--steps", "1", "--repeats", "1")
    assert "halfcheetah-vel: 2 tasks x 1 episodes x 2 rounds, horizon 200" in out, out
    for args, message in [(["nope/paper"], "config not found"), (["--run", "x", "--backend", "warp"], "--backend")]:
        result = subprocess.run([sys.executable, str(BENCHMARKS / "evaluation_speed.py"), *args], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def load_locomotion_throughput():
    return load_script(BENCHMARKS / "locomotion_throughput.py")


def test_largest_n_doubles_until_an_allocation_fails(monkeypatch, capsys):
    """``--largest`` without a GPU: the measurement is replaced by one that runs out of memory above N = 32."""
    module = load_locomotion_throughput()

    def fake_rate(name, num_envs, args, rng):
        if num_envs > 32:
            raise RuntimeError("Failed to allocate 1024 bytes on device 'cuda:0'")
        return 0.5, 1000.0 * num_envs, 1

    monkeypatch.setattr(module, "warp_rate", fake_rate)
    monkeypatch.setattr(sys, "argv", ["x", "--backend", "warp", "--family", "ant-vel", "--num-envs", "3", "8",
                                      "--largest", "--steps", "1", "--repeats", "1"])
    module.main()
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("ant-vel ") and "largest" not in line] == [
        "3", "8", "16", "32", "64"
    ]
    assert "out of memory" in out and "largest N that ran: 32 (the next ran out of memory)" in out


def test_largest_n_stops_at_the_cap_or_the_time_budget(monkeypatch, capsys):
    module = load_locomotion_throughput()
    monkeypatch.setattr(module, "warp_rate", lambda name, num_envs, args, rng: (0.5, 1000.0 * num_envs, 1))
    base = ["x", "--backend", "warp", "--family", "ant-vel", "--num-envs", "3", "--largest", "--growth", "4"]
    monkeypatch.setattr(sys, "argv", [*base, "--max-num-envs", "100"])
    module.main()
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("ant-vel ") and "largest" not in line] == [
        "3", "12", "48"
    ]
    assert "largest N that ran: 48 (the next would pass --max-num-envs 100)" in out
    monkeypatch.setattr(sys, "argv", [*base, "--budget", "1e-9"])
    module.main()
    assert "largest N that ran: 3 (--budget 1e-09 s spent; memory was not exhausted)" in capsys.readouterr().out


def test_other_errors_are_not_taken_for_out_of_memory(monkeypatch):
    module = load_locomotion_throughput()
    monkeypatch.setattr(module, "warp_rate", lambda *a: (_ for _ in ()).throw(RuntimeError("kernel failed")))
    monkeypatch.setattr(sys, "argv", ["x", "--backend", "warp", "--num-envs", "8", "--largest"])
    with pytest.raises(RuntimeError, match="kernel failed"):
        module.main()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage: benchmarks/gpu_kit.sh prepare | cpu | gpu"),
        (["cpu"], "carry .gpukit/one"),
        (["gpu"], "the first half is not here: this is a fresh machine"),
    ],
)
def test_gpu_kit_refuses_to_run_without_its_packages(tmp_path, args, message):
    """``gpu_kit.sh`` (the device machine's GPU check) stops with a message naming what is missing."""
    result = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_kit.sh"), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")},
    )
    assert result.returncode == 2 and message in result.stderr + result.stdout, result.stderr


def test_data_parallel_prints_both_process_counts():
    out = run_script(
        "data_parallel.py", "navigation-2d/paper", "--iterations", "2", "--rounds", "1",
        "--set", "maml.meta_batch_size=2", "--set", "maml.fast_batch_size=2", "--set", "env.horizon=5",
        "--set", "policy.hidden_sizes=[8]",
    )
    assert "1 process" in out and "2 processes" in out and "speed-up" in out, out


def test_blas_reproducibility_prints_every_setting():
    out = run_script("blas_reproducibility.py", "--rounds", "1")
    lines = out.splitlines()
    assert lines[0].startswith("MKL_CBWR") and [line.split()[0] for line in lines[1:]] == ["(empty)", "AUTO",
                                                                                            "AUTO,STRICT"], out
    assert all(float(value) > 0 for line in lines[1:] for value in line.split()[1:])


def test_step_budget_rounds_prints_both_batches():
    out = run_script(
        "step_budget_rounds.py", "ant-vel/paper", "--set", "maml.meta_batch_size=2", "--set", "maml.fast_batch_size=2",
        "--set", "env.horizon=30", "--set", "policy.hidden_sizes=[8]",
    )
    plain, budget = (line for line in out.splitlines() if line.startswith("ant-vel/paper"))
    assert "2 slots/task, 2.0 episodes/task" in plain
    steps = int(budget.split(" env steps")[0].rsplit(", ", 1)[1])
    assert "budget 60 steps" in budget and steps >= 2 * 60  # every task reached its budget


def test_packed_steps_prints_both_layouts_and_how_close_the_steps_are():
    out = run_script(
        "packed_steps.py", "ant-vel/paper", "--repeats", "1", "--set", "maml.meta_batch_size=2",
        "--set", "maml.fast_batch_size=2", "--set", "env.horizon=30", "--set", "policy.hidden_sizes=[8]",
        "--set", "algorithm.options.cg_iters=2",
    )
    assert "D_0: episodes [30, " in out and "D': episodes [30, " in out and "packed [" in out, out
    assert "outer step on episodes" in out and "outer step on packed" in out and "speed-up" in out, out
    assert float(out.split("packed step differs by ")[1].split()[0]) < 1e-3, out


def test_frozen_rounds_prints_both_batches_and_that_they_keep_the_same_episodes():
    out = run_script(
        "frozen_rounds.py", "ant-vel/paper", "--repeats", "1", "--set", "maml.meta_batch_size=4",
        "--set", "maml.fast_batch_size=3", "--set", "env.horizon=60", "--set", "policy.hidden_sizes=[8]",
    )
    assert "frozen  : " in out and "all rows: " in out and "speed-up" in out, out
    assert "the same kept episodes: True" in out, out
    frozen, plain = (int(line.split(" kept env steps, ")[1].split()[0].replace(",", ""))
                     for line in out.splitlines() if " simulated, " in line)
    assert frozen < plain, out


def test_fisher_products_prints_both_steps_their_ratio_and_how_alike_they_are():
    """A smooth (tanh) policy, where the finite-difference products at the reference's ε measure the same curvature
    as the exact ones: the two steps point the same way."""
    out = run_script(
        "fisher_products.py", "navigation-2d/paper", "--repeats", "1", "--set", "maml.meta_batch_size=4",
        "--set", "maml.fast_batch_size=4", "--set", "env.horizon=30", "--set", "policy.hidden_sizes=[16, 16]",
        "--set", "policy.activation=tanh",
    )
    assert "outer step, exact" in out and "outer step, finite-difference" in out, out
    assert float(out.split("finite-difference / exact: ")[1].split("x")[0]) > 0, out
    assert float(out.split("cosine between the two steps: ")[1].split()[0]) > 0.8, out
