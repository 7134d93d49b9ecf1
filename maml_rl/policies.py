"""Gaussian and categorical MLP policies, evaluated functionally (docs/architecture.md §4: parameters are data).

A policy's parameters are a ``dict[str, Tensor]``. ``forward_with(params, obs)`` maps observations to the
parameters of the action distribution (a tuple of tensors) under any parameter set, and ``forward(obs)`` is the
same function of the module's own parameters; ``log_prob``, ``kl`` and ``sample`` act on that tuple, so the same
code serves a single parameter set and a task-batched one (``batched_forward`` vmaps ``forward_with`` over
tasks). ``forward_with`` calls the operations the modules would (``F.linear``, ``torch.relu``/``torch.tanh``),
so it equals ``torch.func.functional_call(policy, params, obs)`` bit for bit, without that call's per-call cost
of swapping tensors into the module (about a quarter of the sampler's per-step overhead on 2D navigation).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.nn import functional as F

Params = dict[str, Tensor]
DistParams = tuple[Tensor, ...]
#: ``(offset, total)``: a shard's first row in a batch of ``total`` rows split across processes
Rows = tuple[int, int]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}
#: what each activation module's ``forward`` computes
_ACTIVATION_FUNCTIONS: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {nn.ReLU: torch.relu, nn.Tanh: torch.tanh}


def _mlp(input_size: int, hidden_sizes: Sequence[int], output_size: int, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    size = input_size
    for hidden in hidden_sizes:
        layers += [nn.Linear(size, hidden), _ACTIVATIONS[activation]()]
        size = hidden
    layers.append(nn.Linear(size, output_size))
    return nn.Sequential(*layers)


def _mlp_with(mlp: nn.Sequential, prefix: str, params: Params, x: Tensor) -> Tensor:
    """``mlp(x)`` with the parameters ``params[f"{prefix}.{i}.weight" | ".bias"]`` in place of the module's."""
    for index, layer in enumerate(mlp):
        if isinstance(layer, nn.Linear):
            x = F.linear(x, params[f"{prefix}.{index}.weight"], params[f"{prefix}.{index}.bias"])
        else:
            x = _ACTIVATION_FUNCTIONS[type(layer)](x)
    return x


def _init_linear_layers(module: nn.Module, generator: torch.Generator | None) -> None:
    """Xavier-uniform weights and zero biases (the reference code's initialization), seeded by ``generator``."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)


class Policy(nn.Module, ABC):
    """A stochastic policy: ``forward(obs [..., obs_dim]) -> DistParams``."""

    #: True for integer actions
    discrete: bool

    @abstractmethod
    def forward_with(self, params: Params, obs: Tensor) -> DistParams:
        """The distribution parameters for ``obs [..., obs_dim]`` under ``params`` (the module's own names)."""

    def forward(self, obs: Tensor) -> DistParams:
        """``forward_with`` the module's own parameters."""
        return self.forward_with(dict(self.named_parameters()), obs)

    @abstractmethod
    def log_prob(self, dist: DistParams, actions: Tensor) -> Tensor:
        """Log-probability of ``actions``, summed over action dimensions: ``[...]``."""

    @abstractmethod
    def kl(self, p: DistParams, q: DistParams) -> Tensor:
        """KL(p ‖ q) per state: ``[...]``."""

    @abstractmethod
    def sample(self, dist: DistParams, generator: torch.Generator | None = None, rows: Rows | None = None) -> Tensor:
        """Sample one action per state from ``dist``.

        Args:
            dist: distribution parameters ``[..., *]``; the states are the leading dimensions, flattened in order.
            generator: the source of randomness.
            rows: ``(offset, total)``: these states are rows ``offset …`` of a batch of ``total`` states split
                across processes. The noise is drawn for all ``total`` rows and this shard's rows are used, so
                every split of a batch draws the same actions (None: the states are the whole batch).
        """

    def params(self) -> Params:
        """The module's parameters as a plain dict (the same tensors, still leaves)."""
        return dict(self.named_parameters())


class GaussianMLPPolicy(Policy):
    """Diagonal Gaussian with an MLP mean and a learned, state-independent log-std.

    Args:
        obs_dim: observation size.
        action_dim: action size.
        hidden_sizes: hidden widths (paper: (100, 100)).
        activation: "relu" (paper) or "tanh" (modern preset).
        init_std: initial standard deviation (config default 1.0).
        min_std: lower bound on the standard deviation (config default 1e-6).
        generator: seeds the initialization.
    """

    discrete = False

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        init_std: float = 1.0,
        min_std: float = 1e-6,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.mean = _mlp(obs_dim, hidden_sizes, action_dim, activation)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))
        self.min_log_std = math.log(min_std)
        _init_linear_layers(self.mean, generator)

    def forward_with(self, params: Params, obs: Tensor) -> DistParams:
        """``obs [..., obs_dim]`` -> (mean ``[..., act]``, log_std ``[..., act]``)."""
        mean = _mlp_with(self.mean, "mean", params, obs)
        log_std = torch.clamp(params["log_std"], min=self.min_log_std).expand_as(mean)
        return mean, log_std

    def log_prob(self, dist: DistParams, actions: Tensor) -> Tensor:
        mean, log_std = dist
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def kl(self, p: DistParams, q: DistParams) -> Tensor:
        mean_p, log_std_p = p
        mean_q, log_std_q = q
        var_ratio = torch.exp(2 * (log_std_p - log_std_q))
        mean_term = (mean_p - mean_q).pow(2) * torch.exp(-2 * log_std_q)
        return (log_std_q - log_std_p + 0.5 * (var_ratio + mean_term - 1)).sum(-1)

    def sample(self, dist: DistParams, generator: torch.Generator | None = None, rows: Rows | None = None) -> Tensor:
        mean, log_std = dist
        noise = batch_draw(torch.randn, mean.shape, 1, rows, generator, mean)
        return mean + torch.exp(log_std) * noise


