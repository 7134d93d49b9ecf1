"""Adaptation curves on held-out tasks (docs/architecture.md §6).

    checkpoint -> held-out tasks (evaluation seed) -> collect with α_0 … α_{K-1} (the training data path:
    for k < K: sample E episodes per task with θ_k, advantages, θ_{k+1} = adapt(θ_k, α_k); sample with θ_K)
    -> each batch's per-task mean return -> curve (CSV/JSON, PNG, TensorBoard)

``α_0 = maml.fast_lr`` of the evaluated run and ``α_k = s α_0`` after, with ``s = evaluation.later_step_scale`` (1/2,
the paper's protocol, unless the run's config says otherwise); the inner
estimator is the one the run's meta-learner trained with. The tasks,
environment resets and action noise come from a seed stream that training never draws from (see
:func:`evaluation_streams`), and every row of a comparison (MAML, pretrained, random, oracle) gets the same
tasks from the same evaluation seed.

>>> row = load_run("runs/nav-seed1")                                   # latest checkpoint
>>> curve = evaluate_row(row, Protocol(num_tasks=40, num_steps=3, episodes_per_task=20))
>>> curve.mean, curve.stderr                                           # [K + 1] each
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from maml_rl import resources
from maml_rl.build import Generators, build_family, build_policy, horizon_of, policy_dims
from maml_rl.checkpoint import CheckpointError, check_fits, checkpoint_path, load_checkpoint
from maml_rl.collect import MetaBatch, collect
from maml_rl.config import Config, load_config
from maml_rl.distributed import World
from maml_rl.errors import EvaluationError, NonFiniteError
from maml_rl.evaluation_protocol import Protocol, check_output, check_run_dir
from maml_rl.logging import write_adaptation_results
from maml_rl.metalearners import inner_loss_of
from maml_rl.plotting import adaptation_figure, figure_to_rgb, save_png
from maml_rl.policies import Policy
from maml_rl.reference_tasks import REFERENCE_TASK_COUNT, ReferenceTaskSet, reference_task_set
from maml_rl.rundir import CONFIG_FILE

#: spawn key of the evaluation seed stream; training spawns its streams with keys (0,) … (3,), never this one
EVAL_STREAM = 0xE7A1


def protocol_for(config: Config, num_tasks: int, num_steps: int, seed: int, episodes: int | None = None,
                 budget_steps: int | None = None, task_set: str = "sampled") -> Protocol:
    """The protocol of ``maml-rl evaluate`` for a run of ``config``: ``episodes`` (None: ``evaluation.episodes``)
    and ``budget_steps`` (None: ``episodes × horizon`` with ``evaluation.step_budget``, else none; 0: none).

    Raises:
        EvaluationError: ``task_set`` is ``reference`` and the reference code evaluated no such family.
    """
    episodes = config.evaluation.episodes if episodes is None else episodes
    if budget_steps is None and config.evaluation.step_budget:
        budget_steps = episodes * horizon_of(config, build_family(config))
    protocol = Protocol(num_tasks, num_steps, episodes, seed, budget_steps or None, task_set)
    if task_set == "reference":
        _reference_set(config.env.family)
    return protocol


def _reference_set(family: str) -> ReferenceTaskSet:
    """:func:`maml_rl.reference_tasks.reference_task_set`, its error as an :class:`EvaluationError`."""
    try:
        return reference_task_set(family)
    except ValueError as error:
        raise EvaluationError(str(error)) from None


@dataclass(frozen=True)
class Row:
    """One policy to evaluate: a checkpoint of a run, or a fresh initialization.

    Attributes:
        label: the name in tables, legends and TensorBoard tags.
        config: the run's config (policy structure, family, horizon, ``α``, ``γ``, ``λ``).
        policy: the policy module holding the parameters ``θ_0``.
        oracle: the policy sees the task in its observation; it is evaluated at ``k = 0`` only.
        source: where the parameters come from (``run_dir``, ``checkpoint``, ``algorithm``), for the outputs.
    """

    label: str
    config: Config
    policy: Policy
    oracle: bool = False
    source: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class AdaptationCurve:
    """Returns of one policy over adaptation steps.

    Attributes:
        label: the row's label.
        returns: ``[K + 1, n]`` mean undiscounted episode return of each task after ``k`` steps.
        step_sizes: ``[K]`` the inner step sizes ``α_k`` used.
        source: the row's provenance.
    """

    label: str
    returns: np.ndarray
    step_sizes: tuple[float, ...]
    source: dict[str, Any]

    @property
    def mean(self) -> np.ndarray:
        """``[K + 1]`` mean return over tasks."""
        return self.returns.mean(axis=1)

    @property
    def stderr(self) -> np.ndarray:
        """``[K + 1]`` standard error of the mean over tasks (``std(ddof=1) / √n``)."""
        return self.returns.std(axis=1, ddof=1) / np.sqrt(self.returns.shape[1])

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``adaptation.json``: provenance, step sizes and, per step, mean, stderr, returns."""
        steps = [
            {"step": k, "mean": float(m), "stderr": float(s), "returns": [float(r) for r in row]}
            for k, (m, s, row) in enumerate(zip(self.mean, self.stderr, self.returns, strict=True))
        ]
        return {"label": self.label, **self.source, "step_sizes": list(self.step_sizes), "steps": steps}


