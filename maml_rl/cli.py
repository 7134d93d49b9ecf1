"""``maml-rl`` command line: ``train``, ``evaluate`` and ``plot``.

    maml-rl train [CONFIG] [--output RUN_DIR] [--seed S] [--set KEY=VALUE …] [--nproc R]
    maml-rl train --resume RUN_DIR [--allow-config-change] [--nproc R]
    torchrun --nnodes … --nproc-per-node … -m maml_rl.cli train CONFIG --output RUN_DIR   (multi-node)
    maml-rl evaluate RUN_DIR [--checkpoint N] [--tasks 40|reference] [--steps 3] [--episodes 20] [--budget-steps B]
                     [--seed 0] [--compare RUN_DIR …] [--random [--random-fast-lr ALPHA]] [--output DIR] [--nproc R]
    maml-rl plot RUN_DIR … [--metric returns/post_adapt_mean] [--output FILE]

Every user error (bad config key or value, unknown family, missing GPU, unusable checkpoint, unknown metric) ends
the command with one line ``maml-rl: error: …`` on stderr and exit status 2, before any work starts and without
overwriting anything.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

from maml_rl.config import ConfigError, apply_overrides, check_device_name, from_dict, load_yaml, resolved
from maml_rl.errors import (
    CheckpointError,
    EvaluationError,
    MetricsFileError,
    PlotError,
    RunDirError,
    TrainingError,
)

DEFAULT_CONFIG = "navigation-2d/paper"
REPO_EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


class UsageError(ValueError):
    """A command-line argument is unusable; the message says which and why."""


def resolve_config_path(name: str) -> Path:
    """A config file by path, or by name under ``experiments/`` (``navigation-2d/paper``)."""
    if not name.strip():
        raise UsageError("CONFIG is empty; give a config name such as navigation-2d/paper, or a YAML file")
    candidates = [Path(name)]
    for root in (Path("experiments"), REPO_EXPERIMENTS):
        candidates += [root / name, root / f"{name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    root = Path("experiments") if Path("experiments").is_dir() else REPO_EXPERIMENTS
    known = sorted(str(path.relative_to(root).with_suffix("")) for path in root.glob("*/*.yaml"))
    family = Path(name).parts[0] if Path(name).parts else ""
    same_family = [k for k in known if k.startswith(f"{family}/")]
    listing = ", ".join(same_family or known)
    raise ConfigError(f"config not found: {name!r}; valid configs under {root}: {listing}")


def _default_output(config_path: Path, seed: int) -> Path:
    stem = "-".join(config_path.with_suffix("").parts[-2:])
    return Path("runs") / f"{stem}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _train(args: argparse.Namespace) -> int:
    # The config is read and validated before torch is imported: a bad key fails in a fraction of a second.
    from maml_rl.rundir import CONFIG_FILE, check_writable

    world_size = _check_processes(args)
    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    if args.resume is not None:
        run_dir = Path(args.resume)
        if args.config is not None or args.output is not None:
            raise UsageError("--resume continues a run in its own directory with its own config.yaml; "
                             "do not pass CONFIG or --output")
        saved = run_dir / CONFIG_FILE
        if not saved.is_file():
            raise UsageError(f"--resume: {run_dir} is not a run directory (no {CONFIG_FILE})")
        config = from_dict(apply_overrides(load_yaml(saved), overrides))
        check_writable(run_dir, "--resume")
        from maml_rl.checkpoint import list_checkpoints

        if list_checkpoints(run_dir):
            _check_resume_config(run_dir, config, args.allow_config_change)
    else:
        config_path = resolve_config_path(args.config if args.config is not None else DEFAULT_CONFIG)
        config = from_dict(apply_overrides(load_yaml(config_path), overrides))
        run_dir = Path(args.output) if args.output else _default_output(config_path, config.train.seed)
        check_writable(run_dir, "--output")
    from maml_rl.distributed import World, check_baseline_scope, check_shardable

    nproc = args.nproc if args.nproc is not None else world_size
    check_shardable(config.maml.meta_batch_size, nproc)
    check_baseline_scope(config.maml.baseline_scope, nproc)
    if nproc > 1:
        from maml_rl.metalearners.base import learner_class

        if not learner_class(config.algorithm.name).supports_reducer:
            raise UsageError(f"algorithm.name: {config.algorithm.name} does not support data-parallel training yet; "
                             "run it in one process")
    if args.nproc is not None and args.nproc > 1:
        return _launch(args, nproc, run_dir if args.resume is None else None)
    world = World.from_env()
    from maml_rl.build import resolve_device

    world.init(world.device(resolve_device(config.train.device)), args.collective_timeout)
    try:
        if args.resume is None and args.output is None:
            run_dir = Path(world.broadcast_text(str(run_dir)))  # rank 0's time stamp names the run
        return _train_here(args, config, run_dir, world)
    finally:
        world.close()


def _check_processes(args: argparse.Namespace) -> int:
    """Check ``--nproc`` and ``--collective-timeout``; returns the launcher's ``WORLD_SIZE`` (1 without one)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.nproc is not None:
        if args.nproc < 1:
            raise UsageError(f"--nproc: expected a number of processes >= 1, got {args.nproc}")
        if world_size > 1 and args.nproc != 1:
            raise UsageError("--nproc inside a torchrun job: the launcher already started the processes; drop "
                             "--nproc")
    if args.collective_timeout <= 0:
        raise UsageError(f"--collective-timeout: expected seconds > 0, got {args.collective_timeout}")
    return world_size


