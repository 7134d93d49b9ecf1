"""Throughput of the locomotion vector environments against the machine's MuJoCo limit (docs/architecture.md §7).

For each family, on one machine and in one run:

* (a) limit: ``mujoco.rollout`` stepping ``N`` copies of the model with random controls, one thread per core,
  many environment steps per call (one environment step = the family's frame skip, 5 or 4 physics steps);
* (a') ``mujoco.rollout`` called once per environment step (``nstep=5``, full physics state in and out), the
  approach measured in docs/architecture.md §7, for comparison;
* (b) ``LocomotionVectorEnv.step`` with random actions (pre-drawn), and the ratio b/a.

Measurements alternate and the best of ``--repeats`` is kept, so that a busy machine penalizes all columns
alike; ``b/a cpu`` compares env steps per CPU-second of the process (all threads), which another process on
the machine disturbs less. Frozen (terminated) Ant sub-environments are not simulated and not counted
(``simulated`` is the fraction of sub-environment steps that were).

With ``--backend warp`` (``mujoco_warp``, on ``--device cpu`` or ``cuda``) only the vector environment is
measured: env steps/s of ``step`` with pre-drawn torch actions on the device, synchronized, every world counted
(warp steps frozen worlds too), after a first call that compiles the kernels (cached in ``~/.cache/warp``) and
captures the step graph, whose time is reported separately.

Usage::

    python benchmarks/locomotion_throughput.py --family halfcheetah-vel ant-vel --num-envs 800 --steps 100
    python benchmarks/locomotion_throughput.py --backend warp --device cpu --num-envs 8 64 --steps 50
    python benchmarks/locomotion_throughput.py --backend warp --device cuda --num-envs 800 --largest
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import mujoco
import numpy as np
from mujoco import rollout

import envs.locomotion  # noqa: F401  (registers the families)
from envs.base import make_family
from envs.locomotion import FAMILIES
from envs.locomotion.batched_sim import default_num_threads
from envs.locomotion.common import LocomotionFamily

FULL_PHYSICS = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def initial_states(family: LocomotionFamily, num_envs: int, rng: np.random.Generator) -> np.ndarray:
    """``[N, nstate]`` full-physics states of ``family.model`` with the family's gymnasium v5 reset noise."""
    model, scale = family.model, family.reset_noise_scale
    data = mujoco.MjData(model)
    states = np.empty((num_envs, mujoco.mj_stateSize(model, FULL_PHYSICS)))
    for i in range(num_envs):
        mujoco.mj_resetData(model, data)
        data.qpos[:] += rng.uniform(-scale, scale, model.nq)
        if family.reset_qvel_noise == "uniform":
            data.qvel[:] += rng.uniform(-scale, scale, model.nv)
        else:
            data.qvel[:] += scale * rng.standard_normal(model.nv)
        mujoco.mj_getState(model, data, states[i], FULL_PHYSICS)
    return states


