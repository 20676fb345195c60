"""The host-side transform between raw units and the model's units: scaling and differencing.

The model sees ``(value - offset) / scale`` of the features (of their first differences when ``difference`` is on)
and predicts, for each of ``horizon`` steps ahead and each target, the scaled value (or scaled difference). With
differencing the previous raw row is part of the stream's state, and forecasts are rebuilt as the current raw target
plus the cumulative sum of the predicted differences. The first row of a stream has no previous row: its difference
is zero. The training pipeline, the converter's parity proof and the device runner all go through this module.
"""

from __future__ import annotations

import numpy as np

from .errors import BadInputError
from .metadata import ModelMetadata, Scaler


class Transform:
    """Raw units to model units and back."""

    def __init__(self, scaler: Scaler, difference: bool, features, targets, horizon: int):
        s = scaler
        self.difference = difference
        self.horizon = horizon
        self.n_targets = len(targets)
        # Raw values stay float64 until they are in model units: CO2 at 370 ppm has a float32 step of 3e-5,
        # as large as the whole float32 parity error of the graph.
        self.f_offset = np.asarray(s.feature_offset, dtype=np.float64)
        self.f_inv_scale = 1.0 / np.asarray(s.feature_scale, dtype=np.float64)
        self.t_offset = np.asarray(s.target_offset, dtype=np.float64)
        self.t_scale = np.asarray(s.target_scale, dtype=np.float64)
        # Forecasts broadcast over (..., horizon, targets).
        self._y_shape = (self.horizon, self.n_targets)
        if self.difference:
            missing = [t for t in targets if t not in features]
            if missing:
                raise BadInputError(
                    f"differencing needs every target among the features; targets {missing} are not in "
                    f"features {list(features)}."
                )
            self.target_index = np.array([list(features).index(t) for t in targets])

    @classmethod
    def from_metadata(cls, md: ModelMetadata) -> Transform:
        return cls(md.scaler, md.difference, md.features, md.targets, md.horizon)

    def inputs(self, x: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        """Model input for raw rows ``x`` (..., features) given the previous raw rows (None at a stream's start)."""
        if self.difference:
            x = x - (x if prev is None else prev)
        return ((x - self.f_offset) * self.f_inv_scale).astype(np.float32)

    def outputs(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Raw float64 forecasts (..., horizon, targets) from model outputs (..., horizon*targets) and raw rows."""
        y = y.astype(np.float64).reshape(y.shape[:-1] + self._y_shape) * self.t_scale + self.t_offset
        if self.difference:
            y = np.cumsum(y, axis=-2) + x[..., None, self.target_index]
        return y

    def sequence_inputs(self, xs: np.ndarray) -> np.ndarray:
        """Model inputs for a whole stream of raw rows (steps, features) that starts from a fresh state."""
        if self.difference:
            prev = np.concatenate([xs[:1], xs[:-1]], axis=0)
            return self.inputs(xs, prev)
        return self.inputs(xs, None)
