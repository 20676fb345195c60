"""statelite's device runtime: stateful step-by-step inference of recurrent models converted to TFLite.

Needs only numpy, flatbuffers and a TFLite interpreter (``ai-edge-litert`` or ``tflite-runtime``); never TensorFlow.
The workstation parts are ``statelite.train`` and ``statelite.convert`` (``pip install 'statelite[train]'``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    BadInputError,
    CheckFailed,
    ConcurrentUseError,
    IncompatibleModelError,
    InterpreterNotFoundError,
    ModelFormatError,
    NonFiniteStepError,
    StateFileError,
    StateliteError,
    UnseenKeyWarning,
)
from .metadata import ModelMetadata, Panel, read_metadata
from .pool import StreamPool
from .ranges import RangeKind, RangeReport
from .runner import StatefulRunner

__all__ = [
    "BadInputError",
    "CheckFailed",
    "ConcurrentUseError",
    "IncompatibleModelError",
    "InterpreterNotFoundError",
    "ModelFormatError",
    "ModelMetadata",
    "NonFiniteStepError",
    "Panel",
    "RangeKind",
    "RangeReport",
    "StateFileError",
    "StatefulRunner",
    "StreamPool",
    "StateliteError",
    "UnseenKeyWarning",
    "__version__",
    "read_metadata",
]