class Rate:
    """Best wall-clock and CPU-time rates (env steps per second) over repeated measurements."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def measure(self, run: Callable[[], int]) -> None:
        """Time ``run`` (which returns the env steps it simulated) and keep the best rates."""
        wall, cpu = time.perf_counter(), time.process_time()
        steps = run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.wall, self.cpu = max(self.wall, steps / wall), max(self.cpu, steps / cpu)


def rollout_limit(family, num_envs, steps, threads, rng, steps_per_call) -> Callable[[], Callable[[], int]]:
    """(a) or (a'): ``prepare()`` draws start states and controls and returns the timed ``run()``."""
    model, frame_skip = family.model, family.frame_skip
    runner = rollout.Rollout(nthread=threads)
    datas = [mujoco.MjData(model) for _ in range(threads)]
    nstep = frame_skip * steps_per_call
    nstate = mujoco.mj_stateSize(model, FULL_PHYSICS)
    state_out = np.empty((num_envs, nstep, nstate))
    sensor_out = np.empty((num_envs, nstep, model.nsensordata))
    models = [model] * num_envs

    def prepare() -> Callable[[], int]:
        state = initial_states(family, num_envs, rng)
        low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
        controls = [
            np.repeat(rng.uniform(low, high, (num_envs, steps_per_call, model.nu)), frame_skip, axis=1)
            for _ in range(steps // steps_per_call)
        ]

        def run() -> int:
            current = state
            for control in controls:
                runner.rollout(
                    models,
                    datas,
                    current,
                    control,
                    nstep=nstep,
                    state=state_out,
                    sensordata=sensor_out,
                    skip_checks=True,
                )
                current = np.ascontiguousarray(state_out[:, -1])
            return num_envs * steps_per_call * len(controls)

        return run

    return prepare


def vector_env_rate(name, num_envs, steps, threads, rng) -> tuple[Callable[[], Callable[[], int]], list[float]]:
    """(b): ``prepare()`` resets the vector env and draws actions; ``run()`` steps it ``steps`` times.

    Returns:
        ``prepare`` and the list to which every run appends its fraction of simulated sub-environment steps.
    """
    family = make_family(name, num_threads=threads)
    env = family.make_vector_env(num_envs, max_episode_steps=steps + 1)
    env.set_tasks(family.sample_tasks(num_envs, rng))
    simulated_fraction: list[float] = []

    def prepare() -> Callable[[], int]:
        env.reset(seed=int(rng.integers(2**31)))
        actions = rng.uniform(-1, 1, (steps, num_envs, family.model.nu)).astype(np.float32)

        def run() -> int:
            simulated, terminated = 0, np.zeros(num_envs, dtype=bool)
            for action in actions:
                simulated += num_envs - int(terminated.sum())  # frozen sub-environments are not simulated
                _, _, terminated, _, _ = env.step(action)
            simulated_fraction.append(simulated / (num_envs * steps))
            return simulated

        return run

    return prepare, simulated_fraction


def warp_rate(
    name: str, num_envs: int, args: argparse.Namespace, rng: np.random.Generator
) -> tuple[float, float, int]:
    """The warp vector env's first step (kernel compilation and graph capture) in seconds, its best env steps/s
    and the env steps per measurement: ``--steps``, or with ``--seconds S`` as many (at least 3, at most
    ``--steps``) as take about S seconds at the rate of 3 timed steps, so that rows at large N stay short.
    Actions come from a bank of 4 pre-drawn ``[N, act_dim]`` tensors, used in turn."""
    import torch

    family = make_family(name, backend="warp")
    env = family.make_vector_env(num_envs, max_episode_steps=args.steps + 2, device=args.device)
    try:
        env.set_tasks(family.sample_tasks(num_envs, rng))

        def synchronize(device: torch.device = env.device) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def timed_steps(steps: int, seed: int) -> float:
            env.reset(seed=seed)
            generator = torch.Generator(env.device).manual_seed(seed)
            bank = torch.empty((4, num_envs, family.model.nu), device=env.device).uniform_(-1, 1, generator=generator)
            synchronize()
            start = time.perf_counter()
            for t in range(steps):
                env.step(bank[t % 4])
            synchronize()
            return time.perf_counter() - start

        env.reset(seed=0)
        start = time.perf_counter()
        env.step(torch.zeros((num_envs, family.model.nu), device=env.device))  # compile + capture
        synchronize()
        first = time.perf_counter() - start
        steps = args.steps
        if args.seconds:
            rate = 3 * num_envs / timed_steps(3, 1)
            steps = min(args.steps, max(3, round(args.seconds * rate / num_envs)))
        best = max(num_envs * steps / timed_steps(steps, int(rng.integers(2**31))) for _ in range(args.repeats))
        return first, best, steps
    finally:
        env.close()


def is_out_of_memory(error: BaseException) -> bool:
    """True for torch's CUDA out-of-memory error and for warp's allocation failures."""
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or "alloc" in str(error).lower()


def warp_rates(args: argparse.Namespace) -> None:
    """``--backend warp``: the vector environment's env steps/s on the warp device, one row per family and N.

    With ``--largest``, N keeps growing (× ``--growth``) after the last ``--num-envs`` value until an allocation
    fails, ``--max-num-envs`` would be passed or the family's ``--budget`` seconds are spent; the last N that ran
    is marked ``largest``, with the reason it stopped.
    """
    import torch

    print(f"machine: {cpu_model()}, nproc {default_num_threads()}, device {args.device}, torch threads "
          f"{torch.get_num_threads()}")
    if args.device == "cuda":
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        print(f"gpu: {torch.cuda.get_device_name()}, {memory:.0f} GiB")
    budget = f"about {args.seconds:g} s (at most {args.steps} env steps)" if args.seconds else f"{args.steps} env steps"
    print(f"mujoco {mujoco.__version__}, backend warp, {budget} per measurement")
    print(
        f"{'family':<16} {'N':>10} {'first step s':>12} {'warp env':>12} {'steps':>6}"
        f"   [env steps/s, best of {args.repeats}]"
    )
    rng = np.random.default_rng(0)
    for name in args.family:
        sizes = list(args.num_envs)
        largest, reason = None, f"the next would pass --max-num-envs {args.max_num_envs:,}"
        started = time.perf_counter()
        while sizes:
            num_envs = sizes.pop(0)
            try:
                first, best, steps = warp_rate(name, num_envs, args, rng)
            except (RuntimeError, MemoryError) as error:
                if not (args.largest and not sizes and is_out_of_memory(error)):
                    raise
                print(f"{name:<16} {num_envs:>10,} {'out of memory: ' + str(error).splitlines()[0][:60]}")
                reason = "the next ran out of memory"
                break
            finally:
                if args.device == "cuda":
                    torch.cuda.empty_cache()
            print(f"{name:<16} {num_envs:>10,} {first:>12.1f} {best:>12,.0f} {steps:>6}")
            largest = num_envs
            if args.largest and not sizes and num_envs * args.growth <= args.max_num_envs:
                if args.budget and time.perf_counter() - started > args.budget:
                    reason = f"--budget {args.budget:g} s spent; memory was not exhausted"
                    break
                sizes.append(num_envs * args.growth)
        if args.largest and largest is not None:
            print(f"{name:<16} largest N that ran: {largest:,} ({reason})")


def main() -> None:
    """Parse the command line, measure, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--family", nargs="+", default=["halfcheetah-vel", "ant-vel"], choices=[f.name for f in FAMILIES]
    )
    parser.add_argument("--num-envs", type=int, nargs="+", default=[800], help="one or more N (warp: a row each)")
    parser.add_argument(
        "--largest",
        action="store_true",
        help="warp only: grow N (x --growth) after the last --num-envs until out of memory",
    )
    parser.add_argument("--max-num-envs", type=int, default=2**24, help="upper bound for --largest")
    parser.add_argument("--growth", type=int, default=2, help="--largest multiplies N by this each row")
    parser.add_argument(
        "--budget", type=float, default=0.0, help="--largest stops growing N after this many seconds per family"
    )
    parser.add_argument("--steps", type=int, default=100, help="environment steps per measurement")
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="warp only: measure about this long per row (fewer steps at large N)"
    )
    parser.add_argument("--num-threads", type=int, default=None, help="default: the cores available")
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements; the best is kept")
    parser.add_argument("--backend", choices=["native", "warp"], default="native")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="warp backend only")
    args = parser.parse_args()
    if args.growth < 2:
        parser.error("--growth must be at least 2")
    if args.backend == "warp":
        warp_rates(args)
        return
    if args.device != "cpu":
        parser.error("--device cuda needs --backend warp")
    if args.largest or args.seconds:
        parser.error("--largest and --seconds need --backend warp")
    if len(args.num_envs) != 1:
        parser.error("the native backend takes one --num-envs")
    args.num_envs = args.num_envs[0]
    threads = args.num_threads or default_num_threads()
    steps_per_call = max(d for d in range(1, 26) if args.steps % d == 0)
    rng = np.random.default_rng(0)

    print(f"machine: {cpu_model()}, nproc {default_num_threads()} (of {os.cpu_count()}), threads {threads}")
    print(f"mujoco {mujoco.__version__}, N = {args.num_envs} sub-environments, {args.steps} env steps each")
    print(f"load average before: {os.getloadavg()[0]:.2f} (another busy process skews the wall-clock rates)")
    print(
        f"{'family':<16} {'(a) limit':>10} {'(a) 1/step':>11} {'(b) env':>9} {'b/a':>6}"
        f" {'b/a cpu':>8} {'simulated':>10}   [env steps/s; cpu: per CPU-second]"
    )
    for name in args.family:
        family = make_family(name)
        env_prepare, simulated_fraction = vector_env_rate(name, args.num_envs, args.steps, threads, rng)
        a, a1, b = Rate(), Rate(), Rate()
        measured = [
            (rollout_limit(family, args.num_envs, args.steps, threads, rng, steps_per_call), a),
            (rollout_limit(family, args.num_envs, args.steps, threads, rng, 1), a1),
            (env_prepare, b),
        ]
        for _ in range(args.repeats):
            for prepare, rate in measured:
                rate.measure(prepare())
        simulated = np.mean(simulated_fraction)
        print(
            f"{name:<16} {a.wall:>10,.0f} {a1.wall:>11,.0f} {b.wall:>9,.0f} {b.wall / a.wall:>6.2f}"
            f" {b.cpu / a.cpu:>8.2f} {simulated:>10.0%}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
