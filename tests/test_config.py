import dataclasses

import pytest
import yaml

from pipeline.config import DEFAULT_CONFIG_PATH, Config, config_to_dict, load_config
from pipeline.errors import ConfigError, ExitCode


def write(tmp_path, text):
    path = tmp_path / "settings.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_file_loads_and_mirrors_the_dataclasses():
    config = load_config()
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    assert set(data) == {f.name for f in dataclasses.fields(Config)}
    for section in dataclasses.fields(Config):
        fields = {f.name for f in dataclasses.fields(getattr(config, section.name))}
        assert set(data[section.name]) == fields, section.name


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
