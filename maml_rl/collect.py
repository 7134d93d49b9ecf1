"""One data path for training and evaluation: sample → advantages → adapt K steps → validation sample.

    θ_0 = θ (shared, every task) → for k < K: D_k = sample(θ_k), advantages(D_k), θ_{k+1} = adapt(θ_k, D_k, α_k)
                                 → D' = sample(θ_K), advantages(D')

The meta-trainer calls :func:`collect` once per meta-iteration (``α_k = maml.fast_lr``, ``K`` = the learner's
inner steps) and hands the :class:`MetaBatch` to its meta-learner; the evaluation calls it once per row with
``α, α/2, α/2, …`` and reads the returns of every batch. Sampling runs with one intra-op thread
(:func:`one_thread`); every phase is timed by a :class:`PhaseTimer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from envs.base import MetaVectorEnv
from maml_rl.adaptation import InnerLoss, adapt, inner_loss
from maml_rl.advantages import with_advantages
from maml_rl.build import Generators
from maml_rl.config import Config
from maml_rl.episodes import Episodes, join_rounds, pack_steps, steps_per_task
from maml_rl.errors import NonFiniteError
from maml_rl.policies import Params, Policy, task_params
from maml_rl.sampling import sample_episodes


@dataclass
class PhaseTimer:
    """Wall-clock seconds per named phase, summed over repeated entries.

    >>> timer = PhaseTimer()
    >>> with timer.phase("sampling"):
    ...     episodes = sample(...)
    >>> timer.seconds  # {"sampling": 0.12}
    """

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def one_thread() -> Iterator[None]:
    """Run with one intra-op thread, then restore the previous count (small policy calls next to busy environment
    threads are much slower with OpenMP spinning; docs/architecture.md §7)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class MetaBatch:
    """What one collection produced, and what a meta-learner receives.

    Attributes:
        train: ``K`` batches with advantages; batch ``k`` was sampled with ``θ_k`` (``[T, N = M × E, …]`` each).
        valid: the validation batch with advantages, sampled with ``θ_K``.
        adapted: ``θ_K``, per-task parameters ``[M, ...]`` (no graph).
    """

    train: tuple[Episodes, ...]
    valid: Episodes
    adapted: Params

    @property
    def num_tasks(self) -> int:
        """``M``."""
        return self.valid.num_tasks

    @property
    def batches(self) -> tuple[Episodes, ...]:
        """Every batch in sampling order: ``D_0 … D_{K-1}, D'``."""
        return (*self.train, self.valid)


def _local_any(flag: bool) -> bool:
    """One process: the flag itself."""
    return flag


def _local_max(value: int) -> int:
    """One process: the value itself."""
    return value


def pack_batch(batch: MetaBatch, max_over_ranks: Callable[[int], int] = _local_max) -> MetaBatch:
    """``batch`` with every episode batch packed (:func:`maml_rl.episodes.pack_steps`), for a learner whose losses
    are per-step (``MetaLearner.packs_steps``); ``adapted`` unchanged. Each batch is packed to the largest task's
    step count over all processes (``max_over_ranks``: ``World.max_over_ranks``, the identity for one process), so
    that a task's packed tensors do not depend on the number of processes."""

    def pack(episodes: Episodes) -> Episodes:
        return pack_steps(episodes, max_over_ranks(int(steps_per_task(episodes).max())))

    return MetaBatch(train=tuple(pack(episodes) for episodes in batch.train), valid=pack(batch.valid),
                     adapted=batch.adapted)


def check_episodes(episodes: Episodes) -> None:
    """Raise :class:`NonFiniteError` if the environment returned a non-finite observation or reward."""
    for name in ("observations", "rewards"):
        if not bool(torch.isfinite(getattr(episodes, name)).all()):
            raise NonFiniteError(f"non-finite {name} from the environment")


