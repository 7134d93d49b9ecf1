"""Config loading: defaults equal the documented ones, YAML presets load, overrides and errors name keys."""

import pathlib
import re
import subprocess
import sys

import pytest

from maml_rl.build import build_family
from maml_rl.config import Config, ConfigError, apply_overrides, from_dict, load_config
from maml_rl.learner_settings import REFERENCE_FD_BASE_EPS
from maml_rl.metalearners import learner_names

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def test_code_defaults_equal_design_defaults():
    c = from_dict({})
    assert c.algorithm.name == "maml-trpo"
    assert c.algorithm.options == {"max_kl": 0.01, "cg_iters": 10, "cg_damping": 1e-5, "ls_max_steps": 15,
                                   "ls_backtrack": 0.8, "fisher": "exact", "fd_base_eps": 1e-8,
                                   "first_order": False, "estimator": "reinforce"}
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


REFERENCE_TIME_STEPS = [  # seconds per env step of the rllab models behind the MAML paper (docs/reproduction.md)
    *[(f"halfcheetah-vel/{name}", 0.01) for name in ("paper", "pretrained-reference", "oracle-reference")],
    ("halfcheetah-dir/paper", 0.01), ("halfcheetah-dir/reference", 0.01),
    ("ant-vel/paper", 0.02), ("ant-dir/paper", 0.02), ("ant-goal/paper", 0.02),
]


@pytest.mark.parametrize(("preset", "seconds"), REFERENCE_TIME_STEPS)
def test_reference_presets_step_the_reference_time(preset, seconds):
    """The MAML reference's HalfCheetah steps 0.01 s and its Ant 0.02 s per env step, not gymnasium v5's 0.05 s."""
    family = build_family(load_config(EXPERIMENTS / f"{preset}.yaml"))
    assert family.dt == pytest.approx(seconds)


PAPER_ANT_PRESETS = [f"{family}/{name}" for family in ("ant-vel", "ant-dir")
                     for name in ("paper", "pretrained-reference", "oracle-reference")]


@pytest.mark.parametrize("preset", PAPER_ANT_PRESETS)
def test_the_papers_ant_presets_build_the_references_ant_environment(preset):
    """Ant velocity and direction train on the reference's rllab Ant (docs/reproduction.md, "The reference's Ant"):
    its model, the centre-of-mass reward and observation, and the clipped contact forces observed and costed."""
    family = build_family(load_config(EXPERIMENTS / f"{preset}.yaml"))
    assert (family.reference_model, family.centre_of_mass, family.use_contact_forces) == (True, True, True)
    assert family.model.opt.timestep == pytest.approx(0.02) and family.frame_skip == 1


@pytest.mark.parametrize("preset", sorted(str(p.relative_to(EXPERIMENTS)) for p in EXPERIMENTS.glob("*/*.yaml")))
def test_presets_with_the_references_step_use_the_base_eps_it_ran_with(preset):
    """The reference's ConjugateGradientOptimizer builds ``FiniteDifferenceHvp(num_slices)``: base_eps = 1, not
    rllab's declared 1e-8 (which collapses the product to the damping, a different step)."""
    options = load_config(EXPERIMENTS / preset).algorithm.options
    if options.get("fisher") == "finite-difference":
        assert options["fd_base_eps"] == REFERENCE_FD_BASE_EPS


def test_fd_base_eps_defaults_to_rllabs_declared_value_so_older_runs_keep_their_step():
    options = from_dict({"algorithm": {"name": "maml-trpo", "options": {"fisher": "finite-difference"}}})
    assert options.algorithm.options["fd_base_eps"] == 1e-8


def test_fd_base_eps_without_finite_difference_products_is_refused_not_ignored():
    with pytest.raises(ConfigError, match=r"algorithm\.options\.fd_base_eps applies to fisher: finite-difference only"):
        from_dict({"algorithm": {"name": "maml-trpo", "options": {"fd_base_eps": 1.0}}})


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


# ----------------------------------------------------------------------------------------- refused values

