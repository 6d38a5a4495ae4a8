"""One exception hierarchy. The CLI turns an `EffkitError` into one line on stderr and its `exit_code`."""

from __future__ import annotations


class EffkitError(Exception):
    """Something the user can fix: a bad path, file, option or dataset. Exit code 2."""

    exit_code = 2


class InputError(EffkitError):
    """A path that is missing, unreadable, or of the wrong kind."""


class ModelError(EffkitError):
    """A file that is not a usable Keras classifier (corrupt, unsupported layer, not a classifier)."""


class DataError(EffkitError):
    """A dataset that is missing, malformed, or does not fit the model."""


class ConfigError(EffkitError):
    """An option value outside what effkit knows or accepts."""


class StageError(EffkitError):
    """One variant's stage (convert, quantize, run) failed. Recorded in the report; other variants go on."""

    exit_code = 3


def first_line(error: BaseException) -> str:
    """The first line of an exception's message: libraries below effkit often raise pages of text."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def one_line_reason(error: BaseException) -> str:
    """One line for any failure: our own errors as they read, others prefixed with their type."""
    if isinstance(error, EffkitError):
        return first_line(error)
    return f"{type(error).__name__}: {first_line(error)}"
