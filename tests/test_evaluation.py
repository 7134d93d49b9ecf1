"""Adaptation curves (docs/architecture.md §6): the protocol, its outputs, comparison rows and bad input to
``maml-rl evaluate``."""

import csv
import dataclasses
import json
import time

import matplotlib.image
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs
from maml_rl import collect as collect_module
from maml_rl import evaluation
from maml_rl.adaptation import inner_loss
from maml_rl.build import Generators, build_family
from maml_rl.checkpoint import checkpoint_path, list_checkpoints
from maml_rl.cli import main
from maml_rl.config import ConfigError, load_config
from maml_rl.evaluation import Protocol, evaluate_row, held_out_tasks, load_run, random_row
from maml_rl.logging import read_metrics, tag_of
from maml_rl.trainer import Trainer

NAV = "experiments/navigation-2d/paper.yaml"
#: a run small enough to train in a few seconds; horizon 50 keeps the paper's dynamics and α = 0.5
RUN = ["maml.meta_batch_size=10", "maml.fast_batch_size=10", "policy.hidden_sizes=[32, 32]", "env.horizon=50",
       "train.checkpoint_every=5", "train.num_threads=1"]


def train(path, *overrides, config=NAV):
    Trainer(load_config(config, [*RUN, *overrides]), path).train(progress=False)
    return path


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory):
    """A MAML run meta-trained for 10 iterations (checkpoints at 5 and 10)."""
    return train(tmp_path_factory.mktemp("runs") / "maml", "train.num_iterations=10")


@pytest.fixture(scope="module")
def comparison_runs(tmp_path_factory):
    """One-iteration pretrained and oracle runs with the same family and horizon as ``maml_run``."""
    root = tmp_path_factory.mktemp("compare")
    tiny = ["maml.meta_batch_size=2", "maml.fast_batch_size=2", "train.num_iterations=1"]
    pretrained = train(root / "pretrained", *tiny, config="experiments/navigation-2d/pretrained.yaml")
    oracle = train(root / "oracle", *tiny, config="experiments/navigation-2d/oracle.yaml")
    return pretrained, oracle