def evaluation_streams(seed: int, device: torch.device) -> Generators:
    """Streams no training run can produce: training spawns ``SeedSequence(s)`` children with keys ``(i,)``,
    these have keys ``(EVAL_STREAM, i)``, so they differ for every pair of training and evaluation seeds.
    ``init_generator()`` seeds the random-initialization row."""
    return Generators.from_seed(seed, device, spawn_key=(EVAL_STREAM,))


def step_sizes(fast_lr: float, num_steps: int, later_scale: float = 0.5) -> tuple[float, ...]:
    """``(α, sα, sα, …)`` with ``s = later_scale``: ``num_steps`` inner step sizes of the evaluation protocol
    (``s = 0.5``, the paper's, unless the run's ``evaluation.later_step_scale`` says otherwise)."""
    return tuple(fast_lr if k == 0 else fast_lr * later_scale for k in range(num_steps))


def step_sizes_of(config: Config, num_steps: int) -> tuple[float, ...]:
    """The evaluation's step sizes for a run of ``config``: ``maml.fast_lr``, then ``evaluation.later_step_scale``
    times it."""
    return step_sizes(config.maml.fast_lr, num_steps, config.evaluation.later_step_scale)


def adaptation_returns(
    policy: Policy, config: Config, protocol: Protocol, num_steps: int, device: torch.device,
    world: World | None = None,
) -> np.ndarray:
    """Run the protocol for one policy: ``[num_steps + 1, n]`` per-task mean returns after ``k`` steps.

    One :func:`maml_rl.collect.collect` over ``n`` held-out tasks (``n × E`` sub-environments) with step sizes
    ``α, α/2, …``: the same sample → advantages → adapt path as meta-training. With a distributed ``world`` each
    rank runs its contiguous shard of the tasks (its rows of the ``n × E`` sub-environments, so resets and action
    noise are those of one process running all of them) and every rank returns all ``n`` tasks' returns.

    Args:
        policy: holds ``θ_0`` (not modified).
        config: the run's config (family and options, horizon, action scale, ``α``, ``γ``, ``λ``, meta-learner).
        protocol: tasks, episodes and seed.
        num_steps: ``K`` (the protocol's, or 0 for an oracle).
        device: where the environment and the policy run.
        world: the ranks of a data-parallel evaluation (None: this process alone).
    """
    world = world if world is not None else World()
    batch = evaluation_batch(policy, config, protocol, num_steps, device, world)
    reducer = world.reducer(protocol.num_tasks)
    returns = [reducer.gather_tasks(episodes.task_returns()) for episodes in batch.batches]
    for k, task_returns in enumerate(returns):
        if not bool(torch.isfinite(task_returns).all()):
            raise EvaluationError(f"non-finite returns at adaptation step {k}")
    return np.stack([r.cpu().numpy().astype(np.float64) for r in returns])


