"""Data-parallel meta-training over ``torch.distributed`` (docs/architecture.md, "Data-parallel training").

``R`` ranks each own a contiguous shard of the ``M`` tasks of a meta-batch and the ``N / R`` sub-environments that
run them. A meta-learner computes every per-task value (losses, per-task gradients, Fisher-vector products) on its
own tasks; the reducer gathers them into the whole ``[M, ...]`` tensor and sums it over tasks in task order, so every
rank holds the same surrogate, gradient, Fisher-vector products and line-search values, bit for bit the same as one
process would, and takes the same step::

    world = World.from_env()                     # WORLD_SIZE / RANK / LOCAL_RANK; one process when unset
    world.init(device, timeout_s=300)            # gloo on CPU, nccl on cuda:LOCAL_RANK
    shard = world.shard(M)                       # tasks shard.start … shard.stop − 1
    reducer = world.reducer(M)                   # handed to the meta-learner
    grad = reducer.sum_over_tasks(per_task_grads)  # [M / R, P] -> [P], one collective
    world.check_same_parameters(params)          # every iteration: stop loudly if ranks diverged

In one process (``R = 1``) the gathers are the identity and nothing is initialized.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

from maml_rl.config import ConfigError
from maml_rl.errors import TrainingError

DEFAULT_TIMEOUT_S = 300.0


#: seconds a worker whose collective failed waits before it exits: the elastic launcher looks at its workers every
#: 0.1 s (``torchrun --monitor-interval``'s default) and names as the root cause the first failure it sees, so the
#: rank that stopped first is seen first (the launcher may end the waiting one sooner with SIGTERM)
LAUNCHER_SEES_FIRST_FAILURE_S = 1.0


class DistributedError(TrainingError):
    """A collective failed or timed out (another rank died or hung), or the ranks' parameters diverged."""


class CollectiveError(DistributedError):
    """A collective failed or timed out: another rank stopped or hung, and its own failure is the root cause."""


class ShardError(ConfigError):
    """The meta-batch cannot be split into equal contiguous shards over the ranks; the message says why."""


def check_baseline_scope(scope: str, world_size: int) -> None:
    """Refuse ``maml.baseline_scope: batch`` over several processes.

    Raises:
        ShardError: ``scope == "batch"`` and ``world_size > 1``: one baseline fit over the whole meta-batch needs
            every task in one process, and data-parallel training splits the tasks.
    """
    if scope == "batch" and world_size > 1:
        raise ShardError(f"maml.baseline_scope=batch fits one baseline over the whole meta-batch, which {world_size} "
                         "processes would split; train it in one process (drop --nproc)")


@dataclass(frozen=True)
class Shard:
    """This rank's tasks ``start … stop − 1`` of a meta-batch of ``total`` tasks."""

    start: int
    stop: int
    total: int

    @property
    def size(self) -> int:
        """``M / R``: tasks on this rank."""
        return self.stop - self.start

    def rows(self, per_task: int) -> tuple[int, int]:
        """``(first sub-environment, all sub-environments)`` for ``per_task`` episodes per task (``set_rows``)."""
        return self.start * per_task, self.total * per_task


def check_shardable(num_tasks: int, world_size: int, key: str = "maml.meta_batch_size") -> None:
    """Refuse a split of ``num_tasks`` tasks over ``world_size`` ranks that is not into equal non-empty shards.

    Args:
        key: how the number of tasks is named in the message (the config key, or ``--tasks`` for evaluation).

    Raises:
        ShardError: ``world_size < 1``, more ranks than tasks, or ``num_tasks % world_size != 0``.
    """
    if world_size < 1:
        raise ShardError(f"the number of processes must be at least 1, got {world_size}")
    if world_size > num_tasks:
        raise ShardError(f"{world_size} processes for {key}={num_tasks} tasks: at most one process per task")
    if num_tasks % world_size:
        raise ShardError(f"{key}={num_tasks} is not divisible by {world_size} processes; choose a number of "
                         "processes that divides it")


