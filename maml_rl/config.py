"""Typed, frozen experiment configuration loaded from YAML (the one source of truth for hyperparameters).

A config file has one mapping per section; every key is optional and defaults to the documented
value (docs/architecture.md §5). Example (``experiments/navigation-2d/paper.yaml``)::

    algorithm: {name: maml-trpo, options: {max_kl: 0.01}}
    env: {family: navigation-2d, horizon: 100}
    policy: {hidden_sizes: [100, 100], activation: relu}
    maml: {meta_batch_size: 20, fast_batch_size: 20, fast_lr: 0.5}
    train: {num_iterations: 100, seed: 1}

Unknown keys, wrong types, non-finite floats and out-of-range values raise :class:`ConfigError` naming the
dotted key, in one line. Overrides use the same dotted keys: ``--set maml.fast_lr=0.1``,
``--set algorithm.options.max_kl=0.02``.

YAML is read with :func:`yaml_load` (files and ``--set`` values alike): YAML 1.1 with YAML 1.2's floats, so
``1e-3``, ``1E+5`` and ``.5`` are numbers (plain YAML 1.1 reads the first two as strings), and duplicate keys
are refused rather than silently overwritten.

``algorithm.options`` are the meta-learner's settings (a frozen dataclass next to each learner in
``maml_rl/metalearners/``); they are checked like every other key, and the resolved config lists all of them.
Configs written before the meta-learner contract (``algorithm: maml-trpo`` as a string, a top-level ``trpo:``
section, ``maml.first_order``) are read through :func:`migrate_legacy`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACTIVATIONS = ("relu", "tanh")
BASELINE_SCOPES = ("task", "batch")
"""``maml.baseline_scope``: ``task``, one baseline fit and one advantage normalization per task (the MAML
reference's sampler); ``batch``, one of each over the whole batch, every task together (rllab's sampler for
single-environment TRPO, which the reference's oracle and pretrained runs used with a new task per episode)."""


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or out of range; the message names the key."""


@dataclass(frozen=True)
class EnvConfig:
    """Which task family to meta-train on."""

    family: str = "navigation-2d"
    """Task family name (``envs.family_names()``)."""
    horizon: int | None = None
    """Time steps per episode ``T``; None uses the family's paper horizon."""
    action_scale: float = 1.0
    """Policy outputs are divided by this before reaching the environment (the modern preset uses 10,
    which with the environment's clip to [-1, 1] equals clip(a, -10, 10) / 10)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Family-specific constructor options, e.g. ``{num_arms: 10}`` for bandits."""


@dataclass(frozen=True)
class PolicyConfig:
    """The policy network (docs/architecture.md §4)."""

    hidden_sizes: tuple[int, ...] = (100, 100)
    """Widths of the hidden layers."""
    activation: str = "relu"
    """Hidden nonlinearity: relu or tanh."""
    init_std: float = 1.0
    """Initial standard deviation of the Gaussian policy."""
    min_std: float = 1e-6
    """Lower bound on the Gaussian policy's standard deviation."""


@dataclass(frozen=True)
class MamlConfig:
    """The inner loop and the meta-batch (docs/architecture.md §4, §5 defaults)."""

    meta_batch_size: int = 40
    """Tasks per meta-iteration ``M``."""
    fast_batch_size: int = 20
    """Episodes per task ``E`` for each inner step and for validation (per round, with ``step_budget``)."""
    step_budget: bool = False
    """Sample whole episodes until each task has ``E × horizon`` environment steps, as the reference code did
    (cbfinn/maml_rl: ``batch_size`` trajectories × ``max_path_length`` steps per task): rounds of ``E`` episodes
    per task in lockstep, a task dropping the rounds that start after its budget is met
    (``maml_rl.collect.sample``), so a task whose episodes end early gets more of them. False: ``E`` episodes."""
    task_pool: int | None = None
    """Train on a fixed pool of this many tasks, drawn once from the seed (its own stream,
    ``maml_rl.build.task_pool_generator``): task ``i`` of every meta-batch is pool task ``i mod P``. None: ``M``
    new tasks every meta-iteration (MAML). The reference's "randenv" pretrained baselines trained this way without
    saying so: rllab's ``*EnvRand`` draws its goal at the first reset and keeps it, once per sampler worker
    (``n_parallel``: 1 for HalfCheetah, 8 for Ant; docs/reproduction.md)."""
    num_inner_steps: int = 1
    """Inner gradient steps ``K`` during meta-training."""
    fast_lr: float = 0.1
    """Inner learning rate ``alpha``."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda (1.0: Monte-Carlo returns minus the baseline)."""
    baseline_scope: str = "task"
    """Training batches only: ``task`` fits the linear baseline and normalizes the advantages per task (the MAML
    reference's sampler); ``batch`` does both once over the whole meta-batch, as rllab's sampler did for the
    reference's single-environment TRPO runs (its oracle and pretrained baselines, a new task per episode:
    ``fast_batch_size: 1``). One process only. Evaluation always adapts each task on its own (``task``)."""
    baseline_obs_clip: float | None = None
    """Clip the observations to ``[-c, c]`` in the linear baseline's features (``maml_rl.baselines``), as rllab's
    ``LinearFeatureBaseline`` did with ``c = 10`` (the MAML reference's baseline; docs/reproduction.md). None: no
    clipping. Applies to training and evaluation alike."""


@dataclass(frozen=True)
class AlgorithmConfig:
    """The meta-learner: a registered name and its options (``maml_rl.metalearners.learner_names()``)."""

    name: str = "maml-trpo"
    """maml-trpo, pretrained, maml-fo, promp or reptile."""
    options: dict[str, Any] = field(default_factory=dict)
    """The learner's settings, e.g. ``{max_kl: 0.01}`` for maml-trpo; unknown options are rejected."""


@dataclass(frozen=True)
class TrainConfig:
    """The training run."""

    num_iterations: int = 500
    """Meta-iterations."""
    seed: int = 1
    """Seeds task sampling, environment resets, policy initialization and action sampling."""
    device: str = "cpu"
    """Learner device: cpu or cuda (cuda:N)."""
    checkpoint_every: int = 50
    """Write a checkpoint every this many iterations (and at the end)."""
    num_threads: int | None = 1
    """Torch intra-op threads for adaptation and the outer step (None: all available cores). The default is 1:
    OpenMP threads that share cores with another busy process (a second run, environment threads) spin and make
    the learner 10-100x slower, while a second thread on an idle 2-core machine gains only about 25 %. Sampling
    always uses one intra-op thread (docs/architecture.md §7)."""


@dataclass(frozen=True)
class EvaluationConfig:
    """Defaults of ``maml-rl evaluate`` for runs of this config (its flags override them; docs/architecture.md §6)."""

    episodes: int = 20
    """Episodes per task and adaptation step (``--episodes``; per round with ``step_budget``)."""
    step_budget: bool = False
    """Sample whole episodes until each task has ``episodes × horizon`` environment steps (``--budget-steps``),
    as the reference code's evaluation did (cbfinn/maml_rl ``maml_examples/test_maml_*.py``, ``batch_size`` env
    steps: 4000 = 40 × 100 for 2D navigation, 20 × 200 for HalfCheetah and Ant velocity, 8000 = 40 × 200 for Ant
    direction). False: ``episodes`` episodes."""
    later_step_scale: float = 0.5
    """Step size of the adaptation steps after the first, as a fraction of ``maml.fast_lr``: ``(α, sα, sα, …)``.
    0.5 is the paper's protocol (the reference's ``test_maml_*.py``: GradientDescentOptimizer at 0.5 × the initial
    step size); its Ant-direction script used 0.01 (docs/reproduction.md)."""


@dataclass(frozen=True)
class Config:
    """A whole experiment: one section per concern."""

    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    maml: MamlConfig = field(default_factory=MamlConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), suitable for YAML."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# ----------------------------------------------------------------------------------------- YAML

_FLOAT_TAG = "tag:yaml.org,2002:float"
#: YAML 1.2 core-schema floats (exponent without a dot, optional sign on the exponent) plus YAML 1.1's
#: underscores; integers (no dot, no exponent) are left to the int resolver.
_FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose plain scalars ``1e-3``, ``-2E5``, ``1.0e+9``, ``.5``, ``1_000.0`` are floats.

    ``.nan`` and ``.inf`` also load as floats (config validation then refuses them).
    """


ConfigLoader.yaml_implicit_resolvers = {
    first: [
        (tag, _FLOAT_PATTERN if tag == _FLOAT_TAG else pattern) for tag, pattern in resolvers
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _one_line(text: str) -> str:
    """Collapse whitespace (YAML errors span several lines, with a caret diagram) into one line."""
    return " ".join(str(text).split())


def _find_duplicate_key(node: yaml.Node, prefix: str) -> tuple[str, int] | None:
    """The first key that appears twice in one mapping under ``node``: (dotted key, 1-based line)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
            dotted = f"{prefix}.{name}" if prefix else str(name)
            if name in seen:
                return dotted, key_node.start_mark.line + 1
            seen.add(name)
            found = _find_duplicate_key(value_node, dotted)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _find_duplicate_key(item, f"{prefix}[{i}]")
            if found:
                return found
    return None


def yaml_load(text: str, source: str = "YAML", prefix: str = "") -> Any:
    """Parse one YAML document with :class:`ConfigLoader`; the one YAML reader of configs and run directories.

    Args:
        text: the document.
        source: names the input in error messages, e.g. ``"config file runs/a/config.yaml"``.
        prefix: dotted key of the document's root, for duplicate-key messages (``--set maml={...}``: ``maml``).

    Returns:
        The data (None for an empty document).

    Raises:
        ConfigError: malformed YAML or a duplicate key at any depth; one line naming ``source``.
    """
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicate = _find_duplicate_key(node, prefix)
        if duplicate is not None:
            raise ConfigError(f"{source}: duplicate key {duplicate[0]!r} (line {duplicate[1]})")
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {_one_line(str(error))}") from error
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------------------- building


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a type annotation, converting lists to tuples and ints to floats."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner[0], key)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if annotation is int:  # integral floats are integers (``1e3``); bools never are
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:  # every float key, present and future, must be finite
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]}; valid keys{' in ' + prefix if prefix else ''}: "
            f"{', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key)
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _check_positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate(config: Config) -> Config:
    """Range checks that need no environment; raises :class:`ConfigError` naming the key.

    Returns the config with ``algorithm.options`` resolved: every option of the learner's settings, defaults filled.
    """
    from maml_rl.learner_settings import learner_options  # it imports this module: import it late

    learner = learner_options(config.algorithm.name)
    settings = _build(learner.settings, config.algorithm.options, "algorithm.options")
    config = dataclasses.replace(
        config, algorithm=AlgorithmConfig(config.algorithm.name, _plain(dataclasses.asdict(settings)))
    )
    env, policy, maml, train = config.env, config.policy, config.maml, config.train
    if env.horizon is not None:
        _check_positive("env.horizon", env.horizon)
    _check_positive("env.action_scale", env.action_scale)
    if not policy.hidden_sizes:
        raise ConfigError("policy.hidden_sizes: at least one hidden layer is needed, got []")
    if any(size <= 0 for size in policy.hidden_sizes):
        raise ConfigError(f"policy.hidden_sizes: every width must be > 0, got {list(policy.hidden_sizes)}")
    if policy.activation not in ACTIVATIONS:
        raise ConfigError(f"policy.activation: unknown {policy.activation!r}; valid: {', '.join(ACTIVATIONS)}")
    _check_positive("policy.init_std", policy.init_std)
    _check_positive("policy.min_std", policy.min_std)
    if policy.min_std > policy.init_std:
        raise ConfigError(f"policy.min_std ({policy.min_std}) must not exceed policy.init_std ({policy.init_std})")
    _check_positive("maml.meta_batch_size", maml.meta_batch_size)
    _check_positive("maml.fast_batch_size", maml.fast_batch_size)
    if maml.task_pool is not None:
        _check_positive("maml.task_pool", maml.task_pool)
    _check_positive("maml.num_inner_steps", maml.num_inner_steps, allow_zero=not learner.adapts)
    _check_positive("maml.fast_lr", maml.fast_lr)
    if not 0.0 <= maml.gamma <= 1.0:
        raise ConfigError(f"maml.gamma: must be in [0, 1], got {maml.gamma}")
    if not 0.0 <= maml.gae_lambda <= 1.0:
        raise ConfigError(f"maml.gae_lambda: must be in [0, 1], got {maml.gae_lambda}")
    check_choice("maml.baseline_scope", maml.baseline_scope, BASELINE_SCOPES)
    if maml.baseline_obs_clip is not None:
        _check_positive("maml.baseline_obs_clip", maml.baseline_obs_clip)
    _check_positive("train.num_iterations", train.num_iterations)
    _check_positive("train.checkpoint_every", train.checkpoint_every)
    if train.num_threads is not None:
        _check_positive("train.num_threads", train.num_threads)
    _check_positive("evaluation.episodes", config.evaluation.episodes)
    _check_positive("evaluation.later_step_scale", config.evaluation.later_step_scale)
    if train.seed < 0:
        raise ConfigError(f"train.seed: must be >= 0, got {train.seed}")
    check_device_name(train.device, "train.device")
    return config


