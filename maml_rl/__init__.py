"""maml-rl: Model-Agnostic Meta-Learning (Finn et al. 2017) for reinforcement learning.

The meta-iteration lives in :mod:`maml_rl.trainer`; each step is one import away:
sampling (:mod:`maml_rl.sampling`), advantages (:mod:`maml_rl.advantages`), the inner loop
(:mod:`maml_rl.adaptation`) and the outer step (:mod:`maml_rl.metalearners`).
"""

import os

# MKL (torch's CPU BLAS and LAPACK) otherwise picks its kernels at run time by the size and the memory alignment
# of each operand, and on some CPUs (seen on an AMD EPYC) those kernels round differently: the same task's rows
# then give other float32 results in a batch of 6 sub-environments than in a batch of 12, and a data-parallel
# run drifts from a single-process one. Conditional numerical reproducibility (AUTO: the best instruction set of
# this CPU; STRICT: results independent of alignment) makes every row's result independent of its batch. MKL
# reads the variable when it first runs, which is after this import; a value the user set is kept.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
