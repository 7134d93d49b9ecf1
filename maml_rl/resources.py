"""What the machine has (memory, cores) and what a run will need, checked before anything big is allocated.

>>> estimate = estimate_training_memory(config, obs_dim=17, action_dim=6, discrete=False, horizon=200)
>>> check_memory(estimate, available_memory(torch.device("cpu")), torch.device("cpu"))   # ConfigError if short
>>> threads, warning = cap_threads(config.train.num_threads)

The estimate models one meta-iteration at its peak, the outer step, from the sizes alone (``M`` tasks, ``E``
episodes per task, ``N = M·E``, horizon ``T``, ``K`` inner steps, observation size ``O``, action-distribution
size ``A``, hidden widths ``h_i`` with ``H = Σ h_i``, ``P`` policy parameters; float32, 4 bytes):

* **parameters** ``4·(C_SHARED·P + C_TASK·(K+1)·M·P)``: the shared parameters and the outer step's flat vectors
  (gradient, CG iterates, line-search copies), and the per-task parameters ``[M, P]`` with their inner
  gradients, kept in the graph once per inner step and again for the validation pass.
* **episodes** ``(K+1)·T·N·(4·O + action + 4·4)`` bytes: every inner step's batch plus the validation batch
  (observations, actions as float32 ``[A]`` or int64, rewards, mask, advantages; the actions are briefly held
  twice while stacked).
* **baseline fit** ``C_BASELINE·8·T·N·(2·O + 4)``: the linear baseline's float64 features of one batch and
  their task-major copy (transient, while advantages are computed).
* **outer-step graph** ``C_GRAPH·4·(K+1)·T·N·(O + 2·H + 3·A)``: what autograd keeps for the second-order
  meta-gradient: every layer's input and activation for every training batch and the validation batch, the
  inner backward pass built with ``create_graph``, the Gauss-Newton ``Jᵀu`` graph and the products' transient
  gradients. First-order MAML keeps less; the estimate does not distinguish (it stays an upper bound).
* **environment** ``N·(bytes per sub-environment)``: the vectorized environment's own state (a MuJoCo state
  row per sub-environment for locomotion, measured about 1.5 KiB for HalfCheetah and 2.2 KiB for Ant) and the
  task arrays repeated per sub-environment (held about three times: sampled, repeated, on the device).

The constants were calibrated against measured peak resident memory (``VmHWM`` after one meta-iteration
minus the resident memory before the trainer was built; ``tests/test_resources.py`` repeats the measurement).
Measured that way (2 cores, torch 2.13): navigation with 100 tasks 282 MB against an estimate of 571 MB, a
500-arm bandit 310 against 551 MB, a small HalfCheetah 114 against 151 MB, ``halfcheetah-vel/paper`` 1326
against 3993 MB.

* ``C_GRAPH = 7``: the second-order graph of a ReLU MLP holds its forward activations, the create-graph inner
  backward pass (about as large again), the Gauss-Newton product's vjp graph, and transient gradients of the
  same size during each product; six activation-sized copies per sample covered every measured configuration.
* ``C_TASK = 8`` and ``C_SHARED = 16``: parameter-sized tensors per task and per shared parameter (``θ'``,
  inner gradients, their gradients in double backward; CG and line-search vectors).
* ``C_BASELINE = 3``: features, the masked features and their flattened copy.
* ``FIXED_BYTES = 64 MiB``: per-run overhead independent of the sizes (thread pools, the MuJoCo model,
  TensorBoard's writer, allocator slack).

The estimate is meant to lie between the measured peak and about four times it, so that a run that fits is
never refused on a machine with a few GB free and a run that cannot fit is refused before it allocates.
Evaluation (:func:`estimate_evaluation_memory`) holds at most two batches at a time, adapts first order and
keeps no outer-step graph.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from maml_rl.config import Config, ConfigError

FLOAT = 4  # bytes per float32
C_GRAPH = 7
C_TASK = 8
C_SHARED = 16
C_BASELINE = 3
FIXED_BYTES = 64 * 2**20
#: a cgroup memory limit at or above this means "no limit" (cgroup v1 reports about 2**63)
_NO_LIMIT = 2**60

#: measured bytes per sub-environment of the families whose state lives outside torch (MuJoCo state rows,
#: observation buffers, rounded up); families not listed get ``_DEFAULT_ENV_BYTES`` plus their task arrays
_ENV_BYTES = {"halfcheetah": 2048, "ant": 3072}
_DEFAULT_ENV_BYTES = 1024


# ----------------------------------------------------------------------------------------- the machine


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    """``MemAvailable`` in bytes, or None where ``/proc/meminfo`` is missing or lacks it."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _inactive_file(stat: Path, key: str) -> int:
    """Reclaimable page cache (``inactive_file``) from a cgroup's ``memory.stat``; 0 when unknown."""
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return 0
    return 0


