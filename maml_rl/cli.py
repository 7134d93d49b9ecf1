"""``maml-rl`` command line: ``train`` (and the evaluation tools built on it).

Every user error (bad config key or value, unknown family, missing GPU, unusable checkpoint) ends the command
with one line ``maml-rl: error: …`` on stderr and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from maml_rl.config import ConfigError, apply_overrides, from_dict, load_yaml

DEFAULT_CONFIG = "navigation-2d/paper"
REPO_EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


class UsageError(ValueError):
    """A command-line argument is unusable; the message says which and why."""


def resolve_config_path(name: str) -> Path:
    """A config file by path, or by name under ``experiments/`` (``navigation-2d/paper``)."""
    candidates = [Path(name)]
    for root in (Path("experiments"), REPO_EXPERIMENTS):
        candidates += [root / name, root / f"{name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config not found: {name!r} (looked for a file and under experiments/)")


def _default_output(config_path: Path, seed: int) -> Path:
    stem = "-".join(config_path.with_suffix("").parts[-2:])
    return Path("runs") / f"{stem}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _train(args: argparse.Namespace) -> int:
    from maml_rl.trainer import CONFIG_FILE, Trainer

    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    if args.resume is not None:
        run_dir = Path(args.resume)
        if args.config is not None:
            raise UsageError("--resume continues a run with its own config.yaml; do not pass CONFIG")
        saved = run_dir / CONFIG_FILE
        if not saved.is_file():
            raise UsageError(f"--resume: {run_dir} is not a run directory (no {CONFIG_FILE})")
        config = from_dict(apply_overrides(load_yaml(saved), overrides))
        _check_resume_config(run_dir, config, args.allow_config_change)
    else:
        config_path = resolve_config_path(args.config or DEFAULT_CONFIG)
        config = from_dict(apply_overrides(load_yaml(config_path), overrides))
        run_dir = Path(args.output) if args.output else _default_output(config_path, config.train.seed)
    trainer = Trainer(config, run_dir, resume=args.resume is not None)
    print(f"run directory: {run_dir}", file=sys.stderr)
    try:
        trainer.train(progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted; the last completed iteration is checkpointed in {run_dir}", file=sys.stderr)
        return 130
    return 0


def _check_resume_config(run_dir: Path, config, allow_change: bool) -> None:
    from maml_rl.checkpoint import load_checkpoint

    _, state = load_checkpoint(run_dir)
    if state["config"] != config.to_dict() and not allow_change:
        saved = state["config"]
        changed = sorted(
            f"{section}.{key}"
            for section, values in config.to_dict().items()
            if isinstance(values, dict)
            for key, value in values.items()
            if saved.get(section, {}).get(key) != value
        ) + [key for key in ("algorithm",) if saved.get(key) != config.to_dict()[key]]
        raise UsageError(
            f"--resume: the config differs from the one the checkpoint was trained with ({', '.join(changed)}); "
            "pass --allow-config-change to continue anyway"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maml-rl", description="Model-agnostic meta-learning for RL.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="meta-train a policy (MAML-TRPO) or a pretrained baseline")
    train.add_argument("config", nargs="?", help=f"YAML config path or name under experiments/ "
                                                 f"(default: {DEFAULT_CONFIG})")
    train.add_argument("--output", help="run directory (default: runs/<config>-seed<N>-<time>)")
    train.add_argument("--seed", type=int, help="overrides train.seed")
    train.add_argument("--device", help="cpu, cuda or cuda:N (overrides train.device)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. "
                                                                           "maml.fast_lr=0.1 (repeatable)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its latest checkpoint")
    train.add_argument("--allow-config-change", action="store_true",
                       help="with --resume: continue even if the config differs from the checkpoint's")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from maml_rl.checkpoint import CheckpointError
    from maml_rl.trainer import TrainingError

    try:
        return args.handler(args)
    except (ConfigError, UsageError, CheckpointError) as error:
        print(f"maml-rl: error: {error}", file=sys.stderr)
        return 2
    except TrainingError as error:
        print(f"maml-rl: training stopped: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
