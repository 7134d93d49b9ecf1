"""ProMP: Proximal Meta-Policy Search (Rothfuss, Lee, Clavera, Asfour, Abbeel 2019, ICLR; arXiv 1810.06784).

- Inner estimator: the low-variance curvature (LVC) objective ``Σ_t ⊡(log π(a_t|s_t))·A_t``, whose Hessian
  keeps the score-outer-product term that REINFORCE's loss drops, without DiCE's variance.
- Outer objective: PPO's clipped surrogate on the validation batch under the adapted parameters,
  ``J^CLIP(θ) = mean_m Σ mask·min(r·A, clip(r, 1 − ε, 1 + ε)·A) / Σ mask`` with ``r = π_θ'_m / π_θ'_old,m``,
  minus ``η·KL(π_θ_old,k ‖ π_θ_k)`` on each inner step's batch (the KL penalty on the inner step, fixed ``η``).
- ``num_steps`` Adam steps per meta-batch, each re-adapting through the LVC inner step (second order).

ProMP's defaults: 5 steps, clip 0.3, learning rate 1e-3, inner KL penalty 5e-4.

Data-parallel: the loss is this rank's share of the mean over tasks; :class:`~maml_rl.metalearners.base.AdamOuter`
sums it and its gradient over ranks before each Adam step, and the last step's statistics (inner KL, clipped
fraction) are summed over ranks in one collective.
"""

from __future__ import annotations

from typing import Any

import torch

from maml_rl.adaptation import adapt_path
from maml_rl.collect import MetaBatch
from maml_rl.config import MamlConfig
from maml_rl.episodes import by_task
from maml_rl.learner_settings import ProMPSettings
from maml_rl.losses import clipped_surrogate_loss, mean_kl
from maml_rl.metalearners.base import AdamOuter, MetaLearner, register
from maml_rl.policies import Params, Policy, batched_forward, task_params


@register
class ProMP(MetaLearner):
    """Proximal Meta-Policy Search (Rothfuss et al. 2019); the module docstring has the math."""

    name = "promp"
    Settings = ProMPSettings
    supports_reducer = True

    def __init__(self, policy: Policy, maml: MamlConfig, settings: ProMPSettings) -> None:
        super().__init__(policy, maml, settings)
        self.adam = AdamOuter(policy, settings.lr)

    @classmethod
    def inner_estimator(cls, settings: ProMPSettings) -> str:
        return "lvc"

    @classmethod
    def packs_steps(cls, settings: ProMPSettings) -> bool:
        return True  # LVC inner loss, clipped surrogate and inner KL: per-task means of per-step terms

    def step(self, batch: MetaBatch) -> tuple[Params, dict[str, float]]:
        train, valid, m = batch.train, batch.valid, batch.num_tasks
        if valid.advantages is None:
            raise ValueError("validation episodes have no advantages (maml_rl.advantages.with_advantages)")
        settings = self.settings
        theta = self.adam.sync(self.policy)
        actions, advantages, mask = (by_task(x, m) for x in (valid.actions, valid.advantages, valid.mask))
        train_obs = [by_task(b.observations, m) for b in train]
        with torch.no_grad():
            old_path = adapt_path(self.policy, task_params(theta, m), train, self.maml.fast_lr, create_graph=False,
                                  loss=self.inner_loss)
            old_log_probs = self.policy.log_prob(
                batched_forward(self.policy, old_path[-1], by_task(valid.observations, m)), actions)
            old_inner = [batched_forward(self.policy, p, obs) for p, obs in zip(old_path, train_obs, strict=False)]
        metrics: dict[str, float] = {}
        for s in range(settings.num_steps):
            params = self.adam.task_leaves(m)
            path = adapt_path(self.policy, params, train, self.maml.fast_lr, create_graph=True, loss=self.inner_loss)
            log_probs = self.policy.log_prob(batched_forward(self.policy, path[-1], by_task(valid.observations, m)),
                                             actions)
            clip_loss = clipped_surrogate_loss(log_probs, old_log_probs, advantages, mask, settings.clip)  # [M]
            inner_kl = torch.zeros_like(clip_loss)
            for old_dist, step_params, obs, episodes in zip(old_inner, path, train_obs, train, strict=False):
                kl = self.policy.kl(old_dist, batched_forward(self.policy, step_params, obs))
                inner_kl = inner_kl + mean_kl(kl, by_task(episodes.mask, m))
            grad_norm = self.adam.minimize(clip_loss + settings.inner_kl_penalty * inner_kl, params)
            if s == 0:
                metrics["outer/loss_first"] = self.adam.last_loss
                metrics["outer/grad_norm"] = grad_norm
            if s == settings.num_steps - 1:
                with torch.no_grad():
                    ratio = (log_probs - old_log_probs).exp()
                    clipped = ((ratio - 1.0).abs() > settings.clip).to(ratio.dtype)
                    counts = self.reducer.sum(torch.stack([(clipped * mask).sum(), mask.sum()]))
                    metrics["outer/loss_last"] = self.adam.last_loss
                    metrics["promp/clip_fraction"] = float(counts[0] / counts[1].clamp(min=1.0))
                    metrics["promp/inner_kl"] = float(self.reducer.mean_over_tasks(inner_kl.detach()))
        return self.adam.params(), metrics

    def state_dict(self) -> dict[str, Any]:
        return {"adam": self.adam.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adam.load_state_dict(state["adam"])