def _launch(args: argparse.Namespace, nproc: int, run_dir: Path | None) -> int:
    """``maml-rl train|evaluate … --nproc R``: the same command in ``R`` local processes through
    ``torch.distributed.run`` (standalone rendezvous; :mod:`maml_rl.launcher`, which ends a stop without a
    traceback), with ``--output run_dir`` added when the command had no ``--output`` (so every rank writes to, or
    reads, the directory this process chose); returns the launcher's exit status."""
    import subprocess

    argv = list(args.argv)
    rest: list[str] = []
    skip = False
    for arg in argv:  # the same command without --nproc, with the run directory fixed by this process
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    if run_dir is not None and args.output is None:
        rest += ["--output", str(run_dir)]
    command = [sys.executable, "-m", "maml_rl.launcher", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "maml_rl.cli", *rest]
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen(command, env=environment)
    import signal

    # SIGTERM to this process reaches the launcher, which passes it to the workers (rank 0 checkpoints)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signal.SIGTERM))
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:  # the workers got it too: let rank 0 checkpoint, then report their status
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train_here(args: argparse.Namespace, config, run_dir: Path, world) -> int:  # type: ignore[no-untyped-def]
    """Train in this process (one rank of ``world``)."""
    from maml_rl.checkpoint import list_checkpoints
    from maml_rl.trainer import Trainer

    trainer = Trainer(config, run_dir, resume=args.resume is not None, world=world)
    say = world.is_main
    if say:
        print(f"run directory: {run_dir}" + (f" ({world.size} processes)" if world.distributed else ""),
              file=sys.stderr)
    if trainer.iteration >= config.train.num_iterations and say:
        print(f"the run has completed its {config.train.num_iterations} iterations; to continue, resume with "
              "--set train.num_iterations=N", file=sys.stderr)
    try:
        trainer.train(progress=not args.no_progress)
    except KeyboardInterrupt:
        if not say:
            return 130
        last = max(list_checkpoints(run_dir), default=None)
        if last is None:
            print("interrupted before the first iteration completed; nothing to resume", file=sys.stderr)
        else:
            print(f"interrupted; the last completed iteration ({last}) is checkpointed in {run_dir}; continue with "
                  f"maml-rl train --resume {run_dir}", file=sys.stderr)
        return 130
    return 0


