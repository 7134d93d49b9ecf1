"""The analysis scripts of experiments/navigation-2d against independent computations (a closed form, a
hand-built batch): the 2D-navigation figures of docs/results.md come from them."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch

from maml_rl.episodes import Episodes
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _navigation_script(name: str):  # type: ignore[no-untyped-def]
    """A script of experiments/navigation-2d as a module (the folder's name is not a package name)."""
    return load_script(ROOT / "experiments" / "navigation-2d" / f"{name}.py")


def test_hover_return_matches_the_closed_form_for_one_and_two_steps():
    """One step: E‖0.1σε‖ = 0.1σ√(π/2). Two steps: the second is paid unless the first ended inside the box,
    which happens with probability p = P(|0.1σε₁| < 0.01)² (the hovering estimate of docs/results.md, 2D navigation)."""
    hover = _navigation_script("hover_return")
    sigma, n = 0.2, 400_000  # 0.1σ = 0.02: the ±0.1 clip is 5 standard deviations away, negligible
    one = 0.1 * sigma * math.sqrt(math.pi / 2)
    p = math.erf(0.01 / (0.1 * sigma) / math.sqrt(2)) ** 2
    assert abs(hover.hovering_returns(sigma, 1, n, 10.0, 0).mean() + one) < 0.005 * one
    assert abs(hover.hovering_returns(sigma, 2, n, 10.0, 0).mean() + one * (2 - p)) < 0.005 * one
    # a smaller σ hovers more cheaply over a long episode
    smaller, larger = (hover.hovering_returns(s, 95, 20_000, 10.0, 0).mean() for s in (0.43, 0.62))
    assert smaller > larger + 1.0, (smaller, larger)


def test_episode_ends_adds_the_last_clipped_move_and_skips_dropped_slots():
    """Two tasks × two slots, three steps, garbage in the masked steps: end = last observed position + that step's
    action ÷ 10, clipped to ±0.1 per coordinate; a slot with no steps (dropped by a budget) is not valid."""
    ends_of = _navigation_script("episode_ends").episode_ends
    garbage = 7.0
    obs = torch.full((3, 4, 2), garbage)
    act = torch.full((3, 4, 2), garbage)
    mask = torch.zeros(3, 4)
    mask[:, 0] = 1.0                                                  # task 0: all three steps
    obs[2, 0], act[2, 0] = torch.tensor([0.1, 0.2]), torch.tensor([5.0, -20.0])   # move (0.1, -0.1) after clipping
    mask[0, 1] = 1.0                                                  # task 0: ended after one step
    obs[0, 1], act[0, 1] = torch.tensor([0.0, 0.0]), torch.tensor([0.3, 0.4])
    mask[:2, 3] = 1.0                                                 # task 1: two steps; slot 2 dropped
    obs[1, 3], act[1, 3] = torch.tensor([-0.2, 0.0]), torch.tensor([-1.0, 0.5])
    episodes = Episodes(obs, act, torch.zeros(3, 4), mask, num_tasks=2)
    ends = ends_of(episodes, 10.0)
    np.testing.assert_array_equal(ends.lengths, [[3, 1], [0, 2]])
    np.testing.assert_array_equal(ends.valid, [[True, True], [False, True]])
    np.testing.assert_allclose(ends.positions[0], [[0.2, 0.1], [0.03, 0.04]], atol=1e-7)
    np.testing.assert_allclose(ends.positions[1, 1], [-0.3, 0.05], atol=1e-7)


def test_fd_products_agree_with_the_exact_ones_at_the_references_eps_and_collapse_at_rllabs_default(capsys):
    """fd_products.py on one small real meta-batch: at fd_base_eps 1.0 (what the reference ran) the product of the
    meta-gradient is close to the exact one and conjugate gradient points the same way; at 1e-8 (rllab's declared
    default) the product is the damping alone, nothing like the exact product."""
    script = _navigation_script("fd_products")
    small = ["--set", "maml.meta_batch_size=4", "--set", "maml.fast_batch_size=4", "--set",
             "policy.hidden_sizes=[32, 32]", "--set", "env.horizon=50"]

    def run(eps: str) -> dict[str, float]:
        assert script.main([*small, "--fd-base-eps", eps]) == 0
        lines = capsys.readouterr().out.splitlines()
        return {key: float(value == "True") if value in ("True", "False") else float(value)
                for key, value in (line.split(": ") for line in lines)}

    reference = run("1.0")
    assert reference["grad_product_difference"] < 0.25 and reference["direction_cosine"] > 0.5, reference
    collapsed = run("1e-8")
    assert collapsed["grad_product_difference"] > 0.8, collapsed
    assert collapsed["theta_norm"] == reference["theta_norm"]  # the same policy and batch both times


def test_paper_episodes_reads_saved_paths_and_refuses_code(tmp_path, capsys):
    """paper_episodes.py on hand-made rllab paths: episode count, exp(log_std) and mean end position; a pickle
    that would call a function is refused."""
    script = _navigation_script("paper_episodes")
    paths = [{"observations": np.array([[0.0, 0.0], [x, 2 * x]], dtype=np.float32),
              "agent_infos": {"log_std": np.log(np.full((2, 2), [0.5, 0.25], dtype=np.float32))}}
             for x in (0.1, 0.3)]
    (tmp_path / "maml_paths_itr0.pkl").write_bytes(pickle.dumps(paths, protocol=0))
    assert script.main([str(tmp_path), "--prefix", "maml"]) == 0
    assert capsys.readouterr().out.strip() == "maml_paths_itr0.pkl: 2 episodes, std [0.5, 0.25], mean end [0.2, 0.4]"

    class Payload:
        def __reduce__(self):
            return (print, ("ran code",))

    (tmp_path / "maml_paths_itr1.pkl").write_bytes(pickle.dumps([Payload()]))
    assert script.main([str(tmp_path), "--prefix", "maml"]) == 2
    assert "ran code" not in capsys.readouterr().out


def test_pre_update_kl_is_the_closed_form_gaussian_kl_and_the_exact_step_meets_its_bound():
    """pre_update_kl.py on one small real meta-batch: shifting the output bias by δ (σ = 1) gives Σ δ²/2 on any
    observations, a log-std shift c gives Σ (c + e^{−2c}/2 − 1/2). With a smooth (tanh) policy both products' full
    steps have the post-update KL max_kl to second order (small max_kl). With ReLU at the initial policy they do not:
    every episode starts at (0, 0), where every first-layer unit sits on its kink (zero biases), so the inner
    gradient, hence the adapted policy, jumps under any step (docs/architecture.md §5)."""
    fd_products, script = _navigation_script("fd_products"), _navigation_script("pre_update_kl")
    small = ["maml.meta_batch_size=4", "maml.fast_batch_size=4", "policy.hidden_sizes=[32, 32]", "env.horizon=50",
             "algorithm.options.fisher=finite-difference", "algorithm.options.fd_base_eps=1.0",
             "algorithm.options.max_kl=1e-6", "train.num_threads=1"]

    def learner_and_batch(*extra: str):  # type: ignore[no-untyped-def]
        trainer, batch = fd_products.one_batch(fd_products.load_config(fd_products.PRESET, [*small, *extra]), None,
                                               None)
        return trainer.metalearner, batch

    learner, batch = learner_and_batch("policy.activation=tanh")
    old = {name: p.detach().clone() for name, p in learner.policy.named_parameters()}
    assert script.pre_update_kl(learner, old, old, batch) == 0.0
    bias = next(name for name in old if name.endswith(".bias") and old[name].numel() == 2)
    shifted = {**old, bias: old[bias] + torch.tensor([0.3, -0.2])}
    assert math.isclose(script.pre_update_kl(learner, old, shifted, batch), (0.09 + 0.04) / 2, rel_tol=1e-5)
    c = 0.25
    wider = {**old, "log_std": old["log_std"] + c}
    assert math.isclose(script.pre_update_kl(learner, old, wider, batch), 2 * (c + math.exp(-2 * c) / 2 - 0.5),
                        rel_tol=1e-5)
    smooth = script.measure(learner, batch)
    assert math.isclose(smooth.exact.post, 1e-6, rel_tol=0.1), smooth
    assert math.isclose(smooth.finite_difference.post, 1e-6, rel_tol=0.2), smooth
    assert smooth.exact.pre > 0 and smooth.finite_difference.pre > 0 and smooth.inner_norm > 0, smooth
    kinked = script.measure(*learner_and_batch())
    assert kinked.exact.post > 10 * 1e-6, kinked
    sizes = [a for key in small[:4] for a in ("--set", key)]
    assert script.main(["--iterations", "2", *sizes]) == 0
    assert script.main(["--iterations", "1", "--fisher", "exact", *sizes]) == 0
