"""MAML-TRPO and the pretrained baseline: TRPO steps on the shared initialization (docs/architecture.md).

MAML-TRPO (Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
arXiv 1703.03400). Given the training batches ``D_0 … D_{K-1}`` (sampled with ``θ_0 … θ_{K-1}``) and the
validation batch ``D'`` (sampled with ``θ_K``), one step:

1. recomputes the adapted parameters ``θ'_m(θ)`` from the training batches (second order unless
   ``first_order``), and the old adapted policy ``π_old'`` at the current ``θ`` (constants);
2. surrogate ``L(θ) = mean_m −Σ mask·exp(log π_θ' − log π_old')·A / Σ mask`` and its gradient ``g``;
3. ``s = F⁻¹ g`` by conjugate gradient with exact Fisher-vector products (Hessian of the mean KL);
4. full step ``√(2δ / sᵀFs)·s`` (``sᵀFs = sᵀ(g − r)`` from CG's final residual ``r``, no further product) and a
   backtracking line search accepting lower surrogate with KL ≤ δ.

``estimator`` chooses how the inner step is differentiated: ``reinforce`` (MAML), ``dice`` (the DiCE inner loss,
Foerster et al. 2018, whose second derivatives are unbiased), or ``e-maml`` (REINFORCE inner loss plus E-MAML's
term for the pre-update sampling distribution, Stadie et al. 2018).

``pretrained`` is the same TRPO step with no inner steps (``K = 0``): multi-task TRPO on the task distribution,
the MAML paper's "pretrained" baseline.

Every mean over tasks is taken from per-task values: the gradient and every Fisher-vector product are taken with
respect to per-task copies of ``θ`` (:func:`maml_rl.policies.task_leaves`), so each task's share ``[M, P]`` is
computed from its own data alone, and :meth:`~maml_rl.distributed.Reducer.sum_over_tasks` sums them in task order
(the damping added once, after the sum); the surrogate and the line search's losses and KLs are per-task ``[M]``
values averaged the same way. Data-parallel (``self.reducer`` distributed), each rank holds ``M / R`` tasks and the
reducer gathers the rows of all ranks first: conjugate gradient and the line search run identically on every rank,
and their numbers do not depend on the number of ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from maml_rl.adaptation import adapt_path
from maml_rl.collect import MetaBatch
from maml_rl.distributed import LOCAL, Reducer
from maml_rl.episodes import Episodes, by_task
from maml_rl.errors import NonFiniteError
from maml_rl.learner_settings import (  # the options live in a torch-free module (config validation)
    MAMLTRPOSettings,
    TRPOSettings,
)
from maml_rl.losses import emaml_loss, mean_kl, surrogate_loss
from maml_rl.metalearners.base import MetaLearner, check_finite, register
from maml_rl.optim.trpo import (
    LineSearchResult,
    adapted_gauss_newton_vector_product,
    conjugate_gradient,
    line_search,
    per_task_flat_grad,
)
from maml_rl.policies import DistParams, Params, batched_forward, task_leaves, task_params


@dataclass(frozen=True)
class _Old:
    """Constants of one step, at the current ``θ``: the adapted policy on ``D'`` and, for E-MAML, what it needs."""

    dist: DistParams
    log_probs: Tensor
    train_log_probs: tuple[Tensor, ...] = ()
    post_returns: Tensor | None = None


def standardized_task_returns(valid: Episodes, reducer: Reducer = LOCAL) -> Tensor:
    """``[M]`` post-update returns per task, standardized over the meta-batch (E-MAML's ``R'``, a constant).

    With a distributed ``reducer`` ``valid`` holds this rank's ``M / R`` tasks: the statistics are taken over all
    ``M`` tasks and this rank's ``[M / R]`` rows are returned.
    """
    returns = reducer.gather_tasks(valid.task_returns().detach())
    if returns.numel() < 2:
        return reducer.own_tasks(torch.zeros_like(returns))
    return reducer.own_tasks((returns - returns.mean()) / (returns.std() + 1e-8))


