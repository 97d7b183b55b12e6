import dataclasses
import typing

import pytest
import yaml

from pipeline.config import DEFAULT_CONFIG_PATH, Config, config_to_dict, load_config
from pipeline.errors import ConfigError, ExitCode


def write(tmp_path, text):
    path = tmp_path / "settings.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _dataclass_keys(cls, prefix="") -> set[str]:
    keys = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            keys |= _dataclass_keys(kind, f"{prefix}{field.name}.")
        else:
            keys.add(f"{prefix}{field.name}")
    return keys


def _yaml_keys(data: dict, prefix="") -> set[str]:
    keys = set()
    for name, value in data.items():
        if isinstance(value, dict):
            keys |= _yaml_keys(value, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_default_yaml_matches_the_dataclasses_exactly():
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    yaml_keys, class_keys = _yaml_keys(data), _dataclass_keys(Config)
    assert yaml_keys - class_keys == set(), "keys in default.yaml with no dataclass field"
    assert class_keys - yaml_keys == set(), "dataclass fields missing from default.yaml"
    assert set(data) == {f.name for f in dataclasses.fields(Config)}


def test_default_yaml_values_equal_the_dataclass_defaults():
    loaded = config_to_dict(load_config())
    defaults = config_to_dict(Config())
    for section in loaded:
        assert loaded[section] == defaults[section], section


def test_relative_model_path_resolves_against_the_yaml_folder(tmp_path):
    config = load_config(write(tmp_path, "classify:\n  model: sub/m.keras\n"))
    assert config.classify.model == (tmp_path / "sub" / "m.keras").resolve()


def test_overrides_win_over_the_file(tmp_path):
    config = load_config(write(tmp_path, "run:\n  workers: 1\n"), {"run.workers": 3})
    assert config.run.workers == 3


@pytest.mark.parametrize("text, message", [
    ("flags:\n  min_digit_confidense: 0.5\n", r"unknown key\(s\) min_digit_confidense"),
    ("run:\n  workers: two\n", r"run\.workers: expected an integer"),
    ("flags:\n  min_digit_confidence: 1.5\n", "min_digit_confidence must be between 0 and 1"),
    ("input: [1, 2]\n", "input: expected a mapping"),
    ("run: {workers: 1\n", "not valid YAML"),
    ("output:\n  field_images: 1\n", "expected true or false"),
])
def test_bad_config_is_a_clear_error_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert info.value.exit_code == ExitCode.could_not_run
    if "mapping" in message or "unknown" in message or "expected" in message:
        assert str(path) in str(info.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_empty_file_means_defaults_and_dict_is_json_ready(tmp_path):
    config = load_config(write(tmp_path, ""))
    as_dict = config_to_dict(config)
    assert as_dict["run"]["workers"] == Config().run.workers
    assert isinstance(as_dict["classify"]["model"], str)
