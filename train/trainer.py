"""Training for streaming, test metrics against baselines, and the run folder (written by ``train``, read by
``load_run``).

The device runs the model one step at a time for hours without a reset, so the model is trained on chunks of
``window`` steps from zero state with every step after the burn-in supervised, and it is judged both ways on the
test split: *windowed* (each position from zero state over its last ``window`` rows) and *streaming* (one pass over
the whole split, never reset), at the same positions. TensorFlow is imported inside ``train`` only, so reading a
run folder stays light.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from statelite.errors import BadInputError, IncompatibleModelError

from . import data as D
from .config import ScalerKind, TrainConfig

RUN_FORMAT = "statelite-run"
RUN_FORMAT_VERSION = 1
RUN_FILE = "run.json"
SERIES_FILE = "series.npz"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What ``train`` did: the run folder, the metrics written to run.json, and the trained Keras model."""

    run_dir: Path
    config: TrainConfig
    metrics: dict[str, Any]
    history: tuple[dict[str, float], ...]
    seconds: float
    model: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def test(self) -> dict[str, Any]:
        """``metrics["test"]``: windowed, streaming, persistence, seasonal_naive (each rmse and mae, raw units)."""
        return self.metrics["test"]


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """run.json, read back and checked. ``raw`` is the whole JSON object."""

    run_dir: Path
    config: TrainConfig
    source: str
    time_column: str | None
    features: tuple[str, ...]
    targets: tuple[str, ...]
    rows: int
    feature_scaler: D.Scaler
    target_scaler: D.Scaler
    difference: bool
    window: int
    horizon: int
    burn_in: int
    split: dict[str, tuple[int, int]]
    model_path: Path
    layers: tuple[dict[str, Any], ...]
    dropout: float
    metrics: dict[str, Any]
    versions: dict[str, str]
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)