def evaluation_batch(
    policy: Policy, config: Config, protocol: Protocol, num_steps: int, device: torch.device, world: World
) -> MetaBatch:
    """The protocol's episodes for one policy: ``batches[k]`` sampled after ``k`` adaptation steps (this rank's
    shard of the tasks; see :func:`adaptation_returns`)."""
    family = build_family(config)
    streams = evaluation_streams(protocol.seed, device)
    n, per_task = protocol.num_tasks, protocol.episodes_per_task
    shard = world.shard(n, key="--tasks")
    env = family.make_vector_env(
        shard.size * per_task, max_episode_steps=horizon_of(config, family), device=family.env_device(device)
    )
    if world.distributed:
        env.set_rows(*shard.rows(per_task))
    tasks = held_out_tasks(family, protocol)
    env.set_tasks(envs.repeat_tasks({key: value[shard.start:shard.stop] for key, value in tasks.items()}, per_task))
    shared = {name: p.detach() for name, p in policy.named_parameters()}
    try:
        batch = collect(env, policy, shared, config, shard.size, step_sizes_of(config, num_steps),
                        streams, inner_loss_of(config), budget=protocol.budget_steps, any_rank=world.any_failed)
    except NonFiniteError as error:
        raise EvaluationError(f"{error} during the evaluation") from error
    return batch


def held_out_tasks(family: envs.TaskFamily, protocol: Protocol) -> dict[str, np.ndarray]:
    """The protocol's ``num_tasks`` held-out tasks of ``family`` (``{key: [n, ...]}``), the same for every row of a
    comparison: drawn from the evaluation seed stream, or the reference's (``protocol.task_set``)."""
    if protocol.task_set == "reference":
        return _reference_set(family.name).tasks()
    return family.sample_tasks(protocol.num_tasks, evaluation_streams(protocol.seed, torch.device("cpu")).tasks)


def evaluate_row(row: Row, protocol: Protocol, device: torch.device | str = "cpu", world: World | None = None
                 ) -> AdaptationCurve:
    """The adaptation curve of one row; an oracle row gets ``k = 0`` only (``world``: see
    :func:`adaptation_returns`).

    Raises:
        EvaluationError: the policy produced non-finite outputs (for instance after an adaptation step).
    """
    device = torch.device(device)
    num_steps = 0 if row.oracle else protocol.num_steps
    policy = row.policy.to(device)
    try:
        returns = adaptation_returns(policy, row.config, protocol, num_steps, device, world)
    except NonFiniteError as error:
        raise EvaluationError(f"{row.label}: {error}") from error
    return AdaptationCurve(row.label, returns, step_sizes_of(row.config, num_steps), row.source)


# ------------------------------------------------------------------------------------------- rows


def _kind(config: Config) -> str:
    return "oracle" if config.env.options.get("oracle") is True else config.algorithm.name


def load_run(run_dir: str | Path, checkpoint: int | None = None) -> Row:
    """A row from a run directory's ``config.yaml`` and one of its checkpoints (None: the latest).

    Raises:
        EvaluationError: not a run directory.
        CheckpointError: no checkpoint, an unreadable one, or one that does not fit the config.
    """
    run_dir = check_run_dir(run_dir)
    config = load_config(run_dir / CONFIG_FILE)
    iteration, state = load_checkpoint(run_dir, checkpoint)
    family = build_family(config)
    policy = build_policy(config, family, generator=None)
    check_fits(state, config.env.family, policy, checkpoint_path(run_dir, iteration))
    try:
        policy.load_state_dict(state["policy"])
    except (RuntimeError, TypeError) as error:
        raise CheckpointError(f"checkpoint of iteration {iteration} in {run_dir} does not load: {error}") from error
    kind = _kind(config)
    source = {"run_dir": str(run_dir), "checkpoint": iteration, "algorithm": config.algorithm.name,
              "oracle": kind == "oracle"}
    return Row(f"{kind} ({run_dir.name}, iter {iteration})", config, policy, kind == "oracle", source)