def check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``value`` lies in the interval (for settings classes)."""
    below = low is not None and (value < low or (low_open and value == low))
    above = high is not None and (value > high or (high_open and value == high))
    if below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
        raise ConfigError(f"{key}: must be in {interval}, got {value}")


_DEVICE_PATTERN = re.compile(r"^(cpu|cuda|cuda:\d+)$")


def check_device_name(name: object, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``name`` is ``cpu``, ``cuda`` or ``cuda:N`` (the form only:
    :func:`maml_rl.build.resolve_device` checks that the GPU exists)."""
    if not isinstance(name, str) or not _DEVICE_PATTERN.match(name):
        raise ConfigError(f"{key}: expected cpu, cuda or cuda:N, got {name!r}")


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` naming ``key`` and listing ``choices`` unless ``value`` is one of them."""
    if value not in choices:
        raise ConfigError(f"{key}: unknown {value!r}; valid: {', '.join(choices)}")


def migrate_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Read a config written before the meta-learner contract in today's form; other configs pass unchanged.

    The one place where old forms are translated (run directories and checkpoints of older runs hold them):

    - ``algorithm: NAME`` (a string) becomes ``algorithm: {name: NAME}`` (also a shorthand on the command line:
      ``--set algorithm=promp``);
    - the top-level ``trpo:`` section becomes ``algorithm.options``;
    - ``maml.first_order`` becomes ``algorithm.options.first_order`` (dropped for ``pretrained``, where it never
      had an effect).

    The old keys win over options already there, so ``--set trpo.max_kl=0.02`` still works on an old run
    (:func:`apply_overrides` migrates before it applies overrides, :func:`from_dict` after).
    """
    maml = data.get("maml")
    legacy_first_order = isinstance(maml, dict) and "first_order" in maml
    if not (isinstance(data.get("algorithm"), str) or "trpo" in data or legacy_first_order):
        return data
    result = _plain(data)
    algorithm = result.get("algorithm", {})
    if isinstance(algorithm, str):
        algorithm = {"name": algorithm}
    if not isinstance(algorithm, dict):
        return result  # let validation name the problem
    options = algorithm.get("options", {})
    if not isinstance(options, dict):
        return result
    trpo = result.pop("trpo", {})
    if not isinstance(trpo, dict):
        raise ConfigError(f"trpo: expected a mapping, got {trpo!r}")
    options = {**options, **trpo}
    if legacy_first_order:
        first_order = result["maml"].pop("first_order")
        if algorithm.get("name", AlgorithmConfig.name) != "pretrained":
            options["first_order"] = first_order
    result["algorithm"] = {**algorithm, "options": options}
    return result


def from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested dict (legacy forms migrated, options resolved)."""
    return validate(_build(Config, migrate_legacy(data), ""))


def resolved(data: dict[str, Any]) -> dict[str, Any]:
    """The resolved, current form of a config dict (e.g. one stored in a checkpoint): compare configs with it."""
    return from_dict(data).to_dict()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``"a.b=value"`` into (["a", "b"], value), the value read as YAML (``0.1``, ``true``, ``[64, 64]``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. maml.fast_lr=0.1")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key")
    value = yaml_load(raw, source=f"override {text!r}: value", prefix=".".join(parts)) if raw.strip() else ""
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` (legacy forms migrated) with dotted ``key=value`` overrides applied."""
    result = _plain(migrate_legacy(data))
    for text in overrides:
        parts, value = parse_override(text)
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with :func:`yaml_load`.

    Raises:
        ConfigError: (one line) the path is missing, a directory or unreadable; the file is not UTF-8, not
            valid YAML, empty (or only comments / ``null``), has a duplicate key, or is not a mapping.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a YAML file")
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {error.start}: {raw[error.start:error.start + 1]!r})"
        ) from error
    data = yaml_load(text, source=f"config file {path}")
    if data is None:
        raise ConfigError(f"config file {path} is empty (no settings); write at least one section, e.g. env")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (None: all defaults), apply overrides, validate."""
    data = load_yaml(path) if path is not None else {}
    return from_dict(apply_overrides(data, overrides or []))


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (a crash leaves the old file or the new one)."""
    from maml_rl.rundir import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
