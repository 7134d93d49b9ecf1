"""Config loading: defaults equal the documented ones, YAML presets load, overrides and errors name keys."""

import pathlib

import pytest

from maml_rl.config import ConfigError, apply_overrides, from_dict, load_config
from maml_rl.metalearners import learner_names

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def test_code_defaults_equal_design_defaults():
    c = from_dict({})
    assert c.algorithm.name == "maml-trpo"
    assert c.algorithm.options == {"max_kl": 0.01, "cg_iters": 10, "cg_damping": 1e-5, "ls_max_steps": 15,
                                   "ls_backtrack": 0.8, "first_order": False, "estimator": "reinforce"}
    assert (c.maml.gamma, c.maml.gae_lambda, c.maml.fast_lr, c.maml.fast_batch_size, c.maml.meta_batch_size,
            c.maml.num_inner_steps) == (0.99, 1.0, 0.1, 20, 40, 1)
    assert (c.policy.hidden_sizes, c.policy.activation, c.policy.init_std, c.policy.min_std) == (
        (100, 100), "relu", 1.0, 1e-6)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("**/*.yaml")), ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_experiment_config_loads(path):
    config = load_config(path)
    assert config.algorithm.name in ("maml-trpo", "pretrained")
    assert "algorithm:\n  name: " in path.read_text() and "\ntrpo:" not in path.read_text()  # today's form


def test_navigation_paper_preset_values():
    c = load_config(EXPERIMENTS / "navigation-2d/paper.yaml")
    assert (c.maml.meta_batch_size, c.maml.fast_batch_size, c.maml.fast_lr, c.env.horizon) == (20, 20, 0.5, 100)


def test_overrides_parse_yaml_values_and_round_trip():
    data = apply_overrides({}, ["maml.fast_lr=0.25", "policy.hidden_sizes=[64, 64]",
                                "algorithm.options.first_order=true"])
    c = from_dict(data)
    assert c.maml.fast_lr == 0.25 and c.policy.hidden_sizes == (64, 64) and c.algorithm.options["first_order"]
    assert from_dict(c.to_dict()) == c


def test_unknown_section_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key optimizer; valid keys: algorithm, env, policy"):
        from_dict({"optimizer": {}})


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="maml: expected a mapping"):
        from_dict({"maml": 3})


# ------------------------------------------------------------------------------------------- algorithm


def test_every_registered_learner_resolves_its_options():
    assert set(learner_names()) == {"maml-trpo", "pretrained", "maml-fo", "promp", "reptile"}
    promp = from_dict({"algorithm": {"name": "promp"}}).algorithm
    assert promp.options == {"num_steps": 5, "clip": 0.3, "lr": 1e-3, "inner_kl_penalty": 5e-4}
    reptile = from_dict({"algorithm": {"name": "reptile", "options": {"beta": 0.5}}}).algorithm
    assert reptile.options == {"beta": 0.5}
    assert from_dict({"algorithm": "maml-fo"}).algorithm.options == {"lr": 1e-3, "num_steps": 1,
                                                                     "estimator": "reinforce"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"algorithm": {"name": "fancy"}},
         "algorithm.name: unknown 'fancy'; valid: maml-trpo, pretrained, maml-fo, promp, reptile"),
        ({"algorithm": {"name": "promp", "options": {"clipp": 0.2}}},
         "unknown config key algorithm.options.clipp; valid keys in algorithm.options: num_steps, clip, lr, "
         "inner_kl_penalty"),
        ({"algorithm": {"name": "promp", "options": {"clip": 1.5}}}, "algorithm.options.clip: must be in (0, 1)"),
        ({"algorithm": {"name": "promp", "options": {"num_steps": 2.5}}},
         "algorithm.options.num_steps: expected an integer"),
        ({"algorithm": {"name": "maml-trpo", "options": {"estimator": "magic"}}},
         "algorithm.options.estimator: unknown 'magic'; valid: reinforce, dice, e-maml"),
        ({"algorithm": {"name": "reptile", "options": {"max_kl": 0.01}}},
         "unknown config key algorithm.options.max_kl; valid keys in algorithm.options: beta"),
        ({"algorithm": {"nme": "reptile"}}, "unknown config key algorithm.nme; valid keys in algorithm: name, options"),
        ({"algorithm": {"name": "reptile"}, "maml": {"num_inner_steps": 0}}, "maml.num_inner_steps: must be > 0"),
    ],
)
def test_bad_algorithm_settings_name_the_key_in_one_line(data, message):
    with pytest.raises(ConfigError) as error:
        from_dict(data)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


LEGACY = {"algorithm": "maml-trpo", "maml": {"fast_lr": 0.5, "first_order": True},
          "trpo": {"max_kl": 0.02, "cg_iters": 5}}


def test_legacy_configs_migrate_to_algorithm_options():
    config = from_dict(LEGACY)
    assert config.algorithm.name == "maml-trpo" and config.maml.fast_lr == 0.5
    assert config.algorithm.options == {"max_kl": 0.02, "cg_iters": 5, "cg_damping": 1e-5, "ls_max_steps": 15,
                                        "ls_backtrack": 0.8, "first_order": True, "estimator": "reinforce"}
    assert from_dict(config.to_dict()) == config  # the resolved form round-trips
    # overrides in the old spelling still apply to an old run's config
    changed = from_dict(apply_overrides(LEGACY, ["trpo.max_kl=0.03", "maml.first_order=false"]))
    assert changed.algorithm.options["max_kl"] == 0.03 and changed.algorithm.options["first_order"] is False
    assert from_dict(apply_overrides(LEGACY, ["algorithm.options.max_kl=0.04"])).algorithm.options["max_kl"] == 0.04
    pretrained = from_dict({"algorithm": "pretrained", "maml": {"first_order": True}, "trpo": {"max_kl": 0.02}})
    assert pretrained.algorithm.options == {"max_kl": 0.02, "cg_iters": 10, "cg_damping": 1e-5, "ls_max_steps": 15,
                                            "ls_backtrack": 0.8}
    assert from_dict({"algorithm": "promp"}) == from_dict({"algorithm": {"name": "promp"}})  # shorthand
