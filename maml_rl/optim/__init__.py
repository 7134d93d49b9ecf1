"""Second-order optimization pieces for the outer step."""

from maml_rl.optim.trpo import conjugate_gradient, gauss_newton_vector_product, hessian_vector_product, line_search

__all__ = ["conjugate_gradient", "gauss_newton_vector_product", "hessian_vector_product", "line_search"]
