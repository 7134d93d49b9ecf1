"""First-order MAML with Adam (Finn, Abbeel, Levine 2017, §5.2 "first-order approximation"; arXiv 1703.03400).

The outer loss is the post-adaptation surrogate ``mean_m −Σ mask·exp(log π_θ'_m − log π_old'_m)·A / Σ mask`` on the
validation batch, with ``θ'_m = θ − α ∇L_inner(θ)`` and the inner gradient held constant (no second-order
terms): its gradient at ``θ_old`` is ``mean_m ∇_{θ'} L(θ'_m)``. Adam takes ``num_steps`` steps on it per batch
(the importance ratio keeps later steps on the same batch consistent). ``estimator: dice`` adapts with the DiCE
inner loss; ``estimator: e-maml`` adds E-MAML's term for the pre-update sampling distribution (Stadie et al.
2018), the part of the meta-gradient that first-order MAML otherwise drops.

Data-parallel: the loss is this rank's share of the mean over tasks; :class:`~maml_rl.metalearners.base.AdamOuter`
sums it and its gradient over ranks before each Adam step.
"""

from __future__ import annotations

from typing import Any

from maml_rl.adaptation import adapt_path
from maml_rl.collect import MetaBatch
from maml_rl.config import MamlConfig
from maml_rl.episodes import by_task
from maml_rl.learner_settings import FirstOrderSettings
from maml_rl.losses import emaml_loss, surrogate_loss
from maml_rl.metalearners.base import AdamOuter, MetaLearner, register
from maml_rl.metalearners.maml_trpo import standardized_task_returns
from maml_rl.policies import Params, Policy, batched_forward


@register
class FirstOrderMAML(MetaLearner):
    """First-order MAML, Adam on the post-adaptation loss; the module docstring has the math."""

    name = "maml-fo"
    Settings = FirstOrderSettings
    supports_reducer = True

    def __init__(self, policy: Policy, maml: MamlConfig, settings: FirstOrderSettings) -> None:
        super().__init__(policy, maml, settings)
        self.adam = AdamOuter(policy, settings.lr)

    @classmethod
    def inner_estimator(cls, settings: FirstOrderSettings) -> str:
        return "dice" if settings.estimator == "dice" else "reinforce"

    @classmethod
    def packs_steps(cls, settings: FirstOrderSettings) -> bool:
        return settings.estimator == "reinforce"  # DiCE and E-MAML need episodes

    def step(self, batch: MetaBatch) -> tuple[Params, dict[str, float]]:
        train, valid, m = batch.train, batch.valid, batch.num_tasks
        if valid.advantages is None:
            raise ValueError("validation episodes have no advantages (maml_rl.advantages.with_advantages)")
        self.adam.sync(self.policy)
        actions, advantages, mask = (by_task(x, m) for x in (valid.actions, valid.advantages, valid.mask))
        old_dist = batched_forward(self.policy, batch.adapted, by_task(valid.observations, m))
        old_log_probs = self.policy.log_prob(old_dist, actions).detach()
        emaml = self.settings.estimator == "e-maml"
        post_returns = standardized_task_returns(valid, self.reducer) if emaml else None
        old_train: list[Any] = []
        losses, grad_norms = [], []
        for _ in range(self.settings.num_steps):
            params = self.adam.task_leaves(m)
            path = adapt_path(self.policy, params, train, self.maml.fast_lr, create_graph=False,
                              loss=self.inner_loss)
            dist = batched_forward(self.policy, path[-1], by_task(valid.observations, m))
            task_losses = surrogate_loss(self.policy.log_prob(dist, actions), old_log_probs, advantages, mask)
            if emaml:
                assert post_returns is not None
                for k, (params, episodes) in enumerate(zip(path, train, strict=False)):
                    obs, acts = by_task(episodes.observations, m), by_task(episodes.actions, m)
                    log_probs = self.policy.log_prob(batched_forward(self.policy, params, obs), acts)
                    if len(old_train) <= k:
                        old_train.append(log_probs.detach())
                    task_losses = task_losses + emaml_loss(log_probs, old_train[k], by_task(episodes.mask, m),
                                                           post_returns)
            grad_norms.append(self.adam.minimize(task_losses, params))
            losses.append(self.adam.last_loss)
        return self.adam.params(), {
            "outer/loss_first": losses[0],
            "outer/loss_last": losses[-1],
            "outer/grad_norm": grad_norms[0],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"adam": self.adam.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adam.load_state_dict(state["adam"])
