"""Sample budgets in environment steps (``maml.step_budget``, ``evaluate --budget-steps``): rounds of ``E``
episodes per task until every task's kept episodes reach the budget (the reference code's ``batch_size``)."""

import json
import math

import numpy as np
import pytest
import torch

import envs
from maml_rl.adaptation import adapt
from maml_rl.advantages import with_advantages
from maml_rl.baselines import fit_linear_baseline
from maml_rl.build import Generators
from maml_rl.collect import sample
from maml_rl.config import ConfigError, load_config
from maml_rl.episodes import Episodes, join_rounds
from maml_rl.evaluation import protocol_for
from maml_rl.policies import GaussianMLPPolicy, task_params
from maml_rl.sampling import sample_episodes
from maml_rl.trainer import Trainer, _returns_stats


def _batch(m: int, e: int, steps: int, lengths: list[int], reward: float) -> Episodes:
    """``m × e`` episodes of the given lengths (task-major), reward ``reward`` per step, observation = step index."""
    n = m * e
    length = torch.tensor(lengths, dtype=torch.float32)
    mask = (torch.arange(steps).unsqueeze(1) < length.unsqueeze(0)).float()
    obs = torch.arange(steps, dtype=torch.float32).view(steps, 1, 1).expand(steps, n, 2).clone()
    return Episodes(observations=obs, actions=torch.zeros(steps, n, 2), rewards=reward * mask, mask=mask,
                    num_tasks=m)


def test_join_rounds_keeps_each_tasks_rounds_and_masks_the_dropped_ones():
    # 2 tasks × 2 episodes, horizon 4. Round 1: task 0's episodes last 1 and 2 steps, task 1's 4 and 4.
    # Round 2 is kept by task 0 only.
    first = _batch(2, 2, 4, [1, 2, 4, 4], reward=1.0)
    second = _batch(2, 2, 4, [3, 1, 4, 4], reward=2.0)
    joined = join_rounds([first, second], [torch.tensor([True, True]), torch.tensor([True, False])])
    assert joined.rewards.shape == (4, 8) and joined.num_tasks == 2
    # slots: task 0 = [r1e1, r1e2, r2e1, r2e2], task 1 = [r1e1, r1e2, dropped, dropped]
    assert joined.mask.sum(0).tolist() == [1, 2, 3, 1, 4, 4, 0, 0]
    assert joined.episode_counts().tolist() == [4, 2]
    # task 0: returns 1, 2, 6, 2 -> mean 2.75; task 1: 4, 4 -> 4 (the dropped slots are not averaged in)
    assert joined.task_returns().tolist() == [2.75, 4.0]
    assert joined.kept_returns().tolist() == [1, 2, 6, 2, 4, 4]
    # the logged returns are over kept episodes only: (1 + 2 + 6 + 2 + 4 + 4) / 6
    assert _returns_stats("post_adapt", joined)["returns/post_adapt_mean"] == pytest.approx(19 / 6)
    assert joined.num_steps == 7 + 8
    assert float(joined.rewards[:, 6:].abs().sum()) == 0.0
    # one round kept by every task is the batch itself
    assert join_rounds([first], [torch.tensor([True, True])]) is first
    with pytest.raises(ValueError, match="2 rounds with 1 keep flags"):
        join_rounds([first, second], [torch.tensor([True, True])])


def test_dropped_slots_do_not_change_the_baseline():
    batch = _batch(2, 2, 4, [1, 2, 4, 3], reward=1.0)
    padded = join_rounds([batch, _batch(2, 2, 4, [4, 4, 4, 4], reward=5.0)],
                         [torch.tensor([True, True]), torch.tensor([False, False])])
    targets = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * batch.mask
    padded_targets = torch.cat([targets.view(4, 2, 2), torch.zeros(4, 2, 2)], dim=2).view(4, 8)
    alone = fit_linear_baseline(batch.observations, targets, batch.mask, 2)
    joined = fit_linear_baseline(padded.observations, padded_targets, padded.mask, 2)
    torch.testing.assert_close(joined.view(4, 2, 4)[:, :, :2], alone.view(4, 2, 2), rtol=1e-6, atol=1e-6)
    assert float(joined.view(4, 2, 4)[:, :, 2:].abs().sum()) == 0.0


def _navigation(goals: list[tuple[float, float]], per_task: int, horizon: int):
    family = envs.make_family("navigation-2d")
    env = family.make_vector_env(len(goals) * per_task, max_episode_steps=horizon)
    env.set_tasks(envs.repeat_tasks({"goal": np.array(goals, dtype=np.float32)}, per_task))
    return env


