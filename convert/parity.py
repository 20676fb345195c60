"""The parity proof: the ``.tflite`` stepped over a whole stream, never reset, against the Keras float model.

Errors are reported in raw units and normalised by each target's scale (so one tolerance serves any units). The
tolerances per mode are documented in the README; exceeding one fails the conversion (exit 1) and says by how much.
"""

from __future__ import annotations

import numpy as np

from statelite.golden import error_metrics
from statelite.transform import Transform

from .config import Quant

# Normalised by the target scale (standard deviation of the scaled series): max abs and RMSE of TFLite vs Keras.
TOLERANCES = {
    Quant.FLOAT32: {"max_abs": 1e-4, "rmse": 1e-5},
    Quant.FLOAT16: {"max_abs": 1e-2, "rmse": 2e-3},
    Quant.DYNAMIC: {"max_abs": 0.2, "rmse": 0.04},
    Quant.INT8: {"max_abs": 1.0, "rmse": 0.15},
    Quant.INT16X8: {"max_abs": 1.0, "rmse": 0.15},
}
# Full int8 must also forecast (against the truth) within this factor of the float model's RMSE on the bundled data.
INT8_FORECAST_RATIO = 1.03


def keras_sequence_outputs(model, xm: np.ndarray) -> np.ndarray:
    """Model-unit outputs of the Keras model at every step of one stream (steps, outputs), from a zero state."""
    import keras

    out = np.asarray(model(xm[None].astype(np.float32), training=False))
    if out.ndim == 3:
        return out[0]

    # A model whose last recurrent layer returns only the final step: clone it returning every step.
    def every_step(layer):
        cfg = layer.get_config()
        if "return_sequences" in cfg:
            cfg["return_sequences"] = True
        return layer.__class__.from_config(cfg)

    clone = keras.models.clone_model(model, clone_function=every_step)
    clone.set_weights(model.get_weights())
    return np.asarray(clone(xm[None].astype(np.float32), training=False))[0]


def truth_windows(targets: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """For every step i with i + horizon inside the stream: the raw truth ``targets[i+1 : i+1+horizon]``."""
    n = len(targets) - horizon
    if n <= 0:
        return np.zeros((0, horizon, targets.shape[1])), np.arange(0)
    idx = np.arange(n)
    return np.stack([targets[i + 1 : i + 1 + horizon] for i in idx]), idx


def _rmse(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if a.size else float("nan")


def normalising_scale(transform: Transform, keras_y: np.ndarray, scaled: bool) -> np.ndarray:
    """Per-target scale that errors are divided by: the scaler's target scale, or for a model without a scaler
    (a bare ``.keras`` file in its own units) the spread of its outputs over the parity stream."""
    if scaled:
        return transform.t_scale.astype(np.float64)
    spread = keras_y.reshape(-1, keras_y.shape[-1]).std(axis=0)
    return np.where(spread > 1e-12, spread, 1.0)


def parity_metrics(
    tflite_y: np.ndarray, keras_y: np.ndarray, scale: np.ndarray, truth: np.ndarray | None, horizon: int
) -> dict:
    """Metrics of one stream: TFLite (steps, [batch,] horizon, targets) against Keras (steps, horizon, targets).

    ``scale`` (per target) turns raw errors into the normalised ones the tolerances are stated in.
    """
    m = error_metrics(tflite_y, keras_y, scale)  # the same figures verify reports on the device
    if tflite_y.ndim == keras_y.ndim + 1:  # batched model: every lane ran the same stream
        keras_y = np.broadcast_to(keras_y[:, None], tflite_y.shape)
    if truth is not None:
        windows, idx = truth_windows(truth, horizon)
        if len(idx):
            ty = tflite_y[idx] if tflite_y.ndim == keras_y.ndim else tflite_y[idx]
            kw = windows if ty.ndim == windows.ndim else windows[:, None]
            m["forecast_rmse_keras"] = _rmse(keras_y[idx] - kw)
            m["forecast_rmse_tflite"] = _rmse(ty - kw)
    return m


def violations(quant: Quant, metrics: dict, check_forecast: bool) -> list[str]:
    """Human-readable tolerance violations (empty when the conversion passes)."""
    tol = TOLERANCES[quant]
    out = []
    for key, metric in (("max_abs", "max_abs_norm"), ("rmse", "rmse_norm")):
        if metrics[metric] > tol[key]:
            out.append(
                f"{key} vs Keras {metrics[metric]:.3g} (normalised) exceeds the {quant.value} tolerance "
                f"{tol[key]:.3g} by {metrics[metric] / tol[key]:.2f}x"
            )
    if check_forecast and quant is Quant.INT8 and "forecast_rmse_keras" in metrics:
        ratio = metrics["forecast_rmse_tflite"] / max(metrics["forecast_rmse_keras"], 1e-12)
        if ratio > INT8_FORECAST_RATIO:
            out.append(
                f"int8 forecast RMSE {metrics['forecast_rmse_tflite']:.4g} is {100 * (ratio - 1):.1f}% worse than "
                f"the float model's {metrics['forecast_rmse_keras']:.4g} (allowed {100 * (INT8_FORECAST_RATIO - 1):.0f}%)"
            )
    return out


def format_table(metrics: dict, quant: Quant) -> str:
    """The parity table printed at every conversion."""
    rows = [
        ("steps (never reset)", f"{metrics['steps']}"),
        ("max abs error vs Keras", f"{metrics['max_abs']:.3g}  ({metrics['max_abs_norm']:.3g} normalised)"),
        ("RMSE vs Keras", f"{metrics['rmse']:.3g}  ({metrics['rmse_norm']:.3g} normalised)"),
        ("drift: mean abs error, first/last tenth", f"{metrics['drift_first_tenth']:.3g} / {metrics['drift_last_tenth']:.3g}"),
    ]
    if "forecast_rmse_keras" in metrics:
        rows.append(("forecast RMSE vs truth: Keras / TFLite", f"{metrics['forecast_rmse_keras']:.4g} / {metrics['forecast_rmse_tflite']:.4g}"))
    tol = TOLERANCES[quant]
    rows.append((f"tolerance ({quant.value}, normalised)", f"max abs {tol['max_abs']:.3g}, RMSE {tol['rmse']:.3g}"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)
