"""TensorBoard event files of a run: every documented tag (docs/architecture.md §8), the config as text and
hparams, resume."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from maml_rl.cli import main
from maml_rl.logging import read_metrics

TINY = ["--set", "maml.meta_batch_size=3", "--set", "maml.fast_batch_size=2", "--set", "env.horizon=8",
        "--set", "policy.hidden_sizes=[8]", "--set", "train.num_threads=1", "--no-progress"]

#: docs/architecture.md §8 and the README: returns before/after adaptation (mean, std), surrogate and KL around the
#: outer step, line-search steps, CG residual, policy std, environment steps and steps per second, seconds per phase
DOCUMENTED_TAGS = [
    "returns/pre_adapt_mean", "returns/pre_adapt_std", "returns/post_adapt_mean", "returns/post_adapt_std",
    "trpo/surrogate_before", "trpo/surrogate_after", "trpo/kl_after", "trpo/line_search_steps", "trpo/cg_residual",
    "policy/std", "env/steps", "env/steps_per_second",
    "time/sampling", "time/adaptation", "time/outer", "time/iteration",
]


def events_of(run_dir):
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("tb") / "run"
    assert main(["train", "navigation-2d/paper", "--output", str(path), "--set", "train.num_iterations=3",
                 "--set", "maml.num_inner_steps=2", *TINY]) == 0
    return path


def test_every_documented_tag_is_logged_every_iteration_with_the_csv_values(run):
    events = events_of(run)
    rows = read_metrics(run / "metrics.csv")
    scalars = set(events.Tags()["scalars"])
    assert set(DOCUMENTED_TAGS) <= scalars, sorted(set(DOCUMENTED_TAGS) - scalars)
    assert "returns/inner_step1_mean" in scalars  # returns before every inner step when K > 1
    assert scalars == set(rows[0]) - {"iteration"}  # TensorBoard and CSV hold the same metrics
    for tag in scalars:
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3], tag
        assert [e.value for e in logged] == pytest.approx([row[tag] for row in rows], rel=1e-6, nan_ok=True), tag


def test_config_is_logged_as_text_and_as_hparams(run):
    events = events_of(run)
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "family: navigation-2d" in text and "fast_lr: 0.5" in text
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["maml.fast_lr"].number_value == 0.5
    assert hparams["maml.meta_batch_size"].number_value == 3
    assert hparams["env.family"].string_value == "navigation-2d"
    assert hparams["policy.hidden_sizes"].string_value == "[8]"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {info.name.tag for info in experiment.metric_infos} >= {"returns/post_adapt_mean", "trpo/kl_after"}
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # hparams in the run's own file, no extra run


def test_resumed_run_has_one_event_per_iteration(tmp_path, monkeypatch):
    """Iteration 4 is logged, its checkpoint write is interrupted, the resume recomputes it: TensorBoard keeps
    only the recomputed value (the resumed writer purges steps after the checkpoint)."""
    real_save = torch.save
    calls = {"n": 0}

    def save_interrupted_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save_interrupted_once)
    run = tmp_path / "run"
    args = ["navigation-2d/paper", "--output", str(run), "--set", "train.num_iterations=5",
            "--set", "train.checkpoint_every=2", *TINY]
    assert main(["train", *args]) == 130
    assert [row["iteration"] for row in read_metrics(run / "metrics.csv")] == [1, 2, 3, 4]
    monkeypatch.setattr(torch, "save", real_save)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    rows = read_metrics(run / "metrics.csv")
    events = events_of(run)
    for tag in ("returns/post_adapt_mean", "time/iteration"):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3, 4, 5]
        assert [e.value for e in logged] == pytest.approx([row[tag] for row in rows], rel=1e-6)