def _still_policy() -> GaussianMLPPolicy:
    """Actions ≈ 0 (zero mean, std 1e-6): the point stays at the origin."""
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,), init_std=1e-6, min_std=1e-6)
    for p in policy.parameters():
        if p is not policy.log_std:
            torch.nn.init.zeros_(p)
    return policy


def test_budget_samples_rounds_until_every_task_has_its_steps():
    # Task 0's goal is at the start: its episodes end after one step. Task 1's goal is far: they run the horizon.
    per_task, horizon, budget = 2, 10, 20
    env = _navigation([(0.005, 0.005), (0.5, 0.5)], per_task, horizon)
    policy = _still_policy()
    params = task_params({n: p.detach() for n, p in policy.named_parameters()}, 2)
    generators = Generators.from_seed(3, torch.device("cpu"))
    batch = sample(env, policy, params, 2, generators, action_scale=1.0, budget=budget)
    rounds = math.ceil(budget / per_task)  # task 0 gets 2 one-step episodes a round
    assert batch.rewards.shape == (horizon, 2 * per_task * rounds)
    task_steps = batch.mask.view(horizon, 2, -1).sum((0, 2))
    assert task_steps.tolist() == [budget, budget]
    assert batch.episode_counts().tolist() == [per_task * rounds, per_task]  # task 1 kept its first round only
    lengths = batch.mask.sum(0).view(2, -1)
    assert set(lengths[0].tolist()) == {1.0}
    assert lengths[1, :per_task].tolist() == [horizon] * per_task and float(lengths[1, per_task:].sum()) == 0.0


def test_budget_that_one_round_meets_gives_the_episode_count_batch():
    env = _navigation([(0.3, -0.2), (-0.4, 0.1)], 3, 8)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,), generator=torch.Generator().manual_seed(0))
    params = task_params({n: p.detach() for n, p in policy.named_parameters()}, 2)
    plain = sample(env, policy, params, 2, Generators.from_seed(5, torch.device("cpu")), action_scale=1.0)
    budgeted = sample(env, policy, params, 2, Generators.from_seed(5, torch.device("cpu")), action_scale=1.0,
                      budget=plain.mask.view(8, 2, 3).sum((0, 2)).min().item())
    for name in ("observations", "actions", "rewards", "mask"):
        assert torch.equal(getattr(plain, name), getattr(budgeted, name)), name


def test_a_budget_round_simulates_only_the_tasks_still_below_their_budget(monkeypatch):
    """Ant falls early, so its tasks need different numbers of rounds. A locomotion environment freezes the
    sub-environments of tasks whose budget is met (``freezes_rows``): fewer rows simulated, the same batch."""
    family = envs.make_family("ant-vel", frame_skip=2)
    tasks, per_task, horizon = 4, 3, 50
    policy = GaussianMLPPolicy(27, 8, hidden_sizes=(8,), generator=torch.Generator().manual_seed(0))
    params = task_params({n: p.detach() for n, p in policy.named_parameters()}, tasks)
    batches, simulated = [], []
    for freezes in (True, False):
        env = family.make_vector_env(tasks * per_task, max_episode_steps=horizon)
        env.set_tasks(envs.repeat_tasks(family.sample_tasks(tasks, np.random.default_rng(0)), per_task))
        monkeypatch.setattr(type(env), "freezes_rows", freezes)
        counted = [0]
        step = env.sim.step

        def counting_step(active, step=step, counted=counted):  # type: ignore[no-untyped-def]
            counted[0] += int(active.sum())
            return step(active)

        monkeypatch.setattr(env.sim, "step", counting_step)
        batches.append(sample(env, policy, params, tasks, Generators.from_seed(2, torch.device("cpu")),
                              action_scale=1.0, budget=per_task * horizon))
        simulated.append(counted[0])
    frozen, plain = batches
    rounds = frozen.mask.shape[1] // (tasks * per_task)
    counts = frozen.episode_counts()
    assert rounds >= 2 and len(set(counts.tolist())) > 1, counts  # tasks needed different numbers of rounds
    assert torch.equal(frozen.mask, plain.mask) and torch.equal(frozen.rewards, plain.rewards)
    kept = frozen.mask > 0  # the dropped rounds' slots are masked: what a frozen row observed there is never used
    for name in ("observations", "actions"):
        assert torch.equal(getattr(frozen, name)[kept], getattr(plain, name)[kept]), name
    assert simulated[0] < simulated[1], simulated
    assert simulated[0] >= frozen.num_steps  # every kept step was simulated
    # what training and evaluation compute from the batch is the same bit for bit: baseline, advantages, inner step
    with_adv = [with_advantages(batch, gamma=0.99, gae_lambda=1.0) for batch in batches]
    assert torch.equal(with_adv[0].advantages, with_adv[1].advantages)
    adapted = [adapt(policy, params, [batch], 0.5) for batch in with_adv]
    assert all(torch.equal(adapted[0][name], adapted[1][name]) for name in adapted[0])


