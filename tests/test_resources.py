"""Memory and core checks: the estimate refuses impossible runs in one line, passes the presets, and is calibrated
against the peak memory of real meta-iterations."""

import json
import math
import pathlib
import subprocess
import sys

import pytest
import torch

from maml_rl import resources
from maml_rl.config import Config, ConfigError, from_dict, load_config
from maml_rl.resources import (
    MemoryEstimate,
    cap_threads,
    check_memory,
    estimate_evaluation_memory,
    estimate_training_memory,
    format_bytes,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
GIB = 2**30
#: (obs_dim, action_dim, discrete) of the families the presets use
DIMS = {
    "navigation-2d": (2, 2, False), "tabular-mdp": (10, 5, True), "halfcheetah-vel": (17, 6, False),
    "halfcheetah-dir": (17, 6, False), "ant-vel": (27, 8, False), "ant-dir": (27, 8, False),
    "ant-goal": (27, 8, False), "ant-dir2d": (27, 8, False), "hopper-params": (11, 3, False),
    "walker2d-params": (17, 6, False), "humanoid-dir": (348, 17, False),
}


def _dims(config: Config) -> tuple[int, int, bool]:
    if config.env.family == "bernoulli-bandit":
        return 1, int(config.env.options.get("num_arms", 5)), True
    return DIMS[config.env.family]


def _training(config: Config, horizon: int = 100) -> MemoryEstimate:
    return estimate_training_memory(config, *_dims(config), horizon=config.env.horizon or horizon)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("**/*.yaml")), ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_preset_fits_in_a_few_gib(path):
    """The largest presets (Ant/HalfCheetah paper: 800 sub-environments x 200 steps) estimate about 4.1 GiB;
    Humanoid's 348-value observations make its paper preset about 10 GiB, still within the 24 GiB machines.
    Memory grows with the sub-environments: Ant direction's paper preset samples 40 episodes per task (1600
    sub-environments), about 8.2 GiB, so the bound scales with ``fast_batch_size / 20``."""
    config = load_config(path)
    bound = (12 * GIB if config.env.family == "humanoid-dir" else 5 * GIB) * max(1.0, config.maml.fast_batch_size / 20)
    estimate = _training(config, horizon=200)
    assert 64 * 2**20 < estimate.total < bound
    check_memory(estimate, bound, "cpu")


def test_parameter_component_counts_the_mlp_exactly():
    config = from_dict({"policy": {"hidden_sizes": [3]}, "maml": {"meta_batch_size": 1, "num_inner_steps": 1}})
    estimate = estimate_training_memory(config, obs_dim=2, action_dim=4, discrete=False, horizon=10)
    p = (2 * 3 + 3) + (3 * 4 + 4) + 4  # layer 1, layer 2, log-std
    assert p == sum(x.numel() for x in resources_policy(2, 4, [3]).parameters())
    expected = resources.FLOAT * p * (resources.C_SHARED + resources.C_TASK * 2 * 1)
    assert estimate.parameters.bytes == expected


def resources_policy(obs_dim: int, action_dim: int, hidden: list[int]) -> torch.nn.Module:
    from maml_rl.policies import make_policy
    return make_policy(obs_dim, action_dim, False, hidden, "relu")


def test_episodes_component_is_linear_in_every_batch_dimension():
    base = from_dict({"maml": {"meta_batch_size": 10, "fast_batch_size": 5}})
    one = estimate_training_memory(base, 4, 2, False, horizon=50).episodes.bytes
    for overrides, factor in [({"meta_batch_size": 30}, 3), ({"fast_batch_size": 20}, 4), ({"num_inner_steps": 3}, 2)]:
        config = from_dict({"maml": {"meta_batch_size": 10, "fast_batch_size": 5, **overrides}})
        assert estimate_training_memory(config, 4, 2, False, horizon=50).episodes.bytes == factor * one
    assert estimate_training_memory(base, 4, 2, False, horizon=150).episodes.bytes == 3 * one
    # [T, N]: obs 4 floats, actions 2 floats (stacked twice), rewards, mask, advantages (+1 slack): 2 batches
    assert one == 2 * 50 * 50 * (4 * 4 + 4 * 2 * 2 + 4 * 4)


