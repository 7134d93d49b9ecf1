"""The meta-training loop: one meta-iteration reads top to bottom as the data flow of docs/architecture.md §2.

    tasks -> set_tasks -> collect: for k < K: sample with θ_k, advantages, θ_{k+1} = adapt(θ_k)
                                   -> sample validation episodes with θ_K
          -> meta-learner step (new θ as data) -> load into the policy -> log, checkpoint

The trainer knows no meta-learner by name: ``make_learner`` builds the one ``algorithm.name`` selects.

Data-parallel (:mod:`maml_rl.distributed`, ``R`` ranks): every rank samples all ``M`` tasks from the shared task
stream and keeps its contiguous shard; its environment holds the shard's ``N / R`` sub-environments
(``set_rows``), so reset, environment and action noise are those of one process stepping all ``N``. Collection,
advantages and adaptation run on the shard; the meta-learner reduces across ranks; metrics are reduced over all
episodes; the parameters' checksum is compared every iteration. Rank 0 alone writes the run directory.
"""

from __future__ import annotations

import copy
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

import envs
from maml_rl import resources
from maml_rl.build import (
    Generators,
    build_family,
    build_policy,
    horizon_of,
    policy_dims,
    pool_meta_batch,
    resolve_device,
    task_pool_generator,
)
from maml_rl.checkpoint import (
    CheckpointError,
    check_fits,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from maml_rl.collect import MetaBatch, PhaseTimer, collect, pack_batch
from maml_rl.config import Config, resolved, save_config
from maml_rl.distributed import DistributedError, World, check_baseline_scope
from maml_rl.episodes import Episodes
from maml_rl.errors import NonFiniteError, TrainingError
from maml_rl.logging import METRICS_FILE, MetricsLogger
from maml_rl.metalearners import make_learner
from maml_rl.policies import Params, Policy
from maml_rl.rundir import CONFIG_FILE, RunDirError, RunLock, remove_stale_temp_files

#: metrics shown beside the hyperparameters in TensorBoard's HPARAMS tab
HPARAM_METRICS = ("returns/pre_adapt_mean", "returns/post_adapt_mean", "trpo/kl_after")


def _returns_stats(prefix: str, episodes: Episodes) -> dict[str, float]:
    returns = episodes.kept_returns()
    std = float(returns.std()) if returns.numel() > 1 else 0.0  # the sample std of one episode is undefined
    return {f"returns/{prefix}_mean": float(returns.mean()), f"returns/{prefix}_std": std}


def _sharded_returns_stats(prefix: str, count: float, total: float, squares: float) -> dict[str, float]:
    """Mean and sample std from the count, sum and sum of squares of every rank's episode returns (float64)."""
    mean = total / count
    variance = max(squares - count * mean * mean, 0.0) / (count - 1) if count > 1 else 0.0
    return {f"returns/{prefix}_mean": mean, f"returns/{prefix}_std": variance ** 0.5}


def returns_metrics(batch: MetaBatch, world: World | None = None) -> dict[str, float]:
    """``returns/pre_adapt_*``, ``returns/inner_step{k}_*`` (``K > 1``) and ``returns/post_adapt_*`` of a batch.

    With a distributed ``world`` the batch is this rank's shard and the statistics are over every rank's
    episodes (counts, sums and sums of squares in float64, one all-reduce).
    """
    named = [("pre_adapt" if k == 0 else f"inner_step{k}", episodes) for k, episodes in enumerate(batch.train)]
    named.append(("post_adapt", batch.valid))
    if not batch.train:  # no adaptation (pretrained): the validation batch is the only batch
        named.append(("pre_adapt", batch.valid))
    metrics: dict[str, float] = {}
    if world is None or not world.distributed:
        for prefix, episodes in named:
            metrics.update(_returns_stats(prefix, episodes))
        return metrics
    shares = []
    for _, episodes in named:
        returns = episodes.kept_returns().detach().to(torch.float64)
        shares += [float(returns.numel()), float(returns.sum()), float((returns * returns).sum())]
    sums = world.reducer(1).sum_floats(*shares)
    for i, (prefix, _) in enumerate(named):
        metrics.update(_sharded_returns_stats(prefix, *sums[3 * i:3 * i + 3]))
    return metrics


class _NoLogger:
    """What ranks other than 0 log to: nothing (rank 0 alone writes the run directory)."""

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        pass

    def log_text(self, tag: str, text: str) -> None:
        pass

    def log_hparams(self, hparams: dict[str, Any], metric_tags: Any) -> None:
        pass

    def close(self) -> None:
        pass


def load_parameters(policy: Policy, params: Params) -> None:
    """Copy a meta-learner's new parameters into the policy (names and shapes must match)."""
    current = dict(policy.named_parameters())
    if set(params) != set(current):
        raise ValueError(f"the meta-learner returned parameters {sorted(params)}, the policy has {sorted(current)}")
    with torch.no_grad():
        for name, p in current.items():
            if params[name].shape != p.shape:
                raise ValueError(f"parameter {name}: shape {tuple(params[name].shape)}, expected {tuple(p.shape)}")
            p.copy_(params[name])


def check_parameters(policy: Policy, params: Params) -> None:
    """A meta-learner's new parameters, and the Gaussian policy's standard deviation under them, must be finite.

    Raises:
        NonFiniteError: naming the offending parameters (the policy still holds the old ones).
    """
    bad = [name for name, p in params.items() if not bool(torch.isfinite(p).all())]
    log_std = params.get("log_std")
    if (not bad and log_std is not None and hasattr(policy, "log_std")
            and not bool(torch.isfinite(log_std.detach().exp()).all())):
        bad = [f"std (log_std up to {float(log_std.detach().max()):.4g})"]
    if bad:
        raise NonFiniteError(f"the outer step would make the policy non-finite ({', '.join(bad[:3])}); step not "
                             "applied")


class Trainer:
    """Owns a run: family, vectorized environment, policy, meta-learner, generators, logger and checkpoints.

    Args:
        config: the validated experiment config.
        run_dir: the run directory (created; must not hold another run unless ``resume``).
        resume: continue from the latest checkpoint in ``run_dir``.
        world: this process's place in a data-parallel job (:meth:`World.from_env`, its process group joined);
            None: one process.
    """

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False, world: World | None = None
                 ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.world = world if world is not None else World()
        self.device = self.world.device(resolve_device(config.train.device))
        self.family = build_family(config)
        maml = config.maml
        self.num_tasks, self.per_task = maml.meta_batch_size, maml.fast_batch_size
        self.shard = self.world.shard(self.num_tasks)  # all tasks in one process
        check_baseline_scope(maml.baseline_scope, self.world.size)
        horizon = horizon_of(config, self.family)
        #: env steps per task and batch with ``maml.step_budget`` (E × horizon, the reference's batch_size), else None
        self.step_budget = self.per_task * horizon if maml.step_budget else None
        #: ``maml.task_pool``'s tasks (the same on every rank and after a resume), or None: new tasks every iteration
        self.task_pool = (None if maml.task_pool is None
                          else self.family.sample_tasks(maml.task_pool, task_pool_generator(config.train.seed)))
        # Before anything big is allocated or anything is written: does the run fit in memory?
        obs_dim, action_size, discrete = policy_dims(self.family)
        # each rank holds M / R tasks; the local ranks of a CPU run share this machine's memory
        estimate = resources.estimate_training_memory(config, obs_dim, action_size, discrete, horizon,
                                                      tasks=self.shard.size)
        sharing = self.world.local_size if self.device.type == "cpu" else 1
        resources.check_memory(estimate, resources.available_memory(self.device), self.device, sharing)
        self.learner_threads, warning = resources.cap_threads(config.train.num_threads)
        if self.world.distributed:
            self._share_cores(config)
        if warning and self.world.is_main:
            print(f"maml-rl: warning: {warning}", file=sys.stderr)
        taken = not resume and (list_checkpoints(self.run_dir) or (self.run_dir / METRICS_FILE).exists())
        if self.world.any_failed(bool(taken)):  # every rank looks before rank 0 writes anything
            raise RunDirError(f"{self.run_dir} already holds a run; continue it with --resume {self.run_dir} or "
                              "choose another --output")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock(self.run_dir)
        if self.world.is_main:
            self._lock.acquire()  # one job per run; released by close() or when the process ends
        try:
            if self.world.is_main:
                remove_stale_temp_files(self.run_dir)  # left by a process killed mid-write; we hold the lock
            torch.set_num_threads(self.learner_threads)
            self.generators = Generators.from_seed(config.train.seed, self.device)
            self.policy = build_policy(config, self.family, self.generators.init_generator()).to(self.device)
            self.env = self.family.make_vector_env(
                self.shard.size * self.per_task, max_episode_steps=horizon, device=self.family.env_device(self.device)
            )
            self.env.set_rows(*self.shard.rows(self.per_task))
            self.metalearner = make_learner(config, self.policy, self.world.reducer(self.num_tasks))
            self.iteration = 0
            # config.yaml is (re)written only once the run has started cleanly: after the first new iteration
            # when resuming with a changed config, at once for a new run.
            self._config_to_write = False
            restarted = False
            if resume:
                restarted = not self._restore()
            elif self.world.is_main:
                save_config(config, self.run_dir / CONFIG_FILE)
            self.logger: MetricsLogger | _NoLogger = (
                MetricsLogger(self.run_dir, resume_after=self.iteration if resume else None) if self.world.is_main
                else _NoLogger())
            if not resume or restarted:
                self.logger.log_text("config", "```\n" + yaml.safe_dump(config.to_dict(), sort_keys=False) + "```")
                self.logger.log_hparams(config.to_dict(), HPARAM_METRICS)
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        """Release the run directory (its lock); the trainer cannot train after this."""
        if self.world.is_main:
            self._lock.release()

    def _share_cores(self, config: Config) -> None:
        """Data-parallel on one machine: 1 torch intra-op thread per rank unless ``train.num_threads`` says
        otherwise, and the usable cores split between the local ranks' simulator threads (locomotion
        ``num_threads``), never more than the cores in all."""
        local = max(self.world.local_size, 1)
        per_rank = max(resources.usable_cores() // local, 1)
        self.learner_threads = min(self.learner_threads, per_rank)
        if hasattr(self.family, "num_threads"):
            asked = config.env.options.get("num_threads")
            threads = per_rank if asked is None else min(int(asked), per_rank)
            if asked is not None and threads < int(asked) and self.world.is_main:
                print(f"maml-rl: warning: env.options.num_threads={asked} with {local} processes on "
                      f"{resources.usable_cores()} cores; using {threads} per process", file=sys.stderr)
            self.family.num_threads = threads

    # ------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "policy": self.policy.state_dict(),
            "generators": self.generators.state_dict(),
            "config": self.config.to_dict(),
            "family": self.config.env.family,
            "metalearner": self.metalearner.state_dict(),
        }

    def _restore(self) -> bool:
        """Load the latest checkpoint; returns False (a clean restart from iteration 0) if there is none."""
        if not list_checkpoints(self.run_dir):
            print(f"maml-rl: {self.run_dir} has no checkpoint yet (it stopped before its first one): restarting it "
                  "from iteration 0", file=sys.stderr)
            self._config_to_write = True
            return False
        iteration, state = load_checkpoint(self.run_dir)
        where = checkpoint_path(self.run_dir, iteration)
        check_fits(state, self.config.env.family, self.policy, where)
        try:
            self.generators.load_state_dict(state["generators"])
        except ValueError as error:
            raise CheckpointError(f"checkpoint {where}: {error}") from error
        try:
            self.policy.load_state_dict(state["policy"])
        except (RuntimeError, TypeError) as error:
            raise CheckpointError(f"checkpoint {where} does not load: {str(error).splitlines()[0]}") from error
        try:
            self.metalearner.load_state_dict(state.get("metalearner", {}))
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"checkpoint {where}: the meta-learner's state does not load "
                                  f"({type(error).__name__}: {error})") from error
        # allowed by the caller: config.yaml follows the run once it has completed an iteration (compared in
        # today's form: older runs resume as they are)
        self._config_to_write = resolved(state.get("config", {})) != self.config.to_dict()
        self.iteration = iteration
        return True

    def save(self, state: dict[str, Any] | None = None) -> Path:
        """Checkpoint ``state`` (default: the current state) under its iteration (rank 0 only writes)."""
        state = self.state_dict() if state is None else state
        if not self.world.is_main:
            return checkpoint_path(self.run_dir, state["iteration"])
        return save_checkpoint(self.run_dir, state["iteration"], state)

    # ------------------------------------------------------------------------------ one meta-iteration

    def meta_iteration(self) -> dict[str, float]:
        """Sample tasks, collect (adapt, validation episodes), take the meta-learner's step; returns the metrics."""
        timer = PhaseTimer()
        world, shard = self.world, self.shard
        with timer.phase("iteration"):
            if self.task_pool is None:
                tasks = self.family.sample_tasks(self.num_tasks, self.generators.tasks)  # all M tasks, on every rank
            else:
                tasks = pool_meta_batch(self.task_pool, self.num_tasks)
            own = {key: value[shard.start:shard.stop] for key, value in tasks.items()}
            self.env.set_tasks(envs.repeat_tasks(own, self.per_task))
            learner = self.metalearner
            error: NonFiniteError | None = None
            try:
                batch = collect(
                    self.env, self.policy, learner.shared_params(), self.config, shard.size,
                    [self.config.maml.fast_lr] * learner.num_inner_steps, self.generators, learner.inner_loss, timer,
                    budget=self.step_budget, any_rank=world.any_failed,
                    baseline_scope=self.config.maml.baseline_scope,
                )
            except NonFiniteError as caught:
                error = caught
            if world.any_failed(error is not None):  # every rank stops, not only the one that saw it
                raise error if error is not None else NonFiniteError("another rank's sampling or adaptation failed "
                                                                     "(non-finite values; its message says which)")
            with timer.phase("outer"):
                # the learner's losses are per-step: it gets the unmasked steps only (metrics below use episodes)
                packed = pack_batch(batch, world.max_over_ranks) if learner.packs_steps(learner.settings) else batch
                new_params, learner_metrics = learner.step(packed)
                del packed
            check_parameters(self.policy, new_params)  # before anything changes: nothing non-finite is loaded
            load_parameters(self.policy, new_params)
            world.check_same_parameters(self.policy.parameters())
        log_std = getattr(self.policy, "log_std", None)

        counts = [sum(episodes.num_steps for episodes in batch.batches),
                  sum(episodes.num_unstable for episodes in batch.batches)]
        env_steps, unstable = world.reducer(1).sum_floats(*counts) if world.distributed else counts
        seconds = timer.seconds
        metrics = {**returns_metrics(batch, world), **learner_metrics}
        if log_std is not None:  # Gaussian policies only: no NaN column for categorical ones
            metrics["policy/std"] = float(log_std.detach().exp().mean())
        return {
            **metrics,
            "env/steps": float(env_steps),
            "env/steps_per_second": env_steps / max(seconds["sampling"], 1e-9),
            "env/unstable": float(unstable),
            **{f"time/{phase}": seconds[phase] for phase in ("sampling", "adaptation", "outer", "iteration")},
        }

    # ------------------------------------------------------------------------------ the loop

    def train(self, progress: bool = True) -> list[dict[str, float]]:
        """Run until ``train.num_iterations``; checkpoints periodically, at the end and on Ctrl-C.

        Raises:
            TrainingError: a non-finite quantity or a failed write stopped the run; the state after the last
                completed iteration is checkpointed (if a write is still possible) and nothing non-finite is
                ever written.
        """
        total = self.config.train.num_iterations
        history = []
        bar = tqdm(total=total, initial=self.iteration, disable=not (progress and self.world.is_main),
                   desc="meta-train", unit="it")
        completed = copy.deepcopy(self.state_dict())  # the state after the last completed iteration
        try:
            with _interrupt_as_exception():
                while self.iteration < total:
                    try:
                        metrics = self.meta_iteration()
                        self.logger.log(self.iteration + 1, metrics)
                    except NonFiniteError as error:
                        raise TrainingError(f"at iteration {self.iteration + 1}: {error}; "
                                            f"{self._save_completed(completed)}") from error
                    except OSError as error:
                        raise TrainingError(f"at iteration {self.iteration + 1}: cannot write in {self.run_dir} "
                                            f"({error.strerror or error}); {self._last_checkpoint()}") from error
                    except DistributedError as error:
                        raise type(error)(f"at iteration {self.iteration + 1}: {error}; "
                                          f"{self._save_completed(completed)}") from error
                    self.iteration += 1
                    history.append(metrics)
                    try:
                        if self._config_to_write and self.world.is_main:
                            save_config(self.config, self.run_dir / CONFIG_FILE)
                            self._config_to_write = False
                        if self.iteration % self.config.train.checkpoint_every == 0 or self.iteration == total:
                            self.save()
                    except OSError as error:
                        raise TrainingError(f"at iteration {self.iteration}: cannot write in {self.run_dir} "
                                            f"({error.strerror or error}); {self._last_checkpoint()}") from error
                    completed = copy.deepcopy(self.state_dict())
                    bar.update(1)
                    bar.set_postfix(
                        pre=f"{metrics['returns/pre_adapt_mean']:.2f}",
                        post=f"{metrics['returns/post_adapt_mean']:.2f}",
                        s_it=f"{metrics['time/iteration']:.2f}",
                    )
        except KeyboardInterrupt:
            # An interrupted iteration may have moved the generators or half-applied a line-search step:
            # checkpoint the state after the last completed iteration, so a resume repeats that iteration exactly.
            if (self.world.is_main and completed["iteration"] > 0
                    and completed["iteration"] not in list_checkpoints(self.run_dir)):
                self.save(completed)
            raise
        finally:
            bar.close()
            try:
                self.logger.close()
            finally:
                self.close()
        return history

    def _last_checkpoint(self) -> str:
        last = max(list_checkpoints(self.run_dir), default=None)
        return f"last good checkpoint: iteration {last}" if last is not None else "no checkpoint yet"

    def _save_completed(self, completed: dict[str, Any]) -> str:
        """Checkpoint the last completed iteration if it is not yet; returns a phrase saying where it is."""
        iteration = completed["iteration"]
        if self.world.is_main and iteration > 0 and iteration not in list_checkpoints(self.run_dir):
            try:
                self.save(completed)
            except OSError:
                return self._last_checkpoint()
        if iteration == 0:
            return "no checkpoint yet"
        return f"the last completed iteration ({iteration}) is checkpointed; maml-rl train --resume {self.run_dir}"


@contextmanager
def _interrupt_as_exception():
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt) while training, so both save a checkpoint."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