def test_an_environment_that_cannot_freeze_refuses_frozen_rows():
    env = _navigation([(0.3, -0.2)], 2, 5)
    policy = _still_policy()
    params = task_params({n: p.detach() for n, p in policy.named_parameters()}, 1)
    with pytest.raises(ValueError, match="cannot freeze sub-environments"):
        sample_episodes(env, policy, params, 1, torch.Generator(), seed=0, frozen=torch.tensor([True, False]))


def test_training_with_a_step_budget_samples_e_times_horizon_steps_per_task(tmp_path):
    overrides = ["maml.meta_batch_size=2", "maml.fast_batch_size=3", "policy.hidden_sizes=[8]", "env.horizon=10",
                 "train.num_iterations=1", "maml.step_budget=true"]
    config = load_config("experiments/navigation-2d/paper.yaml", overrides)
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.step_budget == 3 * 10
    row = trainer.train(progress=False)[-1]
    assert row["env/steps"] >= 2 * 2 * 30  # 2 tasks, 2 batches, ≥ 30 steps each
    with pytest.raises(ConfigError, match=r"maml\.step_budget"):
        load_config("experiments/navigation-2d/paper.yaml", ["maml.step_budget=7"])


def test_evaluate_with_a_step_budget_records_it(tmp_path):
    from maml_rl.cli import main

    run = tmp_path / "run"
    overrides = ["maml.meta_batch_size=2", "maml.fast_batch_size=2", "policy.hidden_sizes=[8]", "env.horizon=10",
                 "train.num_iterations=1"]
    assert main(["train", "experiments/navigation-2d/paper.yaml", "--output", str(run), "--no-progress",
                 *[x for o in overrides for x in ("--set", o)]]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--episodes", "2", "--budget-steps", "30",
                 "--output", str(out)]) == 0
    result = json.loads((out / "adaptation.json").read_text())
    assert result["protocol"]["budget_steps"] == 30
    assert main(["evaluate", str(run), "--tasks", "2", "--budget-steps", "-1", "--output", str(tmp_path / "x")]) == 2


def test_evaluate_takes_the_budget_of_the_runs_config_unless_told(tmp_path):
    from maml_rl.cli import main

    run = tmp_path / "run"
    overrides = ["maml.meta_batch_size=2", "maml.fast_batch_size=2", "policy.hidden_sizes=[8]", "env.horizon=10",
                 "train.num_iterations=1", "evaluation.step_budget=true", "evaluation.episodes=3"]
    assert main(["train", "navigation-2d/paper", "--output", str(run), "--no-progress",
                 *[x for o in overrides for x in ("--set", o)]]) == 0
    budgets = {}
    flags = {"config": [], "episodes": ["--episodes", "2"], "flag": ["--budget-steps", "12"],
             "off": ["--budget-steps", "0"]}
    for name, extra in flags.items():
        out = tmp_path / name
        assert main(["evaluate", str(run), "--tasks", "2", "--steps", "0", "--output", str(out), *extra]) == 0
        protocol = json.loads((out / "adaptation.json").read_text())["protocol"]
        budgets[name] = (protocol["episodes_per_task"], protocol["budget_steps"])
    # evaluation.episodes × horizon, unless the flags say otherwise
    assert budgets == {"config": (3, 30), "episodes": (2, 20), "flag": (3, 12), "off": (3, None)}
    with pytest.raises(ConfigError, match=r"evaluation\.episodes: must be > 0"):
        load_config("experiments/navigation-2d/paper.yaml", ["evaluation.episodes=0"])


@pytest.mark.parametrize(("preset", "training", "evaluation"), [
    ("navigation-2d/reference", 2000, 4000), ("halfcheetah-vel/paper", 4000, 4000),
    ("halfcheetah-dir/paper", 4000, 4000), ("ant-vel/paper", 4000, 4000), ("ant-dir/paper", 8000, 8000),
])
def test_reference_presets_carry_the_reference_budgets(preset, training, evaluation):
    """The reference's batch_size: episodes × horizon env steps per task in training (20 episodes; 40 for Ant
    direction, whose evaluated run was fbs40); its evaluation's per family."""
    config = load_config(f"experiments/{preset}.yaml")
    trainer_budget = config.maml.fast_batch_size * config.env.horizon if config.maml.step_budget else None
    protocol = protocol_for(config, 40, 3, 0)
    assert (trainer_budget, protocol.budget_steps) == (training, evaluation)
