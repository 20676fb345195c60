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
from statelite.progress import no_progress

from . import data as D
from . import panel as P
from . import pipeline
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
    fit_seconds: float = math.nan
    diagnostics: tuple[dict[str, Any], ...] = ()
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
    diagnostics: tuple[dict[str, Any], ...] = ()  # absent from run.json files written before they existed
    timing: dict[str, float] | None = None
    calendar: tuple[str, ...] = ()
    # A panel run's "panel" section of run.json (key column, each series' rows, split and scaler), else None; the
    # other fields then describe the first series kept in series.npz, and the scaler is the global one.
    panel: dict[str, Any] | None = None
    # The series kept in series.npz as (key, Series): the one series of a single-series run (key None).
    sample: tuple = ()


def _errors(forecast: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = np.asarray(forecast, dtype=np.float64) - actual
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def train(config: TrainConfig, *, log: Callable[[str], None] | None = None,
          source: P.PanelSource | None = None, progress: Callable[..., None] | None = None) -> TrainResult:
    """Train a forecaster and write its run folder (``config.out``).

    Args:
        config: what to train; see ``TrainConfig``.
        log: called with one progress line per epoch and, at the end, one paragraph per warning about the result
            (the model no better than persistence, with its likely causes; see ``diagnose``). None: silent.
        source: the series to train on instead of those ``config.data`` names (``statelite.train.backtest`` passes
            each fold's cut of them).
        progress: ``progress(what, done=None, total=None)``, told how far the long work is (reading the data, each
            epoch's batches through a Keras callback, validation, scoring the test split); the chief's only.
            ``statelite.progress.TerminalProgress`` draws it on a terminal. None: not told (and no callback).

    Returns:
        A ``TrainResult``; the same figures, the diagnostics and the timing are in ``run.json``.

    Raises:
        BadInputError: the data cannot be used (unknown column, text or missing cells, too short) or the output
            folder cannot be written.
    """
    started = time.perf_counter()
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"expected a folder for the run, Received: out={str(out)!r} is a file")

    tell = progress or no_progress
    tell("reading the data")
    source = source if source is not None else P.open_source(config)
    kept: dict = {}  # the series kept in series.npz: all of a single-series run, the first few of a panel

    def keep(key, series: D.Series, member: P.Member) -> None:
        if len(kept) < SAMPLE_SERIES and sum(s.rows for s in kept.values()) + series.rows <= SAMPLE_ROWS or not kept:
            kept[key] = series

    members, gscaler_f, gscaler_t = P.plan(source, config, keep)
    panel = source.is_panel
    window, horizon = config.window, config.horizon
    if config.season is not None:
        for m in members:
            if m.b + window - config.season < 0:
                where = f" in series {m.key!r}" if panel else ""
                raise BadInputError(
                    f"expected season <= {m.b + window} (the history before the first test position{where}), "
                    f"Received: season={config.season}"
                )

    from . import distribute as dist

    worker = dist.make_worker(config.strategy)
    replicas = int(worker.strategy.num_replicas_in_sync)
    if worker.distributed and config.batch_size % replicas:
        raise BadInputError(
            f"expected --batch-size divisible by the {replicas} replicas of --strategy {config.strategy.value} (each "
            f"takes an equal share of the global batch), Received: batch_size={config.batch_size}"
        )
    # In memory (one file): the validation chunks are made once. Shards: one series at a time, every epoch, so
    # memory does not grow with the panel.
    mine = P.shard(members, worker.index, worker.count)
    # Each worker scores the validation chunks of its own series; the sums are added across workers.
    val_batches = None if source.lazy else [P.validation_chunks(source, [m], config) for m in mine]
    n_inputs = len(config.features) + 2 * len(config.calendar)
    n_outputs = horizon * len(config.targets)

    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    if not worker.distributed:
        tf.config.experimental.enable_op_determinism()
    with worker.strategy.scope():
        model = _compiled_model(config, n_inputs, n_outputs)
        step = None
        if worker.distributed:
            model.optimizer.build(model.trainable_variables)
            step = dist.train_step(worker, model, model.optimizer)

    rng = np.random.default_rng(config.seed if worker.count == 1 else [config.seed, worker.index])
    train_chunks = P.chunk_count(members, window)
    steps = math.ceil(train_chunks / config.batch_size) if worker.count > 1 else None
    local_batch = config.batch_size // worker.count
    fit_started = time.perf_counter()
    history: list[dict[str, float]] = []
    best_loss, best_weights, best_epoch, waited = math.inf, model.get_weights(), 0, 0
    windows_seen = 0
    for epoch in range(1, config.epochs + 1):
        tick = time.perf_counter()
        dataset = pipeline.training_dataset(source, mine, config, rng, local_batch, n_inputs, n_outputs, steps)
        if step is None:
            callbacks = [_batch_progress(progress, f"epoch {epoch}/{config.epochs}", dataset)] if progress else []
            fit = model.fit(dataset, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
            loss = float(fit.history["loss"][0])
        else:
            losses = dist.run_epoch(worker, step, dataset)
            loss = float(np.mean(losses)) if losses else math.nan
        windows_seen += train_chunks
        if worker.chief:
            tell(f"epoch {epoch}/{config.epochs}: validation loss")
        val_loss = _validation_loss(model, source, mine, config, worker, val_batches)
        history.append({"epoch": epoch, "loss": loss, "val_loss": val_loss})
        improved = val_loss < best_loss
        if improved:
            best_loss, best_weights, best_epoch, waited = val_loss, model.get_weights(), epoch, 0
        else:
            waited += 1
        if log is not None and worker.chief:
            log(
                f"epoch {epoch:3d}/{config.epochs}  loss {loss:.4f}  val_loss {val_loss:.4f}  "
                f"{time.perf_counter() - tick:4.1f}s{'  *' if improved else ''}"
            )
        if not math.isfinite(loss) or waited >= config.patience:
            break
    model.set_weights(best_weights)
    fit_seconds = time.perf_counter() - fit_started
    windows_per_second = round(windows_seen / fit_seconds, 2) if fit_seconds > 0 else None
    throughput = {  # deterministic for a seed: the speed itself is in run.json's timing
        "windows": windows_seen,
        "workers": worker.count,
        "strategy": config.strategy.value,
        "weights_sha256": dist.weights_digest(model),
    }
    if not worker.chief:  # the chief alone writes the run folder; the others end with the same weights
        if log is not None:
            log(f"worker {worker.index}/{worker.count}: done, weights sha256 {throughput['weights_sha256']}")
        seconds = time.perf_counter() - started
        return TrainResult(out, config, {"throughput": throughput}, tuple(history), seconds, fit_seconds, (), model)
    if worker.distributed:
        if log is not None:
            log(f"worker 0/{worker.count}: weights sha256 {throughput['weights_sha256']}")
        # Evaluating and saving need no other worker: a plain copy of the model, outside the strategy (Keras's
        # predict on the distributed one runs collective ops, which fail once the other workers have finished).
        plain = _compiled_model(config, n_inputs, n_outputs)
        plain.set_weights(model.get_weights())
        model = plain

    first_key = next(iter(kept))
    first = kept[first_key]
    first_member = next(m for m in members if m.key == first_key)
    streamed = _Streamed(model, source, config, kept)
    tell("scoring the test split" + (f" of {len(members)} series" if panel else ""))
    tests = _evaluate_members(streamed, members)
    per_series = {str(m.key): t for m, t in zip(members, tests)}
    test = tests[0] if not panel else pooled_metrics(tests)
    tell("calibrating the prediction intervals")
    monitoring = _panel_monitoring(streamed, members, panel)
    sampling = _sampling(first)
    test["coverage"] = monitoring.pop("coverage")
    test["anomaly_rate"] = monitoring.pop("anomaly_rate")
    metrics = {
        "test": test,
        "best_val_loss": best_loss,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "train_chunks": train_chunks,
        "calibration_steps": monitoring["residuals"]["steps"],
        "throughput": throughput,
    }
    if panel:
        metrics["series"] = per_series
    split = (first_member.a, first_member.b)
    diagnostics = diagnose(first if not panel else None, split, config, metrics, history)

    tell("writing the run folder")
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    _write_history(out / HISTORY_FILE, history)
    _write_series(out / SERIES_FILE, kept, panel)

    from . import plots

    plots.loss_plot(out / "loss.png", history, best_epoch)
    stream_out = streamed.of(first_member, first)[0]
    n, b = first.rows, first_member.b
    positions = np.arange(0, n - b - 1)
    forecast = D.decode_forecast(
        stream_out[b + positions], first.targets[b + positions], first_member.tscaler, horizon, config.difference
    )[:, 0, :]
    title = first.source if not panel else f"{source.source} (series {first_key!r})"
    plots.forecast_plot(out / "forecast.png", first, b + positions, forecast, first_scored=b + window - 1, title=title)

    run = _run_json(config, first, gscaler_f, gscaler_t, split, metrics, tf.__version__, keras.__version__)
    if panel:
        run["data"]["source"] = source.source
        run["panel"] = {
            "key_column": source.key_column,
            "lazy": source.lazy,
            "sample": [str(k) for k in kept],
            "series": {
                str(m.key): {
                    "rows": m.rows,
                    "split": {"train": [0, m.a], "val": [m.a, m.b], "test": [m.b, m.rows]},
                    "scaler": _scaler_dict(m.fscaler, m.tscaler),
                }
                for m in members
            },
            "residual_units": "target_scale",
        }
    run["calendar"] = list(config.calendar)
    run["residuals"] = monitoring["residuals"]
    run["sampling"] = sampling
    run["diagnostics"] = diagnostics
    seconds = time.perf_counter() - started  # everything but writing run.json itself
    run["timing"] = {"fit_seconds": round(fit_seconds, 3), "total_seconds": round(seconds, 3),
                     "windows_per_second": windows_per_second}
    (out / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    if log is not None:
        for paragraph in diagnostics_text(diagnostics):
            log(paragraph)
    return TrainResult(out, config, metrics, tuple(history), seconds, fit_seconds, tuple(diagnostics), model)


def _batch_progress(progress, what: str, dataset):
    """A Keras callback telling ``progress`` each batch of one epoch's ``fit`` (its total from the dataset's known
    cardinality, else none)."""
    import keras

    n = int(dataset.cardinality())
    total = n if n > 0 else None

    class BatchProgress(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            progress(what, batch + 1, total)

    return BatchProgress()


# series.npz keeps every row of a single-series run, and of a panel the first series up to these bounds: what
# convert calibrates the integer modes on and makes its parity proof and golden trace from.
SAMPLE_SERIES = 16
SAMPLE_ROWS = 200_000


def _predict(model, x: np.ndarray, distributed: bool) -> np.ndarray:
    """The model's outputs for a batch of chunks: Keras's ``predict``, or, under a distributed strategy (where
    ``predict`` would split the batch across workers), direct calls."""
    if not distributed:
        return model.predict(x, batch_size=256, verbose=0)
    return np.concatenate([np.asarray(model(x[i:i + 256], training=False)) for i in range(0, len(x), 256)])


def _validation_loss(model, source: P.PanelSource, members: list[P.Member], config: TrainConfig, worker,
                     cached: list | None) -> float:
    """The weighted MSE over the validation chunks (model units) of ``members``, one series at a time; on several
    workers, each scores its own series and the sums are added across them (every worker gets the same loss)."""
    total = weight = 0.0
    for i, m in enumerate(members):
        x, y, w = cached[i] if cached is not None else P.validation_chunks(source, [m], config)
        per_step = np.mean((_predict(model, x, worker.distributed).astype(np.float64) - y) ** 2, axis=-1)
        total += float(np.sum(per_step * w))
        weight += float(np.sum(w))
    if worker.count > 1:
        from . import distribute as dist

        total, weight = dist.all_sum(worker, [total, weight])
    return total / max(weight, 1.0)


def _member_forecasts(model, series: D.Series, m: P.Member, config: TrainConfig):
    """The model streamed over a whole series from a zero state: its outputs ``(rows, H*T)`` and the raw forecasts
    made at each row but the last ``(rows - 1, H, T)``."""
    x, _, _ = P.model_stream(series, m, config, 0, m.rows)
    out = model.predict(x[None], verbose=0)[0]
    positions = np.arange(m.rows - 1)
    forecasts = D.decode_forecast(out[positions], series.targets[positions], m.tscaler, config.horizon,
                                  config.difference)
    return out, forecasts


class _Streamed:
    """Each series and its whole-series streaming forecasts (``_member_forecasts``), for the passes after training
    (test figures, the interval calibration, its coverage, forecast.png). Data read whole is in memory anyway: each
    series' forecasts are computed once and kept. Shards: computed again for each pass, so that memory holds one
    series at a time."""

    def __init__(self, model, source: P.PanelSource, config: TrainConfig, kept: dict):
        self.model, self.source, self.config, self.kept = model, source, config, kept
        self._cache: dict | None = None if source.lazy else {}

    def series(self, m: P.Member) -> D.Series:
        return self.kept.get(m.key) or self.source.load(m.key)

    def of(self, m: P.Member, series: D.Series) -> tuple[np.ndarray, np.ndarray]:
        """``_member_forecasts`` of series ``m``."""
        if self._cache is not None and m.key in self._cache:
            return self._cache[m.key]
        found = _member_forecasts(self.model, series, m, self.config)
        if self._cache is not None:
            self._cache[m.key] = found
        return found


def _evaluate_members(streamed: _Streamed, members: list[P.Member]) -> list[dict]:
    """Each series' test figures, one series in memory at a time."""
    tests = []
    for m in members:
        series = streamed.series(m)
        test_x, _, _ = P.model_stream(series, m, streamed.config, m.b, m.rows)
        tests.append(evaluate(streamed.model, series, test_x, m.b, streamed.config, m.tscaler))
    return tests


def pooled_metrics(tests: list[dict]) -> dict[str, Any]:
    """A panel's test figures over all its series: RMSE and MAE pooled over every scored value (raw units, so large
    series weigh more), and the relative figures that weigh each series alike: the mean ratio of the streaming RMSE
    to persistence's and to seasonal naive's, and how many series the model beats persistence on."""
    positions = [t["positions"] for t in tests]
    out: dict[str, Any] = {"positions": int(sum(positions)), "series": len(tests)}
    for name in ("windowed", "streaming", "persistence", "seasonal_naive"):
        if any(t[name] is None for t in tests):
            out[name] = None
            continue
        weight = np.asarray(positions, dtype=np.float64)
        mse = np.array([t[name]["rmse"] ** 2 for t in tests])
        mae = np.array([t[name]["mae"] for t in tests])
        out[name] = {"rmse": float(np.sqrt(np.sum(mse * weight) / weight.sum())),
                     "mae": float(np.sum(mae * weight) / weight.sum())}
    ratios = [t["streaming"]["rmse"] / t["persistence"]["rmse"] for t in tests if t["persistence"]["rmse"] > 0]
    relative = {
        "mean_ratio_to_persistence": float(np.mean(ratios)) if ratios else None,
        "beats_persistence": int(sum(r < 1 for r in ratios)),
    }
    if out["seasonal_naive"] is not None:
        seasonal = [t["streaming"]["rmse"] / t["seasonal_naive"]["rmse"] for t in tests if t["seasonal_naive"]["rmse"] > 0]
        relative["mean_ratio_to_seasonal_naive"] = float(np.mean(seasonal)) if seasonal else None
    out["relative"] = relative
    return out


def _scaler_dict(fscaler: D.Scaler, tscaler: D.Scaler) -> dict[str, list[float]]:
    return {
        "feature_offset": fscaler.offset.tolist(),
        "feature_scale": fscaler.scale.tolist(),
        "target_offset": tscaler.offset.tolist(),
        "target_scale": tscaler.scale.tolist(),
    }


def _write_series(path: Path, kept: dict, panel: bool) -> None:
    series = list(kept.values())
    arrays = {
        "features": np.concatenate([s.features for s in series]),
        "targets": np.concatenate([s.targets for s in series]),
    }
    if all(s.time is not None for s in series):
        arrays["time"] = np.concatenate([s.time for s in series])
    if panel:
        arrays["keys"] = np.asarray([str(k) for k in kept], dtype=str)
        arrays["key_rows"] = np.asarray([s.rows for s in series], dtype=np.int64)
    np.savez(path, **arrays)


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


COVERAGE_LEVELS = (0.8, 0.9, 0.95)


# At most this many validation positions per series feed the residual calibration (evenly spaced): its quantiles
# need hundreds, and the memory of a large panel's calibration must not grow with its rows.
CALIBRATION_POSITIONS = 5000


def _panel_monitoring(streamed: _Streamed, members: list[P.Member], panel: bool) -> dict[str, Any]:
    """Calibrate prediction intervals and anomaly scores on the validation splits; measure them on the test splits.

    The model streams over each whole series from a zero state, as a device does from its first row. The forecasts
    made at validation positions whose horizon ends inside the validation split give the residuals
    (``statelite.monitor.calibrate``); a panel's residuals are divided by each series' target scale first, so series
    of any magnitude share one calibration (``residual_units: target_scale``: the device multiplies it back by the
    stream's own scale). A second pass replays each test split through the device's own monitor
    (``statelite.monitor.replay``), whose intervals adapt online, to measure coverage at 80, 90 and 95%. Shards
    keep one series in memory at a time (``_Streamed``).

    Returns:
        ``{"residuals": calibration dict, "coverage": {"adaptive": {level: share}, "calibrated": {level: share}},
        "anomaly_rate": share of test rows flagged at the default threshold}``, the shares over all test rows.

    Raises:
        BadInputError: the validation split gives no residual (shorter than the horizon).
    """
    from statelite import monitor as M

    horizon, window = streamed.config.horizon, streamed.config.window

    def passes():
        for m in members:
            series = streamed.series(m)
            unit = m.tscaler.scale if panel else np.ones(series.targets.shape[1])
            yield m, series, streamed.of(m, series)[1], unit

    val_forecasts, val_actuals = [], []
    for m, series, forecasts, unit in passes():
        n, a, b = m.rows, m.a, m.b
        val = np.arange(max(a, window - 1), b - 1)
        if len(val) > CALIBRATION_POSITIONS:
            val = val[np.linspace(0, len(val) - 1, CALIBRATION_POSITIONS).astype(int)]
        actual = np.full((len(val), horizon, series.targets.shape[1]), np.nan)
        for k in range(horizon):
            inside = val + k + 1 < b  # the truth must be in the split
            actual[inside, k] = series.targets[val[inside] + k + 1]
        val_forecasts.append(forecasts[val] / unit)
        val_actuals.append(actual / unit)
    val_forecasts, val_actuals = np.concatenate(val_forecasts), np.concatenate(val_actuals)
    if not np.isfinite(val_actuals).any():
        shortest = min(m.b - m.a for m in members)
        raise BadInputError(
            f"expected a validation split longer than the horizon ({horizon}) to calibrate intervals, "
            f"Received: {shortest} validation rows; use more data or a larger --val-fraction"
        )
    calibration = M.calibrate(val_forecasts, val_actuals)
    options = {name: M.MonitorOptions(levels=COVERAGE_LEVELS, adapt=adapt)
               for name, adapt in (("adaptive", True), ("calibrated", False))}
    hits = {name: np.zeros(len(COVERAGE_LEVELS)) for name in options}
    count, flagged, scored_rows = 0, 0, 0
    for m, series, forecasts, unit in passes():
        rows = np.arange(m.b, m.rows - 1)  # the monitor sees row b first, with the forecasts made from row b on
        f, y = forecasts[rows] / unit, series.targets[rows] / unit
        count += len(rows)
        for name, option in options.items():
            replayed = M.replay(calibration, f, y, option)
            hits[name] += np.asarray(M.coverage(replayed["lower"], replayed["upper"], y)) * len(rows)
            if option.adapt:
                scored = np.isfinite(replayed["score"])
                flagged += int(replayed["anomaly"][scored].sum())
                scored_rows += int(scored.sum())
    coverage = {name: {f"{level:g}": round(float(v), 4) for level, v in zip(COVERAGE_LEVELS, h / max(count, 1))}
                for name, h in hits.items()}
    rate = flagged / scored_rows if scored_rows else math.nan
    return {"residuals": calibration.to_dict(), "coverage": coverage, "anomaly_rate": rate}


def _sampling(series: D.Series) -> dict | None:
    """The time column's sampling (``statelite.timecol.Sampling`` as a dict), what the device judges gaps against;
    None without a time column, or when it holds labels rather than times (kept for the plots; no gap checks)."""
    if series.time is None:
        return None
    from statelite.timecol import estimate_sampling

    try:
        found = estimate_sampling([str(v) for v in series.time], column=series.time_column or "time")
    except BadInputError:
        return None
    return found.to_dict() if found is not None else None


# Thresholds of ``diagnose``.
# Validation positions behind the residual calibration: with fewer, the tail above the 90th percentile rests on at
# most 3 residuals.
FEW_RESIDUALS = 40
# Each training chunk is one example, and neighbouring chunks share window - 1 rows, so the data says less than the
# count suggests. Under 50 chunks the default batch of 32 makes at most two gradient steps per epoch and early
# stopping judges noise: too little for a recurrent model to learn more than the level of the series.
FEW_CHUNKS = 50
# A few test rows beyond the training range are ordinary noise; 5% is a sustained excursion, worth naming as a
# cause when the model loses. At 20% the model extrapolates on a fifth of the test split: worth a warning even when
# it wins, since its figures there are luck as much as skill.
OUTSIDE_CAUSE = 0.05
OUTSIDE_WARN = 0.20
# The best validation loss within 5% of the first epoch's: the model learned next to nothing after its first pass.
STALL_GAIN = 0.05


def diagnose(
    series: D.Series | None,
    split: tuple[int, int],
    config: TrainConfig,
    metrics: dict[str, Any],
    history: list[dict[str, float]],
) -> list[dict[str, Any]]:
    """Warnings about a trained model, with the figures behind them (stored in run.json under ``diagnostics``).

    ``worse_than_persistence`` when the streaming test RMSE is not below persistence's, followed by the likely
    causes measured: ``test_outside_train_range`` (test values outside the training split's range, in the units the
    model sees: levels, or steps with ``difference``), ``few_training_chunks`` (fewer than ``FEW_CHUNKS``) and
    ``validation_stalled`` (best epoch 1, or a best validation loss within ``STALL_GAIN`` of the first epoch's).
    ``test_outside_train_range`` also comes alone when the model wins but more than ``OUTSIDE_WARN`` of a column's
    test rows are outside.

    Returns:
        A list of dicts, each with ``code``, ``message`` and the measured figures; empty when all is well.
    """
    test = metrics["test"]
    model_rmse, persistence_rmse = test["streaming"]["rmse"], test["persistence"]["rmse"]
    worse = not model_rmse < persistence_rmse  # a NaN RMSE (diverged training) counts as worse
    ratio = model_rmse / persistence_rmse if persistence_rmse > 0 else math.inf
    found: list[dict[str, Any]] = []
    if worse:
        found.append({
            "code": "worse_than_persistence",
            "message": (
                f"The model is no better than persistence on the test split: streaming RMSE {model_rmse:.4g} "
                f"against {persistence_rmse:.4g} for repeating the last value, {ratio:.2f}x its error."
            ),
            "streaming_rmse": model_rmse,
            "persistence_rmse": persistence_rmse,
            "ratio": ratio,
        })
    outside = None if series is None else _outside_train_range(
        series, split, config.difference, OUTSIDE_CAUSE if worse else OUTSIDE_WARN
    )
    if outside is not None:
        found.append(outside)
    if worse and metrics["train_chunks"] < FEW_CHUNKS:
        chunks = metrics["train_chunks"]
        found.append({
            "code": "few_training_chunks",
            "message": (
                f"It was trained on only {chunks} chunks of {config.window} steps (fewer than {FEW_CHUNKS}), which "
                "overlap: use more data, a smaller --window or a smaller --val-fraction/--test-fraction."
            ),
            "train_chunks": chunks,
            "threshold": FEW_CHUNKS,
        })
    stalled = _validation_stall(history, metrics) if worse else None
    if stalled is not None:
        found.append(stalled)
    steps = metrics.get("calibration_steps")
    if steps is not None and steps < FEW_RESIDUALS:
        found.append({
            "code": "few_calibration_residuals",
            "message": (
                f"The prediction intervals and anomaly scores are calibrated on {steps} validation positions (fewer "
                f"than {FEW_RESIDUALS}): their first hours on the device lean on the online adaptation. A larger "
                f"--val-fraction or more data calibrates them better."
            ),
            "calibration_steps": steps,
            "threshold": FEW_RESIDUALS,
        })
    return found


def _outside_train_range(series, split, differenced, threshold) -> dict[str, Any] | None:
    a, b = split
    skip = 1 if differenced else 0  # a differenced stream's first row is a zero by construction, not data
    columns: dict[str, dict[str, Any]] = {}
    pairs = list(zip(series.target_names, series.targets.T)) + list(zip(series.feature_names, series.features.T))
    for name, values in pairs:
        if name in columns:
            continue
        train = D.stream_values(values[:a], differenced)[skip:]
        test = D.stream_values(values[b:], differenced)[skip:]
        low, high = float(train.min()), float(train.max())
        columns[name] = {
            "fraction_outside": float(np.mean((test < low) | (test > high))),
            "train_range": [low, high],
            "test_range": [float(test.min()), float(test.max())],
        }
    flagged = {name: c for name, c in columns.items() if c["fraction_outside"] > threshold}
    if not flagged:
        return None
    values = "steps (differences)" if differenced else "values"
    parts = ", ".join(
        f"{name!r} {c['fraction_outside']:.0%} (test {c['test_range'][0]:.4g} to {c['test_range'][1]:.4g}, "
        f"training {c['train_range'][0]:.4g} to {c['train_range'][1]:.4g})"
        for name, c in sorted(flagged.items(), key=lambda item: -item[1]["fraction_outside"])
    )
    message = f"Test-split {values} outside the training split's range, share of test rows: {parts}. "
    if differenced:
        message += "The test split behaves unlike the training split; more, or more recent, training data may help."
    else:
        message += (
            "The model is asked for levels it never saw; a trending series is usually better modelled by its "
            "steps: train with --difference."
        )
    return {
        "code": "test_outside_train_range",
        "message": message,
        "measured_on": "differences" if differenced else "levels",
        "threshold": threshold,
        "columns": columns,
        "suggestion": None if differenced else "--difference",
    }


def _validation_stall(history, metrics) -> dict[str, Any] | None:
    if len(history) < 2:  # one epoch: nothing to compare with
        return None
    first, best, best_epoch = history[0]["val_loss"], metrics["best_val_loss"], metrics["best_epoch"]
    gain = (first - best) / first if first > 0 and math.isfinite(first) and math.isfinite(best) else 0.0
    if best_epoch != 1 and gain >= STALL_GAIN:
        return None
    if best_epoch == 1:
        what = f"Validation loss never improved after epoch 1 ({len(history)} epochs run; epoch 1's weights kept)"
    else:
        what = (
            f"Validation loss improved only {gain:.1%} over epoch 1's ({first:.4g} to {best:.4g} at epoch "
            f"{best_epoch})"
        )
    return {
        "code": "validation_stalled",
        "message": what + ": the model learned little that carries over to data it was not trained on.",
        "first_val_loss": first,
        "best_val_loss": best,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "gain": gain,
    }


def diagnostics_text(diagnostics: list[dict[str, Any]]) -> list[str]:
    """The diagnostics as paragraphs for the terminal: one for a model worse than persistence (with its causes),
    one for each other warning."""
    if not diagnostics:
        return []
    apart = [f"warning: {d['message']}" for d in diagnostics if d["code"] in _NOT_A_CAUSE]
    diagnostics = [d for d in diagnostics if d["code"] not in _NOT_A_CAUSE]
    if not diagnostics or diagnostics[0]["code"] != "worse_than_persistence":
        return apart + [f"warning: {d['message']}" for d in diagnostics]
    head, causes = diagnostics[0]["message"], [d["message"] for d in diagnostics[1:]]
    if causes:
        return apart + [f"warning: {head} Likely causes: " + " ".join(causes)]
    return apart + [f"warning: {head} None of the measured causes applies (test range, training chunks, validation "
                    f"loss)."]


_NOT_A_CAUSE = ("few_calibration_residuals",)  # warnings about the intervals, not causes of a weak forecast


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
            diagnostics=tuple(raw.get("diagnostics") or ()),
            timing=raw.get("timing"),
            calendar=tuple(raw.get("calendar") or ()),
            panel=raw.get("panel"),
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
    keys = arrays.get("keys")
    key_rows = arrays.get("key_rows")
    if (info.panel is not None) != (keys is not None and key_rows is not None):
        raise BadInputError(f"expected keys and key_rows in {str(series_file)!r} exactly for a panel run")
    total = int(np.sum(key_rows)) if key_rows is not None else info.rows
    if key_rows is not None and (len(key_rows) != len(keys) or (key_rows <= 0).any()):
        raise BadInputError(f"expected one positive row count per key in {str(series_file)!r}")
    shapes = {"features": (total, len(info.features)), "targets": (total, len(info.targets))}
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise BadInputError(
                f"expected {key} of shape {shape} in {str(series_file)!r} (as run.json says), "
                f"Received: {arrays[key].shape}"
            )
    time = arrays.get("time")
    bounds = np.concatenate([[0], np.cumsum(key_rows)]) if key_rows is not None else np.array([0, total])
    sample = []
    for i, key in enumerate(keys if keys is not None else [None]):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        sample.append((None if key is None else str(key), D.Series(
            features=features[lo:hi].astype(np.float64),
            targets=targets[lo:hi].astype(np.float64),
            time=None if time is None else time[lo:hi],
            feature_names=info.features,
            target_names=info.targets,
            time_column=info.time_column,
            source=info.source if key is None else f"{info.source}[{key}]",
        )))
    info = dataclasses.replace(info, sample=tuple(sample))
    return info, sample[0][1]

