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


class NonFiniteStepError(BadInputError):
    """A step's forecast or next state came out NaN or inf (the input overflowed inside the graph); the step was
    rolled back: the state is the one from before it.

    Attributes:
        keys: for ``StreamPool``, the streams rolled back (the others advanced); empty for a runner.
        results: for ``StreamPool.step``, ``{key: forecast}`` of the streams that advanced; for ``step_all``, None.
    """

    def __init__(self, message: str, keys=(), results=None):
        super().__init__(message)
        self.keys = tuple(keys)
        self.results = results


class ConcurrentUseError(StateliteError, RuntimeError):
    """A runner or pool was stepped from a second thread while a step was running: each is single-threaded."""


class ModelFormatError(StateliteError):
    """A file is not a TFLite model, is truncated, or lacks (or has unreadable) statelite metadata."""


class GoldenFileError(ModelFormatError):
    """A golden trace file is truncated, corrupt, or holds values of the wrong dtype, shape or range."""


class IncompatibleModelError(StateliteError):
    """The model is valid but this interpreter or runtime cannot run it (newer ops, newer format version)."""


class StateFileError(StateliteError):
    """A saved state file is truncated, belongs to another model, or has the wrong shapes."""


class InterpreterNotFoundError(StateliteError, ImportError):
    """No TFLite interpreter is installed (or the one asked for is missing)."""


class WorkerLostError(StateliteError, RuntimeError):
    """A multi-worker training run lost a worker (it failed, was killed, or cannot be reached): the run stops."""


class UnseenKeyWarning(UserWarning):
    """A panel model was given a stream whose key was not among its training series: it runs with the model's
    global scaler, and its forecasts may be less accurate than a training series'. Issued once per key."""


class CheckFailed(StateliteError):
    """A check ran and its result is outside tolerance (parity at conversion, verify on device)."""