def _cgroup_dirs(root: Path) -> tuple[list[Path], str]:
    """The memory cgroup directories of this process, innermost first, and the cgroup version ("v1"/"v2")."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return [], ""
    for version, mount, wanted in (("v2", root, ""), ("v1", root / "memory", "memory")):
        for line in lines:
            parts = line.split(":", 2)
            if len(parts) != 3 or (version == "v2" and parts[0] != "0"):
                continue
            if version == "v1" and wanted not in parts[1].split(","):
                continue
            limit_file = "memory.max" if version == "v2" else "memory.limit_in_bytes"
            # Inside a cgroup namespace the mount is the process's own cgroup: also try the mount itself.
            relative = Path(parts[2].lstrip("/"))
            dirs = [mount / relative, *(mount / parent for parent in relative.parents)]
            found = [d for d in dict.fromkeys([*dirs, mount]) if (d / limit_file).exists()]
            if found:
                return found, version
    return [], ""


def cgroup_available(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left under this process's cgroup memory limits (the tightest one on the path), or None if unlimited.

    cgroup v2: ``memory.max − memory.current``; v1: ``memory.limit_in_bytes − memory.usage_in_bytes``; both plus
    the reclaimable ``inactive_file`` page cache of that cgroup.
    """
    dirs, version = _cgroup_dirs(root)
    limit_file, usage_file, cache_key = (
        ("memory.max", "memory.current", "inactive_file")
        if version == "v2"
        else ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    )
    best: int | None = None
    for directory in dirs:
        limit = _read_int(directory / limit_file)
        usage = _read_int(directory / usage_file)
        if limit is None or limit >= _NO_LIMIT or usage is None:
            continue
        left = max(0, limit - usage + _inactive_file(directory / "memory.stat", cache_key))
        best = left if best is None else min(best, left)
    return best


def available_memory(device: torch.device | str) -> int:
    """Bytes a run can still allocate on ``device``.

    CPU: ``MemAvailable`` from ``/proc/meminfo``, capped by the cgroup limit when one is set. Where ``/proc`` is
    missing (not Linux) it falls back to ``os.sysconf`` (free physical pages), and to ``2**63 − 1`` ("unknown,
    do not refuse") when that fails too. CUDA: the free memory ``torch.cuda.mem_get_info`` reports.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 2**63 - 1
    limit = cgroup_available()
    return min(available, limit) if limit is not None else available


def usable_cores() -> int:
    """Cores this process may run on: ``len(os.sched_getaffinity(0))``, else ``os.cpu_count()``, else 1."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cap_threads(requested: int | None, key: str = "train.num_threads") -> tuple[int, str | None]:
    """The number of threads to use and, when ``requested`` exceeded the usable cores, a one-line warning.

    Args:
        requested: threads asked for (None: all usable cores).
        key: how the request is named in the warning.

    Returns:
        ``(threads, warning)``; ``warning`` is None unless the request was capped (the caller prints it).
    """
    cores = usable_cores()
    if requested is None:
        return cores, None
    if requested > cores:
        return cores, f"{key}={requested} is more than the {cores} usable cores; using {cores}"
    return requested, None


