"""Config loading: defaults equal the documented ones, YAML presets load, overrides and errors name keys."""

import pathlib

import pytest

from maml_rl.config import Config, ConfigError, apply_overrides, from_dict, load_config

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def test_code_defaults_equal_design_defaults():
    c = Config()
    assert (c.trpo.max_kl, c.trpo.cg_iters, c.trpo.cg_damping, c.trpo.ls_max_steps, c.trpo.ls_backtrack) == (
        0.01, 10, 1e-5, 15, 0.8)
    assert (c.maml.gamma, c.maml.gae_lambda, c.maml.fast_lr, c.maml.fast_batch_size, c.maml.meta_batch_size,
            c.maml.num_inner_steps, c.maml.first_order) == (0.99, 1.0, 0.1, 20, 40, 1, False)
    assert (c.policy.hidden_sizes, c.policy.activation, c.policy.init_std, c.policy.min_std) == (
        (100, 100), "relu", 1.0, 1e-6)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("**/*.yaml")), ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_experiment_config_loads(path):
    config = load_config(path)
    assert config.to_dict()["algorithm"] in ("maml-trpo", "pretrained")


def test_navigation_paper_preset_values():
    c = load_config(EXPERIMENTS / "navigation-2d/paper.yaml")
    assert (c.maml.meta_batch_size, c.maml.fast_batch_size, c.maml.fast_lr, c.env.horizon) == (20, 20, 0.5, 100)


def test_overrides_parse_yaml_values_and_round_trip():
    data = apply_overrides({}, ["maml.fast_lr=0.25", "policy.hidden_sizes=[64, 64]", "maml.first_order=true"])
    c = from_dict(data)
    assert c.maml.fast_lr == 0.25 and c.policy.hidden_sizes == (64, 64) and c.maml.first_order is True
    assert from_dict(c.to_dict()) == c


def test_unknown_section_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key optimizer; valid keys: algorithm, env, policy"):
        from_dict({"optimizer": {}})


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="maml: expected a mapping"):
        from_dict({"maml": 3})