@dataclass(frozen=True)
class World:
    """Where this process stands in a ``torchrun`` job (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``LOCAL_WORLD_SIZE``); one process (``size == 1``) when they are unset."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_size: int = 1

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> World:
        """Read the launcher's variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        size = int(env.get("WORLD_SIZE", "1"))
        local_size = int(env.get("LOCAL_WORLD_SIZE", str(size)))
        return cls(size=size, rank=int(env.get("RANK", "0")), local_rank=int(env.get("LOCAL_RANK", "0")),
                   local_size=local_size)

    @property
    def distributed(self) -> bool:
        """More than one rank."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory and shows progress."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The learner device of this rank: ``cuda:LOCAL_RANK`` when the run trains on CUDA, else ``device``."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    def init(self, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Join the process group (gloo on CPU, nccl on CUDA) unless there is one rank or it is already joined.

        ``timeout_s`` bounds every collective: a rank that died or hangs ends the job within it.
        """
        if not self.distributed or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=device if backend == "nccl" else None)

    def close(self) -> None:
        """Leave the process group (if this process joined one)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def shard(self, num_tasks: int, key: str = "maml.meta_batch_size") -> Shard:
        """This rank's contiguous tasks (:func:`check_shardable` first; ``key`` names the count in its message)."""
        check_shardable(num_tasks, self.size, key)
        size = num_tasks // self.size
        return Shard(self.rank * size, (self.rank + 1) * size, num_tasks)

    def reducer(self, num_tasks: int) -> Reducer:
        """The :class:`Reducer` of a meta-batch of ``num_tasks`` tasks over this world."""
        return Reducer(num_tasks, self.size, self.rank)

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text`` on every rank."""
        if not self.distributed:
            return text
        box = [text]
        _collective("broadcast", self.rank, lambda: dist.broadcast_object_list(box, src=0))
        return str(box[0])

    def any_failed(self, failed: bool) -> bool:
        """True on every rank if ``failed`` on any (one collective)."""
        if not self.distributed:
            return failed
        flag = torch.tensor([float(failed)], dtype=torch.float64, device=_collective_device())
        _collective("all_reduce (status)", self.rank, lambda: dist.all_reduce(flag, op=dist.ReduceOp.MAX))
        return bool(flag.item() > 0)

    def max_over_ranks(self, value: int) -> int:
        """The largest of every rank's ``value`` (one collective; exact for integers below 2**53)."""
        if not self.distributed:
            return value
        box = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
        _collective("all_reduce (max)", self.rank, lambda: dist.all_reduce(box, op=dist.ReduceOp.MAX))
        return int(box.item())

    def check_same_parameters(self, params: Iterable[Tensor]) -> None:
        """Compare a cheap checksum of ``params`` across ranks (one collective).

        Raises:
            DistributedError: the ranks hold different parameters (the message names the ranks' checksums).
        """
        if not self.distributed:
            return
        flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in params])
        weights = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64, device=flat.device)
        checksum = torch.stack([flat.sum(), (flat * weights).sum()])
        gathered = torch.zeros(self.size, 2, dtype=torch.float64, device=_collective_device())
        gathered[self.rank] = checksum.to(gathered.device)
        _collective("all_reduce (parameter checksum)", self.rank, lambda: dist.all_reduce(gathered))
        if not bool((gathered == gathered[0]).all()):
            values = ", ".join(f"rank {r}: {gathered[r, 0].item():.17g}" for r in range(self.size))
            raise DistributedError(f"the ranks' parameters diverged (checksums {values}); stopping")


def let_the_launcher_see_the_first_failure() -> None:
    """Wait :data:`LAUNCHER_SEES_FIRST_FAILURE_S` in a worker that stops because a collective failed.

    A rank that dies takes the others' next collective down with it; without this wait they can exit within one of
    the launcher's looks, and it then names rank 0 as the root cause (its failures carry whole-second time stamps
    and a tie goes to the lowest rank) instead of the rank that stopped first.
    """
    time.sleep(LAUNCHER_SEES_FIRST_FAILURE_S)


