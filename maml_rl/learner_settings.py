"""The options (``algorithm.options``) of the built-in meta-learners, as torch-free dataclasses.

:func:`maml_rl.config.validate` checks a config's options against these classes without importing torch (or the
learners), so a bad option fails in a fraction of a second, like every other config key. Each learner in
:mod:`maml_rl.metalearners` takes its ``Settings`` from here, and :data:`BUILTIN_LEARNERS` says, per learner
name, which class that is and whether the learner adapts (``tests/test_metalearners.py`` checks that the table
and the registry agree). A learner registered from outside the package keeps its settings in its own module;
validation then imports the registry to find them.
"""

from __future__ import annotations

from dataclasses import dataclass

from maml_rl.config import ConfigError, check_choice, check_range

ESTIMATORS = ("reinforce", "dice", "e-maml")
FISHER_PRODUCTS = ("exact", "finite-difference")
#: rllab's ``FiniteDifferenceHvp`` declares ``base_eps=1e-8``: ε = base_eps / ‖θ‖ (``fd_base_eps``'s default)
FD_BASE_EPS = 1e-8
#: the ``base_eps`` the MAML reference code actually ran with: its ``ConjugateGradientOptimizer`` builds the product
#: as ``FiniteDifferenceHvp(num_slices)``, which passes ``num_slices = 1`` as the first parameter, ``base_eps``
#: (cbfinn/maml_rl sandbox/rocky/tf/optimizers/conjugate_gradient_optimizer.py, since commit 8818ca7, 2017-02-18)
REFERENCE_FD_BASE_EPS = 1.0


@dataclass(frozen=True)
class TRPOSettings:
    """The outer TRPO step (MAML paper defaults)."""

    max_kl: float = 0.01
    """Trust-region size ``δ`` on the mean KL between old and new adapted policies."""
    cg_iters: int = 10
    """Conjugate-gradient iterations."""
    cg_damping: float = 1e-5
    """Damping added to the Fisher-vector product."""
    ls_max_steps: int = 15
    """Backtracking line-search steps."""
    ls_backtrack: float = 0.8
    """Step-size ratio between line-search steps."""
    fisher: str = "exact"
    """How Fisher-vector products are computed: ``exact`` (Gauss-Newton products through the adaptation) or
    ``finite-difference``, rllab's ``FiniteDifferenceHvp`` as the reference code (cbfinn/maml_rl) runs it:
    symmetric differences of the mean KL's gradient at ``θ ± εv``, ``ε = fd_base_eps / ‖θ‖``, in float32, plus
    damping. Where the difference quotients make ``sᵀFs ≤ 0`` the step size is 1, as there (its square root of a
    negative number is NaN, replaced by 1)."""
    fd_base_eps: float = FD_BASE_EPS
    """``fisher: finite-difference``'s ``base_eps``. The default, 1e-8, is rllab's declared default: that
    perturbation is below float32's resolution for almost every parameter, so the product collapses to about
    ``damping·v``, CG returns ``g / damping`` and the step is the gradient scaled to ``√(2δ / damping)`` and cut
    back by the line search. The reference code ran with 1.0 (:data:`REFERENCE_FD_BASE_EPS`: it passes
    ``num_slices`` where ``base_eps`` belongs), a perturbation of ``‖v‖ / ‖θ‖`` that measures the curvature: a
    finite-difference natural gradient. The presets that reproduce the reference set 1.0 (docs/architecture.md §5)."""

    def __post_init__(self) -> None:
        check_range("algorithm.options.max_kl", self.max_kl, low=0.0, low_open=True)
        check_range("algorithm.options.cg_iters", self.cg_iters, low=1)
        check_range("algorithm.options.cg_damping", self.cg_damping, low=0.0)
        check_range("algorithm.options.ls_max_steps", self.ls_max_steps, low=1)
        check_range("algorithm.options.ls_backtrack", self.ls_backtrack, low=0.0, high=1.0, low_open=True,
                    high_open=True)
        check_choice("algorithm.options.fisher", self.fisher, FISHER_PRODUCTS)
        check_range("algorithm.options.fd_base_eps", self.fd_base_eps, low=0.0, low_open=True)
        if self.fd_base_eps != FD_BASE_EPS and self.fisher != "finite-difference":
            raise ConfigError(f"algorithm.options.fd_base_eps applies to fisher: finite-difference only (fisher is "
                              f"{self.fisher!r}); drop it or set algorithm.options.fisher=finite-difference")


