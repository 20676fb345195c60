"""The small family of exceptions statelite raises.

Every message says what was expected and what was received, and where it helps, what to do. The CLI turns a
``StateliteError`` into one line on stderr and exit code 2; ``CheckFailed`` (a parity or verify check that ran and
failed) into exit code 1.
"""

from __future__ import annotations


class StateliteError(Exception):
    """Base class of every error statelite raises on purpose."""


class BadInputError(StateliteError, ValueError):
    """The caller passed data of the wrong shape, dtype, content or kind."""


class ModelFormatError(StateliteError):
    """A file is not a TFLite model, is truncated, or lacks (or has unreadable) statelite metadata."""


class IncompatibleModelError(StateliteError):
    """The model is valid but this interpreter or runtime cannot run it (newer ops, newer format version)."""


class StateFileError(StateliteError):
    """A saved state file is truncated, belongs to another model, or has the wrong shapes."""


class InterpreterNotFoundError(StateliteError, ImportError):
    """No TFLite interpreter is installed (or the one asked for is missing)."""


class CheckFailed(StateliteError):
    """A check ran and its result is outside tolerance (parity at conversion, verify on device)."""
