"""The ``maml-rl`` command: training runs, and every bad input fails fast with one clear line."""

import pathlib
import subprocess
import sys

import pytest
import torch

from maml_rl.cli import main
from maml_rl.logging import read_metrics

REFERENCE_RUN = str(pathlib.Path(__file__).resolve().parents[1] / "results" / "navigation-2d-reference-seed1")
TINY = ["--set", "maml.meta_batch_size=2", "--set", "maml.fast_batch_size=2", "--set", "env.horizon=5",
        "--set", "policy.hidden_sizes=[8]"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "maml_rl.cli", *args], capture_output=True, text=True, timeout=120)


def test_train_command_writes_a_run(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "navigation-2d/paper", "--output", str(out), "--seed", "3",
                     "--set", "train.num_iterations=2", *TINY)
    assert result.returncode == 0, result.stderr
    assert len(read_metrics(out / "metrics.csv")) == 2
    assert "seed: 3" in (out / "config.yaml").read_text()
    assert "meta-train" in result.stderr  # the progress bar


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "maml.fast_lrr=0.1"], "unknown config key maml.fast_lrr; valid keys in maml: meta_batch_size"),
        (["--set", "maml.fast_lr=-0.1"], "maml.fast_lr: must be > 0"),
        (["--set", "maml.meta_batch_size=0"], "maml.meta_batch_size: must be > 0"),
        (["--set", "maml.meta_batch_size=2.5"], "maml.meta_batch_size: expected an integer"),
        (["--set", "maml.first_order=maybe"], "algorithm.options.first_order: expected true/false"),
        (["--set", "env.family=mountain-car"], "env.family: unknown task family 'mountain-car'; valid: "),
        (["--set", "env.options={num_arms: 3}"], "env.options"),
        (["--set", "policy.activation=gelu"], "policy.activation: unknown 'gelu'"),
        (["--set", "algorithm.options.ls_backtrack=1.5"], "algorithm.options.ls_backtrack: must be in (0, 1)"),
        (["--set", "trpo.ls_backtrack=1.5"], "algorithm.options.ls_backtrack: must be in (0, 1)"),  # old spelling
        (["--set", "algorithm.options.max_kll=1"], "unknown config key algorithm.options.max_kll; valid keys in "
                                                   "algorithm.options: max_kl, cg_iters"),
        (["--set", "nonsense"], "expected key=value"),
        (["--set", "algorithm=reptilian"], "algorithm.name: unknown 'reptilian'; valid: maml-trpo, pretrained"),
        (["--device", "tpu"], "train.device: expected cpu, cuda or cuda:N"),
        (["does/not/exist.yaml"], "config not found"),
        (["halfcheetah-vel/fancy"], "valid configs under experiments: halfcheetah-vel/modern, "
                                   "halfcheetah-vel/oracle-reference, halfcheetah-vel/paper, "
                                   "halfcheetah-vel/pretrained-reference"),
    ],
)
def test_bad_input_exits_nonzero_with_one_clear_line(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    config = [] if not args[0].startswith("--") else ["navigation-2d/paper"]
    code = main(["train", *config, "--output", str(out), "--no-progress", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("maml-rl: error: ") and message in err[0], err
    assert not out.exists()  # nothing started


def test_cuda_without_gpu_is_refused(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = main(["train", "--output", str(tmp_path / "r"), "--device", "cuda", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "no CUDA device is available" in err
    assert not (tmp_path / "r").exists()


def test_output_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    assert main(["train", "--output", str(target), "--no-progress"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_bad_yaml_file_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("maml: [unclosed\n")
    assert main(["train", str(bad), "--no-progress"]) == 2
    assert "is not valid YAML" in capsys.readouterr().err


def test_resume_without_run_directory_is_refused(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_config_evaluate_and_plot_errors_are_reported_before_torch_is_imported(tmp_path):
    """A bad config (options included), a bad evaluation argument or run directory, or a plot of a run without
    metrics fails in a fraction of a second: the CLI reports it before importing torch, which takes seconds."""
    script = (
        "import sys\n"
        "from maml_rl.cli import main\n"
        f"cases = [['train', 'navigation-2d/paper', '--set', 'maml.gamma=2', '--output', {str(tmp_path / 'a')!r}],\n"
        "         ['train', 'navigation-2d/paper', '--set', 'algorithm.options.max_kl=-1'],\n"
        "         ['train', 'navigation-2d/no-such-preset'],\n"
        f"         ['plot', {str(tmp_path / 'no-run')!r}],\n"
        f"         ['evaluate', {str(tmp_path / 'no-run')!r}],\n"
        f"         ['evaluate', {str(tmp_path)!r}, '--episodes', '0'],\n"
        f"         ['evaluate', {REFERENCE_RUN!r}, '--compare', {str(tmp_path / 'b')!r}],\n"
        f"         ['evaluate', {REFERENCE_RUN!r}, '--device', 'tpu'],\n"
        "         ['train', 'navigation-2d/paper', '--device', 'cuda:abc']]\n"
        "print([main(case) for case in cases], 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[2, 2, 2, 2, 2, 2, 2, 2, 2] False", result.stdout + result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 9 and all(line.startswith("maml-rl: error: ") for line in errors), errors
    assert "--episodes must be >= 1" in errors[5] and f"{tmp_path / 'b'} is not a run directory" in errors[6]
    assert errors[7].endswith("--device: expected cpu, cuda or cuda:N, got 'tpu'")
    assert errors[8].endswith("train.device: expected cpu, cuda or cuda:N, got 'cuda:abc'")
    assert not (tmp_path / "a").exists()