@pytest.mark.parametrize(
    ("data", "dims", "horizon", "key"),
    [
        ({"maml": {"meta_batch_size": 10_000_000}}, (2, 2, False), 100, "maml.meta_batch_size=10000000"),
        ({"maml": {"fast_batch_size": 10_000_000}}, (2, 2, False), 100, "maml.fast_batch_size=10000000"),
        ({"env": {"horizon": 1_000_000_000}}, (2, 2, False), 1_000_000_000, "env.horizon=1000000000"),
        ({"policy": {"hidden_sizes": [1_000_000, 1_000_000]}}, (2, 2, False), 100,
         "policy.hidden_sizes=[1000000, 1000000]"),
        ({"env": {"family": "bernoulli-bandit", "options": {"num_arms": 1_000_000_000}}},
         (1, 1_000_000_000, True), 10, "env.options.num_arms=1000000000"),
        ({"maml": {"num_inner_steps": 100_000}}, (2, 2, False), 100, "maml.num_inner_steps=100000"),
    ],
)
def test_impossible_runs_are_refused_naming_the_key(data, dims, horizon, key):
    estimate = estimate_training_memory(from_dict(data), *dims, horizon=horizon)
    with pytest.raises(ConfigError) as error:
        check_memory(estimate, 21 * GIB, "cpu")
    message = str(error.value)
    assert message.startswith(f"{key}: the run needs about ")
    assert "more than the 21.0 GiB available on cpu" in message and "\n" not in message


@pytest.mark.parametrize(("flag", "kwargs"), [
    ("--tasks=10000000", {"num_tasks": 10_000_000}),
    ("--episodes=10000000", {"episodes_per_task": 10_000_000}),
])
def test_evaluation_refuses_huge_protocols(flag, kwargs):
    protocol = {"num_tasks": 40, "episodes_per_task": 20, "num_steps": 3, **kwargs}
    estimate = estimate_evaluation_memory(Config(), 2, 2, False, 100, **protocol)
    with pytest.raises(ConfigError, match=f"^{flag}: the run needs"):
        check_memory(estimate, 8 * GIB, "cpu")
    default = estimate_evaluation_memory(Config(), 2, 2, False, 100, 40, 20, 3)
    check_memory(default, 1 * GIB, "cpu")
    assert default.total < _training(Config()).total  # no second-order graph, two batches


def test_message_lists_the_total_and_the_two_largest_parts():
    estimate = estimate_training_memory(from_dict({"maml": {"meta_batch_size": 10_000_000}}), 2, 2, False, 100)
    parts = list(estimate.components.values())
    assert parts[0].bytes >= parts[1].bytes >= parts[-1].bytes
    assert estimate.total == sum(p.bytes for p in parts)
    assert estimate.describe().startswith(f"{format_bytes(estimate.total)} (autograd graph ")


@pytest.mark.parametrize(("count", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (21.3 * GIB, "21.3 GiB"),
                                             (1.9 * 2**40, "1.9 TiB")])
def test_format_bytes(count, text):
    assert format_bytes(count) == text


# ----------------------------------------------------------------------------------------- the machine


def test_available_memory_is_meminfo_capped_by_the_cgroup(monkeypatch):
    monkeypatch.setattr(resources, "_meminfo_available", lambda: 10 * GIB)
    monkeypatch.setattr(resources, "cgroup_available", lambda: None)
    assert resources.available_memory("cpu") == 10 * GIB
    monkeypatch.setattr(resources, "cgroup_available", lambda: 3 * GIB)
    assert resources.available_memory(torch.device("cpu")) == 3 * GIB


def test_available_memory_on_this_machine_is_plausible():
    available = resources.available_memory("cpu")
    total = int(pathlib.Path("/proc/meminfo").read_text().split()[1]) * 1024  # MemTotal, the first line
    assert 64 * 2**20 < available <= total