@dataclass(frozen=True)
class MAMLTRPOSettings(TRPOSettings):
    """MAML-TRPO: the TRPO step, plus how the inner step is differentiated."""

    first_order: bool = False
    """Drop the second-order terms of the meta-gradient (FOMAML directions, still a TRPO step)."""
    estimator: str = "reinforce"
    """reinforce, dice or e-maml."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("algorithm.options.estimator", self.estimator, ESTIMATORS)


@dataclass(frozen=True)
class FirstOrderSettings:
    """First-order MAML with Adam."""

    lr: float = 1e-3
    """Adam's learning rate."""
    num_steps: int = 1
    """Adam steps per meta-batch."""
    estimator: str = "reinforce"
    """reinforce, dice or e-maml."""

    def __post_init__(self) -> None:
        check_range("algorithm.options.lr", self.lr, low=0.0, low_open=True)
        check_range("algorithm.options.num_steps", self.num_steps, low=1)
        check_choice("algorithm.options.estimator", self.estimator, ESTIMATORS)


@dataclass(frozen=True)
class ProMPSettings:
    """ProMP's outer step (defaults from its paper's experiments)."""

    num_steps: int = 5
    """PPO (Adam) steps per meta-batch."""
    clip: float = 0.3
    """Clipping range ``ε`` of the likelihood ratio."""
    lr: float = 1e-3
    """Adam's learning rate."""
    inner_kl_penalty: float = 5e-4
    """``η``: weight of the KL between the pre-update policies before and after the step."""

    def __post_init__(self) -> None:
        check_range("algorithm.options.num_steps", self.num_steps, low=1)
        check_range("algorithm.options.clip", self.clip, low=0.0, high=1.0, low_open=True, high_open=True)
        check_range("algorithm.options.lr", self.lr, low=0.0, low_open=True)
        check_range("algorithm.options.inner_kl_penalty", self.inner_kl_penalty, low=0.0)


@dataclass(frozen=True)
class ReptileSettings:
    """Reptile's outer step."""

    beta: float = 1.0
    """Outer step size ``β`` (1: the average of the adapted parameters)."""

    def __post_init__(self) -> None:
        check_range("algorithm.options.beta", self.beta, low=0.0, low_open=True)


@dataclass(frozen=True)
class LearnerOptions:
    """What validation needs to know of a learner without importing it."""

    settings: type
    """Its ``Settings`` dataclass (``algorithm.options``)."""
    adapts: bool
    """False for a learner that trains without inner steps (``maml.num_inner_steps`` may then be 0)."""


#: learner name -> its options class and whether it adapts, for every learner in :mod:`maml_rl.metalearners`
BUILTIN_LEARNERS: dict[str, LearnerOptions] = {
    "maml-trpo": LearnerOptions(MAMLTRPOSettings, adapts=True),
    "pretrained": LearnerOptions(TRPOSettings, adapts=False),
    "maml-fo": LearnerOptions(FirstOrderSettings, adapts=True),
    "promp": LearnerOptions(ProMPSettings, adapts=True),
    "reptile": LearnerOptions(ReptileSettings, adapts=True),
}


def learner_options(name: str) -> LearnerOptions:
    """The options class of learner ``name`` and whether it adapts; a learner registered from outside the package
    is looked up in the registry (which imports torch). Raises :class:`ConfigError` for an unknown name."""
    if name in BUILTIN_LEARNERS:
        return BUILTIN_LEARNERS[name]
    from maml_rl.metalearners import learner_class  # the registry imports config: import it late

    cls = learner_class(name)
    return LearnerOptions(cls.Settings, cls.adapts)
