"""The transform between raw units and the Keras model's units: scaling and differencing.

The Keras model sees ``(value - offset) / scale`` of the features (of their first differences when ``difference`` is
on) and predicts, for each of ``horizon`` steps ahead and each target, the scaled value (or scaled difference). With
differencing the previous raw row is part of the stream's state, and forecasts are rebuilt as the current raw target
plus the cumulative sum of the predicted differences. The first row of a stream has no previous row: its difference
is zero.

A converted graph may have the scaler folded into its weights, on either side (metadata ``graph_scales_inputs``,
``graph_scales_outputs``): then it takes raw rows (raw differences) and returns raw forecasts (raw cumulative
differences), and the host only differences and adds the current level back. Float graphs fold both sides;
quantized graphs fold neither (it costs int8 accuracy, see ``statelite.convert.api.graph_transform``), and the host
scales the inputs and applies the output map ``raw = y @ M + c`` in one matrix product.
"""

from __future__ import annotations

import numpy as np

from .errors import BadInputError
from .metadata import ModelMetadata, Scaler


class Transform:
    """Raw units to model units and back."""

    def __init__(
        self,
        scaler: Scaler,
        difference: bool,
        features,
        targets,
        horizon: int,
        graph_scales_inputs: bool = False,
        graph_scales_outputs: bool = False,
    ):
        s = scaler
        self.graph_scales_inputs = graph_scales_inputs
        self.graph_scales_outputs = graph_scales_outputs
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
    def from_metadata(cls, md: ModelMetadata, key: str | None = None) -> Transform:
        """The transform of one stream: with the scaler of series ``key`` for a panel model (``md.scaler_for``; the
        global scaler for a key not in the panel, or None), the model's scaler otherwise."""
        scaler, _ = md.scaler_for(key)
        return cls(
            scaler, md.difference, md.features, md.targets, md.horizon, md.graph_scales_inputs, md.graph_scales_outputs
        )

    def output_map(self) -> tuple[np.ndarray, np.ndarray]:
        """``(M, c)`` with ``raw = y_model @ M + c``: target unscaling and, when differencing, the cumulative sum over
        the horizon, as one linear map on the flattened ``horizon * targets`` outputs (index ``k * targets + j``)."""
        h = self.horizon
        m = np.diag(np.tile(self.t_scale, h))
        offset = np.tile(self.t_offset, h)
        cum = self.horizon_sum()
        if cum is not None:
            return m @ cum, offset @ cum
        return m, offset

    def horizon_sum(self) -> np.ndarray | None:
        """A differencing model's cumulative sum over the horizon as a matrix on the flattened outputs (``out[k, j]``
        = the sum over ``i <= k`` of ``in[i, j]``), or None without differencing."""
        if not self.difference:
            return None
        return np.kron(np.triu(np.ones((self.horizon, self.horizon))), np.eye(self.n_targets))

    def outputs(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Raw float64 forecasts (..., horizon, targets) from Keras outputs (..., horizon*targets) and raw rows."""
        m, c = self.output_map()
        y = (y.astype(np.float64) @ m + c).reshape(y.shape[:-1] + self._y_shape)
        if self.difference:
            y = y + x[..., None, self.target_index]
        return y

    def sequence_inputs(self, xs: np.ndarray, scaled: bool = True) -> np.ndarray:
        """Inputs for a whole stream of raw rows (steps, features) that starts from a fresh state: scaled for the
        Keras model, or (``scaled=False``) what the step graph takes."""
        if self.difference:
            xs = xs - np.concatenate([xs[:1], xs[:-1]], axis=0)  # the first row differences to zero
        return self._scale(xs) if scaled else self.scale_diff(xs)

    def scale_diff(self, dx: np.ndarray) -> np.ndarray:
        """The graph's input from an already differenced raw row (the raw row itself without differencing)."""
        return dx.astype(np.float32) if self.graph_scales_inputs else self._scale(dx)

    def _scale(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.f_offset) * self.f_inv_scale).astype(np.float32)