def _check_resume_config(run_dir: Path, config, allow_change: bool) -> None:
    from maml_rl.checkpoint import load_checkpoint

    _, state = load_checkpoint(run_dir)
    saved = resolved(state["config"])  # a run written before the meta-learner contract compares in today's form
    current = config.to_dict()
    if saved["train"].get("seed") != current["train"]["seed"]:
        # The checkpoint's random streams are the saved seed's: a new seed would be recorded but not used.
        raise UsageError(f"--resume: the run was trained with train.seed={saved['train'].get('seed')}; a resumed run "
                         "continues its own random streams, so the seed cannot change (start a new run instead)")
    # Extending a run (more iterations) changes nothing already computed: no confirmation needed.
    saved["train"]["num_iterations"] = current["train"]["num_iterations"]
    saved["evaluation"] = current["evaluation"]  # evaluation defaults do not touch training
    if saved != current and not allow_change:
        changed = sorted(
            f"{section}.{key}"
            for section, values in config.to_dict().items()
            if isinstance(values, dict)
            for key, value in values.items()
            if saved.get(section, {}).get(key) != value
        )
        raise UsageError(
            f"--resume: the config differs from the one the checkpoint was trained with ({', '.join(changed)}); "
            "pass --allow-config-change to continue anyway"
        )


def _evaluate(args: argparse.Namespace) -> int:
    # The arguments, the output directory and the run directories are checked before torch is imported.
    from maml_rl.evaluation_protocol import Protocol, check_output, check_run_dir
    from maml_rl.reference_tasks import REFERENCE_TASK_COUNT

    world_size = _check_processes(args)
    if args.budget_steps is not None and args.budget_steps < 0:
        raise UsageError(f"--budget-steps must be >= 0 (0: --episodes episodes), got {args.budget_steps}")
    if args.random_fast_lr is not None:
        if not args.random:
            raise UsageError("--random-fast-lr sets the step size of the --random row: add --random")
        if not (math.isfinite(args.random_fast_lr) and args.random_fast_lr > 0):
            raise UsageError(f"--random-fast-lr must be a finite number > 0, got {args.random_fast_lr}")
    task_set = "reference" if args.tasks == "reference" else "sampled"
    num_tasks = REFERENCE_TASK_COUNT if task_set == "reference" else args.tasks
    # the flags' own checks, before anything is loaded
    Protocol(num_tasks, args.steps, 1 if args.episodes is None else args.episodes, args.seed, task_set=task_set)
    if args.output:
        output = check_output(args.output)
    for run_dir in [args.run_dir, *(args.compare or [])]:
        check_run_dir(run_dir)
    if args.device is not None:
        check_device_name(args.device, "--device")
    import torch

    from maml_rl import evaluation, resources
    from maml_rl.build import resolve_device
    from maml_rl.distributed import World, check_shardable

    nproc = args.nproc if args.nproc is not None else world_size
    check_shardable(num_tasks, nproc, key="--tasks")
    primary = evaluation.load_run(args.run_dir, args.checkpoint)
    protocol = evaluation.protocol_for(primary.config, num_tasks, args.steps, args.seed, args.episodes,
                                       args.budget_steps, task_set)
    rows = [primary, *(evaluation.load_run(run_dir) for run_dir in args.compare or [])]
    if args.random:
        rows.append(evaluation.random_row(primary.config, protocol, args.random_fast_lr))
    rows = evaluation.unique_labels(rows)
    evaluation.check_comparable(rows)
    if not args.output:
        output = evaluation.default_output(args.run_dir, primary.source["checkpoint"], compare=len(rows) > 1)
        check_output(output)
    device = resolve_device(args.device or primary.config.train.device, "--device" if args.device else "train.device")
    evaluation.check_memory(rows, protocol, device)
    if args.nproc is not None and args.nproc > 1:
        return _launch(args, nproc, output)
    world = World.from_env()
    device = world.device(device)
    threads, warning = resources.cap_threads(primary.config.train.num_threads)  # as the trainer
    if warning and world.is_main:
        print(f"maml-rl: warning: {warning}", file=sys.stderr)
    torch.set_num_threads(threads)
    world.init(device, args.collective_timeout)
    curves = []
    try:
        for row in rows:
            if world.is_main:
                steps = "k = 0 only" if row.oracle else f"k = 0 … {protocol.num_steps}"
                ranks = f", {world.size} processes" if world.distributed else ""
                print(f"evaluating {row.label} ({steps}{ranks})", file=sys.stderr)
            curves.append(evaluation.evaluate_row(row, protocol, device, world))
    except KeyboardInterrupt:
        if world.is_main:
            print("interrupted; nothing written", file=sys.stderr)
        return 130
    finally:
        world.close()
    if not world.is_main:
        return 0
    evaluation.write_outputs(output, curves, protocol, primary.config)
    print(evaluation.table(curves))
    print(f"wrote {output}", file=sys.stderr)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from maml_rl.plotting import learning_curves, save_png
    from maml_rl.rundir import check_writable

    metrics = args.metric or ["returns/post_adapt_mean"]
    if args.output:
        output = Path(args.output)
    else:
        parent = Path(os.path.commonpath([Path(run_dir).resolve() for run_dir in args.run_dirs]))
        output = parent / f"learning-curves-{'+'.join(m.replace('/', '-') for m in metrics)}.png"
    check_writable(output, "--output", is_file=True)
    figure = learning_curves(args.run_dirs, metrics)
    save_png(figure, output)
    print(f"wrote {output}", file=sys.stderr)
    return 0


