"""``maml-rl plot``: learning curves of several runs from their ``metrics.csv``, and its bad input."""

import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from maml_rl.cli import main
from maml_rl.logging import read_metrics
from maml_rl.plotting import adaptation_figure, learning_curves

TINY = ["--set", "maml.meta_batch_size=2", "--set", "maml.fast_batch_size=2", "--set", "env.horizon=5",
        "--set", "policy.hidden_sizes=[8]", "--set", "train.num_threads=1", "--set", "train.num_iterations=3",
        "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in (1, 2):
        assert main(["train", "navigation-2d/paper", "--output", str(root / f"seed{seed}"), "--seed", str(seed),
                     *TINY]) == 0
    return root / "seed1", root / "seed2"


def plot(capsys, *args):
    code = main(["plot", *map(str, args)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_learning_curves_hold_each_runs_metric_against_iteration(runs):
    figure = learning_curves(runs, "trpo/kl_after")
    (axes,) = figure.axes
    assert [line.get_label() for line in axes.get_lines()] == ["seed1", "seed2"]
    for line, run in zip(axes.get_lines(), runs, strict=True):
        rows = read_metrics(run / "metrics.csv")
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
        np.testing.assert_array_equal(line.get_ydata(), [row["trpo/kl_after"] for row in rows])
    assert axes.get_ylabel() == "trpo/kl_after"


def test_plot_writes_one_png(runs, tmp_path, capsys):
    code, err = plot(capsys, *runs, "--output", tmp_path / "curves.png")
    assert code == 0 and err == [f"wrote {tmp_path / 'curves.png'}"]
    image = matplotlib.image.imread(tmp_path / "curves.png")
    assert image.ndim == 3 and image.shape[1] > 300
    code, err = plot(capsys, *runs, "--metric", "env/steps")  # default: in the runs' common parent
    default = runs[0].parent / "learning-curves-env-steps.png"
    assert code == 0 and err == [f"wrote {default}"] and default.is_file()


def test_unknown_metric_lists_the_available_ones(runs, tmp_path, capsys):
    code, err = plot(capsys, *runs, "--metric", "returns/post_adapt", "--output", tmp_path / "x.png")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("maml-rl: error: unknown metric 'returns/post_adapt' in ")
    assert "available: returns/pre_adapt_mean, returns/pre_adapt_std, returns/post_adapt_mean" in err[0]
    assert not (tmp_path / "x.png").exists()


def test_run_without_metrics_is_an_error(runs, tmp_path, capsys):
    code, err = plot(capsys, runs[0], tmp_path, "--output", tmp_path / "x.png")
    assert code == 2 and err == [f"maml-rl: error: {tmp_path} has no metrics.csv"]
    assert not (tmp_path / "x.png").exists()


def test_several_metrics_on_one_figure(tmp_path):
    import numpy as np

    from maml_rl.plotting import learning_curves

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("iteration,returns/pre_adapt_mean,returns/post_adapt_mean\n1,-3,-2\n2,-2.5,-1\n")
    figure = learning_curves([run], ["returns/pre_adapt_mean", "returns/post_adapt_mean"])
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["run: returns/pre_adapt_mean", "run: returns/post_adapt_mean"]
    np.testing.assert_array_equal(lines[1].get_ydata(), [-2, -1])


def test_a_long_adaptation_title_stays_inside_the_figure():
    title = "halfcheetah-vel: 40 tasks × 4000 steps (rounds of 20 episodes), seed 0, and a long label besides"
    curves = [("maml", np.array([-1.0, 0.0]), np.array([0.1, 0.1]))]
    figure = adaptation_figure(curves, title)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    box = figure.axes[0].title.get_window_extent(canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= figure.bbox.x1
    assert figure.axes[0].title.get_text().replace("\n", " ") == title
