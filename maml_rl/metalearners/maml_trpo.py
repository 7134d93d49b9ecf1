"""MAML-TRPO: the outer step on the shared initialization (Finn, Abbeel, Levine 2017, arXiv 1703.03400; DESIGN §5).

Given the training batches ``D_0 … D_{K-1}`` (sampled with ``θ_0 … θ_{K-1}``) and the validation batch ``D'``
(sampled with ``θ_K``), one step:

1. recomputes the adapted parameters ``θ'_m(θ)`` from the training batches (second order unless
   ``first_order``), and the old adapted policy ``π_old'`` at the current ``θ`` (constants);
2. surrogate ``L(θ) = mean_m −Σ mask·exp(log π_θ' − log π_old')·A / Σ mask`` and its gradient ``g``;
3. ``s = F⁻¹ g`` by conjugate gradient with exact Fisher-vector products (Hessian of the mean KL);
4. full step ``√(2δ / sᵀFs)·s`` and a backtracking line search accepting lower surrogate with KL ≤ δ.

With ``num_inner_steps = 0`` (no training batches) this is plain multi-task TRPO: the "pretrained" baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from maml_rl.adaptation import adapt
from maml_rl.config import TrpoConfig
from maml_rl.episodes import Episodes, by_task
from maml_rl.errors import NonFiniteError
from maml_rl.losses import mean_kl, surrogate_loss
from maml_rl.optim.trpo import (
    LineSearchResult,
    conjugate_gradient,
    flat_grad,
    gauss_newton_vector_product,
    line_search,
)
from maml_rl.policies import DistParams, Params, Policy, batched_forward, task_params


def _check_finite(name: str, value: Tensor) -> None:
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteError(f"non-finite {name}")


class MAMLTRPO:
    """Meta-learner: adapts per task and takes TRPO steps on the shared policy parameters.

    Args:
        policy: the policy whose parameters are meta-learned (updated in place by :meth:`step`).
        fast_lr: inner step size ``α``.
        first_order: use first-order MAML gradients.
        trpo: outer-step settings.
    """

    def __init__(self, policy: Policy, fast_lr: float, first_order: bool, trpo: TrpoConfig) -> None:
        self.policy = policy
        self.fast_lr = fast_lr
        self.first_order = first_order
        self.trpo = trpo

    # -------------------------------------------------------------------------------- pieces

    def adapted_params(self, params: Params, train: Sequence[Episodes], num_tasks: int, create_graph: bool) -> Params:
        """``θ'_m`` for every task from the shared ``params`` and the training batches: ``[M, ...]``."""
        return adapt(self.policy, task_params(params, num_tasks), train, self.fast_lr, create_graph=create_graph)

    def _validation_dist(self, adapted: Params, valid: Episodes) -> DistParams:
        return batched_forward(self.policy, adapted, by_task(valid.observations, valid.num_tasks))

    def validation_dist(self, params: Params, train: Sequence[Episodes], valid: Episodes, create_graph: bool
                        ) -> DistParams:
        """The adapted policies' distribution parameters on the validation observations: ``[M, T, E, *]``."""
        second_order = create_graph and not self.first_order
        adapted = self.adapted_params(params, train, valid.num_tasks, create_graph=second_order)
        return self._validation_dist(adapted, valid)

    def surrogate(self, dist: DistParams, valid: Episodes, old_log_probs: Tensor) -> Tensor:
        """Mean over tasks of the masked TRPO surrogate (a scalar)."""
        m = valid.num_tasks
        if valid.advantages is None:
            raise ValueError("validation episodes have no advantages (maml_rl.advantages.with_advantages)")
        log_probs = self.policy.log_prob(dist, by_task(valid.actions, m))
        return surrogate_loss(log_probs, old_log_probs, by_task(valid.advantages, m), by_task(valid.mask, m)).mean()

    def kl(self, old_dist: DistParams, dist: Sequence[Tensor], valid: Episodes) -> Tensor:
        """Mean over tasks of the masked mean KL(π_old' ‖ π_θ') (a scalar)."""
        return mean_kl(self.policy.kl(old_dist, tuple(dist)), by_task(valid.mask, valid.num_tasks)).mean()

    # -------------------------------------------------------------------------------- the step

    def step(self, train: Sequence[Episodes], valid: Episodes) -> dict[str, float]:
        """One outer TRPO step; updates the policy in place and returns ``trpo/*`` metrics.

        Raises:
            NonFiniteError: the surrogate, its gradient or the step is not finite (parameters unchanged).
        """
        if valid.advantages is None or any(batch.advantages is None for batch in train):
            raise ValueError("every batch needs advantages (maml_rl.advantages.with_advantages)")
        settings = self.trpo
        names, leaves = zip(*self.policy.named_parameters(), strict=True)
        params = dict(zip(names, leaves, strict=True))
        m = valid.num_tasks

        dist = self.validation_dist(params, train, valid, create_graph=True)
        old_dist = tuple(x.detach() for x in dist)  # π_old': the adapted policy at the current θ, held fixed
        old_log_probs = self.policy.log_prob(old_dist, by_task(valid.actions, m))
        loss = self.surrogate(dist, valid, old_log_probs)
        _check_finite("surrogate loss", loss)
        grad = flat_grad(loss, leaves, retain_graph=True)
        _check_finite("surrogate gradient", grad)
        old_loss = float(loss.detach())
        if not bool(grad.any()):  # e.g. all advantages zero: nothing to improve, keep θ
            return self._metrics(old_loss, None, 0.0, grad)
        fisher_product = gauss_newton_vector_product(
            dist, leaves, lambda d: self.kl(old_dist, d, valid), damping=settings.cg_damping
        )
        cg = conjugate_gradient(fisher_product, grad, iterations=settings.cg_iters)
        shs = cg.x @ fisher_product(cg.x)
        _check_finite("conjugate-gradient step", cg.x)
        _check_finite("sᵀFs", shs)
        if float(shs) <= 0:
            raise NonFiniteError(f"sᵀFs = {float(shs):.3g} is not positive (Fisher-vector product is not PD)")
        full_step = math.sqrt(2 * settings.max_kl / float(shs)) * cg.x

        old_vector = parameters_to_vector(leaves).detach().clone()

        def evaluate(fraction: float) -> tuple[float, float]:
            vector_to_parameters(old_vector - fraction * full_step, leaves)
            new_dist = self.validation_dist(params, train, valid, create_graph=False)
            return float(self.surrogate(new_dist, valid, old_log_probs)), float(self.kl(old_dist, new_dist, valid))

        with torch.no_grad():
            result = line_search(evaluate, old_loss, settings.max_kl, settings.ls_max_steps, settings.ls_backtrack)
            if not result.accepted:
                vector_to_parameters(old_vector, leaves)
        return self._metrics(old_loss, result, cg.residual_norm, grad)

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