def _fake_cgroup(tmp_path, monkeypatch, version: str, limit: str, usage: int, inactive: int) -> pathlib.Path:
    root = tmp_path / "cg"
    if version == "v2":
        group = root / "job"
        files = {"memory.max": limit, "memory.current": str(usage),
                 "memory.stat": f"anon 1\ninactive_file {inactive}\n"}
        proc = "0::/job\n"
    else:
        group = root / "memory" / "job"
        files = {"memory.limit_in_bytes": limit, "memory.usage_in_bytes": str(usage),
                 "memory.stat": f"cache 5\ntotal_inactive_file {inactive}\n"}
        proc = "4:memory:/job\n0::/\n"
    group.mkdir(parents=True)
    for name, text in files.items():
        (group / name).write_text(text)
    real_read_text = pathlib.Path.read_text

    def read_text(self, *args, **kwargs):
        return proc if str(self) == "/proc/self/cgroup" else real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    return root


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_cgroup_limit_minus_usage_plus_reclaimable_cache(tmp_path, monkeypatch, version):
    root = _fake_cgroup(tmp_path, monkeypatch, version, str(4 * GIB), usage=3 * GIB, inactive=GIB // 2)
    assert resources.cgroup_available(root) == GIB + GIB // 2


@pytest.mark.parametrize(("version", "limit"), [("v2", "max"), ("v1", str(2**63 - 4096))])
def test_no_cgroup_limit_means_none(tmp_path, monkeypatch, version, limit):
    root = _fake_cgroup(tmp_path, monkeypatch, version, limit, usage=GIB, inactive=0)
    assert resources.cgroup_available(root) is None


def test_threads_are_capped_at_the_usable_cores(monkeypatch):
    monkeypatch.setattr(resources, "usable_cores", lambda: 2)
    assert cap_threads(None) == (2, None)
    assert cap_threads(1) == (1, None)
    assert cap_threads(2) == (2, None)
    threads, warning = cap_threads(100_000)
    assert threads == 2
    assert warning == "train.num_threads=100000 is more than the 2 usable cores; using 2"


def test_usable_cores_is_the_affinity_set():
    assert resources.usable_cores() == len(__import__("os").sched_getaffinity(0)) >= 1


# ----------------------------------------------------------------------------------------- calibration

MEASURE = r"""
import json, resource, sys, tempfile
import torch
from maml_rl.build import build_family, horizon_of, policy_dims
from maml_rl.config import load_config
from maml_rl.resources import estimate_training_memory
from maml_rl.trainer import Trainer

config = load_config(sys.argv[1], sys.argv[2:])
family = build_family(config)
estimate = estimate_training_memory(config, *policy_dims(family), horizon_of(config, family))
torch.ones(3, 3) @ torch.ones(3, 3)
before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
with tempfile.TemporaryDirectory() as run_dir:
    Trainer(config, run_dir).meta_iteration()
# VmHWM: this process's own peak; ru_maxrss would include the parent's RSS at fork (Linux keeps it across exec)
status = open("/proc/self/status").read()
peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
print(json.dumps({"measured": peak - before, "estimate": estimate.total}))
"""


@pytest.mark.parametrize("args", [
    ["navigation-2d/paper.yaml", "maml.meta_batch_size=100", "maml.fast_batch_size=10", "env.horizon=20"],
    ["bandit/k50-n10.yaml", "env.options.num_arms=500", "maml.meta_batch_size=20"],
    ["halfcheetah-vel/modern.yaml", "maml.meta_batch_size=10", "maml.fast_batch_size=10", "env.horizon=50"],
], ids=["navigation-100-tasks", "bandit-500-arms", "halfcheetah-small"])
def test_estimate_bounds_the_measured_peak_of_a_meta_iteration(args):
    """measured increase <= estimate <= 4 x measured increase (module docstring: how the constants were set).

    Peak RSS varies by a few percent between identical runs (allocator reuse), hence the 10 % allowance.
    """
    command = [sys.executable, "-c", MEASURE, str(EXPERIMENTS / args[0]), "train.seed=3", *args[1:]]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, check=True)
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    measured, estimate = numbers["measured"], numbers["estimate"]
    assert measured > 0 and math.isfinite(estimate)
    assert measured <= 1.1 * estimate and estimate <= 4 * measured, numbers


def test_data_parallel_ranks_estimate_their_shard_and_share_the_machine():
    """Each rank holds M / R tasks; the local ranks of a CPU run need their estimates from the same memory."""
    config = load_config("experiments/halfcheetah-vel/paper.yaml")
    whole = estimate_training_memory(config, 20, 6, False, 200)
    half = estimate_training_memory(config, 20, 6, False, 200, tasks=20)
    assert whole.episodes.bytes == 2 * half.episodes.bytes and half.total < whole.total
    resources.check_memory(half, half.total, "cpu")  # one process: fits exactly
    with pytest.raises(ConfigError, match=r"per process × 2 processes on this machine, more than"):
        resources.check_memory(half, 2 * half.total - 1, "cpu", processes=2)
    resources.check_memory(half, 2 * half.total, "cpu", processes=2)