SECTION_FLOAT_KEYS = ["env.action_scale", "policy.init_std", "policy.min_std", "maml.fast_lr", "maml.gamma",
                      "maml.gae_lambda", "evaluation.later_step_scale"]


def _learner_float_options():
    import dataclasses
    import typing

    from maml_rl.metalearners import learner_class
    entries = []
    for name in learner_names():
        settings = learner_class(name).Settings
        hints = typing.get_type_hints(settings)
        entries += [f"{name}:{field.name}" for field in dataclasses.fields(settings) if hints[field.name] is float]
    return entries


FLOAT_KEYS = SECTION_FLOAT_KEYS + _learner_float_options()


def _key(entry: str) -> str:
    """The dotted key a message names: ``maml.fast_lr``, or ``algorithm.options.max_kl`` for ``maml-trpo:max_kl``."""
    return f"algorithm.options.{entry.split(':')[1]}" if ":" in entry else entry


def _nested(entry: str, value):
    if ":" in entry:
        learner, option = entry.split(":")
        return {"algorithm": {"name": learner, "options": {option: value}}}
    section, name = entry.split(".")
    return {section: {name: value}}


def _override(entry: str, text: str) -> list[str]:
    if ":" in entry:
        learner, option = entry.split(":")
        return [f"algorithm.name={learner}", f"algorithm.options.{option}={text}"]
    return [f"{entry}={text}"]