def random_row(config: Config, protocol: Protocol, fast_lr: float | None = None) -> Row:
    """A freshly initialized policy of ``config``'s structure, seeded from the evaluation seed.

    Args:
        config: the run whose policy structure, task family and adaptation settings the row takes.
        protocol: the evaluation protocol (its seed draws the initialization).
        fast_lr: the row's first adaptation step size α (later steps scale it as ``config`` does); None: ``config``'s
            ``maml.fast_lr``. The MAML reference evaluated its random rows at α = 1.0 for HalfCheetah direction and
            Ant (docs/reproduction.md).
    """
    label = "random"
    if fast_lr is not None:
        if not (np.isfinite(fast_lr) and fast_lr > 0):
            raise ValueError(f"the random row's fast_lr must be a finite number > 0, got {fast_lr}")
        config = dataclasses.replace(config, maml=dataclasses.replace(config.maml, fast_lr=float(fast_lr)))
        label = f"random (fast_lr {fast_lr:g})"
    family = build_family(config)
    policy = build_policy(config, family, evaluation_streams(protocol.seed, torch.device("cpu")).init_generator())
    source = {"run_dir": None, "checkpoint": None, "algorithm": "random", "oracle": False}
    return Row(label, config, policy, False, source)


def check_memory(rows: Sequence[Row], protocol: Protocol, device: torch.device) -> None:
    """Refuse a protocol whose largest row would not fit in the memory available on ``device``.

    Raises:
        ConfigError: naming the flag (``--tasks``, ``--episodes``, ``--steps``) and the estimate.
    """
    available = resources.available_memory(device)
    for row in rows:
        family = build_family(row.config)
        obs_dim, action_size, discrete = policy_dims(family)
        estimate = resources.estimate_evaluation_memory(
            row.config, obs_dim, action_size, discrete, horizon_of(row.config, family), protocol.num_tasks,
            protocol.episodes_per_task, 0 if row.oracle else protocol.num_steps, protocol.budget_steps,
        )
        resources.check_memory(estimate, available, device)


def check_comparable(rows: Sequence[Row]) -> None:
    """Rows must share the task family, the horizon, the action scale and, for the MuJoCo families, the physics steps
    per env step and the rewarded velocity (their returns are compared on the same tasks, and the paper and modern
    presets are never mixed: docs/architecture.md §5; a HalfCheetah stepping 0.01 s is another task than one stepping
    0.05 s, one rewarded on its centre of mass's velocity another than one rewarded on its root's, and an Ant of the
    reference's model another than gymnasium's)."""

    def settings(config: Config) -> dict[str, Any]:
        family = build_family(config)
        return {"env.family": config.env.family, "env.horizon": horizon_of(config, family),
                "env.action_scale": config.env.action_scale,
                # None for the families without physics; the family itself must match anyway
                "env.options.frame_skip": getattr(family, "frame_skip", None),
                "env.options.centre_of_mass": getattr(family, "centre_of_mass", None),
                "env.options.reference_model": getattr(family, "reference_model", None)}

    first = settings(rows[0].config)
    for row in rows[1:]:
        for key, value in settings(row.config).items():
            if value != first[key]:
                raise EvaluationError(
                    f"--compare: {row.label} has {key}={value!r} but {rows[0].label} has {first[key]!r}; only runs "
                    "of the same task family, horizon, action scale, frame skip, centre-of-mass and reference-model "
                    "options can be compared"
                )