# ----------------------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class Component:
    """One part of a memory estimate.

    Attributes:
        bytes: its size in bytes.
        key: the config key (or CLI flag) that drives it most, e.g. ``maml.meta_batch_size``.
        value: that key's value.
    """

    bytes: int
    key: str
    value: Any


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of a run, by component (bytes); see the module docstring for the model.

    Attributes:
        parameters: shared and per-task (``[M, P]``) parameters, their gradients, the outer step's vectors.
        episodes: every batch of episodes held at once (``[T, N, …]`` tensors).
        baseline: the linear baseline's transient features.
        graph: the autograd graph (second-order outer step in training, the first-order inner step in evaluation).
        environment: the vectorized environment's state and tasks, and a fixed per-run overhead.
    """

    parameters: Component
    episodes: Component
    baseline: Component
    graph: Component
    environment: Component

    NAMES: ClassVar[dict[str, str]] = {"parameters": "parameters", "episodes": "episodes", "baseline": "baseline fit",
                                       "graph": "autograd graph", "environment": "environment"}

    @property
    def components(self) -> dict[str, Component]:
        """The components by name, largest first."""
        parts = {name: getattr(self, name) for name in self.NAMES}
        return dict(sorted(parts.items(), key=lambda item: -item[1].bytes))

    @property
    def total(self) -> int:
        """Bytes in all."""
        return sum(part.bytes for part in self.components.values())

    @property
    def dominant(self) -> Component:
        """The largest component."""
        return next(iter(self.components.values()))

    def describe(self, parts: int = 2) -> str:
        """``"1.9 TiB (episodes 1.2 TiB, autograd graph 0.6 TiB)"``: the total and its largest parts."""
        largest = [f"{self.NAMES[name]} {format_bytes(part.bytes)}"
                   for name, part in list(self.components.items())[:parts]]
        return f"{format_bytes(self.total)} ({', '.join(largest)})"


def format_bytes(count: float) -> str:
    """``1.9 TiB``, ``21.3 GiB``, ``512.0 MiB``: binary units, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(count) < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class _Factor:
    """A size that multiplies into a component: ``key=value``, ``typical`` its usual size."""

    key: str
    value: Any
    size: float
    typical: float


def _driver(factors: Sequence[_Factor]) -> tuple[str, Any]:
    """The factor furthest above its typical size: the key a user most likely set too large."""
    worst = max(factors, key=lambda factor: factor.size / factor.typical)
    return worst.key, worst.value


def _dims_factor(config: Config, size: float) -> _Factor:
    """The observation/action sizes come from the family and its options: name the largest numeric option."""
    numeric = {name: value for name, value in config.env.options.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    if numeric:
        name = max(numeric, key=lambda key: numeric[key])
        return _Factor(f"env.options.{name}", numeric[name], size, 100)
    return _Factor("env.family", config.env.family, size, 100)


def _parameter_count(obs_dim: int, action_dim: int, discrete: bool, hidden_sizes: Sequence[int]) -> int:
    """Parameters of the MLP policy (weights, biases; the Gaussian's log-std): exact, without building it."""
    sizes = [obs_dim, *hidden_sizes, action_dim]
    count = sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(sizes))
    return count + (0 if discrete else action_dim)


def _environment_bytes(config: Config, obs_dim: int, action_dim: int) -> int:
    """Bytes per sub-environment: measured state for MuJoCo families, else the task arrays held three times."""
    family = config.env.family
    for prefix, size in _ENV_BYTES.items():
        if family.startswith(prefix):
            return size
    if family == "bernoulli-bandit":  # arm means [K]
        task = action_dim
    elif family == "tabular-mdp":  # transitions [S, A, S] and mean rewards [S, A], observations one-hot [S]
        task = obs_dim * action_dim * obs_dim + obs_dim * action_dim
    else:
        task = obs_dim
    return _DEFAULT_ENV_BYTES + 3 * FLOAT * task


