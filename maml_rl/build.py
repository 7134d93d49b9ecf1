"""Turn a :class:`~maml_rl.config.Config` into objects: device, task family, policy, seeded generators."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import envs
from maml_rl.config import Config, ConfigError
from maml_rl.policies import Policy, make_policy


def resolve_device(name: str) -> torch.device:
    """The learner device; ``cuda`` without an available GPU raises :class:`ConfigError`."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {name!r} requested but no CUDA device is available")
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {name!r} but only {torch.cuda.device_count()} CUDA device(s)")
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


def build_policy(config: Config, family: envs.TaskFamily, generator: torch.Generator | None) -> Policy:
    """A Gaussian or categorical MLP matching the family's spaces."""
    obs_space, action_space = family.single_observation_space, family.single_action_space
    if isinstance(action_space, gym.spaces.Discrete):
        action_size = int(action_space.n)
    else:
        action_size = int(np.prod(action_space.shape or ()))
    return make_policy(
        obs_dim=int(np.prod(obs_space.shape)),
        action_space_size=action_size,
        discrete=family.is_discrete,
        hidden_sizes=config.policy.hidden_sizes,
        activation=config.policy.activation,
        init_std=config.policy.init_std,
        min_std=config.policy.min_std,
        generator=generator,
    )


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
        """Restore the streams; ``ValueError`` if the action noise was drawn on another kind of device."""
        saved = state["actions"]
        if saved.numel() != self.actions.get_state().numel():  # CPU (Mersenne Twister) vs CUDA (Philox) state
            saved_on = "cpu" if saved.numel() == torch.Generator().get_state().numel() else "a GPU"
            raise ValueError(
                f"the run drew its action noise on {saved_on}, this learner is on {self.actions.device}; "
                "resume on the same kind of device (--device) to continue the same random streams"
            )
        self.tasks.bit_generator.state = state["tasks"]
        self.resets.bit_generator.state = state["resets"]
        self.actions.set_state(state["actions"])
        self.init_seed = state["init_seed"]