def test_float_key_table_covers_every_float_field():
    import dataclasses
    import typing
    found = []
    for section in dataclasses.fields(Config):
        if section.name == "algorithm":
            continue  # its options are the learners' settings, listed by _learner_float_options
        hints = typing.get_type_hints(type(getattr(Config(), section.name)))
        found += [f"{section.name}.{name}" for name, hint in hints.items() if hint is float]
    assert sorted(found) == sorted(SECTION_FLOAT_KEYS)
    assert {"maml-trpo:max_kl", "maml-trpo:cg_damping", "promp:clip", "reptile:beta"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("entry", FLOAT_KEYS)
@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", ".NaN", "+.inf", "1e999"])
def test_non_finite_floats_are_refused_from_overrides(entry, text):
    with pytest.raises(ConfigError) as error:
        load_config(None, _override(entry, text))
    message = str(error.value)
    assert message.startswith(f"{_key(entry)}: must be a finite number, got ") and "\n" not in message, message


@pytest.mark.parametrize("entry", FLOAT_KEYS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_non_finite_floats_are_refused_from_dicts(entry, value):
    with pytest.raises(ConfigError, match=f"^{re.escape(_key(entry))}: must be a finite number"):
        from_dict(_nested(entry, value))


@pytest.mark.parametrize("entry", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["abc", "0.1", True, [0.1], None])
def test_non_numbers_are_refused_for_float_keys(entry, value):
    with pytest.raises(ConfigError, match=f"^{re.escape(_key(entry))}: expected a number, got "):
        from_dict(_nested(entry, value))


@pytest.mark.parametrize(("entry", "value", "message"), [
    ("maml.fast_lr", 0.0, "must be > 0"), ("maml.fast_lr", -1e-3, "must be > 0"),
    ("policy.init_std", 0.0, "must be > 0"), ("policy.min_std", -1.0, "must be > 0"),
    ("env.action_scale", -2.0, "must be > 0"), ("maml-trpo:max_kl", 0.0, "must be in (0, inf]"),
    ("maml-trpo:cg_damping", -1e-5, "must be in [0, inf]"), ("maml.gamma", 1.5, "must be in [0, 1]"),
    ("maml.gae_lambda", -0.1, "must be in [0, 1]"), ("maml-trpo:ls_backtrack", 1.0, "must be in (0, 1)"),
    ("pretrained:ls_backtrack", 0.0, "must be in (0, 1)"),
])
def test_out_of_range_floats_are_refused(entry, value, message):
    with pytest.raises(ConfigError, match="^" + re.escape(f"{_key(entry)}: {message}, got {value}") + "$"):
        from_dict(_nested(entry, value))


@pytest.mark.parametrize(("text", "value"), [
    ("1e-3", 1e-3), ("1E-3", 1e-3), ("1.0e+9", 1e9), ("2e5", 2e5), ("1E+5", 1e5), (".5", 0.5), ("+.5", 0.5),
    ("5.", 5.0), ("1_000.0", 1000.0), ("3", 3.0), ("0.25", 0.25),
])
def test_every_float_form_is_accepted_in_overrides_and_files(tmp_path, text, value):
    assert load_config(None, [f"algorithm.options.max_kl={text}"]).algorithm.options["max_kl"] == value
    path = tmp_path / "c.yaml"
    path.write_text(f"algorithm:\n  name: maml-trpo\n  options: {{max_kl: {text}}}\nmaml: {{fast_lr: {text}}}\n")
    config = load_config(path)
    assert config.algorithm.options["max_kl"] == value and config.maml.fast_lr == value


def test_negative_exponent_floats_in_lists_and_the_yaml_loader():
    from maml_rl.config import yaml_load
    assert yaml_load("[1e-3, -2E5, 7, .5, abc, '1e3']") == [1e-3, -2e5, 7, 0.5, "abc", "1e3"]
    assert yaml_load("1000") == 1000 and isinstance(yaml_load("1000"), int)


@pytest.mark.parametrize(("text", "value"), [("1e3", 1000), ("1.0e+2", 100), ("5.0", 5), ("20", 20)])
def test_integral_floats_are_integers(text, value):
    config = load_config(None, [f"train.num_iterations={text}", f"maml.meta_batch_size={text}"])
    assert config.train.num_iterations == value and isinstance(config.train.num_iterations, int)
    assert config.maml.meta_batch_size == value


@pytest.mark.parametrize("value", [1.5, 1e-3, float("inf"), float("nan"), True, "10", None])
def test_non_integers_are_refused_for_int_keys(value):
    with pytest.raises(ConfigError, match=r"^train\.num_iterations: expected an integer, got "):
        from_dict({"train": {"num_iterations": value}})


def test_empty_hidden_sizes_are_refused():
    with pytest.raises(ConfigError, match=r"^policy.hidden_sizes: at least one hidden layer is needed"):
        load_config(None, ["policy.hidden_sizes=[]"])


# ----------------------------------------------------------------------------------------- files


@pytest.mark.parametrize(("text", "key", "line"), [
    ("maml:\n  fast_lr: 0.1\n  fast_lr: 0.2\n", "maml.fast_lr", 3),
    ("maml: {fast_lr: 0.1}\ntrpo: {}\nmaml: {gamma: 0.9}\n", "maml", 3),
    ("env:\n  options:\n    num_arms: 5\n    num_arms: 6\n", "env.options.num_arms", 4),
    ("algorithm: maml-trpo\nalgorithm: pretrained\n", "algorithm", 2),
])
def test_duplicate_keys_are_refused_at_any_depth(tmp_path, text, key, line):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"config file {path}: duplicate key {key!r} (line {line})"


def test_duplicate_keys_in_an_override_value_are_refused():
    with pytest.raises(ConfigError, match=r"duplicate key 'maml.fast_lr' \(line 1\)"):
        load_config(None, ["maml={fast_lr: 0.1, fast_lr: 0.2}"])


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "null\n", "~\n", "---\n"])
def test_an_empty_file_is_refused(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"is empty \(no settings\)"):
        load_config(path)


@pytest.mark.parametrize("raw", [b"maml: {fast_lr: 0.1}\n# caf\xe9\n", b"\xff\xfe\x00m\x00a", b"\x80"])
def test_a_non_utf8_file_is_refused_in_one_line(tmp_path, raw):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte \d+: ") as error:
        load_config(path)
    assert "\n" not in str(error.value)


def test_a_directory_or_unreadable_file_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config("")  # `maml-rl train ""`: the current directory
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    locked = tmp_path / "locked.yaml"
    locked.write_text("maml: {fast_lr: 0.1}\n")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "read_bytes", refuse)  # chmod 0 does not stop root
    with pytest.raises(ConfigError, match=f"^cannot read config file {re.escape(str(locked))}: Permission denied$"):
        load_config(locked)


