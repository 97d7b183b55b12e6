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
    # Background filter width, pixels: wider than any pen stroke (a marker at 600 dpi is
    # ~15 px), narrower than lighting gradients; strokes vanish from the background estimate.
    background_window: int = 41
    # Least darkness, as a share of the local paper brightness, that can be ink: faint
    # security print and JPEG ringing stay below it, blue and red ballpoint stay above.
    min_ink_darkness: float = 0.25
    # Largest skew searched and corrected, in degrees (scanner feeders stay within ±5°).
    max_skew_degrees: float = 6.0
    # Shortest straight run, pixels, taken as a ruled line: longer than a digit's bar at
    # 300 dpi (~45 px), shorter than a comb box row or an underline.
    line_min_length: int = 70
    # Thickest ruled line, pixels; thicker runs are strokes or blocks and are kept.
    max_line_thickness: int = 6
    # Shortest digit, pixels: a 3 mm digit at 150 dpi. Shorter ink is a fragment, or the
    # small print of labels (2-3 mm capitals), which would otherwise read as digits.
    min_digit_height: int = 18
    # Tallest digit, pixels: a 2 cm digit at 300 dpi; taller ink is a drawing or a logo.
    max_digit_height: int = 250
    # Largest gap between two digits of one field, in digit heights: handwriting spaces
    # digits by under half a height, fields sit apart by several.
    field_gap: float = 1.5
    # Pieces shorter than this share of the field's digit height are punctuation,
    # specks or fragments of a broken digit, never a digit on their own.
    fragment_height: float = 0.45
    # A blob wider than this many digit heights may be touching digits: cuts are proposed
    # (MNIST digits are 0.4-0.9 heights wide, touching pairs such as "36" or "81" from about
    # 0.85; a single digit stays uncut when the model reads it whole as sure: group.read_fields).
    touch_aspect: float = 0.8
    # Images no taller than this many pixels are one cut-out field (a cheque amount box).
    single_field_max_height: int = 160
    # Printed text: three or more pieces whose bottoms and heights agree within this many
    # pixels: a typeset baseline and a font's fixed heights repeat exactly; handwriting does not.
    printed_tolerance: float = 0.5


@dataclasses.dataclass(frozen=True)
class ClassifyConfig:
    # The trained Keras model; its card (``.card.json``) and the ONNX export the batch job
    # runs (``.onnx``) have the same path with another suffix.
    model: Path = REPO_ROOT / "models" / "digits.keras"
    # Crops per forward pass: large batches amortize the runtime's per-call overhead.
    batch_size: int = 2048


@dataclasses.dataclass(frozen=True)
class FlagConfig:
    # A digit below this calibrated confidence sends its field to review. Chosen from the
    # sweep `make eval` prints: on samples/ it flags 93% of the wrong fields (0.9: 80%).
    min_digit_confidence: float = 0.95


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
    seg = config.segment
    if not 3 <= seg.background_window <= 1001:
        problems.append("segment.background_window must be between 3 and 1001 pixels")
    if not 0.0 < seg.min_ink_darkness < 1.0:
        problems.append("segment.min_ink_darkness must be between 0 and 1")
    if not 0.0 <= seg.max_skew_degrees <= 45.0:
        problems.append("segment.max_skew_degrees must be between 0 and 45")
    if seg.line_min_length < 10:
        problems.append("segment.line_min_length must be at least 10 pixels")
    if not 1 <= seg.max_line_thickness < seg.line_min_length:
        problems.append("segment.max_line_thickness must be at least 1 and below line_min_length")
    if not 4 <= seg.min_digit_height < seg.max_digit_height:
        problems.append("segment.min_digit_height must be at least 4 and below max_digit_height")
    if not 0.0 < seg.field_gap <= 10.0:
        problems.append("segment.field_gap must be between 0 and 10 digit heights")
    if not 0.0 < seg.fragment_height < 1.0:
        problems.append("segment.fragment_height must be between 0 and 1")
    if not 0.5 <= seg.touch_aspect <= 5.0:
        problems.append("segment.touch_aspect must be between 0.5 and 5")
    if seg.single_field_max_height < 0:
        problems.append("segment.single_field_max_height must be 0 (never) or more")
    if not 0.0 <= seg.printed_tolerance <= 10.0:
        problems.append("segment.printed_tolerance must be between 0 (off) and 10 pixels")
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
