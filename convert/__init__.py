"""Conversion of trained recurrent models to one-step TFLite graphs with named state (needs ``statelite[train]``)."""

from __future__ import annotations

try:
    import tensorflow  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in the device-only environment
    raise ImportError(
        "statelite.convert needs TensorFlow, which the device install leaves out. "
        "Install the workstation extra: pip install 'statelite[train]'"
    ) from exc

from .api import ConvertResult, convert, golden_path_for
from .config import IO, ConvertConfig, Quant, Target

__all__ = ["IO", "ConvertConfig", "ConvertResult", "Quant", "Target", "convert", "golden_path_for"]