def _sizes(config: Config, obs_dim: int, action_dim: int, discrete: bool) -> dict[str, float]:
    hidden = config.policy.hidden_sizes
    return {
        "P": float(_parameter_count(obs_dim, action_dim, discrete, hidden)),
        "sample": float(obs_dim + 2 * sum(hidden) + 3 * action_dim),  # floats per (t, n) in a forward pass
        "episode": float(FLOAT * obs_dim + (8 if discrete else FLOAT * 2 * action_dim) + 4 * FLOAT),  # bytes
        "features": float(2 * obs_dim + 4),
    }


def _estimate(
    config: Config,
    obs_dim: int,
    action_dim: int,
    discrete: bool,
    horizon: int,
    tasks: _Factor,
    episodes: _Factor,
    batches: _Factor,
    graph_batches: float,
    graph_copies: float,
    task_copies: float,
) -> MemoryEstimate:
    """The shared model of :func:`estimate_training_memory` and :func:`estimate_evaluation_memory`."""
    sizes = _sizes(config, obs_dim, action_dim, discrete)
    m, e, t = float(tasks.size), float(episodes.size), float(horizon)
    n = m * e
    horizon_key = "env.horizon" if config.env.horizon is not None else "env.family"
    horizon_value = config.env.horizon if config.env.horizon is not None else config.env.family
    steps = _Factor(horizon_key, horizon_value, t, 200)
    width = _Factor("policy.hidden_sizes", list(config.policy.hidden_sizes), float(sum(config.policy.hidden_sizes)),
                    200)
    dims = _dims_factor(config, float(max(obs_dim, action_dim)))
    batch_factors = [tasks, episodes, steps, batches]

    parameters = FLOAT * sizes["P"] * (C_SHARED + task_copies * m)
    episode_bytes = batches.size * t * n * sizes["episode"]
    baseline = C_BASELINE * 8 * t * n * sizes["features"]
    graph = graph_copies * FLOAT * graph_batches * t * n * sizes["sample"]
    environment = n * _environment_bytes(config, obs_dim, action_dim) + FIXED_BYTES

    def part(size: float, factors: Sequence[_Factor]) -> Component:
        return Component(int(min(size, 2**80)), *_driver(factors))

    return MemoryEstimate(
        parameters=part(parameters, [width, dims, tasks]),
        episodes=part(episode_bytes, [*batch_factors, dims]),
        baseline=part(baseline, [tasks, episodes, steps, dims]),
        graph=part(graph, [*batch_factors, width, dims]),
        environment=part(environment, [tasks, episodes, dims]),
    )


def estimate_training_memory(
    config: Config, obs_dim: int, action_dim: int, discrete: bool, horizon: int, tasks: int | None = None
) -> MemoryEstimate:
    """Peak memory of one meta-iteration of ``config`` (see the module docstring), before anything is built.

    Args:
        config: the validated config (``maml.*`` sizes, ``policy.hidden_sizes``, ``algorithm``).
        obs_dim: observation size ``O`` of the family.
        action_dim: action size for continuous actions, number of actions for discrete ones (``A``).
        discrete: whether actions are integers (categorical policy).
        horizon: episode length ``T`` (``build.horizon_of``).
        tasks: the tasks this process holds (``M / R`` in data-parallel training; None: all ``M``).
    """
    maml = config.maml
    tasks = maml.meta_batch_size if tasks is None else tasks
    from maml_rl.metalearners import learner_class  # here: the learners import much of the package

    inner = maml.num_inner_steps if learner_class(config.algorithm.name).adapts else 0
    return _estimate(
        config, obs_dim, action_dim, discrete, horizon,
        tasks=_Factor("maml.meta_batch_size", maml.meta_batch_size, tasks, 40),
        # maml.step_budget (E × horizon steps) needs at least one round of E episodes: the same minimum
        episodes=_Factor("maml.fast_batch_size", maml.fast_batch_size, maml.fast_batch_size, 20),
        batches=_Factor("maml.num_inner_steps", maml.num_inner_steps, inner + 1, 2),
        graph_batches=inner + 1,
        graph_copies=C_GRAPH,
        task_copies=C_TASK * (inner + 1),
    )