@pytest.mark.parametrize("text", ["maml: {fast_lr: [0.1\n", "a: b: c\n", "maml:\n\tfast_lr: 1\n", "[1, 2\n"])
def test_malformed_yaml_is_one_line(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="is not valid YAML: ") as error:
        load_config(path)
    assert "\n" not in str(error.value)


def test_unknown_baseline_scope_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=r"^maml\.baseline_scope: unknown 'episode'; valid: task, batch$"):
        from_dict({"maml": {"baseline_scope": "episode"}})
    assert from_dict({"maml": {"baseline_scope": "batch"}}).maml.baseline_scope == "batch"


@pytest.mark.parametrize("value", ["0", "-10", "nan", "inf"])
def test_baseline_obs_clip_must_be_positive_and_finite(value):
    with pytest.raises(ConfigError, match=r"^maml\.baseline_obs_clip: "):
        load_config("experiments/halfcheetah-dir/reference.yaml", [f"maml.baseline_obs_clip={value}"])
    config = load_config("experiments/halfcheetah-dir/reference.yaml", ["maml.baseline_obs_clip=10"])
    assert config.maml.baseline_obs_clip == 10.0
    assert load_config("experiments/halfcheetah-dir/reference.yaml").maml.baseline_obs_clip is None


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "true"])
def test_task_pool_must_be_a_positive_integer(value):
    with pytest.raises(ConfigError, match=r"^maml\.task_pool: "):
        load_config(None, [f"maml.task_pool={value}"])
    assert load_config(None, ["maml.task_pool=8"]).maml.task_pool == 8
    assert load_config(None).maml.task_pool is None


def test_unknown_key_message_is_one_line_and_lists_valid_keys():
    with pytest.raises(ConfigError) as error:
        from_dict({"maml": {"fast_lrr": 0.1}})
    assert str(error.value) == ("unknown config key maml.fast_lrr; valid keys in maml: meta_batch_size, "
                                "fast_batch_size, step_budget, task_pool, num_inner_steps, fast_lr, gamma, gae_lambda, "
                                "baseline_scope, baseline_obs_clip")

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
                                        "ls_backtrack": 0.8, "fisher": "exact", "fd_base_eps": 1e-8,
                                        "first_order": True, "estimator": "reinforce"}
    assert from_dict(config.to_dict()) == config  # the resolved form round-trips
    # overrides in the old spelling still apply to an old run's config
    changed = from_dict(apply_overrides(LEGACY, ["trpo.max_kl=0.03", "maml.first_order=false"]))
    assert changed.algorithm.options["max_kl"] == 0.03 and changed.algorithm.options["first_order"] is False
    assert from_dict(apply_overrides(LEGACY, ["algorithm.options.max_kl=0.04"])).algorithm.options["max_kl"] == 0.04
    pretrained = from_dict({"algorithm": "pretrained", "maml": {"first_order": True}, "trpo": {"max_kl": 0.02}})
    assert pretrained.algorithm.options == {"max_kl": 0.02, "cg_iters": 10, "cg_damping": 1e-5, "ls_max_steps": 15,
                                            "ls_backtrack": 0.8, "fisher": "exact", "fd_base_eps": 1e-8}
    assert from_dict({"algorithm": "promp"}) == from_dict({"algorithm": {"name": "promp"}})  # shorthand


def test_a_bad_option_fails_without_importing_torch():
    """Every config error, ``algorithm.options`` included, is found before torch is imported (a fraction of a
    second, not the seconds torch takes to load); a good config also validates without it."""
    script = (
        "import sys\n"
        "from maml_rl.config import ConfigError, from_dict\n"
        "for name in ('maml-trpo', 'pretrained', 'maml-fo', 'promp', 'reptile'):\n"
        "    from_dict({'algorithm': {'name': name}})\n"
        "try:\n"
        "    from_dict({'algorithm': {'name': 'promp', 'options': {'clip': 2.0}}})\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == ["algorithm.options.clip: must be in (0, 1), got 2.0", "False"]
