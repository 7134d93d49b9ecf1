"""Conjugate gradient, Hessian-vector products and backtracking line search for TRPO (Schulman et al. 2015).

Parameters are handled as one flat vector ``[P]`` (``torch.nn.utils.parameters_to_vector`` order).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def flat_grad(output: Tensor, inputs: Sequence[Tensor], retain_graph: bool | None = None, create_graph: bool = False
              ) -> Tensor:
    """Gradient of a scalar with respect to ``inputs``, flattened to ``[P]`` (zeros for unused inputs)."""
    grads = torch.autograd.grad(output, list(inputs), retain_graph=retain_graph, create_graph=create_graph,
                                allow_unused=True)
    pieces = [(torch.zeros_like(x) if g is None else g).reshape(-1) for g, x in zip(grads, inputs, strict=True)]
    return torch.cat(pieces)


def per_task_flat_grad(output: Tensor, inputs: Sequence[Tensor], retain_graph: bool | None = None) -> Tensor:
    """Gradient of a scalar with respect to per-task leaves ``[M, ...]`` (:func:`maml_rl.policies.task_leaves`),
    flattened per task: ``[M, P]`` (zeros for unused inputs)."""
    grads = torch.autograd.grad(output, list(inputs), retain_graph=retain_graph, allow_unused=True)
    pieces = [(torch.zeros_like(x) if g is None else g).reshape(x.shape[0], -1) for g, x in zip(grads, inputs,
                                                                                               strict=True)]
    return torch.cat(pieces, dim=1)


def hessian_vector_product(
    scalar: Tensor, inputs: Sequence[Tensor], damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """Return ``v -> (∇² scalar) v + damping·v`` for flat ``v [P]``.

    The gradient is built once with ``create_graph=True``; each product is one more backward pass through it.
    Used with the mean KL at the current parameters it gives exact Fisher-vector products.
    """
    grad = flat_grad(scalar, inputs, create_graph=True)

    def product(vector: Tensor) -> Tensor:
        return flat_grad(grad @ vector.detach(), inputs, retain_graph=True) + damping * vector

    return product


def _gauss_newton_graphs(outputs: Sequence[Tensor], inputs: Sequence[Tensor],
                         loss_of_outputs: Callable[[Sequence[Tensor]], Tensor]
                         ) -> tuple[list[Tensor], tuple[Tensor, ...], list[Tensor], tuple[Tensor, ...]]:
    """What every Gauss-Newton product reuses: detached copies ``y`` of ``outputs``, the graph of ``∇_y loss(y)``
    (for ``H u``), zero ``dummies`` ``u`` and the graph of ``Jᵀu`` with ``J = ∂ outputs / ∂ inputs`` (for ``J v``
    by the double-vjp identity)."""
    points = [y.detach().requires_grad_() for y in outputs]
    with torch.enable_grad():
        output_grads = torch.autograd.grad(loss_of_outputs(points), points, create_graph=True)
        dummies = [torch.zeros_like(y, requires_grad=True) for y in outputs]
        transposed = torch.autograd.grad(
            list(outputs), list(inputs), grad_outputs=dummies, create_graph=True, materialize_grads=True
        )
    return points, output_grads, dummies, transposed


def gauss_newton_vector_product(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    loss_of_outputs: Callable[[Sequence[Tensor]], Tensor],
    damping: float = 0.0,
    per_task: bool = False,
) -> Callable[[Tensor], Tensor]:
    """Return ``v -> Jᵀ H J v + damping·v`` for flat ``v [P]``.

    ``J = ∂ outputs / ∂ inputs`` and ``H = ∇²_y loss_of_outputs(y)`` at the current ``outputs``. Where the
    gradient of ``loss_of_outputs`` vanishes (the KL between the old policy and itself), this equals the exact
    Hessian of ``loss_of_outputs(outputs(inputs))``: the Fisher-vector product TRPO needs, without the
    third-order terms a Hessian-vector product of the KL would differentiate through (docs/architecture.md §5).

    ``J v`` uses the double-vjp identity ``J v = ∂/∂u (Jᵀ u) · v``; ``outputs`` must carry a graph to ``inputs``.

    With ``per_task`` the inputs are per-task leaves ``[M, ...]`` (:func:`maml_rl.policies.task_leaves`) of one
    shared parameter vector of size ``P``, ``loss_of_outputs`` is a sum of per-task terms, and the product returns
    every task's share ``[M, P]`` (``v`` applied to every task; their sum is the product for the shared
    parameters; ``damping`` must then be added by the caller, once, after the sum).
    """
    inputs = list(inputs)
    if per_task and damping:
        raise ValueError("per_task products are summed by the caller, who adds the damping once")
    points, output_grads, dummies, transposed = _gauss_newton_graphs(outputs, inputs, loss_of_outputs)
    shapes = [x.shape[1:] if per_task else x.shape for x in inputs]
    sizes = [shape.numel() for shape in shapes]

    def product(vector: Tensor) -> Tensor:
        pieces = [piece.view(shape) for piece, shape in zip(torch.split(vector.detach(), sizes), shapes, strict=True)]
        if per_task:
            pieces = [piece.unsqueeze(0).expand_as(x) for piece, x in zip(pieces, inputs, strict=True)]
        jv = torch.autograd.grad(transposed, dummies, grad_outputs=pieces, retain_graph=True,
                                 materialize_grads=True)
        hjv = torch.autograd.grad(output_grads, points, grad_outputs=jv, retain_graph=True, materialize_grads=True)
        jthjv = torch.autograd.grad(list(outputs), inputs, grad_outputs=hjv, retain_graph=True,
                                    materialize_grads=True)
        if per_task:
            return torch.cat([g.reshape(g.shape[0], -1) for g in jthjv], dim=1)
        return torch.cat([g.reshape(-1) for g in jthjv]) + damping * vector

    return product


def adapted_gauss_newton_vector_product(
    path: Sequence[Sequence[Tensor]],
    outputs: Sequence[Tensor],
    loss_of_outputs: Callable[[Sequence[Tensor]], Tensor],
) -> Callable[[Tensor], Tensor]:
    """Return ``v [P] -> [M, P]``: every task's share of ``Jᵀ H J v`` through ``K`` inner gradient steps.

    ``path`` is ``[θ_0, …, θ_K]``, each a list of per-task tensors ``[M, ...]`` (:func:`maml_rl.adaptation.adapt_path`
    with ``θ_0`` = :func:`maml_rl.policies.task_leaves`), ``outputs`` are computed from ``θ_K`` alone, and
    ``J = ∂ outputs / ∂ θ_0 = G (J_K ⋯ J_1)`` with ``G = ∂ outputs / ∂ θ_K`` and ``J_k = ∂θ_k / ∂θ_{k-1}``. The
    product equals :func:`gauss_newton_vector_product` with ``per_task=True`` (docs/architecture.md §5), at a lower
    cost: every inner step is ``θ_k = θ_{k-1} − α_k ∇L_k(θ_{k-1})`` for a scalar per-task loss ``L_k``, so
    ``J_k = I − α_k ∇²L_k`` is symmetric and ``J_k u = J_kᵀ u`` is one vector-Jacobian product through the inner
    gradient's graph. ``J v`` thus takes ``K`` such products, where the general double-vjp identity differentiates
    through the whole second-order graph once more; only ``G u`` uses it, on the small graph from ``θ_K`` to the
    outputs. The ``Jᵀ`` half is one backward pass from the outputs to ``θ_0``, as in the general product.

    The symmetry is the caller's promise: a step that is not a gradient step of a per-task scalar (e.g. a
    preconditioned or clipped one) needs :func:`gauss_newton_vector_product`. Damping is added by the caller after
    the tasks' shares are summed.
    """
    path = [list(params) for params in path]
    leaves, adapted = path[0], path[-1]
    points, output_grads, dummies, transposed = _gauss_newton_graphs(outputs, adapted, loss_of_outputs)
    shapes = [x.shape[1:] for x in leaves]
    sizes = [shape.numel() for shape in shapes]

    def product(vector: Tensor) -> Tensor:
        pieces = [piece.view(shape).unsqueeze(0).expand_as(x)
                  for piece, shape, x in zip(torch.split(vector.detach(), sizes), shapes, leaves, strict=True)]
        for before, after in itertools.pairwise(path):  # J_k u = J_kᵀ u, k = 1 … K
            pieces = list(torch.autograd.grad(after, before, grad_outputs=pieces, retain_graph=True,
                                              materialize_grads=True))
        jv = torch.autograd.grad(transposed, dummies, grad_outputs=pieces, retain_graph=True, materialize_grads=True)
        hjv = torch.autograd.grad(output_grads, points, grad_outputs=jv, retain_graph=True, materialize_grads=True)
        jthjv = torch.autograd.grad(list(outputs), leaves, grad_outputs=hjv, retain_graph=True,
                                    materialize_grads=True)
        return torch.cat([g.reshape(g.shape[0], -1) for g in jthjv], dim=1)

    return product


@dataclass(frozen=True)
class CGResult:
    """Solution ``x`` of ``A x = b``, the final residual norm ``‖b − A x‖`` and ``xᵀ A x``.

    ``x_a_x`` comes from conjugate gradient's own vectors, without another product: ``A x = b − r`` for the final
    residual ``r``, so ``xᵀ A x = xᵀ (b − r)`` (TRPO's ``sᵀ F s``; one Fisher-vector product saved per step).
    """

    x: Tensor
    residual_norm: float
    x_a_x: Tensor


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int = 10, tolerance: float = 1e-10
) -> CGResult:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given only ``v -> A v`` (Hestenes & Stiefel).

    Stops after ``iterations`` steps or when the squared residual falls below ``tolerance``.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iterations):
        if rr <= tolerance:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    x = x.detach()
    return CGResult(x=x, residual_norm=float(rr.sqrt()), x_a_x=(x @ (b - r)).detach())


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of a backtracking line search."""

    accepted: bool
    step_fraction: float
    steps_taken: int
    loss: float
    kl: float


def line_search(
    evaluate: Callable[[float], tuple[float, float]],
    old_loss: float,
    max_kl: float,
    max_steps: int,
    backtrack: float,
) -> LineSearchResult:
    """Try step fractions ``1, backtrack, backtrack², …``; accept the first with lower loss and KL ≤ ``max_kl``.

    Args:
        evaluate: ``fraction -> (loss, kl)`` after moving to ``θ_old + fraction · full_step``.
        old_loss: the loss at ``θ_old``.

    Returns:
        The accepted fraction, or ``accepted=False`` (the caller keeps ``θ_old``) with the last values tried.
    """
    loss = kl = float("nan")
    fraction = 1.0
    for step in range(max_steps):
        loss, kl = evaluate(fraction)
        if loss < old_loss and kl <= max_kl:
            return LineSearchResult(True, fraction, step + 1, loss, kl)
        fraction *= backtrack
    return LineSearchResult(False, 0.0, max_steps, loss, kl)