def exit_worker(code: int) -> NoReturn:
    """End a data-parallel worker with status ``code`` once its work is done, without interpreter finalization.

    A gloo collective returns to Python as soon as its result is ready; the process group's worker thread drops
    its reference to the collective's tensors a moment later, and dropping the last C++ reference to a tensor
    that has a Python object needs the GIL. When the main thread has already reached interpreter finalization,
    that thread cannot take the GIL, is made to exit, and the forced unwind through a destructor aborts the
    process ("terminate called without an active exception", SIGABRT; the launcher then reports the whole job as
    failed). Seen once in CI and in 2 of 104 two-process trainings on 2 busy cores, each time on rank 1 (rank 0
    still writes files after its last collective, which gives the thread time); a core dump shows
    ``ProcessGroupGloo::runLoop`` → ``~AsyncAllreduceWork`` → ``TensorImpl::decref_pyobject`` → ``take_gil`` →
    ``pthread_exit`` → ``abort`` while the main thread runs ``Py_FinalizeEx``. Every file of a run is closed
    before this point (checkpoints and metrics are written and closed as they are produced; the TensorBoard writer
    is closed when training ends), so the worker flushes its standard streams and leaves with ``os._exit``, which
    skips finalization and the race.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing more can be said on it
            stream.flush()
    os._exit(code)


def _collective_device() -> torch.device:
    """The device collective buffers live on: the current CUDA device with nccl, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _collective(what: str, rank: int, call) -> None:  # type: ignore[no-untyped-def]
    """Run one collective; a failure or timeout becomes a one-line :class:`CollectiveError` naming this rank."""
    try:
        call()
    except (RuntimeError, dist.DistError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CollectiveError(f"rank {rank}: {what} failed ({first}); another rank probably stopped or hung "
                              "(its own message says why)") from error


class Reducer:
    """Sums and means over the ``M`` tasks of a meta-batch split over ranks, the same for any number of ranks.

    Every rank holds ``M / R`` of the ``M`` tasks in a contiguous shard. A learner computes per-task values
    (losses ``[M / R]``, gradients and Fisher-vector products ``[M / R, P]``); :meth:`sum_over_tasks` gathers every
    rank's rows into the whole ``[M, ...]`` tensor (one collective) and sums it over tasks in task order on every
    rank. Since each task's values are computed from that task's data alone, the gathered tensor, and so every sum,
    is bit for bit the same for ``R = 1, 2, 4 …``: conjugate gradient and the line search run identically on every
    rank, and the number of ranks does not change a run's numbers. In one process the gather is the identity.

    Args:
        num_tasks: ``M``, the whole meta-batch.
        world_size: ``R``.
        rank: this rank.
    """

    def __init__(self, num_tasks: int = 1, world_size: int = 1, rank: int = 0) -> None:
        self.num_tasks, self.world_size, self.rank = num_tasks, world_size, rank

    @property
    def distributed(self) -> bool:
        """More than one rank: values must be reduced."""
        return self.world_size > 1

    def total_tasks(self, local: int) -> int:
        """``M`` from this rank's number of tasks ``M / R``."""
        return local * self.world_size

    def sum(self, share: Tensor) -> Tensor:
        """The sum of every rank's ``share`` (any shape; one all-reduce); a new tensor, without autograd graph.

        For values whose summation order does not matter (counts, metrics); per-task values go through
        :meth:`sum_over_tasks`.
        """
        if not self.distributed:
            return share
        total = share.detach().clone()
        _collective("all_reduce", self.rank, lambda: dist.all_reduce(total))
        return total

    def sum_floats(self, *shares: float) -> list[float]:
        """The sums of several floats over ranks (one all-reduce, float64)."""
        if not self.distributed:
            return list(shares)
        return self.sum(torch.tensor(shares, dtype=torch.float64, device=_collective_device())).tolist()

    def gather_tasks(self, local: Tensor) -> Tensor:
        """All ``M`` per-task values ``[M, ...]`` from every rank's ``local [M / R, ...]`` (one collective, exact:
        each rank contributes its rows and zeros elsewhere, and ``x + 0 = x``); without autograd graph."""
        if not self.distributed:
            return local.detach()
        size = local.shape[0]
        whole = local.new_zeros((size * self.world_size, *local.shape[1:]))
        whole[self.rank * size:(self.rank + 1) * size] = local.detach()
        return self.sum(whole)

    def own_tasks(self, whole: Tensor) -> Tensor:
        """This rank's rows of a ``[M, ...]`` tensor (the inverse of :meth:`gather_tasks`)."""
        if not self.distributed:
            return whole
        size = whole.shape[0] // self.world_size
        return whole[self.rank * size:(self.rank + 1) * size]

    def sum_over_tasks(self, local: Tensor) -> Tensor:
        """``Σ_m`` over all ``M`` tasks of ``local [M / R, ...]``, summed in task order: ``[...]``, the same on every
        rank and for every ``R``; without autograd graph."""
        return self.gather_tasks(local).sum(0)

    def mean_over_tasks(self, local: Tensor) -> Tensor:
        """The mean over all ``M`` tasks of ``local [M / R, ...]`` (:meth:`sum_over_tasks` divided by ``M``)."""
        return self.sum_over_tasks(local) / self.total_tasks(local.shape[0])


#: the reducer of a single process
LOCAL = Reducer()
