"""Turn a :class:`~maml_rl.config.Config` into objects: device, task family, policy, seeded generators."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import envs
from maml_rl.config import Config, ConfigError, check_device_name
from maml_rl.policies import Policy, make_policy


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """The learner device from ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ConfigError: another string, or ``cuda`` without an available GPU (the message names ``key``).
    """
    check_device_name(name, key)
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}: {name!r} requested but no CUDA device is available")
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{key}: {name!r} but only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def build_family(config: Config) -> envs.TaskFamily:
    """The task family named by ``env.family`` with ``env.options``; errors name the key."""
    if config.env.family not in envs.family_names():
        raise ConfigError(
            f"env.family: unknown task family {config.env.family!r}; valid: {', '.join(envs.family_names())}"
        )
    try:
        return envs.make_family(config.env.family, **config.env.options)
    except ValueError as error:
        raise ConfigError(f"env.options: {error}") from error


def horizon_of(config: Config, family: envs.TaskFamily) -> int:
    """``env.horizon`` or the family's paper horizon."""
    return config.env.horizon if config.env.horizon is not None else family.default_horizon


def policy_dims(family: envs.TaskFamily) -> tuple[int, int, bool]:
    """``(obs_dim, action_size, discrete)`` of the policy that fits the family's spaces (``action_size``: the
    number of actions when discrete, else the action dimension)."""
    obs_space, action_space = family.single_observation_space, family.single_action_space
    if isinstance(action_space, gym.spaces.Discrete):
        action_size = int(action_space.n)
    else:
        action_size = int(np.prod(action_space.shape or ()))
    return int(np.prod(obs_space.shape or ())), action_size, bool(family.is_discrete)


def build_policy(config: Config, family: envs.TaskFamily, generator: torch.Generator | None) -> Policy:
    """A Gaussian or categorical MLP matching the family's spaces."""
    obs_dim, action_size, discrete = policy_dims(family)
    return make_policy(
        obs_dim=obs_dim,
        action_space_size=action_size,
        discrete=discrete,
        hidden_sizes=config.policy.hidden_sizes,
        activation=config.policy.activation,
        init_std=config.policy.init_std,
        min_std=config.policy.min_std,
        generator=generator,
    )


#: the task pool's stream is child 4 of ``SeedSequence(seed)``; :class:`Generators` takes children 0-3
TASK_POOL_CHILD = 4


def task_pool_generator(seed: int) -> np.random.Generator:
    """The stream that draws ``maml.task_pool``'s tasks: ``SeedSequence(seed)``'s child 4, beside the four of
    :class:`Generators` (children 0-3), so the pool depends on the seed alone (not on the iteration a run resumes
    at, nor on the number of processes) and shares no draws with the meta-batches."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(TASK_POOL_CHILD,)))


def pool_meta_batch(pool: envs.Tasks, num_tasks: int) -> envs.Tasks:
    """The meta-batch of ``num_tasks`` tasks from ``pool`` (``P`` rows): task ``i`` is pool task ``i mod P``, so
    every pool task gets ``num_tasks / P`` of them, rounded up for the first ``num_tasks mod P``."""
    rows = np.arange(num_tasks) % envs.num_tasks(pool)
    return {key: value[rows] for key, value in pool.items()}


@dataclass
class Generators:
    """Independent random streams derived from one seed (``numpy.random.SeedSequence.spawn``): the one seed path.

    Training uses ``SeedSequence(seed)``; evaluation uses ``SeedSequence(seed, spawn_key=(EVAL_STREAM,))``
    (:mod:`maml_rl.evaluation`), a stream no training seed produces.

    Attributes:
        tasks: draws the tasks of each meta-batch.
        resets: draws the seed of every environment reset.
        actions: action noise, on the learner device.
        init_seed: seeds the policy initialization.

    ``maml.task_pool``'s stream is a fifth child, drawn once (:func:`task_pool_generator`), so it is not kept here.
    """

    tasks: np.random.Generator
    resets: np.random.Generator
    actions: torch.Generator
    init_seed: int

    @classmethod
    def from_seed(cls, seed: int, device: torch.device, spawn_key: tuple[int, ...] = ()) -> Generators:
        """The four streams of ``SeedSequence(seed, spawn_key=spawn_key)``; action noise on ``device``."""
        task_seq, reset_seq, action_seq, init_seq = np.random.SeedSequence(seed, spawn_key=spawn_key).spawn(4)
        actions = torch.Generator(device=device)
        actions.manual_seed(int(action_seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))
        return cls(
            tasks=np.random.default_rng(task_seq),
            resets=np.random.default_rng(reset_seq),
            actions=actions,
            init_seed=int(init_seq.generate_state(1, np.uint64)[0] >> np.uint64(1)),
        )

    def init_generator(self) -> torch.Generator:
        """A CPU generator for the policy initialization."""
        return torch.Generator().manual_seed(self.init_seed)

    def next_reset_seed(self) -> int:
        """The seed of the next environment reset."""
        return int(self.resets.integers(2**31 - 1))

    def state_dict(self) -> dict:
        return {
            "tasks": self.tasks.bit_generator.state,
            "resets": self.resets.bit_generator.state,
            "actions": self.actions.get_state(),
            "init_seed": self.init_seed,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the streams, all or none.

        Raises:
            ValueError: the action noise was drawn on another kind of device, or a state is malformed (the
                message names the stream); the streams are then unchanged.
        """
        try:
            saved = state["actions"]
            if not isinstance(saved, torch.Tensor) or saved.dtype != torch.uint8:
                raise TypeError("expected a uint8 tensor")
        except (KeyError, TypeError) as error:
            raise ValueError(f"malformed generator state 'actions' ({error})") from error
        if saved.numel() != self.actions.get_state().numel():  # CPU (Mersenne Twister) vs CUDA (Philox) state
            saved_on = "cpu" if saved.numel() == torch.Generator().get_state().numel() else "a GPU"
            raise ValueError(
                f"the run drew its action noise on {saved_on}, this learner is on {self.actions.device}; "
                "resume on the same kind of device (--device) to continue the same random streams"
            )
        tasks, resets = np.random.default_rng(), np.random.default_rng()
        actions = torch.Generator(device=self.actions.device)
        for name, target in (("tasks", tasks), ("resets", resets)):
            try:
                target.bit_generator.state = state[name]
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"malformed generator state {name!r} ({type(error).__name__}: {error})") from error
        try:
            actions.set_state(saved)
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"malformed generator state 'actions' ({str(error).splitlines()[0]})") from error
        init_seed = state.get("init_seed")
        if not isinstance(init_seed, int) or isinstance(init_seed, bool):
            raise ValueError(f"malformed generator state 'init_seed' ({init_seed!r})")
        self.tasks, self.resets, self.actions, self.init_seed = tasks, resets, actions, init_seed