def unique_labels(rows: Sequence[Row]) -> list[Row]:
    """The rows with labels made unique (``label (2)``, ``label (3)`` for repeats)."""
    seen: dict[str, int] = {}
    result = []
    for row in rows:
        seen[row.label] = seen.get(row.label, 0) + 1
        label = row.label if seen[row.label] == 1 else f"{row.label} ({seen[row.label]})"
        result.append(dataclasses.replace(row, label=label))
    return result


# ------------------------------------------------------------------------------------------- outputs


def default_output(run_dir: str | Path, iteration: int, compare: bool) -> Path:
    """``RUN_DIR/eval-iterNNNNNN`` (``compare-…`` with comparison rows), suffixed ``-2``, ``-3`` … if taken."""
    base = Path(run_dir) / f"{'compare' if compare else 'eval'}-iter{iteration:06d}"
    for index in itertools.count(1):
        candidate = base if index == 1 else base.with_name(f"{base.name}-{index}")
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")


def results(curves: Sequence[AdaptationCurve], protocol: Protocol,
            tasks: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The content of ``adaptation.json``; ``tasks`` (:func:`held_out_tasks`) go in as ``protocol.tasks``, one list
    per task key with the ``task_i`` columns' order, so per-task returns can be read against the task parameters."""
    protocol_entry: dict[str, Any] = {
        **dataclasses.asdict(protocol),
        "seed_stream": f"numpy.random.SeedSequence({protocol.seed}, spawn_key=({EVAL_STREAM:#x},))",
        "step_sizes": "maml.fast_lr of each run for the first step, evaluation.later_step_scale (0.5 by default) "
                      "times it after",
    }
    if tasks is not None:
        protocol_entry["tasks"] = {key: np.asarray(value, dtype=np.float64).tolist() for key, value in tasks.items()}
    return {"protocol": protocol_entry, "policies": [curve.to_dict() for curve in curves]}


def table(curves: Sequence[AdaptationCurve]) -> str:
    """A plain-text table: one row per policy, ``mean ± stderr`` per step."""
    steps = max(len(curve.mean) for curve in curves)
    width = max(len("policy"), *(len(curve.label) for curve in curves))
    lines = [f"{'policy':<{width}}" + "".join(f"{f'k={k}':>18}" for k in range(steps))]
    for curve in curves:
        cells = "".join(f"{f'{m:.2f} ± {s:.2f}':>18}" for m, s in zip(curve.mean, curve.stderr, strict=True))
        lines.append(f"{curve.label:<{width}}{cells}")
    return "\n".join(lines)


def write_outputs(output: str | Path, curves: Sequence[AdaptationCurve], protocol: Protocol, config: Config) -> Path:
    """Write ``adaptation.json`` (with the held-out tasks of ``config``'s family, :func:`held_out_tasks`),
    ``adaptation.csv``, ``adaptation.png`` and TensorBoard events to ``output``."""
    output = check_output(output)
    tasks = held_out_tasks(build_family(config), protocol)
    sampled = (f"{protocol.episodes_per_task} episodes" if protocol.budget_steps is None
               else f"{protocol.budget_steps} steps (rounds of {protocol.episodes_per_task} episodes)")
    tasks_label = (f"the reference's {protocol.num_tasks} tasks" if protocol.task_set == "reference"
                   else f"{protocol.num_tasks} tasks")
    title = f"{config.env.family}: {tasks_label} × {sampled}, seed {protocol.seed}"
    figure = adaptation_figure([(curve.label, curve.mean, curve.stderr) for curve in curves], title)
    content = results(curves, protocol, tasks)
    content["protocol"]["family"] = config.env.family
    if protocol.task_set == "reference":
        source = _reference_set(config.env.family)
        content["protocol"]["task_source"] = (
            f"cbfinn/maml_rl {source.script}: np.random.seed({source.seed}); np.random.uniform({source.low}, "
            f"{source.high}, size={(REFERENCE_TASK_COUNT, *source.shape)}); {source.mapping}"
        )
    write_adaptation_results(output, content, figure_to_rgb(figure))
    save_png(figure, output / "adaptation.png")
    return output
