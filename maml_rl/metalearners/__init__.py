"""Meta-learners behind one contract (:mod:`maml_rl.metalearners.base`), selected by ``algorithm: {name, options}``.

Each module registers its learner on import; a new learner is one module plus one import line here.
"""

from maml_rl.errors import NonFiniteError
from maml_rl.metalearners.base import (
    MetaBatch,
    MetaLearner,
    inner_loss_of,
    learner_class,
    learner_names,
    make_learner,
    register,
)
from maml_rl.metalearners.maml_fo import FirstOrderMAML
from maml_rl.metalearners.maml_trpo import MAMLTRPO, PretrainedTRPO
from maml_rl.metalearners.promp import ProMP
from maml_rl.metalearners.reptile import Reptile

__all__ = [
    "MAMLTRPO",
    "FirstOrderMAML",
    "MetaBatch",
    "MetaLearner",
    "NonFiniteError",
    "PretrainedTRPO",
    "ProMP",
    "Reptile",
    "inner_loss_of",
    "learner_class",
    "learner_names",
    "make_learner",
    "register",
]
