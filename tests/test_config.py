"""Config loading: defaults equal the documented ones, YAML presets load, overrides and errors name keys."""

import pathlib
import re

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


# ----------------------------------------------------------------------------------------- refused values

FLOAT_KEYS = ["env.action_scale", "policy.init_std", "policy.min_std", "maml.fast_lr", "maml.gamma",
              "maml.gae_lambda", "trpo.max_kl", "trpo.cg_damping", "trpo.ls_backtrack"]


def _nested(key: str, value):
    section, name = key.split(".")
    return {section: {name: value}}


def test_float_key_table_covers_every_float_field():
    import dataclasses
    import typing
    found = []
    for section in dataclasses.fields(Config):
        hints = typing.get_type_hints(section.type) if isinstance(section.type, type) else {}
        if not hints:
            hints = typing.get_type_hints(type(getattr(Config(), section.name)))
        found += [f"{section.name}.{name}" for name, hint in hints.items() if hint is float]
    assert sorted(found) == sorted(FLOAT_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", ".NaN", "+.inf", "1e999"])
def test_non_finite_floats_are_refused_from_overrides(key, text):
    with pytest.raises(ConfigError) as error:
        load_config(None, [f"{key}={text}"])
    assert str(error.value).startswith(f"{key}: must be a finite number, got ") and "\n" not in str(error.value)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_non_finite_floats_are_refused_from_dicts(key, value):
    with pytest.raises(ConfigError, match=f"^{key}: must be a finite number"):
        from_dict(_nested(key, value))


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["abc", "0.1", True, [0.1], None])
def test_non_numbers_are_refused_for_float_keys(key, value):
    with pytest.raises(ConfigError, match=f"^{key}: expected a number, got "):
        from_dict(_nested(key, value))


@pytest.mark.parametrize(("key", "value", "message"), [
    ("maml.fast_lr", 0.0, "must be > 0"), ("maml.fast_lr", -1e-3, "must be > 0"),
    ("policy.init_std", 0.0, "must be > 0"), ("policy.min_std", -1.0, "must be > 0"),
    ("env.action_scale", -2.0, "must be > 0"), ("trpo.max_kl", 0.0, "must be > 0"),
    ("trpo.cg_damping", -1e-5, "must be >= 0"), ("maml.gamma", 1.5, "must be in [0, 1]"),
    ("maml.gae_lambda", -0.1, "must be in [0, 1]"), ("trpo.ls_backtrack", 1.0, "must be in (0, 1)"),
    ("trpo.ls_backtrack", 0.0, "must be in (0, 1)"),
])
def test_out_of_range_floats_are_refused(key, value, message):
    with pytest.raises(ConfigError, match="^" + re.escape(f"{key}: {message}, got {value}") + "$"):
        from_dict(_nested(key, value))


@pytest.mark.parametrize(("text", "value"), [
    ("1e-3", 1e-3), ("1E-3", 1e-3), ("1.0e+9", 1e9), ("2e5", 2e5), ("1E+5", 1e5), (".5", 0.5), ("+.5", 0.5),
    ("5.", 5.0), ("1_000.0", 1000.0), ("3", 3.0), ("0.25", 0.25),
])
def test_every_float_form_is_accepted_in_overrides_and_files(tmp_path, text, value):
    assert load_config(None, [f"trpo.max_kl={text}"]).trpo.max_kl == value
    path = tmp_path / "c.yaml"
    path.write_text(f"trpo:\n  max_kl: {text}\nmaml: {{fast_lr: {text}}}\n")
    config = load_config(path)
    assert config.trpo.max_kl == value and config.maml.fast_lr == value


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


def test_unknown_key_message_is_one_line_and_lists_valid_keys():
    with pytest.raises(ConfigError) as error:
        from_dict({"maml": {"fast_lrr": 0.1}})
    assert str(error.value) == ("unknown config key maml.fast_lrr; valid keys in maml: meta_batch_size, "
                                "fast_batch_size, num_inner_steps, fast_lr, first_order, gamma, gae_lambda")
