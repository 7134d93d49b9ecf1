"""The meta-learner contract and its registry (docs/architecture.md §5).

A meta-learner turns one :class:`~maml_rl.collect.MetaBatch` into new shared parameters. Adding one is one file in
``maml_rl/metalearners/``::

    @dataclass(frozen=True)
    class MySettings:                      # algorithm.options, checked like every config key
        lr: float = 1e-3
        def __post_init__(self) -> None:
            check_range("algorithm.options.lr", self.lr, low=0.0, low_open=True)

    @register
    class MyLearner(MetaLearner):
        # (a docstring: what it does, and the paper it comes from)
        name = "my-learner"                # algorithm: {name: my-learner, options: {lr: 0.01}}
        Settings = MySettings

        def step(self, batch: MetaBatch) -> tuple[Params, dict[str, float]]:
            theta = self.shared_params()   # {name: tensor}, detached
            ...                            # batch.train[k], batch.valid, batch.adapted
            return new_theta, {"my/metric": value}

and one import line in ``maml_rl/metalearners/__init__.py`` (a learner shipped in the package keeps its settings
class in :mod:`maml_rl.learner_settings` and lists it there, so that config validation needs no torch). The
trainer then, every meta-iteration:

    batch = collect(env, policy, θ, config, M, [α] * learner.num_inner_steps, generators, learner.inner_loss)
    new_θ, metrics = learner.step(batch)   # parameters as data; the trainer loads them into the policy

A learner never touches the environment or the random streams, and never writes to the policy's parameters.

Data-parallel training (:mod:`maml_rl.distributed`) gives each rank a shard of the meta-batch and the learner a
:class:`~maml_rl.distributed.Reducer` (``self.reducer``; the identity in one process). A learner that sets
``supports_reducer = True`` computes per-task values only (losses ``[M / R]``; gradients and Fisher-vector
products with respect to per-task copies of ``θ``, :func:`maml_rl.policies.task_leaves`, ``[M / R, P]``) and
reduces them with ``self.reducer.sum_over_tasks`` / ``mean_over_tasks`` before deciding anything with them: the
sums run over all ``M`` tasks in task order, so every rank takes the same step, the same as one process would;
the trainer refuses more than one process for a learner that does not.
State it keeps between iterations (an optimizer's moments) goes through :meth:`MetaLearner.state_dict` into the
checkpoint, as plain data (tensors, numbers, strings, lists, dicts) that ``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from maml_rl.adaptation import InnerLoss, make_inner_loss
from maml_rl.collect import MetaBatch
from maml_rl.config import Config, ConfigError, MamlConfig
from maml_rl.distributed import LOCAL, Reducer
from maml_rl.errors import NonFiniteError
from maml_rl.optim.trpo import per_task_flat_grad
from maml_rl.policies import Params, Policy, task_leaves

__all__ = ["MetaBatch", "MetaLearner", "NonFiniteError", "learner_class", "learner_names", "make_learner",
           "register"]


class MetaLearner(ABC):
    """One outer step per meta-iteration: ``(θ, MetaBatch) -> (θ_new, metrics)``.

    Class attributes a learner sets:
        name: the registry name (``algorithm.name``).
        Settings: a frozen dataclass of its options (``algorithm.options``); its ``__post_init__`` range-checks
            them with :func:`maml_rl.config.check_range`.
        adapts: False for a learner that trains without inner steps (``K = 0``: the batch holds only ``valid``).
        supports_reducer: True for a learner whose step is correct on a shard of the meta-batch with a
            distributed :attr:`reducer` (data-parallel training); False refuses more than one process.

    Attributes:
        reducer: reduces per-task sums across ranks (:mod:`maml_rl.distributed`); the identity in one process.

    Args:
        policy: the policy; its structure is used for functional calls and its current parameters are ``θ``.
        maml: the inner loop's settings (``fast_lr``, ``num_inner_steps``, ``gamma``).
        settings: an instance of ``Settings``.
    """

    name: ClassVar[str]
    Settings: ClassVar[type]
    adapts: ClassVar[bool] = True
    supports_reducer: ClassVar[bool] = False
    reducer: Reducer = LOCAL

    def __init__(self, policy: Policy, maml: MamlConfig, settings: Any) -> None:
        self.policy = policy
        self.maml = maml
        self.settings = settings

    @property
    def num_inner_steps(self) -> int:
        """``K``: inner steps the collection takes before the validation batch."""
        return self.maml.num_inner_steps if self.adapts else 0

    @classmethod
    def inner_estimator(cls, settings: Any) -> str:
        """The inner loss this learner differentiates (``maml_rl.adaptation.ESTIMATORS``); REINFORCE by default."""
        return "reinforce"

    @classmethod
    def packs_steps(cls, settings: Any) -> bool:
        """True if every loss :meth:`step` computes from a batch is a per-task mean of per-step terms (no returns,
        episode counts or cumulative log-probabilities), so that the trainer may hand it packed batches
        (:func:`maml_rl.episodes.pack_steps`: the same losses without the masked slots); False keeps episodes."""
        return False

    @property
    def inner_loss(self) -> InnerLoss:
        """The inner loss the collection adapts with; it must be the one :meth:`step` differentiates."""
        return make_inner_loss(self.inner_estimator(self.settings), self.maml.gamma)

    def shared_params(self) -> Params:
        """``θ``: the policy's current parameters, detached (the same tensors; do not write to them)."""
        return {name: p.detach() for name, p in self.policy.named_parameters()}

    @abstractmethod
    def step(self, batch: MetaBatch) -> tuple[Params, dict[str, float]]:
        """One outer step.

        Args:
            batch: ``train`` (``K`` batches, batch ``k`` sampled with ``θ_k``), ``valid`` (sampled with ``θ_K``),
                ``adapted`` (``θ_K``, ``[M, ...]``); every batch has advantages.

        Returns:
            The new shared parameters ``{name: tensor}`` (new tensors, shapes of the policy's parameters) and the
            learner's metrics ``{"section/name": float}``.

        Raises:
            NonFiniteError: a loss, gradient or step is not finite.
        """

    def state_dict(self) -> dict[str, Any]:
        """State that must survive a resume, as plain data; empty for a stateless learner."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        if state:
            raise ValueError(f"{self.name} keeps no state, got {sorted(state)}")


_REGISTRY: dict[str, type[MetaLearner]] = {}


def register(cls: type[MetaLearner]) -> type[MetaLearner]:
    """Class decorator: make ``cls`` selectable as ``algorithm: {name: cls.name}``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"meta-learner {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def learner_names() -> list[str]:
    """Registered meta-learner names."""
    return list(_REGISTRY)