def collect(
    env: MetaVectorEnv,
    policy: Policy,
    shared: Params,
    config: Config,
    num_tasks: int,
    step_sizes: Sequence[float],
    generators: Generators,
    loss: InnerLoss = inner_loss,
    timer: PhaseTimer | None = None,
    budget: int | None = None,
    any_rank: Callable[[bool], bool] = _local_any,
    baseline_scope: str = "task",
) -> MetaBatch:
    """Sample, compute advantages and adapt for ``K = len(step_sizes)`` steps, then sample validation episodes.

    Args:
        env: the vectorized environment with its tasks set (sub-environment ``n`` runs task ``n // E``).
        policy: the policy module (structure only).
        shared: the shared parameters ``θ`` (not modified).
        config: the run's config: ``env.action_scale``, ``maml.gamma``, ``maml.gae_lambda``.
        num_tasks: ``M``.
        step_sizes: ``α_0 … α_{K-1}``.
        generators: action noise and the seed of every reset come from here.
        loss: the inner estimator of the learner that will use the batch.
        timer: receives the ``sampling`` and ``adaptation`` phases.
        budget: environment steps per task for every batch (:func:`sample`); None: ``E`` episodes per task.
        any_rank: ORs a flag over the processes of a data-parallel run (:func:`sample`).
        baseline_scope: ``task`` or ``batch`` (``maml.baseline_scope``; :func:`with_advantages`). Training passes
            the config's; evaluation keeps ``task``, every held-out task adapted on its own.

    Raises:
        NonFiniteError: the environment returned a non-finite observation or reward.
    """
    timer = timer if timer is not None else PhaseTimer()
    maml = config.maml
    params = task_params({name: p.detach() for name, p in shared.items()}, num_tasks)
    batches = []
    for k in range(len(step_sizes) + 1):
        with timer.phase("sampling"), one_thread():
            episodes = sample(env, policy, params, num_tasks, generators, config.env.action_scale, budget, any_rank)
        check_episodes(episodes)
        with timer.phase("adaptation"):
            episodes = with_advantages(episodes, maml.gamma, maml.gae_lambda, scope=baseline_scope,
                                       obs_clip=maml.baseline_obs_clip)
            if k < len(step_sizes):
                params = adapt(policy, params, [episodes], step_sizes[k], create_graph=False, loss=loss)
        batches.append(episodes)
    return MetaBatch(train=tuple(batches[:-1]), valid=batches[-1], adapted=params)


def sample(env: MetaVectorEnv, policy: Policy, params: Params, num_tasks: int, generators: Generators,
           action_scale: float, budget: int | None = None, any_rank: Callable[[bool], bool] = _local_any
           ) -> Episodes:
    """One batch with per-task ``params [M, ...]``; every reset seed is drawn from ``generators.resets``.

    Without ``budget``: one episode per sub-environment (``E`` per task). With ``budget`` (environment steps per
    task, the reference code's ``batch_size``): rounds of ``E`` episodes per task, all tasks in lockstep, until
    every task's kept episodes hold at least ``budget`` steps; a task keeps a round only if it started below its
    budget (:func:`maml_rl.episodes.join_rounds`). Each round draws a new reset seed. An environment that
    ``freezes_rows`` does not simulate the sub-environments of tasks whose budget is met (their rounds are dropped
    anyway; the batch is the same). ``any_rank`` ORs a flag over
    the processes of a data-parallel run (``World.any_failed``), so that every process samples the same number of
    rounds; it is the identity for one process.
    """
    rounds: list[Episodes] = []
    kept: list[torch.Tensor] = []
    steps = torch.zeros(num_tasks, device=generators.actions.device)  # [M] kept steps so far
    frozen: torch.Tensor | None = None  # [N] sub-environments of tasks whose budget is met (env.freezes_rows)
    while True:
        episodes = sample_episodes(env, policy, params, num_tasks, generators.actions,
                                   seed=generators.next_reset_seed(), action_scale=action_scale, frozen=frozen)
        if budget is None:
            return episodes
        collecting = steps < budget  # [M]: the tasks that keep this round
        steps = steps + torch.where(collecting, episodes.mask.reshape(episodes.horizon, num_tasks, -1).sum((0, 2)), 0.0)
        rounds.append(episodes)
        kept.append(collecting)
        if not any_rank(bool((steps < budget).any())):
            return join_rounds(rounds, kept)
        if env.freezes_rows:  # the next round simulates only the tasks still below their budget
            frozen = (steps >= budget).repeat_interleave(env.num_envs // num_tasks)