def cli(capsys, *args):
    code = main(["evaluate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


# ------------------------------------------------------------------------------------------- the protocol


def test_trained_maml_policy_improves_with_one_adaptation_step(maml_run):
    protocol = Protocol(num_tasks=20, num_steps=2, episodes_per_task=10, seed=3)
    trained = evaluate_row(load_run(maml_run), protocol)
    assert trained.returns.shape == (3, 20)
    rise = trained.mean[1] - trained.mean[0]
    assert rise > 5.0 and rise > 3 * np.hypot(*trained.stderr[:2]), trained.mean
    fresh = evaluate_row(random_row(load_run(maml_run).config, protocol), protocol)
    assert rise > fresh.mean[1] - fresh.mean[0] + 5.0, (trained.mean, fresh.mean)  # meta-training made the rise
    assert trained.mean[1] > fresh.mean[1] + 5.0


def test_protocol_steps_alpha_then_half_and_reuses_adapt(maml_run, monkeypatch):
    row = load_run(maml_run, checkpoint=5)
    calls = []
    real_adapt = collect_module.adapt

    def recording_adapt(policy, params, batches, step_sizes, create_graph=True, loss=inner_loss):
        calls.append((step_sizes, len(batches), batches[0].rewards.shape, next(iter(params.values())).shape[0]))
        assert loss is inner_loss  # maml-trpo with the REINFORCE estimator
        return real_adapt(policy, params, batches, step_sizes, create_graph, loss)

    monkeypatch.setattr(collect_module, "adapt", recording_adapt)
    curve = evaluate_row(row, Protocol(num_tasks=4, num_steps=3, episodes_per_task=3, seed=0))
    alpha = row.config.maml.fast_lr
    assert alpha == 0.5 and curve.step_sizes == (0.5, 0.25, 0.25)
    assert [c[0] for c in calls] == [0.5, 0.25, 0.25]
    assert all(c[1:] == (1, (50, 12), 4) for c in calls)  # one batch of [T, 4 tasks x 3 episodes], 4 tasks
    assert curve.source == {"run_dir": str(maml_run), "checkpoint": 5, "algorithm": "maml-trpo", "oracle": False}


def test_later_step_scale_sets_the_steps_after_the_first(maml_run, monkeypatch):
    row = load_run(maml_run, checkpoint=5)
    scaled = dataclasses.replace(row.config, evaluation=dataclasses.replace(row.config.evaluation,
                                                                             later_step_scale=0.01))
    calls = []
    real_adapt = collect_module.adapt

    def recording_adapt(policy, params, batches, step_sizes, create_graph=True, loss=inner_loss):
        calls.append(step_sizes)
        return real_adapt(policy, params, batches, step_sizes, create_graph, loss)

    monkeypatch.setattr(collect_module, "adapt", recording_adapt)
    curve = evaluate_row(dataclasses.replace(row, config=scaled), Protocol(num_tasks=2, num_steps=3,
                                                                           episodes_per_task=2, seed=0))
    assert calls == [0.5, 0.005, 0.005] and curve.step_sizes == (0.5, 0.005, 0.005)
    with pytest.raises(ConfigError, match=r"^evaluation\.later_step_scale: must be > 0, got 0.0$"):
        load_config(maml_run / "config.yaml", ["evaluation.later_step_scale=0"])


def test_same_seed_same_curve_and_k0_is_the_unadapted_policy(maml_run):
    row = load_run(maml_run)
    long = evaluate_row(row, Protocol(num_tasks=5, num_steps=2, episodes_per_task=4, seed=7))
    again = evaluate_row(row, Protocol(num_tasks=5, num_steps=2, episodes_per_task=4, seed=7))
    short = evaluate_row(row, Protocol(num_tasks=5, num_steps=0, episodes_per_task=4, seed=7))
    other = evaluate_row(row, Protocol(num_tasks=5, num_steps=0, episodes_per_task=4, seed=8))
    np.testing.assert_array_equal(long.returns, again.returns)
    np.testing.assert_array_equal(short.returns[0], long.returns[0])
    assert not np.allclose(other.returns[0], long.returns[0])
    np.testing.assert_allclose(long.stderr, long.returns.std(1, ddof=1) / np.sqrt(5))


def test_evaluation_tasks_come_from_a_stream_training_never_draws(maml_run):
    family = envs.make_family("navigation-2d")
    for seed in range(4):
        held_out = family.sample_tasks(40, evaluation.evaluation_streams(seed, torch.device("cpu")).tasks)["goal"]
        for train_seed in range(4):
            training = family.sample_tasks(40, Generators.from_seed(train_seed, torch.device("cpu")).tasks)["goal"]
            assert not np.isin(held_out, training).any()


# ------------------------------------------------------------------------------------------- outputs


def test_evaluate_writes_json_csv_png_and_tensorboard(maml_run, capsys):
    code, out, err = cli(capsys, maml_run, "--tasks", 6, "--steps", 2, "--episodes", 4, "--seed", 1)
    assert code == 0, err
    output = maml_run / "eval-iter000010"
    assert err[-1] == f"wrote {output}"
    assert out.splitlines()[0].split() == ["policy", "k=0", "k=1", "k=2"]

    results = json.loads((output / "adaptation.json").read_text())
    assert results["protocol"]["num_tasks"] == 6 and results["protocol"]["seed"] == 1
    (policy,) = results["policies"]
    assert policy["checkpoint"] == 10 and policy["step_sizes"] == [0.5, 0.25]
    assert [step["step"] for step in policy["steps"]] == [0, 1, 2]
    returns = np.array([step["returns"] for step in policy["steps"]])
    # reward -|p - g| with |g| <= √0.5 and |p| <= 0.1·√2·t after t steps
    worst = -sum(np.sqrt(0.5) + 0.1 * np.sqrt(2) * t for t in range(1, 51))
    assert returns.shape == (3, 6) and (returns < 0).all() and (returns > worst).all()
    np.testing.assert_allclose([step["mean"] for step in policy["steps"]], returns.mean(1))
    np.testing.assert_allclose([step["stderr"] for step in policy["steps"]], returns.std(1, ddof=1) / np.sqrt(6))

    with open(output / "adaptation.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["policy", "step", "mean_return", "stderr", *(f"task_{i}" for i in range(6))]
    assert [row[1] for row in rows[1:]] == ["0", "1", "2"]
    np.testing.assert_array_equal(np.array([row[4:] for row in rows[1:]], dtype=float), returns)

    image = matplotlib.image.imread(output / "adaptation.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300

    events = EventAccumulator(str(output))
    events.Reload()
    tag = f"adaptation/{tag_of(policy['label'])}"
    scalars = events.Scalars(f"{tag}/return_mean")
    assert [e.step for e in scalars] == [0, 1, 2]
    np.testing.assert_allclose([e.value for e in scalars], returns.mean(1), rtol=1e-6)
    assert [e.step for e in events.Scalars(f"{tag}/return_stderr")] == [0, 1, 2]
    assert events.Tags()["images"] == ["adaptation/curve"]


def test_default_output_is_never_overwritten(maml_run, capsys):
    args = (maml_run, "--checkpoint", 5, "--tasks", 2, "--steps", 0, "--episodes", 1)
    assert cli(capsys, *args)[0] == 0
    first = (maml_run / "eval-iter000005" / "adaptation.json").read_text()
    code, _, err = cli(capsys, *args, "--seed", 4)
    assert code == 0 and err[-1] == f"wrote {maml_run / 'eval-iter000005-2'}"
    assert (maml_run / "eval-iter000005" / "adaptation.json").read_text() == first
    code, _, err = cli(capsys, *args, "--output", maml_run / "eval-iter000005")
    assert code == 2 and len(err) == 1 and "already holds evaluation results" in err[0]
    assert (maml_run / "eval-iter000005" / "adaptation.json").read_text() == first


def test_comparison_rows_share_one_table_and_plot(maml_run, comparison_runs, capsys, tmp_path):
    pretrained, oracle = comparison_runs
    output = tmp_path / "compare"
    code, out, err = cli(capsys, maml_run, "--compare", pretrained, oracle, "--random", "--tasks", 4, "--steps", 2,
                         "--episodes", 2, "--output", output)
    assert code == 0, err
    policies = json.loads((output / "adaptation.json").read_text())["policies"]
    assert [p["label"] for p in policies] == [
        "maml-trpo (maml, iter 10)", "pretrained (pretrained, iter 1)", "oracle (oracle, iter 1)", "random"]
    assert [len(p["steps"]) for p in policies] == [3, 3, 1, 3]  # the oracle is evaluated at k = 0 only
    assert [p["oracle"] for p in policies] == [False, False, True, False]
    assert [p["algorithm"] for p in policies] == ["maml-trpo", "pretrained", "pretrained", "random"]
    assert len(out.strip().splitlines()) == 5
    with open(output / "adaptation.csv", newline="") as handle:
        assert len(list(csv.reader(handle))) == 1 + 3 + 3 + 1 + 3
    events = EventAccumulator(str(output))
    events.Reload()
    assert len(events.Tags()["scalars"]) == 2 * 4


def test_random_row_takes_its_own_step_size(maml_run, capsys, tmp_path):
    """--random-fast-lr sets the random row's α (the reference's random rows used α = 1.0 for HalfCheetah direction
    and Ant) and leaves the run's rows at their own; later steps scale it as the run's config does (α/2)."""
    output = tmp_path / "random-alpha"
    code, _, err = cli(capsys, maml_run, "--random", "--random-fast-lr", 2.0, "--tasks", 2, "--steps", 2,
                       "--episodes", 2, "--output", output)
    assert code == 0, err
    policies = json.loads((output / "adaptation.json").read_text())["policies"]
    assert [p["label"] for p in policies] == ["maml-trpo (maml, iter 10)", "random (fast_lr 2)"]
    assert [p["step_sizes"] for p in policies] == [[0.5, 0.25], [2.0, 1.0]]
    protocol = Protocol(num_tasks=2, num_steps=2, episodes_per_task=2, seed=0)
    config = load_run(maml_run).config
    plain, scaled = random_row(config, protocol), random_row(config, protocol, 2.0)
    for a, b in zip(plain.policy.parameters(), scaled.policy.parameters(), strict=True):
        assert torch.equal(a, b)  # the same initialization, only the step size differs
    assert scaled.config.maml.fast_lr == 2.0 and config.maml.fast_lr == 0.5


@pytest.mark.parametrize(("args", "message"), [
    (["--random-fast-lr", "1.0"], "--random-fast-lr sets the step size of the --random row: add --random"),
    (["--random", "--random-fast-lr", "0"], "--random-fast-lr must be a finite number > 0, got 0.0"),
    (["--random", "--random-fast-lr", "nan"], "--random-fast-lr must be a finite number > 0, got nan"),
])
def test_random_fast_lr_usage_errors(maml_run, capsys, tmp_path, args, message):
    code, _, err = cli(capsys, maml_run, *args, "--tasks", 2, "--output", tmp_path / "never")
    assert code == 2 and err == [f"maml-rl: error: {message}"]
    assert not (tmp_path / "never").exists()


def test_adaptation_json_records_the_held_out_tasks_in_column_order(maml_run, capsys, tmp_path):
    """``protocol.tasks`` lists the task parameters in the order of the per-task returns: on 2D navigation the
    returns before adaptation fall with the goal's distance from the start (the point starts at the origin), which
    holds only if the recorded goals are the evaluated ones, column for column."""
    output = tmp_path / "tasks"
    code, _, err = cli(capsys, maml_run, "--tasks", 12, "--steps", 1, "--episodes", 4, "--output", output)
    assert code == 0, err
    data = json.loads((output / "adaptation.json").read_text())
    goals = np.array(data["protocol"]["tasks"]["goal"])
    row = load_run(maml_run)
    protocol = Protocol(num_tasks=12, num_steps=1, episodes_per_task=4, seed=0)
    np.testing.assert_array_equal(goals, held_out_tasks(build_family(row.config), protocol)["goal"])
    before = np.array(data["policies"][0]["steps"][0]["returns"])
    distance = np.linalg.norm(goals, axis=1)
    assert np.corrcoef(distance, before)[0, 1] < -0.8
    assert np.corrcoef(distance, before[np.random.default_rng(0).permutation(12)])[0, 1] > -0.8


def test_reference_tasks_are_evaluated_and_recorded_with_their_source(maml_run, capsys, tmp_path):
    """``--tasks reference``: the 40 goals of the reference's test_maml_point.py, in its order, recorded in
    ``adaptation.json`` with the family and the draw that made them."""
    output = tmp_path / "reference"
    code, _, err = cli(capsys, maml_run, "--tasks", "reference", "--steps", 1, "--episodes", 2, "--output", output)
    assert code == 0, err
    protocol = json.loads((output / "adaptation.json").read_text())["protocol"]
    assert protocol["task_set"] == "reference" and protocol["num_tasks"] == 40
    assert protocol["family"] == "navigation-2d"
    assert protocol["task_source"] == ("cbfinn/maml_rl maml_examples/test_maml_point.py: np.random.seed(1); "
                                       "np.random.uniform(-0.5, 0.5, size=(40, 2)); each draw is a goal")
    expected = np.random.RandomState(1).uniform(-0.5, 0.5, size=(40, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.array(protocol["tasks"]["goal"], dtype=np.float32), expected)
    before = np.array(json.loads((output / "adaptation.json").read_text())["policies"][0]["steps"][0]["returns"])
    assert np.corrcoef(np.linalg.norm(expected, axis=1), before)[0, 1] < -0.8  # the goals evaluated are these
    code, _, err = cli(capsys, maml_run, "--tasks", "reference", "--nproc", 3, "--output", tmp_path / "never")
    assert code == 2 and len(err) == 1 and "--tasks" in err[0]
    assert not (tmp_path / "never").exists()


def test_pretrained_and_oracle_configs_train_without_adaptation(comparison_runs):
    for run in comparison_runs:
        (row,) = read_metrics(run / "metrics.csv")
        assert row["returns/pre_adapt_mean"] == row["returns/post_adapt_mean"]  # one batch: no adaptation
        assert row["env/steps"] == 2 * 2 * 50  # M x E x T: no inner-loop batch was sampled
        assert load_run(run).config.algorithm.name == "pretrained"
    oracle = load_run(comparison_runs[1])
    assert oracle.oracle and oracle.policy.mean[0].in_features == 4  # observation [p, g]


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def broken_run(tmp_path, maml_run):
    """A copy of ``maml_run``'s config and latest checkpoint, to break."""
    run = tmp_path / "broken"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text((maml_run / "config.yaml").read_text())
    (run / "checkpoints" / "iter_000010.pt").write_bytes(checkpoint_path(maml_run, 10).read_bytes())
    return run


def _save_state(run, iteration, **changes):
    path = checkpoint_path(run, iteration)
    state = torch.load(path, weights_only=False)
    state.update(changes)
    torch.save(state, path)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no-config", "is not a run directory (no config.yaml)"),
        ("no-checkpoints", "no checkpoints in"),
        ("truncated", "iter_000010.pt is unreadable"),
        ("garbage", "iter_000010.pt is unreadable"),
        ("not-a-checkpoint", "is not a maml-rl checkpoint"),
        ("other-family", "is from task family 'bandit', the config says 'navigation-2d'"),
        ("other-policy-shape", "does not fit the config's policy (checkpoint vs config: mean.0.bias: [8] vs [32]"),
        ("missing-iteration", "no checkpoint for iteration 7"),
    ],
)
def test_bad_run_directories_give_one_clear_error(broken_run, capsys, breakage, message):
    path = checkpoint_path(broken_run, 10)
    extra = []
    if breakage == "no-config":
        (broken_run / "config.yaml").unlink()
    elif breakage == "no-checkpoints":
        path.unlink()
    elif breakage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif breakage == "garbage":
        path.write_bytes(b"not a torch file")
    elif breakage == "not-a-checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    elif breakage == "other-family":
        _save_state(broken_run, 10, family="bandit")
    elif breakage == "other-policy-shape":
        policy = load_run(broken_run).policy
        small = type(policy)(2, 2, hidden_sizes=(8, 8))
        _save_state(broken_run, 10, policy=small.state_dict())
    elif breakage == "missing-iteration":
        extra = ["--checkpoint", "7"]
    before = sorted(p.name for p in broken_run.rglob("*"))
    code, out, err = cli(capsys, broken_run, *extra, "--tasks", 2, "--steps", 1, "--episodes", 1)
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("maml-rl: error: ") and message in err[0], err
    assert sorted(p.name for p in broken_run.rglob("*")) == before  # nothing written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "1"], "--tasks must be >= 2"),
        (["--steps", "-1"], "--steps must be >= 0"),
        (["--episodes", "0"], "--episodes must be >= 1"),
        (["--compare", "BANDIT"], "env.family='bernoulli-bandit' but maml-trpo (maml, iter 10) has 'navigation-2d'"),
        (["--compare", "SHORT"], "has env.horizon=10 but maml-trpo (maml, iter 10) has 50"),
        (["--compare", "NO_RUN"], "is not a run directory"),
    ],
)
def test_bad_evaluation_requests_give_one_clear_error(maml_run, tmp_path, capsys, args, message):
    if "BANDIT" in args:
        bandit = train(tmp_path / "bandit", "train.num_iterations=1", "maml.meta_batch_size=2",
                       "maml.fast_batch_size=2", config="experiments/bandit/k5-n10.yaml")
        args = [str(bandit) if a == "BANDIT" else a for a in args]
    if "SHORT" in args:
        short = train(tmp_path / "short", "train.num_iterations=1", "maml.meta_batch_size=2",
                      "maml.fast_batch_size=2", "env.horizon=10")
        args = [str(short) if a == "SHORT" else a for a in args]
    args = [str(tmp_path / "nothing") if a == "NO_RUN" else a for a in args]
    before = sorted(p.name for p in maml_run.iterdir())
    code, out, err = cli(capsys, maml_run, *args)
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("maml-rl: error: ") and message in err[0], err
    assert sorted(p.name for p in maml_run.iterdir()) == before
    assert list_checkpoints(maml_run).keys() == {5, 10}


def test_paper_preset_evaluation_is_fast():
    """40 tasks × 20 episodes × horizon 100, K = 3 (benchmarks/evaluation_speed.py measures it: about 1 s on
    2 cores); the bound is generous so that a loaded CI machine does not fail it."""
    config = load_config(NAV)
    protocol = Protocol(num_tasks=40, num_steps=3, episodes_per_task=20, seed=0)
    start = time.perf_counter()
    curve = evaluate_row(random_row(config, protocol), protocol)
    assert time.perf_counter() - start < 20.0
    assert curve.returns.shape == (4, 40)


@pytest.mark.parametrize(("preset", "override", "message"), [
    # a HalfCheetah stepping 0.01 s per env step (the reference's) and one stepping 0.05 s (gymnasium v5's)
    ("halfcheetah-vel/paper", "env.options.frame_skip=5", r"other has env.options.frame_skip=5 but preset has 1"),
    # a HalfCheetah rewarded on its centre of mass's velocity (the reference's) and one rewarded on its root's
    ("halfcheetah-dir/reference", "env.options.centre_of_mass=true",
     r"other has env.options.centre_of_mass=True but preset has False"),
])
def test_rows_of_different_tasks_are_not_compared(preset, override, message):
    """Rows whose environments differ in simulated time per step or in the rewarded velocity are different tasks:
    `--compare` refuses them, naming the option; equal settings pass."""
    config = load_config(f"experiments/{preset}.yaml")
    other = load_config(f"experiments/{preset}.yaml", [override])
    policy = random_row(config, Protocol(num_tasks=2, num_steps=0, episodes_per_task=1, seed=0)).policy
    rows = [evaluation.Row("preset", config, policy), evaluation.Row("other", other, policy)]
    with pytest.raises(evaluation.EvaluationError, match=message):
        evaluation.check_comparable(rows)
    evaluation.check_comparable([rows[0], dataclasses.replace(rows[0], label="again")])


def test_ants_of_the_reference_model_and_of_gymnasiums_are_not_compared():
    """The reference's rllab Ant (one 0.02-s step, softer contacts, bent start) and gymnasium's at one physics step
    per env step share the frame skip and still differ: `--compare` names the option."""
    other = load_config("experiments/ant-vel/oracle-reference.yaml")  # the reference's Ant environment
    config = load_config("experiments/ant-vel/oracle-reference.yaml", ["env.options.reference_model=false"])
    policy = random_row(config, Protocol(num_tasks=2, num_steps=0, episodes_per_task=1, seed=0)).policy
    rows = [evaluation.Row("gymnasium", config, policy), evaluation.Row("reference", other, policy)]
    with pytest.raises(evaluation.EvaluationError, match=r"reference has env\.options\.reference_model=True but "
                       r"gymnasium has False"):
        evaluation.check_comparable(rows)
