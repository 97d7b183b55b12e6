"""Exit codes, run-level exceptions and per-document failure reasons.

Failures of a whole run are exceptions that carry an ``exit_code``; the CLI catches
them once, by type. A document that cannot be read is not an exception to the batch:
it becomes a result with one of the fixed ``FailureReason`` values.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes: a stable contract, never renumbered."""

    ok = 0
    could_not_run = 1
    some_documents_failed = 2
    already_running = 75
    interrupted = 130


class FailureReason(str, enum.Enum):
    """Why one document could not be read (the ``error`` of its report row)."""

    empty_file = "empty_file"
    unreadable = "unreadable"
    corrupt = "corrupt"
    unsupported_type = "unsupported_type"
    too_large = "too_large"
    too_small = "too_small"
    encrypted = "encrypted"
    internal = "internal"


class DigitReaderError(Exception):
    """Base of the errors that stop a whole run."""

    exit_code = ExitCode.could_not_run


class ConfigError(DigitReaderError):
    """The configuration file or an option is invalid."""


class ModelError(DigitReaderError):
    """The model file is missing, damaged or does not match its card."""


class DataError(DigitReaderError):
    """A training or evaluation data file is missing or malformed."""


class OutputError(DigitReaderError):
    """The output folder cannot be created or written."""


class AlreadyRunning(DigitReaderError):
    """Another run holds the lock on the output folder."""

    exit_code = ExitCode.already_running


class DocumentError(Exception):
    """One document cannot be read; the batch records it and goes on."""

    def __init__(self, reason: FailureReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