class CategoricalMLPPolicy(Policy):
    """Categorical distribution over ``num_actions`` with MLP logits (docs/architecture.md §4)."""

    discrete = True

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes: Sequence[int] = (100, 100),
        activation: str = "relu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.num_actions = obs_dim, num_actions
        self.logits = _mlp(obs_dim, hidden_sizes, num_actions, activation)
        _init_linear_layers(self.logits, generator)

    def forward_with(self, params: Params, obs: Tensor) -> DistParams:
        """``obs [..., obs_dim]`` -> (unnormalized logits ``[..., num_actions]``,)."""
        return (_mlp_with(self.logits, "logits", params, obs),)

    def log_prob(self, dist: DistParams, actions: Tensor) -> Tensor:
        log_p = torch.log_softmax(dist[0], dim=-1)
        return torch.gather(log_p, -1, actions.long().unsqueeze(-1)).squeeze(-1)

    def kl(self, p: DistParams, q: DistParams) -> Tensor:
        log_p, log_q = torch.log_softmax(p[0], dim=-1), torch.log_softmax(q[0], dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    def sample(self, dist: DistParams, generator: torch.Generator | None = None, rows: Rows | None = None) -> Tensor:
        """Inverse-CDF sampling: one uniform per state, the first action whose cumulative probability exceeds it."""
        probs = torch.softmax(dist[0], dim=-1)
        uniform = batch_draw(torch.rand, (*probs.shape[:-1], 1), 1, rows, generator, probs)
        cdf = probs.cumsum(dim=-1)
        cdf = cdf / cdf[..., -1:]  # the last entry exactly 1 > u: the index is always a valid action
        return (cdf <= uniform).sum(dim=-1)


def batch_draw(draw: Callable[..., Tensor], shape: Sequence[int], event_dims: int, rows: Rows | None,
               generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``draw(shape)`` (``torch.rand`` / ``torch.randn``) for this shard's rows of a split batch.

    ``shape`` is ``[*states, *event]`` with ``event_dims`` trailing event dimensions; the states flatten to ``n``
    rows. With ``rows = (offset, total)`` the draw is made for ``[total, *event]`` and rows ``offset … offset + n
    − 1`` are returned, so each shard of a batch gets what one process drawing the whole batch would; with
    ``rows = None`` it is ``draw(shape)`` (the same numbers as ``offset = 0, total = n``).
    """
    shape = tuple(shape)
    if rows is None:
        return draw(shape, generator=generator, device=like.device, dtype=like.dtype)
    offset, total = rows
    event = shape[len(shape) - event_dims:]
    n = math.prod(shape[: len(shape) - event_dims])
    if offset < 0 or offset + n > total:
        raise ValueError(f"rows {offset} … {offset + n - 1} do not fit in a batch of {total}")
    full = draw((total, *event), generator=generator, device=like.device, dtype=like.dtype)
    return full[offset: offset + n].reshape(shape)


def task_params(params: Params, num_tasks: int) -> Params:
    """Share one parameter set across ``num_tasks`` tasks: every tensor gets a leading ``[M]`` dimension.

    The result is an ``expand`` view, so a meta-gradient through it sums over tasks.
    """
    return {name: p.unsqueeze(0).expand(num_tasks, *p.shape) for name, p in params.items()}


def task_leaves(params: Params, num_tasks: int) -> Params:
    """Per-task copies ``[M, ...]`` of one parameter set, as autograd leaves (``expand`` views, no copy).

    A gradient with respect to them is the stack of per-task gradients ``[M, ...]``, which
    :meth:`maml_rl.distributed.Reducer.sum_over_tasks` sums in task order (the same sum for any number of ranks),
    where a gradient through :func:`task_params` is summed over tasks inside autograd.
    """
    return {name: p.detach().unsqueeze(0).expand(num_tasks, *p.shape).requires_grad_() for name, p in params.items()}


def batched_forward(policy: Policy, params: Params, obs: Tensor) -> DistParams:
    """Evaluate per-task parameters on per-task observations in one call.

    Args:
        policy: the module whose structure is used.
        params: parameters with a leading task dimension ``[M, ...]``.
        obs: ``[M, ..., obs_dim]``.

    Returns:
        Distribution parameters with shapes ``[M, ..., *]``.
    """
    first = next(iter(params.values()))
    if obs.shape[0] != first.shape[0]:
        raise ValueError(f"obs has {obs.shape[0]} task rows but params have {first.shape[0]} ([M, ...] expected)")
    return vmap(policy.forward_with)(params, obs)


def make_policy(
    obs_dim: int,
    action_space_size: int,
    discrete: bool,
    hidden_sizes: Sequence[int],
    activation: str,
    init_std: float = 1.0,
    min_std: float = 1e-6,
    generator: torch.Generator | None = None,
) -> Policy:
    """Build the policy that fits an action space: categorical when ``discrete`` else Gaussian."""
    if discrete:
        return CategoricalMLPPolicy(obs_dim, action_space_size, hidden_sizes, activation, generator)
    return GaussianMLPPolicy(obs_dim, action_space_size, hidden_sizes, activation, init_std, min_std, generator)