def learner_class(name: str) -> type[MetaLearner]:
    """The class registered as ``name``; :class:`ConfigError` listing the valid names otherwise."""
    if name not in _REGISTRY:
        raise ConfigError(f"algorithm.name: unknown {name!r}; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def settings_of(config: Config) -> Any:
    """The learner's settings dataclass built from the (validated) ``algorithm.options``."""
    return learner_class(config.algorithm.name).Settings(**config.algorithm.options)


def make_learner(config: Config, policy: Policy, reducer: Reducer = LOCAL) -> MetaLearner:
    """The meta-learner ``config.algorithm`` names, for ``policy``, reducing across ranks with ``reducer``.

    Raises:
        ConfigError: ``reducer`` is distributed and the learner does not support it.
    """
    cls = learner_class(config.algorithm.name)
    if reducer.distributed and not cls.supports_reducer:
        raise ConfigError(f"algorithm.name: {cls.name} does not support data-parallel training yet; run it in one "
                          "process (--nproc 1)")
    learner = cls(policy, config.maml, settings_of(config))
    learner.reducer = reducer
    if isinstance(getattr(learner, "adam", None), AdamOuter):
        learner.adam.reducer = reducer  # type: ignore[attr-defined]
    return learner


def inner_loss_of(config: Config) -> InnerLoss:
    """The inner loss of ``config``'s learner (evaluation adapts with it, as the collection in training did)."""
    cls = learner_class(config.algorithm.name)
    return make_inner_loss(cls.inner_estimator(settings_of(config)), config.maml.gamma)


def check_finite(name: str, value: Tensor | Iterable[Tensor]) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` if ``value`` (a tensor or several) has NaN or infinity."""
    values = [value] if isinstance(value, Tensor) else list(value)
    if not all(bool(torch.isfinite(v).all()) for v in values):
        raise NonFiniteError(f"non-finite {name}")


def plain(value: Any) -> Any:
    """Tuples to lists, recursively (a checkpoint holds tensors, numbers, strings, lists and dicts)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


class AdamOuter:
    """Adam (Kingma & Ba 2015) over a copy of the shared parameters, for learners that take gradient steps.

    ``sync`` copies ``θ`` from the policy before each step (the trainer may have restored it), the leaves are the
    parameters the learner differentiates, and the optimizer's moments survive resume through ``state_dict``.
    The learner differentiates per-task copies of the leaves (:meth:`task_leaves`); :meth:`minimize` sums the
    per-task gradients in task order over every rank's tasks before any check or step, so every rank takes the same
    Adam step, and the number of ranks does not change it.

    Attributes:
        reducer: sums the per-task losses and gradients over tasks (and ranks).
        last_loss: the (reduced) loss of the last :meth:`minimize`.
    """

    def __init__(self, policy: Policy, lr: float, reducer: Reducer = LOCAL) -> None:
        self.leaves = {name: p.detach().clone().requires_grad_() for name, p in policy.named_parameters()}
        self.optimizer = torch.optim.Adam(list(self.leaves.values()), lr=lr)
        self.reducer = reducer
        self.last_loss = float("nan")

    def sync(self, policy: Policy) -> Params:
        """Set the leaves to the policy's parameters; returns them (``{name: leaf}``)."""
        with torch.no_grad():
            for name, p in policy.named_parameters():
                self.leaves[name].copy_(p)
        return self.leaves

    def task_leaves(self, num_tasks: int) -> Params:
        """Per-task copies ``[M, ...]`` of the leaves (:func:`maml_rl.policies.task_leaves`) to differentiate."""
        return task_leaves(self.leaves, num_tasks)

    def minimize(self, task_losses: Tensor, params: Params) -> float:
        """One Adam step on the mean over tasks of ``task_losses [M]``, differentiated with respect to the per-task
        ``params`` from :meth:`task_leaves`; returns the gradient norm. Raises :class:`NonFiniteError` before
        stepping.

        The per-task gradients are summed in task order (:meth:`~maml_rl.distributed.Reducer.sum_over_tasks`, one
        collective when data-parallel), so the step is the same for any number of ranks.
        """
        total_tasks = self.reducer.total_tasks(task_losses.shape[0])
        loss = self.reducer.mean_over_tasks(task_losses.detach())
        check_finite("outer loss", loss)
        inputs = list(params.values())
        flat = self.reducer.sum_over_tasks(per_task_flat_grad(task_losses.sum() / total_tasks, inputs))
        check_finite("outer gradient", flat)
        for leaf, g in zip(self.leaves.values(), torch.split(flat, [x.numel() for x in self.leaves.values()]),
                           strict=True):
            leaf.grad = g.view_as(leaf).clone()
        self.last_loss = float(loss)
        self.optimizer.step()
        return float(flat.norm())

    def params(self) -> Params:
        """The leaves' values as new tensors."""
        return {name: p.detach().clone() for name, p in self.leaves.items()}

    def state_dict(self) -> dict[str, Any]:
        return plain(self.optimizer.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
