"""End to end: reproducibility, a short learning run on 2D navigation, run-directory outputs."""

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from maml_rl.adaptation import adapt
from maml_rl.advantages import with_advantages
from maml_rl.build import Generators
from maml_rl.checkpoint import list_checkpoints, load_checkpoint
from maml_rl.collect import MetaBatch
from maml_rl.config import load_config
from maml_rl.logging import read_metrics
from maml_rl.metalearners.maml_trpo import MAMLTRPO, MAMLTRPOSettings
from maml_rl.policies import GaussianMLPPolicy, task_params
from maml_rl.rundir import RunDirError
from maml_rl.sampling import sample_episodes
from maml_rl.trainer import Trainer, TrainingError

SMALL = [
    "maml.meta_batch_size=8",
    "maml.fast_batch_size=8",
    "policy.hidden_sizes=[32, 32]",
    "train.checkpoint_every=2",
]


def small_config(*extra, path="experiments/navigation-2d/paper.yaml"):
    return load_config(path, [*SMALL, *extra])


def test_same_seed_same_metrics_bit_for_bit(tmp_path):
    config = small_config("train.num_iterations=3", "env.horizon=20")
    first = Trainer(config, tmp_path / "a").train(progress=False)
    second = Trainer(config, tmp_path / "b").train(progress=False)
    keys = [k for k in first[0] if not k.startswith(("time/", "env/steps_per_second"))]
    assert [[row[k] for k in keys] for row in first] == [[row[k] for k in keys] for row in second]
    other = Trainer(small_config("train.num_iterations=3", "env.horizon=20", "train.seed=2"), tmp_path / "c")
    third = other.train(progress=False)
    assert third[0]["returns/pre_adapt_mean"] != first[0]["returns/pre_adapt_mean"]


def test_run_directory_holds_config_metrics_checkpoints_and_tensorboard(tmp_path):
    config = small_config("train.num_iterations=3", "env.horizon=10")
    Trainer(config, tmp_path).train(progress=False)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config.to_dict()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [row["iteration"] for row in rows] == [1, 2, 3]
    for name in ("returns/pre_adapt_mean", "returns/post_adapt_mean", "trpo/kl_after", "trpo/cg_residual",
                 "trpo/line_search_steps", "policy/std", "env/steps", "env/steps_per_second",
                 "time/sampling", "time/adaptation", "time/outer"):
        assert all(math.isfinite(row[name]) for row in rows), name
    assert rows[0]["env/steps"] <= 2 * 64 * 10
    assert sorted(list_checkpoints(tmp_path)) == [2, 3]
    assert list(tmp_path.glob("events.out.tfevents.*"))
    iteration, state = load_checkpoint(tmp_path)
    assert iteration == 3 and state["config"] == config.to_dict()


def test_existing_run_directory_is_not_overwritten(tmp_path):
    config = small_config("train.num_iterations=1", "env.horizon=5")
    Trainer(config, tmp_path).train(progress=False)
    before = (tmp_path / "metrics.csv").read_text()
    with pytest.raises(RunDirError, match="already holds a run"):
        Trainer(config, tmp_path)
    assert (tmp_path / "metrics.csv").read_text() == before


def test_task_pool_trains_every_iteration_on_the_same_pool_tasks_in_turn(tmp_path, monkeypatch):
    config = small_config("train.num_iterations=2", "env.horizon=5", "maml.task_pool=3")
    trainer = Trainer(config, tmp_path / "run")
    seen = []
    set_tasks = trainer.env.set_tasks
    monkeypatch.setattr(trainer.env, "set_tasks", lambda tasks: (seen.append(tasks["goal"].copy()), set_tasks(tasks)))
    trainer.train(progress=False)
    assert len(seen) == 2 and np.array_equal(seen[0], seen[1])
    goals = seen[0][:: config.maml.fast_batch_size]  # one row per task: [M, 2]
    assert goals.shape == (8, 2) and len(np.unique(goals, axis=0)) == 3
    assert np.array_equal(goals[:5], goals[3:]) and not np.array_equal(goals[0], goals[1])
    # the pool is the seed's own draw: the same after a resume, another for another seed, not the meta-batch stream
    resumed = Trainer(config, tmp_path / "run", resume=True)
    assert resumed.iteration == 2 and np.array_equal(resumed.task_pool["goal"], goals[:3])
    resumed.close()
    meta_batch_stream = Generators.from_seed(config.train.seed, torch.device("cpu")).tasks
    assert not np.array_equal(trainer.family.sample_tasks(3, meta_batch_stream)["goal"], goals[:3])
    other = Trainer(small_config("train.num_iterations=1", "maml.task_pool=3", "train.seed=2"), tmp_path / "other")
    assert not np.array_equal(other.task_pool["goal"], goals[:3])
    other.close()


