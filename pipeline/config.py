"""One typed configuration, loaded from YAML.

``configs/default.yaml`` mirrors these frozen dataclasses one to one. Precedence:
dataclass defaults, then the YAML file, then command-line overrides. Relative paths
resolve against the YAML file's folder, because cron's working directory is not the repo.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path

import yaml

from pipeline.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "default.yaml"


@dataclasses.dataclass(frozen=True)
class InputConfig:
    # Rasterization resolution for PDF pages; 300 dpi is what scanners deliver for forms.
    pdf_dpi: int = 300
    # Pages above this many pixels are refused as decompression bombs (A4 at 600 dpi is ~35 Mpx).
    max_page_pixels: int = 80_000_000
    # Pages smaller than this on either side cannot hold a legible digit.
    min_page_side: int = 16
    # Files above this size are refused before decoding.
    max_file_mb: int = 512


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    # Sauvola window, as a fraction of the estimated text height (odd pixel size derived).
    sauvola_k: float = 0.2
    # Largest skew corrected, in degrees; beyond this the page is taken as it is.
    max_skew_degrees: float = 6.0


@dataclasses.dataclass(frozen=True)
class ClassifyConfig:
    # The Keras model; its card is the same path with ``.card.json`` instead of ``.keras``.
    model: Path = REPO_ROOT / "models" / "digits.keras"
    # Crops per forward pass: large batches amortize TensorFlow's per-call overhead.
    batch_size: int = 2048


@dataclasses.dataclass(frozen=True)
class FlagConfig:
    # A digit below this calibrated confidence sends its field to review.
    min_digit_confidence: float = 0.9


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    # Write a PNG of each field for the reviewer (the CSV links to it).
    field_images: bool = True


@dataclasses.dataclass(frozen=True)
class RunConfig:
    # Parallel page workers (joblib processes); 0 means one per CPU core.
    workers: int = 0
    # Documents whose pages are segmented before one batched classification.
    chunk_documents: int = 16


@dataclasses.dataclass(frozen=True)
class Config:
    input: InputConfig = InputConfig()
    segment: SegmentConfig = SegmentConfig()
    classify: ClassifyConfig = ClassifyConfig()
    flags: FlagConfig = FlagConfig()
    output: OutputConfig = OutputConfig()
    run: RunConfig = RunConfig()


def _coerce(value, kind, where: str, base: Path):
    """Check one YAML value against its dataclass field type."""
    if kind is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else (base / path).resolve()
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {kind!r}")


def _build(cls, data: dict, where: str, base: Path):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(names))}")
    values = {}
    for name, value in data.items():
        kind = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value, key, base)
        else:
            values[name] = _coerce(value, kind, key, base)
    return cls(**values)


def validate(config: Config) -> Config:
    """Cross-field and range rules, checked in one place."""
    problems = []
    if not 72 <= config.input.pdf_dpi <= 1200:
        problems.append("input.pdf_dpi must be between 72 and 1200")
    if config.input.max_page_pixels < 1_000_000:
        problems.append("input.max_page_pixels must be at least 1000000")
    if config.input.min_page_side < 1:
        problems.append("input.min_page_side must be at least 1")
    if config.input.max_file_mb < 1:
        problems.append("input.max_file_mb must be at least 1")
    if not 0.0 < config.flags.min_digit_confidence < 1.0:
        problems.append("flags.min_digit_confidence must be between 0 and 1")
    if config.classify.batch_size < 1:
        problems.append("classify.batch_size must be at least 1")
    if config.run.workers < 0:
        problems.append("run.workers must be 0 (one per core) or more")
    if config.run.chunk_documents < 1:
        problems.append("run.chunk_documents must be at least 1")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return config


def load_config(path: Path | None = None, overrides: dict | None = None) -> Config:
    """Read ``path`` (default ``configs/default.yaml``) and apply ``overrides``.

    ``overrides`` maps dotted keys (``"classify.model"``) to values, as the CLI flags give
    them; relative paths there resolve against the working directory.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    try:
        config = _build(Config, data, "", path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for dotted, value in (overrides or {}).items():
        section, _, name = dotted.partition(".")
        current = getattr(config, section)
        kind = typing.get_type_hints(type(current))[name]
        coerced = _coerce(str(value) if kind is Path else value, kind, f"option {dotted}", Path.cwd())
        config = dataclasses.replace(config, **{section: dataclasses.replace(current, **{name: coerced})})
    return validate(config)


def config_to_dict(config) -> dict:
    """The resolved configuration as plain JSON-able values (for the report header)."""
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            out[field.name] = config_to_dict(value)
        elif isinstance(value, Path):
            out[field.name] = str(value)
        else:
            out[field.name] = value
    return out