def _errors(forecast: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = np.asarray(forecast, dtype=np.float64) - actual
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def _weighted_mse(pred: np.ndarray, target: np.ndarray, weights: np.ndarray) -> float:
    per_step = np.mean((pred.astype(np.float64) - target) ** 2, axis=-1)
    return float(np.sum(per_step * weights) / max(np.sum(weights), 1.0))


def train(config: TrainConfig, *, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a forecaster and write its run folder (``config.out``).

    Args:
        config: what to train; see ``TrainConfig``.
        log: called with one progress line per epoch (None: silent).

    Returns:
        A ``TrainResult``; the same figures are in ``run.json``.

    Raises:
        BadInputError: the data cannot be used (unknown column, text or missing cells, too short) or the output
            folder cannot be written.
    """
    started = time.perf_counter()
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"expected a folder for the run, Received: out={str(out)!r} is a file")

    series = D.load_series(config.data, config.features, config.targets, config.time_column, config.fill)
    n, window, horizon = series.rows, config.window, config.horizon
    a, b = D.split_bounds(n, config.val_fraction, config.test_fraction, min_rows=window + horizon)
    if config.season is not None and b + window - config.season < 0:
        raise BadInputError(
            f"expected season <= {b + window} (the history before the first test position), "
            f"Received: season={config.season}"
        )
    fscaler, tscaler = D.fit_scalers(series, a, config.scaler, config.difference)

    def stream(start: int, end: int):
        x = D.model_inputs(series.features[start:end], fscaler, config.difference).astype(np.float32)
        y, valid = D.model_targets(series.targets[start:end], tscaler, horizon, config.difference)
        return x, y.astype(np.float32), valid

    train_x, train_y, train_valid = stream(0, a)
    val_x, val_y, val_valid = stream(a, b)
    test_x, _, _ = stream(b, n)
    val_batch = D.chunk_batch(val_x, val_y, val_valid, D.chunk_starts(len(val_x), window), window, config.burn_in)

    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    model = _compiled_model(config, len(config.features), horizon * len(config.targets))

    rng = np.random.default_rng(config.seed)
    history: list[dict[str, float]] = []
    best_loss, best_weights, best_epoch, waited = math.inf, model.get_weights(), 0, 0
    for epoch in range(1, config.epochs + 1):
        tick = time.perf_counter()
        starts = D.chunk_starts(len(train_x), window, rng)
        x, y, w = D.chunk_batch(train_x, train_y, train_valid, starts, window, config.burn_in)
        fit = model.fit(x, y, sample_weight=w, batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0)
        loss = float(fit.history["loss"][0])
        val_pred = model.predict(val_batch[0], batch_size=256, verbose=0)
        val_loss = _weighted_mse(val_pred, val_batch[1], val_batch[2])
        history.append({"epoch": epoch, "loss": loss, "val_loss": val_loss})
        improved = val_loss < best_loss
        if improved:
            best_loss, best_weights, best_epoch, waited = val_loss, model.get_weights(), epoch, 0
        else:
            waited += 1
        if log is not None:
            log(
                f"epoch {epoch:3d}/{config.epochs}  loss {loss:.4f}  val_loss {val_loss:.4f}  "
                f"{time.perf_counter() - tick:4.1f}s{'  *' if improved else ''}"
            )
        if not math.isfinite(loss) or waited >= config.patience:
            break
    model.set_weights(best_weights)

    test = evaluate(model, series, test_x, b, config, tscaler)
    metrics = {"test": test, "best_val_loss": best_loss, "best_epoch": best_epoch, "epochs_run": len(history)}

    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    _write_history(out / HISTORY_FILE, history)
    arrays = {"features": series.features, "targets": series.targets}
    if series.time is not None:
        arrays["time"] = series.time
    np.savez(out / SERIES_FILE, **arrays)

    from . import plots

    plots.loss_plot(out / "loss.png", history, best_epoch)
    stream_out = model.predict(test_x[None], verbose=0)[0]
    positions = np.arange(0, n - b - 1)
    forecast = D.decode_forecast(
        stream_out[positions], series.targets[b + positions], tscaler, horizon, config.difference
    )[:, 0, :]
    plots.forecast_plot(
        out / "forecast.png", series, b + positions, forecast, first_scored=b + window - 1, title=series.source
    )

    run = _run_json(config, series, fscaler, tscaler, (a, b), metrics, tf.__version__, keras.__version__)
    (out / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    return TrainResult(out, config, metrics, tuple(history), time.perf_counter() - started, model)


def _compiled_model(config: TrainConfig, features: int, outputs: int):
    import keras

    from .model import build_model

    model = build_model(features, outputs, config.cell, config.units, config.layers, config.dropout)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm),
        loss=keras.losses.MeanSquaredError(reduction="mean_with_sample_weight"),
    )
    return model


def evaluate(model, series: D.Series, test_x: np.ndarray, b: int, config: TrainConfig, tscaler: D.Scaler) -> dict:
    """Test-split figures in raw units, averaged over horizons and targets, all at the same positions.

    Positions ``t`` have ``window`` rows of history inside the test split and ``t + H < n``.
    """
    window, horizon, y = config.window, config.horizon, series.targets
    local = D.eval_positions(len(test_x), window, horizon)
    t = b + local
    actual = D.actual_future(y, t, horizon)

    windowed_out = model.predict(D.windows(test_x, local, window), batch_size=256, verbose=0)[:, -1, :]
    streaming_out = model.predict(test_x[None], verbose=0)[0, local]
    windowed = D.decode_forecast(windowed_out, y[t], tscaler, horizon, config.difference)
    streaming = D.decode_forecast(streaming_out, y[t], tscaler, horizon, config.difference)
    persistence = np.repeat(y[t][:, None, :], horizon, axis=1)
    result = {
        "positions": int(local.size),
        "windowed": _errors(windowed, actual),
        "streaming": _errors(streaming, actual),
        "persistence": _errors(persistence, actual),
        "seasonal_naive": None,
    }
    if config.season is not None:
        seasonal = np.stack([y[t + k + 1 - config.season] for k in range(horizon)], axis=1)
        result["seasonal_naive"] = _errors(seasonal, actual)
    return result


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "loss", "val_loss"])
        writer.writeheader()
        writer.writerows(history)


def _run_json(config, series, fscaler, tscaler, split, metrics, tf_version, keras_version) -> dict[str, Any]:
    from statelite import __version__

    a, b = split
    n = series.rows
    return {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "versions": {
            "statelite": __version__,
            "tensorflow": tf_version,
            "keras": keras_version,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "config": config.to_dict(),
        "seed": config.seed,
        "data": {
            "source": series.source,
            "time_column": series.time_column,
            "features": list(series.feature_names),
            "targets": list(series.target_names),
            "rows": n,
            "fill": config.fill.value,
        },
        "scaler": {
            "kind": config.scaler.value,
            "feature_offset": fscaler.offset.tolist(),
            "feature_scale": fscaler.scale.tolist(),
            "target_offset": tscaler.offset.tolist(),
            "target_scale": tscaler.scale.tolist(),
        },
        "difference": config.difference,
        "window": config.window,
        "horizon": config.horizon,
        "burn_in": config.burn_in,
        "split": {"train": [0, a], "val": [a, b], "test": [b, n]},
        "model": {
            "file": MODEL_FILE,
            "layers": [{"cell": config.cell.value, "units": config.units} for _ in range(config.layers)],
            "dropout": config.dropout,
        },
        "metrics": metrics,
    }


def load_run(run_dir: str | Path) -> tuple[RunInfo, D.Series]:
    """Read a run folder back: run.json checked and typed, and the cleaned series from series.npz.

    Does not import TensorFlow; load ``info.model_path`` with ``keras.saving.load_model`` when needed.

    Raises:
        BadInputError: the folder, run.json or series.npz is missing, unreadable or inconsistent.
        IncompatibleModelError: run.json was written by a newer statelite (format_version too high).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInputError(f"expected a run folder written by 'statelite train', Received: {str(run_dir)!r}")
    run_file = run_dir / RUN_FILE
    try:
        raw = json.loads(run_file.read_text())
    except FileNotFoundError:
        raise BadInputError(f"expected {RUN_FILE} in the run folder, Received: none in {str(run_dir)!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"expected a JSON {RUN_FILE}, Received: unreadable {str(run_file)!r} ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != RUN_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise BadInputError(f"expected format {RUN_FORMAT!r} in {str(run_file)!r}, Received: format={found!r}")
    version = raw.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BadInputError(f"expected a positive integer format_version, Received: format_version={version!r}")
    if version > RUN_FORMAT_VERSION:
        raise IncompatibleModelError(
            f"expected run format_version <= {RUN_FORMAT_VERSION} (this statelite), "
            f"Received: format_version={version}; upgrade statelite"
        )
    try:
        d, s, kind = raw["data"], raw["scaler"], ScalerKind(raw["scaler"]["kind"])
        info = RunInfo(
            run_dir=run_dir,
            config=TrainConfig.from_dict(raw["config"]),
            source=d["source"],
            time_column=d["time_column"],
            features=tuple(d["features"]),
            targets=tuple(d["targets"]),
            rows=int(d["rows"]),
            feature_scaler=D.Scaler(kind, np.asarray(s["feature_offset"], float), np.asarray(s["feature_scale"], float)),
            target_scaler=D.Scaler(kind, np.asarray(s["target_offset"], float), np.asarray(s["target_scale"], float)),
            difference=bool(raw["difference"]),
            window=int(raw["window"]),
            horizon=int(raw["horizon"]),
            burn_in=int(raw["burn_in"]),
            split={name: (int(r[0]), int(r[1])) for name, r in raw["split"].items()},
            model_path=run_dir / raw["model"]["file"],
            layers=tuple(raw["model"]["layers"]),
            dropout=float(raw["model"]["dropout"]),
            metrics=raw["metrics"],
            versions=raw["versions"],
            raw=raw,
        )
    except KeyError as exc:
        raise BadInputError(f"expected key {exc.args[0]!r} in {str(run_file)!r}, Received: it is missing") from None
    except (TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, BadInputError):
            raise
        raise BadInputError(f"expected a valid {RUN_FILE}, Received: {str(run_file)!r} ({exc})") from None

    series_file = run_dir / SERIES_FILE
    try:
        with np.load(series_file, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise BadInputError(f"expected {SERIES_FILE} in the run folder, Received: none in {str(run_dir)!r}") from None
    except (OSError, ValueError, EOFError) as exc:
        raise BadInputError(f"expected an .npz {SERIES_FILE}, Received: unreadable {str(series_file)!r} ({exc})") from None
    try:
        features, targets = arrays["features"], arrays["targets"]
    except KeyError as exc:
        raise BadInputError(f"expected key {exc.args[0]!r} in {str(series_file)!r}, Received: it is missing") from None
    shapes = {"features": (info.rows, len(info.features)), "targets": (info.rows, len(info.targets))}
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise BadInputError(
                f"expected {key} of shape {shape} in {str(series_file)!r} (as run.json says), "
                f"Received: {arrays[key].shape}"
            )
    series = D.Series(
        features=features.astype(np.float64),
        targets=targets.astype(np.float64),
        time=arrays.get("time"),
        feature_names=info.features,
        target_names=info.targets,
        time_column=info.time_column,
        source=info.source,
    )
    return info, series

