"""experiments/short_run_with_control.py: a run beside its control, and what it prints."""

import re
from pathlib import Path

from tests.conftest import load_script

SCRIPT = load_script(Path(__file__).resolve().parents[1] / "experiments" / "short_run_with_control.py")
TINY = ["--size", "preset", "--window", "1", "--set", "train.num_iterations=3", "--set", "maml.meta_batch_size=2",
        "--set", "maml.fast_batch_size=2", "--set", "policy.hidden_sizes=[8]"]


def test_the_run_and_its_control_start_alike_and_the_difference_is_theirs(capsys):
    """Same tasks, same starting policy: the first iteration's gain is the run's and the control's alike (the control
    steps by nothing); the printed end difference is the run's last gain minus the control's."""
    SCRIPT.main(["navigation-2d/paper", "--seeds", "1", "2", *TINY])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("navigation-2d/paper train.num_iterations=3 ") and "size preset" in out[0], out
    differences = []
    for line in out[1:3]:
        run_first, run_last, control_first, control_last, difference = (
            float(x) for x in re.findall(r"[-+]?\d+\.\d+", line)[:5])
        assert run_first == control_first, line
        assert abs(difference - (run_last - control_last)) <= 0.011, line
        differences.append(difference)
    mean = float(out[3].rsplit(": ", 1)[1])
    assert abs(mean - sum(differences) / 2) <= 0.011 and out[3].startswith("mean over 2 seeds"), out