def test_non_finite_reward_stops_with_diagnostic_and_keeps_checkpoint(tmp_path, monkeypatch):
    config = small_config("train.num_iterations=4", "env.horizon=5", "train.checkpoint_every=1")
    trainer = Trainer(config, tmp_path)
    real_step = trainer.env.step
    calls = {"n": 0}

    def poisoned_step(actions):
        obs, reward, terminated, truncated, info = real_step(actions)
        calls["n"] += 1
        if calls["n"] > 2 * 5 * 2:  # after two meta-iterations (train + valid, 5 steps each)
            reward = reward.clone()
            reward[0] = float("nan")
        return obs, reward, terminated, truncated, info

    monkeypatch.setattr(trainer.env, "step", poisoned_step)
    expected = r"at iteration 3: non-finite rewards.*last completed iteration \(2\) is checkpointed"
    with pytest.raises(TrainingError, match=expected):
        trainer.train(progress=False)
    assert sorted(list_checkpoints(tmp_path)) == [1, 2]
    assert len(read_metrics(tmp_path / "metrics.csv")) == 2


def test_short_navigation_run_improves_post_adaptation_return(tmp_path):
    config = small_config("train.num_iterations=15", "maml.meta_batch_size=10", "maml.fast_batch_size=10")
    history = Trainer(config, tmp_path).train(progress=False)
    post = np.array([row["returns/post_adapt_mean"] for row in history])
    pre = np.array([row["returns/pre_adapt_mean"] for row in history])
    last_post, last_pre = post[-3:].mean(), pre[-3:].mean()
    assert last_post > last_pre + 3.0, (pre, post)  # adaptation helps
    assert last_post > post[0] + 15.0, post  # meta-training helped the adapted policy


@pytest.mark.slow
def test_navigation_paper_preset_learns(tmp_path):
    """Longer run of the paper preset (20 tasks x 20 episodes): the post-adaptation return climbs past -20."""
    config = load_config("experiments/navigation-2d/paper.yaml", ["train.num_iterations=40"])
    history = Trainer(config, tmp_path).train(progress=False)
    post = [row["returns/post_adapt_mean"] for row in history]
    assert np.mean(post[-5:]) > -20.0, post


EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*/*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_experiment_config_trains(tmp_path, path):
    """One tiny iteration of every shipped config: the family, policy and options fit together end to end."""
    tiny = ["train.num_iterations=1", "maml.meta_batch_size=2", "maml.fast_batch_size=2", "env.horizon=8",
            "policy.hidden_sizes=[8]"]
    config = load_config(path, tiny)
    (row,) = Trainer(config, tmp_path).train(progress=False)
    for name in ("returns/pre_adapt_mean", "returns/post_adapt_mean", "trpo/surrogate_before", "env/steps"):
        assert math.isfinite(row[name]), name
    assert 0 < row["env/steps"] <= (config.maml.num_inner_steps + 1) * 4 * 8
    discrete = config.env.family in ("bernoulli-bandit", "tabular-mdp")
    assert ("policy/std" in row) == (not discrete)  # no NaN column for categorical policies
    assert all(math.isfinite(value) for value in row.values())


def last_post_adapt_returns(device: str, seeds: range) -> tuple[np.ndarray, np.ndarray]:
    """First and mean-of-last-3 post-adaptation returns of 15-iteration small runs, one per seed."""
    first, last = [], []
    for seed in seeds:
        config = small_config("train.num_iterations=15", f"train.seed={seed}", f"train.device={device}")
        with tempfile.TemporaryDirectory() as run_dir:
            post = [row["returns/post_adapt_mean"] for row in Trainer(config, run_dir).train(progress=False)]
        first.append(post[0])
        last.append(np.mean(post[-3:]))
    return np.array(first), np.array(last)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_training_matches_cpu_behaviour():
    """Same adaptation behaviour within noise. The CUDA runs draw other random numbers than the CPU runs, so the
    comparison is statistical: on CPU, seeds 0-5 end at -29.9 +- 12.7 (mean, std over seeds of the last three
    post-adaptation returns), so the mean of 3 seeds differs between two devices by 10 (1 sigma) by chance."""
    cpu_first, cpu_last = last_post_adapt_returns("cpu", range(3))
    gpu_first, gpu_last = last_post_adapt_returns("cuda", range(3))
    assert (cpu_last - cpu_first).mean() > 10.0, (cpu_first, cpu_last)
    assert (gpu_last - gpu_first).mean() > 10.0, (gpu_first, gpu_last)
    assert abs(gpu_last.mean() - cpu_last.mean()) < 30.0, (cpu_last, gpu_last)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_outer_step_on_gpu_equals_outer_step_on_cpu():
    """Given the same episodes and initialization, baselines, GAE, the inner step and the MAML-TRPO step on CUDA
    give the CPU's parameters to float32 accuracy (TF32 matmuls off, torch's default)."""
    cpu_metrics, cpu_params = outer_step_from_cpu_episodes("cpu")
    gpu_metrics, gpu_params = outer_step_from_cpu_episodes("cuda")
    for name in ("trpo/surrogate_before", "trpo/surrogate_after", "trpo/kl_after", "trpo/step_accepted"):
        assert gpu_metrics[name] == pytest.approx(cpu_metrics[name], rel=1e-2, abs=1e-6), name
    assert relative_update_difference(cpu_params, gpu_params) < 1e-2


def relative_update_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """``‖Δb − Δa‖ / ‖Δa‖`` for the parameter updates ``Δ = params − initial``. Perturbing the observations by a
    relative 1e-6 (float32 rounding) moves it to 3e-4; float32 CG and line search amplify input noise."""
    initial = initial_policy().state_dict()
    delta_a = torch.cat([(a[n] - v).flatten() for n, v in initial.items()])
    delta_b = torch.cat([(b[n] - v).flatten() for n, v in initial.items()])
    assert delta_a.norm() > 0, "the CPU step did not move the parameters"
    return float((delta_b - delta_a).norm() / delta_a.norm())


def initial_policy() -> GaussianMLPPolicy:
    return GaussianMLPPolicy(2, 2, hidden_sizes=(32, 32), generator=torch.Generator().manual_seed(0))


def outer_step_from_cpu_episodes(device: str) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Episodes sampled on the CPU (2D navigation, 4 tasks x 5 episodes); the learner's math on ``device``."""
    import envs
    from maml_rl.config import MamlConfig

    maml = MamlConfig()
    family = envs.make_family("navigation-2d")
    env = family.make_vector_env(20, max_episode_steps=20)
    env.set_tasks(envs.repeat_tasks(family.sample_tasks(4, np.random.default_rng(0)), 5))
    cpu_policy = initial_policy()
    shared = {name: p.detach() for name, p in cpu_policy.named_parameters()}
    generator = torch.Generator().manual_seed(1)
    train = sample_episodes(env, cpu_policy, task_params(shared, 4), 4, generator, seed=2, action_scale=10.0)
    adapted = adapt(cpu_policy, task_params(shared, 4), [with_advantages(train, maml.gamma, maml.gae_lambda)],
                    maml.fast_lr, create_graph=False)
    valid = sample_episodes(env, cpu_policy, adapted, 4, generator, seed=3, action_scale=10.0)

    policy = initial_policy().to(device)
    batches = [with_advantages(b.to(device), maml.gamma, maml.gae_lambda) for b in (train, valid)]
    learner = MAMLTRPO(policy, maml, MAMLTRPOSettings())
    adapted_on_device = {name: p.to(device) for name, p in adapted.items()}
    new, metrics = learner.step(MetaBatch(train=(batches[0],), valid=batches[1], adapted=adapted_on_device))
    return metrics, {name: p.detach().cpu() for name, p in new.items()}
