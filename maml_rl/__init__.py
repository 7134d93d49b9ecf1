"""maml-rl: Model-Agnostic Meta-Learning (Finn et al. 2017) for reinforcement learning.

The meta-iteration lives in :mod:`maml_rl.trainer`; each step is one import away:
sampling (:mod:`maml_rl.sampling`), advantages (:mod:`maml_rl.advantages`), the inner loop
(:mod:`maml_rl.adaptation`) and the outer TRPO step (:mod:`maml_rl.metalearners.maml_trpo`).
"""

__version__ = "0.1.0"