def _episodes_factor(key: str, episodes: int, budget_key: str, budget: int | None, horizon: int) -> _Factor:
    """Episode slots per task: ``E`` per round, times the rounds a step budget needs at least (episodes that run
    the whole horizon; episodes that end early need more rounds, which the estimate cannot know in advance)."""
    rounds = 1 if budget is None else max(1, math.ceil(budget / (episodes * horizon)))
    if rounds == 1:
        return _Factor(key, episodes, episodes, 20)
    return _Factor(budget_key, budget, episodes * rounds, 20)


def estimate_evaluation_memory(
    config: Config,
    obs_dim: int,
    action_dim: int,
    discrete: bool,
    horizon: int,
    num_tasks: int,
    episodes_per_task: int,
    num_steps: int,
    budget_steps: int | None = None,
) -> MemoryEstimate:
    """Peak memory of evaluating one row: ``num_tasks × episodes_per_task`` sub-environments, ``num_steps`` steps.

    Two batches are alive at once (the last one and the one being sampled); each inner step is first order,
    so the graph is one forward and backward pass over one batch; parameters are ``[n, P]`` times a few.

    Args:
        config: the evaluated run's config.
        obs_dim: observation size ``O``.
        action_dim: action size, or number of actions when ``discrete`` (``A``).
        discrete: whether actions are integers.
        horizon: episode length ``T``.
        num_tasks: ``--tasks``.
        episodes_per_task: ``--episodes``.
        num_steps: ``--steps`` (adaptation steps ``K``).
        budget_steps: ``--budget-steps`` (None: one round of ``episodes_per_task``).
    """
    return _estimate(
        config, obs_dim, action_dim, discrete, horizon,
        tasks=_Factor("--tasks", num_tasks, num_tasks, 40),
        episodes=_episodes_factor("--episodes", episodes_per_task, "--budget-steps", budget_steps, horizon),
        batches=_Factor("--steps", num_steps, 2, 2),  # two batches alive, however many steps
        graph_batches=1,
        graph_copies=C_GRAPH / 2 if num_steps > 0 else 0,
        task_copies=4,
    )


def check_memory(estimate: MemoryEstimate, available: int, device: torch.device | str, processes: int = 1) -> None:
    """Refuse a run whose estimate exceeds ``available`` bytes on ``device``.

    Args:
        estimate: one process's estimate.
        available: bytes free on ``device``.
        device: where the memory is needed.
        processes: processes that need ``estimate`` each from the same memory (the local ranks of a data-parallel
            run on the CPU; 1 on a GPU of their own).

    Raises:
        ConfigError: one line naming the key that drives the largest component, the estimate and what is free,
            e.g. ``maml.meta_batch_size=10000000: the run needs about 1.9 TiB (episodes 1.2 TiB, autograd graph
            0.6 TiB), more than the 21.3 GiB available on cpu``.
    """
    if estimate.total * processes <= available:
        return
    dominant = estimate.dominant
    value = dominant.value
    shown = f"[{', '.join(str(v) for v in value)}]" if isinstance(value, list) else value
    each = f" per process × {processes} processes on this machine" if processes > 1 else ""
    raise ConfigError(
        f"{dominant.key}={shown}: the run needs about {estimate.describe()}{each}, more than the "
        f"{format_bytes(available)} available on {torch.device(device)}"
    )
