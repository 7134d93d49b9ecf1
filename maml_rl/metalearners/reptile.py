"""Reptile / parameter averaging (Nichol, Achiam, Schulman 2018, "On First-Order Meta-Learning Algorithms",
arXiv 1803.02999): after ``K`` inner steps per task, move the shared parameters towards the adapted ones,

    θ ← θ + β·mean_m(θ'_m − θ)

with ``θ'_m = θ_K[m]`` the parameters the collection adapted (the batch's ``adapted``). ``β = 1`` replaces ``θ`` by
the plain average of the adapted parameters. No gradient of its own: the validation batch only measures the
adapted policies.

Data-parallel: each rank sums ``θ'_m − θ`` over its tasks, divided by ``M``; one all-reduce gives the mean.
"""

from __future__ import annotations

import torch

from maml_rl.collect import MetaBatch
from maml_rl.learner_settings import ReptileSettings
from maml_rl.metalearners.base import MetaLearner, check_finite, register
from maml_rl.policies import Params


@register
class Reptile(MetaLearner):
    """Reptile (Nichol et al. 2018): ``θ ← θ + β·mean_m(θ'_m − θ)``."""

    name = "reptile"
    Settings = ReptileSettings
    supports_reducer = True

    def step(self, batch: MetaBatch) -> tuple[Params, dict[str, float]]:
        theta = self.shared_params()
        # θ'_m − θ for this rank's tasks, flattened [M / R, P]; averaged over all M tasks in task order (one
        # collective when data-parallel, the same for any number of ranks)
        deltas = torch.cat([(batch.adapted[name] - p.unsqueeze(0)).flatten(1) for name, p in theta.items()], dim=1)
        mean = self.reducer.mean_over_tasks(deltas)
        pieces = torch.split(mean, [p.numel() for p in theta.values()])
        means = {name: piece.view_as(p) for (name, p), piece in zip(theta.items(), pieces, strict=True)}
        new = {name: p + self.settings.beta * means[name] for name, p in theta.items()}
        check_finite("reptile step", new.values())
        norm = torch.cat([(new[name] - p).reshape(-1) for name, p in theta.items()]).norm()
        return new, {"reptile/step_norm": float(norm)}