@register
class MAMLTRPO(MetaLearner):
    """MAML with a TRPO outer step (Finn et al. 2017): the module docstring has the math."""

    name = "maml-trpo"
    Settings: ClassVar[type] = MAMLTRPOSettings
    supports_reducer = True

    @classmethod
    def inner_estimator(cls, settings: TRPOSettings) -> str:
        return "dice" if getattr(settings, "estimator", "reinforce") == "dice" else "reinforce"

    @classmethod
    def packs_steps(cls, settings: TRPOSettings) -> bool:
        return getattr(settings, "estimator", "reinforce") == "reinforce"  # DiCE and E-MAML need episodes

    @property
    def first_order(self) -> bool:
        return bool(getattr(self.settings, "first_order", False))

    @property
    def emaml(self) -> bool:
        return getattr(self.settings, "estimator", "reinforce") == "e-maml"

    # -------------------------------------------------------------------------------- pieces

    def adapted_path(self, params: Params, train: Sequence[Episodes], num_tasks: int, create_graph: bool
                     ) -> list[Params]:
        """``[θ_0 … θ_K]`` per task (``[M, ...]`` each) from the shared ``params`` (or per-task ``[M, ...]`` ones,
        e.g. :func:`~maml_rl.policies.task_leaves`) and the training batches."""
        if not self._is_per_task(params, num_tasks):
            params = task_params(params, num_tasks)
        return adapt_path(self.policy, params, train, self.maml.fast_lr, create_graph=create_graph,
                          loss=self.inner_loss)

    def _is_per_task(self, params: Params, num_tasks: int) -> bool:
        shapes = dict(self.policy.named_parameters())
        return all(p.dim() == shapes[n].dim() + 1 and p.shape[0] == num_tasks for n, p in params.items())

    def adapted_params(self, params: Params, train: Sequence[Episodes], num_tasks: int, create_graph: bool) -> Params:
        """``θ'_m`` for every task: ``[M, ...]``."""
        return self.adapted_path(params, train, num_tasks, create_graph)[-1]

    def _validation_dist(self, adapted: Params, valid: Episodes) -> DistParams:
        return batched_forward(self.policy, adapted, by_task(valid.observations, valid.num_tasks))

    def validation_dist(self, params: Params, train: Sequence[Episodes], valid: Episodes, create_graph: bool
                        ) -> DistParams:
        """The adapted policies' distribution parameters on the validation observations: ``[M, T, E, *]``."""
        second_order = create_graph and not self.first_order
        adapted = self.adapted_params(params, train, valid.num_tasks, create_graph=second_order)
        return self._validation_dist(adapted, valid)

    def surrogate(self, dist: DistParams, valid: Episodes, old_log_probs: Tensor) -> Tensor:
        """The masked TRPO surrogate of every task: ``[M]`` (this rank's tasks when data-parallel)."""
        m = valid.num_tasks
        if valid.advantages is None:
            raise ValueError("validation episodes have no advantages (maml_rl.advantages.with_advantages)")
        log_probs = self.policy.log_prob(dist, by_task(valid.actions, m))
        return surrogate_loss(log_probs, old_log_probs, by_task(valid.advantages, m), by_task(valid.mask, m))

    def kl(self, old_dist: DistParams, dist: Sequence[Tensor], valid: Episodes) -> Tensor:
        """The masked mean KL(π_old' ‖ π_θ') of every task: ``[M]`` (this rank's tasks when data-parallel)."""
        return mean_kl(self.policy.kl(old_dist, tuple(dist)), by_task(valid.mask, valid.num_tasks))

    def _train_log_probs(self, path: Sequence[Params], train: Sequence[Episodes]) -> list[Tensor]:
        """``[M, T, E]`` log-probabilities of each training batch under the parameters ``θ_k`` of its step."""
        result = []
        for params, batch in zip(path, train, strict=False):
            dist = batched_forward(self.policy, params, by_task(batch.observations, batch.num_tasks))
            result.append(self.policy.log_prob(dist, by_task(batch.actions, batch.num_tasks)))
        return result

    def emaml_term(self, path: Sequence[Params], train: Sequence[Episodes], old: _Old) -> Tensor:
        """E-MAML's term (:func:`maml_rl.losses.emaml_loss`) summed over inner steps, per task: ``[M]``."""
        assert old.post_returns is not None
        total = torch.zeros(len(old.post_returns), dtype=old.log_probs.dtype, device=old.log_probs.device)
        for log_probs, old_log_probs, batch in zip(self._train_log_probs(path, train), old.train_log_probs, train,
                                                   strict=True):
            mask = by_task(batch.mask, batch.num_tasks)
            total = total + emaml_loss(log_probs, old_log_probs, mask, old.post_returns)
        return total

    def objective(self, params: Params, batch: MetaBatch, old: _Old, create_graph: bool
                  ) -> tuple[Tensor, DistParams]:
        """The outer loss of every task ``[M]`` at ``params`` (surrogate, plus E-MAML's term) and the adapted
        validation distribution."""
        second_order = create_graph and not self.first_order
        path = self.adapted_path(params, batch.train, batch.num_tasks, create_graph=second_order)
        dist = self._validation_dist(path[-1], batch.valid)
        loss = self.surrogate(dist, batch.valid, old.log_probs)
        if self.emaml:
            loss = loss + self.emaml_term(path, batch.train, old)
        return loss, dist

    # -------------------------------------------------------------------------------- the step

    def step(self, batch: MetaBatch) -> tuple[Params, dict[str, float]]:
        """One outer TRPO step; returns the new parameters and ``trpo/*`` metrics.

        Raises:
            NonFiniteError: the surrogate, its gradient or the step is not finite.
        """
        train, valid = batch.train, batch.valid
        if valid.advantages is None or any(b.advantages is None for b in train):
            raise ValueError("every batch needs advantages (maml_rl.advantages.with_advantages)")
        settings = self.settings
        reducer = self.reducer
        shared = {name: p.detach() for name, p in self.policy.named_parameters()}
        names = list(shared)
        m = valid.num_tasks
        total_tasks = reducer.total_tasks(m)
        params = task_leaves(shared, m)  # per-task copies: gradients and products come per task, [M, P]
        leaves = list(params.values())

        second_order = not self.first_order
        path = self.adapted_path(params, train, m, create_graph=second_order)
        dist = self._validation_dist(path[-1], valid)
        old_dist = tuple(x.detach() for x in dist)  # π_old': the adapted policy at the current θ, held fixed
        old = _Old(old_dist, self.policy.log_prob(old_dist, by_task(valid.actions, m)))
        if self.emaml:
            train_log_probs = tuple(x.detach() for x in self._train_log_probs(path, train))
            old = _Old(old.dist, old.log_probs, train_log_probs, standardized_task_returns(valid, self.reducer))
        task_losses = self.surrogate(dist, valid, old.log_probs)
        if self.emaml:
            task_losses = task_losses + self.emaml_term(path, train, old)
        loss_value = reducer.mean_over_tasks(task_losses.detach())
        check_finite("surrogate loss", loss_value)
        grad = reducer.sum_over_tasks(per_task_flat_grad(task_losses.sum() / total_tasks, leaves, retain_graph=True))
        check_finite("surrogate gradient", grad)
        old_loss = float(loss_value)
        shared_list = list(shared.values())
        old_vector = torch.cat([p.reshape(-1) for p in shared_list])
        if not bool(grad.any()):  # e.g. all advantages zero: nothing to improve, keep θ
            return self._unflatten(names, shared_list, old_vector), self._metrics(old_loss, None, 0.0, grad)
        if settings.fisher == "finite-difference":
            fisher_product = self._finite_difference_product(names, shared_list, old_vector, batch, old_dist)
        else:
            # every inner step is a gradient step of a per-task scalar: its Jacobian is symmetric
            task_products = adapted_gauss_newton_vector_product(
                [list(p.values()) for p in path], dist, lambda d: self.kl(old_dist, d, valid).sum() / total_tasks)

            def fisher_product(vector: Tensor) -> Tensor:
                """``(F + damping·I) v``: the tasks' shares of ``F v`` summed in task order, the damping added once."""
                return reducer.sum_over_tasks(task_products(vector)) + settings.cg_damping * vector

        cg = conjugate_gradient(fisher_product, grad, iterations=settings.cg_iters)
        reference = settings.fisher == "finite-difference"
        if reference and not bool(torch.isfinite(cg.x).all()):
            # Difference quotients can make pᵀAp vanish and CG overflow. The reference then line-searches a NaN
            # step, finds no improvement and keeps θ: the step is rejected (nothing non-finite is applied).
            # trpo/cg_residual −1 marks it in the metrics (metrics are never non-finite).
            result = LineSearchResult(False, 0.0, 0, old_loss, 0.0)
            return self._unflatten(names, shared_list, old_vector), self._metrics(old_loss, result, -1.0, grad)
        # sᵀ(F + damping)s: from CG's residual without another product; the reference's way (one more product,
        # plus its 1e-8) with its finite-difference products
        shs = cg.x @ fisher_product(cg.x) + 1e-8 if reference else cg.x_a_x
        check_finite("conjugate-gradient step", cg.x)
        check_finite("sᵀFs", shs)
        if reference and float(shs) <= 0:
            # Finite differences need not give a positive-definite product. The reference then takes the square
            # root of a negative number, gets NaN and uses a step size of 1: the line search decides.
            full_step = cg.x
        elif float(shs) <= 0:
            raise NonFiniteError(f"sᵀFs = {float(shs):.3g} is not positive (Fisher-vector product is not PD)")
        else:
            full_step = math.sqrt(2 * settings.max_kl / float(shs)) * cg.x

        def evaluate(fraction: float) -> tuple[float, float]:
            candidate = self._unflatten(names, shared_list, old_vector - fraction * full_step)
            new_losses, new_dist = self.objective(candidate, batch, old, create_graph=False)
            values = reducer.mean_over_tasks(torch.stack([new_losses, self.kl(old_dist, new_dist, valid)], dim=1))
            return float(values[0]), float(values[1])

        with torch.no_grad():
            result = line_search(evaluate, old_loss, settings.max_kl, settings.ls_max_steps, settings.ls_backtrack)
        vector = old_vector - result.step_fraction * full_step if result.accepted else old_vector
        return self._unflatten(names, shared_list, vector), self._metrics(old_loss, result, cg.residual_norm, grad)

    def _finite_difference_product(self, names: Sequence[str], like: Sequence[Tensor], theta: Tensor,
                                   batch: MetaBatch, old_dist: DistParams):  # type: ignore[no-untyped-def]
        """``v -> (∇KL(θ + εv) − ∇KL(θ − εv)) / 2ε + damping·v`` with ``ε = fd_base_eps / ‖θ‖`` in float32: the
        reference code's Fisher-vector product (``TRPOSettings.fisher``, ``TRPOSettings.fd_base_eps``)."""
        train, valid, m = batch.train, batch.valid, batch.num_tasks
        total_tasks = self.reducer.total_tasks(m)
        second_order = not self.first_order
        eps = torch.tensor(self.settings.fd_base_eps / (float(theta.norm()) + 1e-8), dtype=theta.dtype,
                           device=theta.device)

        def kl_gradient(vector: Tensor) -> Tensor:
            params = task_leaves(self._unflatten(names, like, vector), m)
            with torch.enable_grad():
                path = self.adapted_path(params, train, m, create_graph=second_order)
                kl = self.kl(old_dist, self._validation_dist(path[-1], valid), valid)
                return self.reducer.sum_over_tasks(per_task_flat_grad(kl.sum() / total_tasks, list(params.values())))

        def product(vector: Tensor) -> Tensor:
            vector = vector.to(theta.dtype)
            plus, minus = kl_gradient(theta + eps * vector), kl_gradient(theta - eps * vector)
            return (plus - minus) / (2 * eps) + self.settings.cg_damping * vector

        return product

    @staticmethod
    def _unflatten(names: Sequence[str], like: Sequence[Tensor], vector: Tensor) -> Params:
        """Split a flat ``[P]`` vector into ``{name: tensor}`` shaped like ``like``."""
        pieces = torch.split(vector.detach(), [x.numel() for x in like])
        return {name: piece.view_as(x).clone() for name, piece, x in zip(names, pieces, like, strict=True)}

    @staticmethod
    def _metrics(old_loss: float, result: LineSearchResult | None, cg_residual: float, grad: Tensor
                 ) -> dict[str, float]:
        accepted = result is not None and result.accepted
        return {
            "trpo/surrogate_before": old_loss,
            "trpo/surrogate_after": result.loss if result is not None and accepted else old_loss,
            "trpo/kl_after": result.kl if result is not None and accepted else 0.0,
            "trpo/line_search_steps": float(result.steps_taken) if result is not None else 0.0,
            "trpo/step_accepted": float(accepted),
            "trpo/step_fraction": result.step_fraction if result is not None and accepted else 0.0,
            "trpo/cg_residual": cg_residual,
            "trpo/grad_norm": float(grad.norm()),
        }


@register
class PretrainedTRPO(MAMLTRPO):
    """Multi-task TRPO without adaptation (``K = 0``): the "pretrained" baseline of the MAML paper (Finn et al.
    2017, §5.2/§5.3), trained on the task distribution and fine-tuned only at evaluation."""

    name = "pretrained"
    Settings = TRPOSettings
    adapts = False