def _task_count(value: str) -> int | str:
    """``--tasks``: a whole number, or ``reference`` (the reference code's 40 tasks)."""
    if value == "reference":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of tasks or 'reference', got {value!r}") from None


def _add_process_arguments(command: argparse.ArgumentParser, nproc_help: str) -> None:
    """``--nproc`` and ``--collective-timeout``, shared by ``train`` and ``evaluate``."""
    command.add_argument("--nproc", type=int, metavar="R", help=f"{nproc_help}. Under your own torchrun, leave it out")
    command.add_argument("--collective-timeout", type=float, default=300.0, metavar="SECONDS",
                         help="with several processes: a rank that waits this long for the others stops the job "
                              "(default: 300)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maml-rl", description="Model-agnostic meta-learning for RL.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="meta-train a policy (algorithm.name: maml-trpo, maml-fo, promp, "
                                              "reptile) or a pretrained baseline")
    train.add_argument("config", nargs="?", help=f"YAML config path or name under experiments/ "
                                                 f"(default: {DEFAULT_CONFIG})")
    train.add_argument("--output", help="run directory (default: runs/<config>-seed<N>-<time>); give runs to be "
                                        "compared one parent (runs/a, runs/b) and `tensorboard --logdir runs` "
                                        "shows them side by side")
    train.add_argument("--seed", type=int, help="overrides train.seed")
    train.add_argument("--device", help="cpu, cuda or cuda:N (overrides train.device)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. "
                                                                           "maml.fast_lr=0.1 (repeatable)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its latest checkpoint")
    train.add_argument("--allow-config-change", action="store_true",
                       help="with --resume: continue even if the config differs from the checkpoint's")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_process_arguments(train, "data-parallel training in R local processes (torch.distributed.run); R must "
                                  "divide maml.meta_batch_size")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate", help="adaptation curves on held-out tasks (k = 0 … K), optionally beside other policies",
        description="Sample E episodes on each of N held-out tasks, adapt one step (alpha, then alpha/2 or the "
                    "run's evaluation.later_step_scale x alpha), repeat for k = 0 … K; writes "
                    "adaptation.json/.csv/.png and TensorBoard events.",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory")
    evaluate.add_argument("--checkpoint", type=int, metavar="N", help="iteration of RUN_DIR's checkpoint "
                                                                      "(default: the latest)")
    evaluate.add_argument("--tasks", type=_task_count, default=40,
                          help="held-out tasks: how many to draw from --seed (default: 40), or 'reference': the 40 "
                               "tasks the MAML reference code's evaluation script drew for the family, in its order, "
                               "so per-task returns line up with the paper's (navigation-2d, halfcheetah-vel, "
                               "halfcheetah-dir, ant-vel, ant-dir; docs/reproduction.md)")
    evaluate.add_argument("--steps", type=int, default=3, help="adaptation steps K (default: 3)")
    evaluate.add_argument("--episodes", type=int, help="episodes per task and step, or per round with a step "
                                                       "budget (default: the run's evaluation.episodes, 20)")
    evaluate.add_argument("--budget-steps", type=int, metavar="B",
                          help="environment steps per task and step: rounds of --episodes episodes until each task "
                               "has B steps, as the reference code's evaluation (batch_size 4000 for 2D navigation, "
                               "HalfCheetah and Ant velocity, 8000 for Ant direction); default: episodes × horizon "
                               "when the run's evaluation.step_budget is set (the paper presets of the locomotion "
                               "families and navigation-2d/reference), else none; 0: none")
    evaluate.add_argument("--seed", type=int, default=0, help="evaluation seed; a stream training never uses "
                                                             "(default: 0)")
    evaluate.add_argument("--compare", nargs="+", action="extend", metavar="RUN_DIR",
                          help="more runs (latest checkpoints) on the same plot and table: pretrained, oracle "
                               "(env.options.oracle: evaluated at k = 0 only), other seeds")
    evaluate.add_argument("--random", action="store_true",
                          help="add a randomly initialized policy of RUN_DIR's config (seeded by --seed)")
    evaluate.add_argument("--random-fast-lr", type=float, metavar="ALPHA",
                          help="the --random row's first adaptation step size (default: RUN_DIR's maml.fast_lr; the "
                               "MAML reference's random rows used 1.0 for HalfCheetah direction and Ant)")
    evaluate.add_argument("--output", metavar="DIR", help="output directory (default: RUN_DIR/eval-iterN, or "
                                                          "RUN_DIR/compare-iterN with comparison rows; never "
                                                          "overwritten)")
    evaluate.add_argument("--device", help="cpu, cuda or cuda:N (default: the run's train.device)")
    _add_process_arguments(evaluate, "evaluate in R local processes (torch.distributed.run), each running --tasks / R "
                                     "of the tasks; the same numbers as one process")
    evaluate.set_defaults(handler=_evaluate)

    plot = commands.add_parser("plot", help="learning curves of several runs from their metrics.csv")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories")
    plot.add_argument("--metric", action="append",
                      help="a metrics.csv column, repeatable (default: returns/post_adapt_mean)")
    plot.add_argument("--output", metavar="FILE", help="PNG file (default: learning-curves-<metric>.png in the "
                                                       "runs' common parent directory)")
    plot.set_defaults(handler=_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    threading.excepthook = _quiet_io_errors_in_threads
    try:
        return args.handler(args)
    except (ConfigError, UsageError, CheckpointError, EvaluationError, PlotError, RunDirError,
            MetricsFileError) as error:
        print(f"maml-rl: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except TrainingError as error:
        print(f"maml-rl: training stopped {_one_line(error)}", file=sys.stderr)
        from maml_rl.distributed import CollectiveError, let_the_launcher_see_the_first_failure

        if isinstance(error, CollectiveError):  # another rank stopped first: let the launcher name it
            let_the_launcher_see_the_first_failure()
        return 1
    except OSError as error:  # a disk that fills up, a file system that fails: the environment, not a bug
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        print(f"maml-rl: error: cannot write or read a file{where}: {error.strerror or error}", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _quiet_io_errors_in_threads(args: threading.ExceptHookArgs) -> None:
    """TensorBoard's writer thread re-raises its I/O errors in the main thread, which reports them in one line;
    keep the thread's own traceback off stderr. Other thread errors are reported as usual."""
    if isinstance(args.exc_value, OSError):
        return
    threading.__excepthook__(args)


def run() -> NoReturn:
    """The ``maml-rl`` command and ``python -m maml_rl.cli`` (how the launcher starts each rank of ``--nproc R``):
    :func:`main` on ``sys.argv``, then exit with its status; a data-parallel worker exits without interpreter
    finalization (:func:`maml_rl.distributed.exit_worker` says why)."""
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a launcher's rank; a plain command never imports torch here
        from maml_rl.distributed import exit_worker

        exit_worker(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
