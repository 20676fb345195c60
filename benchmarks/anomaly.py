"""Streaming anomaly detection and prediction intervals on the device: how well does ``statelite.monitor`` do?

Everything runs the real pipeline: each model is trained with ``statelite.train.train`` (seeded), converted with
``statelite.convert.convert`` (``--quant auto`` by default: the smallest integer model that holds parity), and run
on the device runtime, ``statelite.StatefulRunner(path).monitor(MonitorOptions(...))``, row by row over the whole
series from its first row, as a device would. Five sections:

1. ``injected``: anomalies of every kind of ``benchmarks/events.py`` (spike, level_shift, drift, stuck, noise,
   dropout) planted after the training split of clean series (co2, taylor, NAB's art_daily_small_noise); event
   precision, recall, F1 and delay per kind for statelite (substitution off and on) against a rolling z-score and
   the same scoring on a persistence forecast, at statelite's default threshold and at each detector's tuned one.
2. ``substitute``: single large spikes in co2 and taylor test rows, ``MonitorOptions(substitute=True)`` against
   ``False``: the forecast error after each spike over the clean run's, and the rows until it is back to normal.
3. ``nab``: the NAB subset in ``benchmarks/data/nab`` under NAB's protocol (each detector learns only from the
   probationary period, then is scored on the whole series): NAB standard-profile score with one threshold per
   detector for the whole corpus, event F1 against the labelled windows.
4. ``coverage``: 80/90/95% interval coverage of the device's intervals on the test splits of public series.
5. ``cost``: ``runner.step`` against ``runner.monitor(...).step`` on the co2 model, interleaved repetitions.

    python benchmarks/anomaly.py                         # everything: writes benchmarks/results/anomaly.{md,json}
    python benchmarks/anomaly.py --quick --out /tmp/an   # smoke run: co2, 2 NAB series, 2 epochs, 1 repetition
    python benchmarks/anomaly.py --sections nab,cost     # some sections only

Needs ``statelite[train,bench]`` (statsmodels and pmdarima carry the public series).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `benchmarks` is then not importable as a package
    sys.path.insert(0, str(ROOT))

from benchmarks import events as E  # noqa: E402
from benchmarks import nab as N  # noqa: E402
from benchmarks.environment import machine_info, source_state, versions  # noqa: E402
from benchmarks.series import DEFAULT_CACHE, by_name  # noqa: E402

SECTIONS = ("injected", "substitute", "nab", "coverage", "cost")
NAB_DIR = ROOT / "benchmarks" / "data" / "nab"
NAB_LICENCE = "MIT, (c) Numenta (benchmarks/data/nab/LICENSE.txt)"
NAB_SOURCE = "Numenta Anomaly Benchmark (Lavin and Ahmad, 2015), github.com/numenta/NAB"

# Threshold grids: statelite and persistence share the score (-log10 of the row's p-value); the z-score has its own.
SCORE_GRID = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0)
Z_GRID = (2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0)
QUICK_SCORE_GRID = (2.0, 3.0, 4.0, 6.0, 10.0)
QUICK_Z_GRID = (3.0, 4.0, 6.0, 10.0)

ART_SMALL_NOISE = "artificialNoAnomaly/art_daily_small_noise.csv"


@dataclasses.dataclass(frozen=True)
class InjectPlan:
    """How anomalies are planted in one clean series (section 1)."""

    series: str  # model key
    length: int  # rows per anomaly (spikes: 1)
    gap: int  # least clean rows between two anomalies
    count: int  # anomalies of the kind per repetition
    z_window: int  # rolling z-score history, rows
    z_what: str  # what that window is


INJECT_PLANS = {
    "co2": InjectPlan("co2", length=8, gap=52, count=5, z_window=52, z_what="52 rows = one year (the season)"),
    "taylor": InjectPlan("taylor", length=24, gap=96, count=5, z_window=48, z_what="48 rows = one day"),
    "art_daily_small_noise": InjectPlan("art_daily_small_noise", length=24, gap=144, count=5, z_window=288,
                                        z_what="288 rows = one day"),
}
COVERAGE_SERIES = ("co2", "taylor", "sunspots", "elnino", "macrodata", "airpassengers", "wineind", "msft_ohlcv",
                   "nab_speed")
QUICK_NAB = ("artificialWithAnomaly/art_daily_jumpsup.csv", "realTraffic/speed_7578.csv")
NAB_WINDOWS = (24, 16, 12, 8)  # section 3: tried in order while the trainer refuses the window for too few rows
SPIKE_MAGNITUDE = 10.0  # section 2: robust scales
LEVELS = (0.8, 0.9, 0.95)
COVERAGE_TOLERANCE = 0.03


def log(msg: str) -> None:
    print(msg, flush=True)


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _fmt(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def _clean(obj):
    """JSON-ready: numpy scalars to Python, NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# -- models: train once, convert once, reuse across sections ---------------------------------------------------------


@dataclasses.dataclass
class Model:
    """One trained and converted model with the clean series it was trained on (from its run folder)."""

    key: str
    run_dir: Path
    tflite: Path
    info: dict  # the JSON-ready figures
    features: np.ndarray  # (n, F) the cleaned series as the model saw it (series.npz)
    targets: np.ndarray  # (n, T)
    split: dict
    window: int
    horizon: int
    warmup: int
    calibration: object  # statelite.monitor.ResidualCalibration from the converted model's metadata
    runner: object = None

    def device(self):
        import statelite

        if self.runner is None:
            self.runner = statelite.StatefulRunner(str(self.tflite))
        return self.runner


class Models:
    def __init__(self, work: Path, args):
        self.work, self.args = work, args
        self.cache: dict[str, Model] = {}
        self.failed: dict[str, str] = {}

    def get(self, key: str, make_config) -> Model | None:
        """Train (``make_config(out_dir)`` gives the ``TrainConfig``) and convert once; None when either failed."""
        if key in self.cache:
            return self.cache[key]
        if key in self.failed:
            return None
        from statelite.convert import ConvertConfig, convert
        from statelite.train import train

        out = self.work / key.replace("/", "_")
        info: dict = {"key": key}
        try:
            config = make_config(str(out))
            info["config"] = config.to_dict()
            t0 = time.perf_counter()
            result = train(config, log=None)
            info["train_seconds"] = round(time.perf_counter() - t0, 2)
        except Exception as exc:  # noqa: BLE001 (recorded: the rest of the benchmark still runs)
            self.failed[key] = _error(exc)
            log(f"  {key}: training failed: {self.failed[key]}")
            return None
        test = result.metrics["test"]
        info.update(
            epochs_run=result.metrics["epochs_run"], best_epoch=result.metrics["best_epoch"],
            streaming_rmse=test["streaming"]["rmse"], persistence_rmse=test["persistence"]["rmse"],
            keras_coverage=test.get("coverage"), keras_anomaly_rate=test.get("anomaly_rate"),
            diagnostics=[d["code"] for d in result.diagnostics],
        )
        tflite = self.work / f"{key.replace('/', '_')}.tflite"
        try:
            t0 = time.perf_counter()
            conv = convert(out, tflite, ConvertConfig(quant=self.args.quant, check_parity=False),
                           log=lambda *_: None)
            info["convert_seconds"] = round(time.perf_counter() - t0, 2)
        except Exception as exc:  # noqa: BLE001
            self.failed[key] = _error(exc)
            log(f"  {key}: conversion failed: {self.failed[key]}")
            return None
        info.update(quant=conv.metadata.quant, parity_passed=bool(conv.passed), bytes=tflite.stat().st_size,
                    violations=list(conv.violations))
        run = json.loads((out / "run.json").read_text())
        with np.load(out / "series.npz", allow_pickle=False) as npz:
            features, targets = npz["features"].astype(np.float64), npz["targets"].astype(np.float64)
        split = {k: tuple(v) for k, v in run["split"].items()}
        info.update(rows=len(features), split=run["split"], window=run["window"], horizon=run["horizon"],
                    burn_in=run["burn_in"])
        m = Model(key, out, tflite, info, features, targets, split, run["window"], run["horizon"],
                  conv.metadata.warmup_steps, conv.metadata.residuals)
        log(f"  {key}: trained {info['epochs_run']} epochs in {info['train_seconds']:.1f} s (streaming RMSE "
            f"{info['streaming_rmse']:.4g}, persistence {info['persistence_rmse']:.4g}); converted {self.args.quant} "
            f"-> {info['quant']}, parity {'pass' if info['parity_passed'] else 'FAIL'} "
            f"({info['convert_seconds']:.1f} s)")
        self.cache[key] = m
        return m

    # the models the sections share

    def catalogue(self, name: str) -> Model | None:
        from statelite.train import TrainConfig

        a = self.args
        if name == "co2":
            return self.get("co2", lambda out: TrainConfig.co2(out=out, units=a.units, epochs=a.epochs,
                                                                patience=a.patience, seed=a.seed))
        s = by_name(name)
        csv_path = series_csv(s, Path(a.cache))
        if csv_path is None:
            self.failed[name] = s.unavailable() or "unavailable"
            return None
        cols = catalogue_columns(name)

        def config(time_column):
            return lambda out: TrainConfig(
                out=out, data=str(csv_path), targets=cols["targets"], features=cols["features"],
                time_column=time_column, units=a.units, window=s.window, horizon=s.horizon, difference=s.difference,
                season=s.season, fill="interpolate", epochs=a.epochs, patience=a.patience, seed=a.seed)

        model = self.get(name, config(cols["time_column"]))
        why = self.failed.get(name, "")
        if model is None and cols["time_column"] and "expected a time in the" in why:
            # The trainer cannot read this time column (macrodata's '1959Q1' quarters): the column is only kept
            # for plots and the sampling estimate, never a model input, so the series is trained without it.
            del self.failed[name]
            log(f"  {name}: trained again without its time column {cols['time_column']!r}")
            model = self.get(name, config(None))
            if model is not None:
                model.info["time_column_dropped"] = why
        return model

    def art_small_noise(self) -> Model | None:
        from statelite.train import TrainConfig

        a = self.args
        path = NAB_DIR / ART_SMALL_NOISE
        return self.get("art_daily_small_noise", lambda out: TrainConfig(
            out=out, data=str(path), targets=("value",), time_column="timestamp", units=a.units, window=48,
            horizon=3, season=288, epochs=a.epochs, patience=a.patience, seed=a.seed))


def series_csv(s, cache: Path) -> Path | None:
    """The catalogue series' CSV; nab_speed falls back to the NAB copy in this repository when series.py's folder
    (``../shared/data/nab``) is not there."""
    if s.unavailable() is None:
        return s.csv(cache)
    if s.name == "nab_speed":
        return NAB_DIR / "realTraffic" / "speed_t4013.csv"  # header timestamp,value
    return None


def catalogue_columns(name: str) -> dict:
    """time_column / features / targets for a catalogue name, with nab_speed's fallback columns."""
    s = by_name(name)
    if name == "nab_speed" and s.unavailable() is not None:
        return {"time_column": "timestamp", "features": ("value",), "targets": ("value",)}
    return {"time_column": s.time_column, "features": s.features, "targets": s.targets}


# -- the device run --------------------------------------------------------------------------------------------------


def device_run(model: Model, X: np.ndarray, options, want_bounds: bool = False) -> dict:
    """Step the device monitor over every row of ``X`` from a zero state; per-row score, flags, forecasts."""
    from statelite.errors import BadInputError, NonFiniteStepError

    runner = model.device()
    runner.reset()
    mon = runner.monitor(options)
    n = len(X)
    H, T = model.horizon, model.targets.shape[1]
    score = np.full(n, np.nan)
    anomaly = np.zeros(n, bool)
    substituted = np.zeros(n, bool)
    forecast = np.full((n, H, T), np.nan)
    L = len(options.levels)
    lower = np.full((n, L, H, T), np.nan) if want_bounds else None
    upper = np.full((n, L, H, T), np.nan) if want_bounds else None
    refused = 0
    for i in range(n):
        try:
            obs = mon.step(X[i])
        except (BadInputError, NonFiniteStepError):
            # A device refuses such a row and raises the alarm; the monitor and the state stay as they were. The
            # row is then filled with the model's own forecast so the later forecasts keep their times.
            refused += 1
            anomaly[i] = True
            score[i] = math.inf
            mon.fill(1)
            continue
        score[i], anomaly[i], substituted[i] = obs.score, obs.anomaly, obs.substituted
        forecast[i] = obs.forecast
        if want_bounds:
            lower[i], upper[i] = obs.lower, obs.upper
    return {"score": score, "anomaly": anomaly, "substituted": substituted, "forecast": forecast, "lower": lower,
            "upper": upper, "refused": refused}


def persistence_forecasts(y: np.ndarray, horizon: int) -> np.ndarray:
    """``(n, H, T)``: the last value repeated over the horizon."""
    return np.repeat(np.asarray(y, np.float64)[:, None, :], horizon, axis=1)


def future(y: np.ndarray, horizon: int, end: int | None = None) -> np.ndarray:
    """``(n, H, T)``: the value h + 1 rows after each row (NaN past ``end``, default the series' end)."""
    n = len(y)
    end = n if end is None else end
    out = np.full((n, horizon) + y.shape[1:], np.nan)
    for h in range(horizon):
        out[: max(end - h - 1, 0), h] = y[h + 1: end]
    return out


def persistence_calibration(y: np.ndarray, horizon: int, lo: int, hi: int):
    """Calibrate ``statelite.monitor`` on persistence residuals of rows ``[lo, hi)`` (truth inside them too)."""
    from statelite import monitor as M

    f = persistence_forecasts(y, horizon)
    a = future(y, horizon, end=hi)
    return M.calibrate(f[lo:hi], a[lo:hi], source=f"persistence residuals, rows {lo}-{hi}")


def replay_flags(calibration, forecasts, actual, threshold: float, warmup: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from statelite import monitor as M

    out = M.replay(calibration, forecasts, actual, M.MonitorOptions(levels=(), threshold=threshold), warmup)
    return out["anomaly"], out["score"]


# -- event metrics ---------------------------------------------------------------------------------------------------


def ev(flags: np.ndarray, truth, start: int, tolerance: int) -> dict:
    m = E.event_metrics(np.asarray(flags, bool), truth, start=start, tolerance=tolerance)
    return {"tp": m.tp, "fp": m.fp, "fn": m.fn, "events": m.n_events, "hits": m.n_events - m.fp,
            "delays": list(m.delays)}


def pool(items: list[dict]) -> dict:
    """Pooled event figures: counts summed, then precision = detected events on a window / detected events,
    recall = windows detected / windows, F1, mean delay over every detected window."""
    tp = sum(i["tp"] for i in items)
    fn = sum(i["fn"] for i in items)
    fp = sum(i["fp"] for i in items)
    events = sum(i["events"] for i in items)
    hits = sum(i["hits"] for i in items)
    delays = [d for i in items for d in i["delays"]]
    precision = hits / events if events else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"tp": tp, "fn": fn, "fp": fp, "events": events, "precision": precision, "recall": recall, "f1": f1,
            "mean_delay": float(np.mean(delays)) if delays else None}


# -- section 1: injected anomalies -----------------------------------------------------------------------------------


def section_injected(models: Models, args) -> dict:
    from statelite import monitor as M

    names = ["co2"] if args.quick else ["co2", "taylor", "art_daily_small_noise"]
    score_grid, z_grid = args.score_grid, args.z_grid
    out: dict = {"series": {}, "config": {
        "kinds": list(E.KINDS), "repetitions": args.reps, "magnitudes": E.MAGNITUDES,
        "score_grid": list(score_grid), "z_grid": list(z_grid), "default_threshold": M.DEFAULT_THRESHOLD,
        "plans": {k: dataclasses.asdict(v) for k, v in INJECT_PLANS.items() if k in names},
    }}
    detectors = ("statelite", "statelite_sub", "persistence", "zscore")
    for si, name in enumerate(names):
        model = models.art_small_noise() if name == "art_daily_small_noise" else models.catalogue(name)
        if model is None:
            out["series"][name] = {"error": models.failed.get(name, "unavailable")}
            continue
        plan = INJECT_PLANS[name]
        t0 = time.perf_counter()
        y = model.targets[:, 0]
        n, H = len(y), model.horizon
        a, b = model.split["train"][1], model.split["val"][1]
        start = a + model.info["burn_in"]
        scale = E.robust_scale(y[:a])
        tol = H
        cal_p = persistence_calibration(model.targets, H, a, b)
        # counts[detector][threshold][kind] -> list of ev dicts
        counts = {d: {} for d in detectors}
        replay_ok = True
        refused = 0
        substituted = 0
        for ki, kind in enumerate(E.KINDS):
            for rep in range(args.reps):
                rng = np.random.default_rng([args.seed, si, ki, rep])
                placed = E.plan_injections(n, [kind], start, plan.count, plan.length, rng, plan.gap)
                x = y.copy()
                truth = []
                for k, at, length in placed:
                    x, w = E.inject(x, k, at, length, rng, scale)
                    truth.append(w)
                X = x[:, None]

                def add(det, thr, flags):
                    counts[det].setdefault(thr, {}).setdefault(kind, []).append(ev(flags, truth, start, tol))

                # statelite, substitution off: one device run; the forecasts do not depend on the threshold, so
                # the device's own monitor is replayed over them for every other threshold (checked below).
                dev = device_run(model, X, M.MonitorOptions(levels=()))
                refused += dev["refused"]
                flags0, score0 = replay_flags(model.calibration, dev["forecast"], X, M.DEFAULT_THRESHOLD,
                                              model.warmup)
                same = np.array_equal(flags0, dev["anomaly"]) and np.allclose(
                    np.nan_to_num(score0, nan=-1), np.nan_to_num(dev["score"], nan=-1), rtol=1e-9, atol=1e-9)
                replay_ok = replay_ok and same and dev["refused"] == 0
                for thr in score_grid:
                    flags = dev["anomaly"] if thr == M.DEFAULT_THRESHOLD else replay_flags(
                        model.calibration, dev["forecast"], X, thr, model.warmup)[0]
                    add("statelite", thr, flags)
                # statelite, substitution on: what is fed depends on the flags, so one device run per threshold.
                for thr in score_grid:
                    d = device_run(model, X, M.MonitorOptions(levels=(), threshold=thr, substitute=True))
                    refused += d["refused"]
                    if thr == M.DEFAULT_THRESHOLD:
                        substituted += int(d["substituted"][start:].sum())
                    add("statelite_sub", thr, d["anomaly"])
                # persistence forecasts with the same scoring, calibrated on the validation split
                fp_ = persistence_forecasts(X, H)
                for thr in score_grid:
                    add("persistence", thr, replay_flags(cal_p, fp_, X, thr)[0])
                z = E.rolling_zscore(x, plan.z_window, max(2, plan.z_window // 2))
                for thr in z_grid:
                    add("zscore", thr, np.nan_to_num(z, nan=0.0) >= thr)
        res = summarize_injected(counts, detectors, M.DEFAULT_THRESHOLD)
        q50 = float(model.calibration.quantile(0.5)[0, 0])
        res.update(model=model.info, start=start, tolerance=tol, robust_scale=scale, length=plan.length,
                   calibration_median_abs_1step=q50, median_error_over_scale=q50 / scale,
                   q90_error_over_scale=float(model.calibration.quantiles[0, 0, -1]) / scale,
                   tail_over_scale=float(model.calibration.tail[0, 0]) / scale,
                   gap=plan.gap, count=plan.count, z_window=plan.z_window, z_window_what=plan.z_what,
                   replay_matches_device=replay_ok, refused_rows=refused,
                   substituted_rows_at_default=substituted, seconds=round(time.perf_counter() - t0, 1),
                   _counts=counts)
        out["series"][name] = res
        tuned = res["tuned"]
        log(f"  {name}: mean F1 over kinds, tuned: " + ", ".join(
            f"{d} {tuned[d]['mean_f1']:.2f} (@{tuned[d]['threshold']:g})" for d in detectors)
            + f"; statelite at default {res['default']['mean_f1']:.2f} ({res['seconds']:.0f} s)")
    # pooled per kind over the series, each detector at its tuned threshold per series, and statelite's default
    pooled: dict = {}
    for det in detectors:
        pooled[det] = {}
        for kind in E.KINDS:
            items = [i for s in out["series"].values() if "tuned" in s
                     for i in s["_counts"][det][s["tuned"][det]["threshold"]].get(kind, [])]
            pooled[det][kind] = pool(items)
        pooled[det]["mean_f1"] = float(np.mean([pooled[det][k]["f1"] for k in E.KINDS]))
    pooled["statelite_default"] = {}
    for kind in E.KINDS:
        items = [i for s in out["series"].values() if "tuned" in s
                 for i in s["_counts"]["statelite"][M.DEFAULT_THRESHOLD].get(kind, [])]
        pooled["statelite_default"][kind] = pool(items)
    pooled["statelite_default"]["mean_f1"] = float(np.mean([pooled["statelite_default"][k]["f1"] for k in E.KINDS]))
    out["pooled"] = pooled
    for s in out["series"].values():
        s.pop("_counts", None)
    return out


def summarize_injected(counts: dict, detectors, default: float) -> dict:
    """Per detector: the threshold maximising mean F1 over kinds, and the per-kind figures there; statelite's at
    the default threshold too; and the whole curve (mean F1 per threshold)."""
    res: dict = {"tuned": {}, "curve": {}}
    for det in detectors:
        curve = {}
        for thr, per_kind in counts[det].items():
            curve[thr] = float(np.mean([pool(per_kind.get(k, []))["f1"] for k in E.KINDS]))
        best = max(curve, key=lambda t: (curve[t], -abs(t - default)))
        res["curve"][det] = {f"{t:g}": v for t, v in sorted(curve.items())}
        res["tuned"][det] = {"threshold": best, "mean_f1": curve[best],
                             "kinds": {k: pool(counts[det][best].get(k, [])) for k in E.KINDS}}
    d = counts["statelite"][default]
    res["default"] = {"threshold": default, "mean_f1": float(np.mean([pool(d.get(k, []))["f1"] for k in E.KINDS])),
                      "kinds": {k: pool(d.get(k, [])) for k in E.KINDS}}
    d = counts["statelite_sub"][default]
    res["default_sub"] = {"threshold": default,
                          "mean_f1": float(np.mean([pool(d.get(k, []))["f1"] for k in E.KINDS])),
                          "kinds": {k: pool(d.get(k, [])) for k in E.KINDS}}
    return res


# -- section 2: substitution -----------------------------------------------------------------------------------------


def section_substitute(models: Models, args) -> dict:
    from statelite import monitor as M

    names = ["co2"] if args.quick else ["co2", "taylor"]
    out: dict = {"series": {}, "config": {"magnitude_scales": SPIKE_MAGNITUDE, "spikes": args.spikes,
                                          "tolerance_scales": 0.25, "threshold": M.DEFAULT_THRESHOLD}}
    for si, name in enumerate(names):
        model = models.catalogue(name)
        if model is None:
            out["series"][name] = {"error": models.failed.get(name, "unavailable")}
            continue
        t0 = time.perf_counter()
        y = model.targets[:, 0]
        n, H = len(y), model.horizon
        a, b = model.split["train"][1], model.split["val"][1]
        scale = E.robust_scale(y[:a])
        tol = 0.25 * scale
        look = 8 * H  # rows after a spike searched for the last excess error
        gap = max(look + 2 * H, 32)
        first = b + model.window
        count = args.spikes
        while count > 1 and count + gap * (count - 1) > n - look - first:
            count -= 1
        rng = np.random.default_rng([args.seed, 100 + si])
        placed = E.plan_injections(n - look, ["spike"], first, count, 1, rng, gap)
        x = y.copy()
        spikes = []
        for k, at, length in placed:
            x, _ = E.inject(x, k, at, length, rng, scale, magnitude=SPIKE_MAGNITUDE)
            spikes.append(at)
        clean = device_run(model, model.features, M.MonitorOptions(levels=()))
        runs = {sub: device_run(model, x[:, None], M.MonitorOptions(levels=(), substitute=sub))
                for sub in (False, True)}

        def errors(f, k_steps):
            """abs error of the 1-step and H-step forecasts issued after each row against the clean series."""
            e1 = np.full(n, np.nan)
            eH = np.full(n, np.nan)
            e1[: n - 1] = np.abs(f[: n - 1, 0, 0] - y[1:])
            eH[: n - H] = np.abs(f[: n - H, H - 1, 0] - y[H:])
            return e1, eH

        c1, cH = errors(clean["forecast"], H)
        per: dict = {}
        for sub, r in runs.items():
            r1, rH = errors(r["forecast"], H)
            ex1, exH, rec, flagged = [], [], [], 0
            for s in spikes:
                rows = np.arange(s, s + 2 * H)  # forecasts issued after the spike row and the 2H - 1 rows after it
                ex1.append(float(np.mean(r1[rows] - c1[rows])))
                exH.append(float(np.mean(rH[rows] - cH[rows])))
                win = np.arange(s, s + look)
                over = np.flatnonzero(r1[win] > c1[win] + tol)
                rec.append(int(over[-1] + 1) if over.size else 0)  # k: the 1-step forecast of row s + k
                flagged += bool(r["anomaly"][s])
            per["on" if sub else "off"] = {
                "excess_1step_mean": float(np.mean(ex1)), "excess_hstep_mean": float(np.mean(exH)),
                "recovery_rows_mean": float(np.mean(rec)), "recovery_rows_median": float(np.median(rec)),
                "recovery_rows": rec, "excess_1step": ex1, "excess_hstep": exH, "spikes_flagged": flagged,
                "substituted_rows": int(r["substituted"].sum()),
            }
        clean_mae = float(np.nanmean(c1[b:]))
        out["series"][name] = {"model": model.info, "spikes": spikes, "horizon": H, "robust_scale": scale,
                               "tolerance": tol, "lookahead_rows": look, "clean_test_mae_1step": clean_mae,
                               "runs": per, "seconds": round(time.perf_counter() - t0, 1)}
        log(f"  {name}: {len(spikes)} spikes of {SPIKE_MAGNITUDE:g} scales; excess 1-step error over 2H rows "
            f"off {per['off']['excess_1step_mean']:.4g} / on {per['on']['excess_1step_mean']:.4g}, H-step off "
            f"{per['off']['excess_hstep_mean']:.4g} / on {per['on']['excess_hstep_mean']:.4g}; rows to recover off "
            f"{per['off']['recovery_rows_mean']:.1f} / on {per['on']['recovery_rows_mean']:.1f} (clean 1-step MAE "
            f"{clean_mae:.4g})")
    return out


# -- section 3: NAB --------------------------------------------------------------------------------------------------


def nab_config(args, horizon: int) -> dict:
    return {"cell": "gru", "units": 16, "window": NAB_WINDOWS[0], "horizon": horizon, "val_fraction": 0.25,
            "test_fraction": 0.1, "epochs": args.nab_epochs, "patience": 4, "seed": args.seed}


def nab_names(horizon: int, main: int) -> tuple[str, str]:
    """The detector names of statelite at one horizon (substitution on, off): the main horizon's are plain."""
    suffix = "" if horizon == main else f"_h{horizon}"
    return "statelite_sub" + suffix, "statelite" + suffix


def nab_model(models: Models, s, path: Path, cfg: dict, entry: dict) -> Model | None:
    """Train on the probationary rows; when the trainer refuses the window for too few rows, the next smaller one
    of ``NAB_WINDOWS`` (recorded in ``entry``)."""
    from statelite.train import TrainConfig

    model, refusals, key = None, [], ""
    for window in NAB_WINDOWS:
        key = f"nab/h{cfg['horizon']}/{s.name}" + ("" if window == cfg["window"] else f"@window{window}")
        model = models.get(key, lambda out, w=window: TrainConfig(
            out=out, data=str(path), targets=("value",), time_column="timestamp", **{**cfg, "window": w}))
        if model is not None or "window + horizon" not in models.failed.get(key, ""):
            break
        refusals.append({"window": window, "message": models.failed.pop(key)})
    if refusals:
        entry["refused_windows"] = refusals
        entry["window_used"] = model.window if model is not None else None
        log(f"  {s.name} (horizon {cfg['horizon']}): the trainer refused window "
            f"{', '.join(str(r['window']) for r in refusals)} on "
            f"{s.probation} probationary rows; " + (f"window {model.window} used" if model else "no window fits"))
    if model is None:
        entry["error"] = models.failed.get(key) or refusals[-1]["message"]
    return model


def section_nab(models: Models, args) -> dict:
    from statelite import monitor as M

    corpus = N.load_corpus(NAB_DIR)
    if args.quick:
        corpus = [s for s in corpus if s.name in QUICK_NAB]
    main = args.nab_horizons[0]
    cfg = nab_config(args, main)
    score_grid, z_grid = args.score_grid, args.z_grid
    day = 288  # 5-minute rows in a day
    csv_dir = models.work / "nab_probation"
    csv_dir.mkdir(parents=True, exist_ok=True)
    # detector -> threshold -> [per-series detections]
    dets: dict = {name: {} for h in args.nab_horizons for name in nab_names(h, main)}
    dets.update({"persistence": {}, "zscore_day": {}, "zscore_probation": {}})
    per_series = []
    for s in corpus:
        t0 = time.perf_counter()
        p = s.probation
        path = csv_dir / (s.name.replace("/", "_"))
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "value"])
            for t, v in zip(s.timestamps[:p], s.values[:p]):
                w.writerow([t, repr(float(v))])
        X = np.asarray(s.values, np.float64)[:, None]
        entry: dict = {"name": s.name, "rows": len(s), "probation": p, "windows": s.windows, "horizons": {}}
        for H in args.nab_horizons:
            sub_name, off_name = nab_names(H, main)
            he: dict = {}
            entry["horizons"][str(H)] = he
            model = nab_model(models, s, path, nab_config(args, H), he)
            if model is None:
                # a detector that could not be trained stays silent on this series
                for thr in score_grid:
                    for det in (sub_name, off_name):
                        dets[det].setdefault(thr, []).append(np.zeros(len(s), bool))
                continue
            he["model"] = model.info
            cal = model.calibration
            he["calibration_h1"] = {"q50": float(cal.quantile(0.5)[0, 0]), "q90": float(cal.quantiles[0, 0, -1]),
                                    "tail": float(cal.tail[0, 0]), "steps": cal.steps}
            he["robust_scale_probation"] = E.robust_scale(s.values[:p])
            for thr in score_grid:
                d = device_run(model, X, M.MonitorOptions(levels=(), threshold=thr, substitute=True))
                dets[sub_name].setdefault(thr, []).append(d["anomaly"])
                if thr == M.DEFAULT_THRESHOLD:
                    he["flagged_rows_default_sub"] = int(d["anomaly"][p:].sum())
            dev = device_run(model, X, M.MonitorOptions(levels=()))
            for thr in score_grid:
                flags = dev["anomaly"] if thr == M.DEFAULT_THRESHOLD else replay_flags(
                    model.calibration, dev["forecast"], X, thr, model.warmup)[0]
                dets[off_name].setdefault(thr, []).append(flags)
            he["refused_rows"] = dev["refused"]
            he["flagged_rows_default"] = int(dev["anomaly"][p:].sum())
        cal_p = persistence_calibration(X, main, 0, p)
        fp_ = persistence_forecasts(X, main)
        for thr in score_grid:
            dets["persistence"].setdefault(thr, []).append(replay_flags(cal_p, fp_, X, thr)[0])
        zd = np.nan_to_num(E.rolling_zscore(s.values, day, day // 2), nan=0.0)
        zp = np.nan_to_num(E.rolling_zscore(s.values, p, min(p, day // 2)), nan=0.0)
        for thr in z_grid:
            dets["zscore_day"].setdefault(thr, []).append(zd >= thr)
            dets["zscore_probation"].setdefault(thr, []).append(zp >= thr)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        per_series.append(entry)
        he = entry["horizons"][str(main)]
        log(f"  {s.name}: {len(s)} rows, probation {p}, {len(s.windows)} windows; statelite (horizon {main}) "
            f"flagged {he.get('flagged_rows_default_sub', 'n/a')} rows after probation at the default threshold "
            f"with substitution, {he.get('flagged_rows_default', 'n/a')} without ({entry['seconds']:.0f} s)")

    results: dict = {"config": {**cfg, "horizons": list(args.nab_horizons), "score_grid": list(score_grid),
                                "z_grid": list(z_grid), "z_day_rows": day, "profile": dataclasses.asdict(N.STANDARD)},
                     "series": per_series, "detectors": {}}
    for det, by_thr in dets.items():
        curve = {}
        for thr, flags_list in by_thr.items():
            scores = [N.score_series(f, s) for f, s in zip(flags_list, corpus)]
            evs = [ev(f, s.windows, s.probation, 0) for f, s in zip(flags_list, corpus)]
            curve[thr] = {"nab": N.corpus_score(scores), **{k: v for k, v in pool(evs).items()},
                          "per_series": {s.name: {"raw": sc.raw, "tp": sc.tp, "fp": sc.fp, "fn": sc.fn}
                                         for s, sc in zip(corpus, scores)}}
        best_nab = max(curve, key=lambda t: curve[t]["nab"])
        best_f1 = max(curve, key=lambda t: (curve[t]["f1"], curve[t]["nab"]))
        entry = {
            "best_nab": {"threshold": best_nab, **curve[best_nab]},
            "best_f1": {"threshold": best_f1, **curve[best_f1]},
            "curve": {f"{t:g}": {k: v for k, v in c.items() if k != "per_series"} for t, c in sorted(curve.items())},
        }
        if det.startswith("statelite") and M.DEFAULT_THRESHOLD in curve:
            entry["default"] = {"threshold": M.DEFAULT_THRESHOLD, **curve[M.DEFAULT_THRESHOLD]}
        results["detectors"][det] = entry
        log(f"  {det}: NAB score {entry['best_nab']['nab']:.1f} (@{best_nab:g}), event F1 "
            f"{entry['best_f1']['f1']:.3f} (@{best_f1:g})"
            + (f"; at the default threshold NAB {entry['default']['nab']:.1f}, F1 {entry['default']['f1']:.3f}"
               if "default" in entry else ""))
    base = [d for d in results["detectors"] if not d.startswith("statelite")]
    verdict = {}
    for det in [d for d in results["detectors"] if d.startswith("statelite")]:
        me = results["detectors"][det]
        verdict[det] = {
            "nab": {b_: me["best_nab"]["nab"] > results["detectors"][b_]["best_nab"]["nab"] for b_ in base},
            "f1": {b_: me["best_f1"]["f1"] > results["detectors"][b_]["best_f1"]["f1"] for b_ in base},
        }
    results["beats"] = verdict
    return results


# -- section 4: coverage ---------------------------------------------------------------------------------------------


def section_coverage(models: Models, args) -> dict:
    from statelite import monitor as M

    names = ["co2"] if args.quick else list(COVERAGE_SERIES)
    out: dict = {"levels": list(LEVELS), "tolerance": COVERAGE_TOLERANCE, "series": {}}
    for name in names:
        model = models.catalogue(name)
        if model is None:
            out["series"][name] = {"error": models.failed.get(name, "unavailable")}
            continue
        t0 = time.perf_counter()
        b, n = model.split["val"][1], len(model.targets)
        d = device_run(model, model.features, M.MonitorOptions(levels=LEVELS), want_bounds=True)
        cov = M.coverage(d["lower"][b:], d["upper"][b:], model.targets[b:])
        # the same, on the device's forecasts but without the online adaptation (the calibration as converted)
        static = M.replay(model.calibration, d["forecast"], model.targets, M.MonitorOptions(levels=LEVELS,
                                                                                            adapt=False),
                          model.warmup)
        cov_static = M.coverage(static["lower"][b:], static["upper"][b:], model.targets[b:])
        width = float(np.nanmean(d["upper"][b:, 1] - d["lower"][b:, 1]))
        steps = scored_steps(d["lower"][b:], d["upper"][b:], model.targets[b:])
        keras = model.info.get("keras_coverage") or {}
        row = {
            "model": model.info, "test_rows": n - b,
            "device": {f"{lv:g}": float(c) for lv, c in zip(LEVELS, cov)},
            "device_calibrated_only": {f"{lv:g}": float(c) for lv, c in zip(LEVELS, cov_static)},
            "keras_adaptive": keras.get("adaptive"), "keras_calibrated": keras.get("calibrated"),
            "misses": [f"{lv:g}" for lv, c in zip(LEVELS, cov) if abs(c - lv) > COVERAGE_TOLERANCE],
            "mean_width_90": width, "refused_rows": d["refused"], "scored_steps": steps,
            "binomial_se": {f"{lv:g}": math.sqrt(lv * (1 - lv) / max(steps, 1)) for lv in LEVELS},
            "seconds": round(time.perf_counter() - t0, 1),
        }
        out["series"][name] = row
        log(f"  {name}: device coverage " + ", ".join(f"{lv:.0%} -> {c:.1%}" for lv, c in zip(LEVELS, cov))
            + (f" (misses: {', '.join(row['misses'])})" if row["misses"] else " (all within 3 points)"))
    rows = [r for r in out["series"].values() if "device" in r]
    out["summary"] = {
        f"{lv:g}": {
            "mean": float(np.mean([r["device"][f"{lv:g}"] for r in rows])) if rows else None,
            "misses": [k for k, r in out["series"].items() if "device" in r and f"{lv:g}" in r["misses"]],
            "series": len(rows),
        } for lv in LEVELS
    }
    return out


def scored_steps(lower: np.ndarray, upper: np.ndarray, actual: np.ndarray) -> int:
    """How many (forecast row, horizon step, target) triples ``monitor.coverage`` counts at the first level."""
    rows, _, H, _ = lower.shape
    count = 0
    for h in range(min(H, rows - 1)):
        truth = actual[h + 1:]
        ok = np.isfinite(lower[: rows - h - 1, 0, h]) & np.isfinite(upper[: rows - h - 1, 0, h]) & np.isfinite(truth)
        count += int(ok.sum())
    return count


# -- section 5: cost -------------------------------------------------------------------------------------------------


def section_cost(models: Models, args) -> dict:
    from statelite import monitor as M

    model = models.catalogue("co2")
    if model is None:
        return {"error": models.failed.get("co2", "unavailable")}
    runner = model.device()
    X = model.features
    rows = len(X)

    def bare() -> float:
        runner.reset()
        step = runner.step
        t = time.perf_counter()
        for x in X:
            step(x)
        return (time.perf_counter() - t) / rows

    def monitored() -> float:
        runner.reset()
        step = runner.monitor(M.MonitorOptions(levels=(0.9,))).step
        t = time.perf_counter()
        for x in X:
            step(x)
        return (time.perf_counter() - t) / rows

    bare(), monitored()  # warm-up
    a, b_ = [], []
    for r in range(args.cost_reps):
        if r % 2:
            b_.append(monitored())
            a.append(bare())
        else:
            a.append(bare())
            b_.append(monitored())
    ratios = [m / s for s, m in zip(a, b_)]
    out = {
        "model": model.info, "rows_per_repetition": rows, "repetitions": args.cost_reps,
        "step_us_median": 1e6 * float(np.median(a)), "monitor_step_us_median": 1e6 * float(np.median(b_)),
        "ratio_of_medians": float(np.median(b_) / np.median(a)), "ratio_median_paired": float(np.median(ratios)),
        "step_us": [1e6 * v for v in a], "monitor_step_us": [1e6 * v for v in b_],
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    log(f"  co2 ({model.info['quant']}): step {out['step_us_median']:.1f} us, monitor step "
        f"{out['monitor_step_us_median']:.1f} us: {out['ratio_of_medians']:.2f}x")
    return out


# -- report ----------------------------------------------------------------------------------------------------------

DET_NAMES = {
    "statelite": "statelite (substitution off)",
    "statelite_sub": "statelite (substitution on)",
    "persistence": "persistence + same scoring",
    "zscore": "rolling z-score",
    "zscore_day": "rolling z-score (1 day)",
    "zscore_probation": "rolling z-score (probation rows)",
    "statelite_default": "statelite at the default threshold",
}


def det_name(det: str) -> str:
    """The report's name of a detector key (``statelite_sub_h2``: statelite with substitution, horizon 2)."""
    base, _, h = det.partition("_h")
    if h.isdigit() and base in DET_NAMES:
        return DET_NAMES[base].replace("statelite (", f"statelite, horizon {h} (")
    return DET_NAMES.get(det, det)


def _series_rows(results: dict) -> list[str]:
    L = ["| series | what | source | licence |", "| --- | --- | --- | --- |"]
    seen = set()
    for name in results.get("series_used", []):
        if name in seen:
            continue
        seen.add(name)
        if name == "art_daily_small_noise":
            L.append(f"| art_daily_small_noise | NAB {ART_SMALL_NOISE}: synthetic daily cycle with small noise, "
                     f"5-minute rows, no anomaly | {NAB_SOURCE} | {NAB_LICENCE} |")
            continue
        if name == "nab":
            L.append(f"| NAB subset (18 files) | benchmarks/data/nab: artificialNoAnomaly, artificialWithAnomaly, "
                     f"realTraffic, with the labelled windows | {NAB_SOURCE} | {NAB_LICENCE} |")
            continue
        s = by_name(name)
        licence = s.licence
        if name == "nab_speed":
            licence = NAB_LICENCE
        L.append(f"| {name} | {s.title} | {s.source} | {licence} |")
    return L


def write_markdown(results: dict, path: Path) -> None:
    cfg = results["config"]
    mach = results["machine"]
    L = [
        "# Anomaly detection and prediction intervals on the device",
        "",
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}; wall time {results['elapsed_s']:.0f} s; source {results['source']}  ",
        f"Machine: {mach['cpu']} ({mach['cores']} cores, {mach['machine']}), load average "
        f"{mach['load_average_at_start']} at start, {mach.get('load_average_at_end')} at end  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v),
        "",
        (f"Every model is trained with `statelite.train.train` (seed {cfg['seed']}, at most {cfg['epochs']} epochs, "
         f"patience {cfg['patience']}, {cfg['units']} GRU units unless said otherwise), converted with "
         f"`statelite.convert.convert` (quant `{cfg['quant']}`: the smallest integer model that holds parity) and run "
         "on the device runtime, `statelite.StatefulRunner(path).monitor(MonitorOptions(...))`, row by row over the "
         "whole series from its first row. Scores are `-log10` of the row's p-value; statelite's default threshold "
         f"is {results.get('default_threshold')}."),
        "",
    ]
    L += _md_summary(results)
    if results.get("models"):
        L += ["## Models", "", "| model | rows | train / val / test split | window / horizon | epochs (best) | "
              "streaming RMSE | persistence RMSE | quant (auto chose) | parity | train s | convert s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for key, m in results["models"].items():
            sp = m.get("split", {})
            L.append(
                f"| {key} | {m.get('rows', '-')} | {sp.get('train', ['-', '-'])[1]} / "
                f"{sp.get('val', ['-', '-'])[1]} / {m.get('rows', '-')} | {m.get('window')} / {m.get('horizon')} | "
                f"{m.get('epochs_run')} ({m.get('best_epoch')}) | {_fmt(m.get('streaming_rmse'), '.4g')} | "
                f"{_fmt(m.get('persistence_rmse'), '.4g')} | {m.get('quant')} | "
                f"{'pass' if m.get('parity_passed') else 'FAIL'} | {_fmt(m.get('train_seconds'), '.1f')} | "
                f"{_fmt(m.get('convert_seconds'), '.1f')} |")
        if results.get("failed_models"):
            L += ["", "Failed: " + "; ".join(f"{k}: {v}" for k, v in results["failed_models"].items())]
        L.append("")

    inj = results.get("injected")
    if inj:
        L += _md_injected(inj)
    sub = results.get("substitute")
    if sub:
        L += _md_substitute(sub)
    nab = results.get("nab")
    if nab:
        L += _md_nab(nab)
    cov = results.get("coverage")
    if cov:
        L += _md_coverage(cov)
    cost = results.get("cost")
    if cost:
        L += _md_cost(cost)
    L += ["## Series and licences", ""] + _series_rows(results) + [""]
    path.write_text("\n".join(L) + "\n")


def _md_summary(results: dict) -> list[str]:
    """The headline figures of every section that ran, computed from the tables below."""
    L = ["## Summary", ""]
    inj = results.get("injected")
    if inj and inj.get("pooled"):
        p = inj["pooled"]
        L.append("- **Injected anomalies** (mean event F1 over the six kinds, pooled over "
                 f"{', '.join(k for k, v in inj['series'].items() if 'tuned' in v)}): statelite "
                 f"{p['statelite']['mean_f1']:.3f} tuned ({p['statelite_default']['mean_f1']:.3f} at the default "
                 f"threshold), with substitution {p['statelite_sub']['mean_f1']:.3f}; persistence + same scoring "
                 f"{p['persistence']['mean_f1']:.3f}; rolling z-score {p['zscore']['mean_f1']:.3f}.")
    sub = results.get("substitute")
    if sub:
        parts = []
        for name, v in sub["series"].items():
            if "runs" in v:
                off, on = v["runs"]["off"], v["runs"]["on"]
                parts.append(f"{name}: excess 1-step error {off['excess_1step_mean']:.3g} -> "
                             f"{on['excess_1step_mean']:.3g}, rows to recover {off['recovery_rows_mean']:.1f} -> "
                             f"{on['recovery_rows_mean']:.1f}")
        L.append("- **Substitution** (off -> on, after single spikes): " + "; ".join(parts) + ".")
    nab = results.get("nab")
    if nab:
        d = nab["detectors"]
        L.append("- **NAB** (standard profile, best corpus threshold; best event F1): " + "; ".join(
            f"{det_name(k)} {v['best_nab']['nab']:.1f}, F1 {v['best_f1']['f1']:.3f}" for k, v in d.items()) + ".")
        for det in ("statelite", "statelite_sub"):
            if det in nab["beats"]:
                v = nab["beats"][det]
                lost = [f"{det_name(b)} on {m.upper() if m == 'nab' else 'F1'}" for b in v["nab"] for m in ("nab", "f1")
                        if not v[m][b]]
                L.append(f"  - {det_name(det)} " + ("beats every baseline on both." if not lost else
                                                     "does NOT beat " + ", ".join(lost) + "."))
    cov = results.get("coverage")
    if cov and cov.get("summary"):
        L.append("- **Coverage** of the device's intervals on the test splits: " + "; ".join(
            f"{float(lv):.0%} -> mean {100 * e['mean']:.1f}% ({len(e['misses'])}/{e['series']} off by more than 3 "
            "points" + (f": {', '.join(e['misses'])}" if e["misses"] else "") + ")"
            for lv, e in cov["summary"].items() if e["mean"] is not None) + ".")
    cost = results.get("cost")
    if cost and "error" not in cost:
        L.append(f"- **Cost**: a monitored step (90% interval and score) takes {cost['ratio_of_medians']:.2f}x a "
                 f"plain step ({cost['monitor_step_us_median']:.1f} against {cost['step_us_median']:.1f} us here).")
    L.append("")
    return L


def _md_injected(inj: dict) -> list[str]:
    c = inj["config"]
    L = [
        "## Injected anomalies",
        "",
        ("**How measured.** One model per clean series (trained once on the clean data). For each kind of "
         f"`benchmarks/events.py` ({', '.join(c['kinds'])}; magnitudes in robust scales of the training split: "
         f"{', '.join(f'{k} {v:g}' for k, v in c['magnitudes'].items())}; stuck holds the first row's value) and "
         f"each of {c['repetitions']} seeded repetitions, several non-overlapping anomalies of that kind are planted "
         "(`plan_injections`, `inject`) in the rows after the training split plus the model's warm-up "
         "(`split.train[1] + burn_in` from run.json); only those rows are scored. The device monitor runs over the "
         "whole injected series; flags are `obs.anomaly`. Event metrics (`event_metrics`): a window is detected when a "
         "flagged row lies in it or up to the model's horizon after it (the tolerance); precision is detected events "
         "touching a window / detected events; delay is rows from the window's start to the first flag. Per kind the "
         "counts of every repetition are pooled. Detectors: statelite with substitution off (one device run; the "
         "forecasts do not depend on the threshold, so other thresholds replay the device's own forecasts through "
         "`statelite.monitor.replay`, checked identical to the device at the default threshold) and on (one device "
         "run per threshold: what the model is fed depends on the flags); persistence (the last value repeated over "
         "the horizon) with the same scoring, calibrated by `monitor.calibrate` on its validation-split residuals and "
         "replayed with `monitor.replay`; a rolling z-score of the raw value (window below, half of it as the least "
         f"history). **Thresholds**: statelite at its default ({c['default_threshold']}); and for every detector the "
         f"threshold from a grid (scores {', '.join(f'{t:g}' for t in c['score_grid'])}; z "
         f"{', '.join(f'{t:g}' for t in c['z_grid'])}) that maximises its mean F1 over the six kinds on that series "
         "(*tuned*, chosen on the same data it is scored on: an upper bound for every detector alike). *1-step error / "
         "scale*: the model's calibration (validation split) of its absolute 1-step residual, median, 90th "
         "percentile and exponential tail scale, over the robust scale the magnitudes are measured in: the larger "
         "the 90th percentile and the tail, the more an anomaly of a given magnitude hides in the model's ordinary "
         "error (an anomaly of m scales scores about -log10(0.1 exp(-(m - q90) / tail)) when m > q90)."),
        "",
        "### Per series: mean F1 over kinds",
        "",
        "| series | rows scored | anomalies per kind | 1-step error / scale: median, 90%, tail | z window | "
        "statelite default | "
        "statelite tuned | statelite + substitution tuned | persistence tuned | z-score tuned |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in inj["series"].items():
        if "error" in s:
            L.append(f"| {name} | error: {s['error']} | | | | | | | | |")
            continue
        t = s["tuned"]
        rows = s["model"]["rows"] - s["start"]
        L.append(
            f"| {name} | {rows} | {s['count'] * c['repetitions']} x {s['length']} rows | "
            f"{s['median_error_over_scale']:.2f}, {s['q90_error_over_scale']:.2f}, {s['tail_over_scale']:.2f} | "
            f"{s['z_window_what']} | "
            f"{s['default']['mean_f1']:.3f} | {t['statelite']['mean_f1']:.3f} (@{t['statelite']['threshold']:g}) | "
            f"{t['statelite_sub']['mean_f1']:.3f} (@{t['statelite_sub']['threshold']:g}) | "
            f"{t['persistence']['mean_f1']:.3f} (@{t['persistence']['threshold']:g}) | "
            f"{t['zscore']['mean_f1']:.3f} (@{t['zscore']['threshold']:g}) |")
    L += ["", "### Per series and kind: F1 (precision / recall, mean delay in rows)", ""]
    dets = ("statelite", "statelite_sub", "persistence", "zscore")
    L += ["| series | kind | statelite default | " + " | ".join(f"{DET_NAMES[d]} tuned" for d in dets) + " |",
          "| --- | --- | --- | " + " | ".join("---" for _ in dets) + " |"]
    for name, s in inj["series"].items():
        if "error" in s:
            continue
        for kind in c["kinds"]:
            cells = [_ev_cell(s["default"]["kinds"][kind])]
            cells += [_ev_cell(s["tuned"][d]["kinds"][kind]) for d in dets]
            L.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    p = inj["pooled"]
    L += ["", "### Pooled per kind (every series; each detector at its tuned threshold per series)", "",
          "| kind | statelite default | " + " | ".join(f"{DET_NAMES[d]} tuned" for d in dets) + " |",
          "| --- | --- | " + " | ".join("---" for _ in dets) + " |"]
    for kind in c["kinds"]:
        L.append(f"| {kind} | {_ev_cell(p['statelite_default'][kind])} | "
                 + " | ".join(_ev_cell(p[d][kind]) for d in dets) + " |")
    L.append(f"| **mean F1** | **{p['statelite_default']['mean_f1']:.3f}** | "
             + " | ".join(f"**{p[d]['mean_f1']:.3f}**" for d in dets) + " |")
    L += ["", "Refused rows (a value the model refuses counts as a flag; none expected): " + ", ".join(
        f"{k} {v['refused_rows']}" for k, v in inj["series"].items() if "refused_rows" in v) + ". Replay identical to "
        "the device at the default threshold: " + ", ".join(
        f"{k} {'yes' if v['replay_matches_device'] else 'NO'}" for k, v in inj["series"].items()
        if "replay_matches_device" in v) + ".", ""]
    return L


def _ev_cell(e: dict) -> str:
    return (f"{e['f1']:.2f} ({e['precision']:.2f} / {e['recall']:.2f}, "
            f"{_fmt(e['mean_delay'], '.1f')})")


def _md_substitute(sub: dict) -> list[str]:
    c = sub["config"]
    L = [
        "## Anomalies kept out of the state",
        "",
        (f"**How measured.** Single spikes of {c['magnitude_scales']:g} robust scales (seeded signs and places, at "
         "least 8 horizons apart) are planted in the test rows of each series. The device monitor runs over the clean "
         "series and over the spiked one with `MonitorOptions(substitute=False)` and `substitute=True` (default "
         f"threshold {c['threshold']:g}). For each spike at row s, the forecasts issued after rows s .. s + 2H - 1 "
         "(the spike row and the 2H - 1 rows after it): their 1-step forecast (of rows s + 1 .. s + 2H) and H-step "
         "forecast are compared with the clean series; *excess* is the mean absolute error minus the clean run's at "
         "the same rows (in the series' units). *Rows to recover*: the last k in 1 .. 8H whose 1-step forecast of "
         f"row s + k is off by more than the clean run's error + {c['tolerance_scales']:g} robust scales (0: never "
         "off). Means over the spikes."),
        "",
        "| series | spikes (flagged off / on) | H | clean 1-step MAE (test) | excess 1-step, off | on | excess H-step, "
        "off | on | rows to recover, off | on |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in sub["series"].items():
        if "error" in s:
            L.append(f"| {name} | error: {s['error']} | | | | | | | | |")
            continue
        off, on = s["runs"]["off"], s["runs"]["on"]
        L.append(
            f"| {name} | {len(s['spikes'])} ({off['spikes_flagged']} / {on['spikes_flagged']}) | {s['horizon']} | "
            f"{s['clean_test_mae_1step']:.4g} | {off['excess_1step_mean']:.4g} | {on['excess_1step_mean']:.4g} | "
            f"{off['excess_hstep_mean']:.4g} | {on['excess_hstep_mean']:.4g} | "
            f"{off['recovery_rows_mean']:.1f} (median {off['recovery_rows_median']:g}) | "
            f"{on['recovery_rows_mean']:.1f} (median {on['recovery_rows_median']:g}) |")
    L.append("")
    return L


def _md_nab(nab: dict) -> list[str]:
    c = nab["config"]
    L = [
        "## NAB",
        "",
        ("**How measured.** NAB's protocol: a detector learns only from each series' probationary period (the first "
         "15% of rows, at most 750: `probationary_rows`) and is then scored on the whole series. statelite: the "
         f"probationary rows written to a CSV and a small model trained on them only ({c['cell'].upper()} "
         f"{c['units']} units, window {c['window']} (smaller when the trainer refuses it for too few rows), horizon "
         f"{c['horizon']}, val_fraction {c['val_fraction']}, test_fraction {c['test_fraction']}, at most "
         f"{c['epochs']} epochs, patience {c['patience']}), converted, then the device monitor over the whole series "
         "from its first row, with substitution on (the recommended setting for detection; one device run per "
         "threshold) and off (one run, other thresholds replayed on its forecasts). "
         + (f"The same with horizon {', '.join(str(h) for h in c['horizons'][1:])} is reported beside it (the main "
            f"horizon, {c['horizon']}, was chosen between these on this corpus: a choice on the scored data that "
            "favours statelite). " if len(c.get('horizons', [])) > 1 else "")
         + "Persistence: the same scoring calibrated on the probationary rows' persistence residuals (horizon "
         f"{c['horizon']}), replayed over the series. Rolling z-score of the raw value over the preceding "
         f"{c['z_day_rows']} rows (one day of 5-minute rows) or over the preceding probation-length rows (at least "
         f"{c['z_day_rows'] // 2} rows of history). Detections: rows whose score reaches the threshold after the "
         "probationary period. NAB standard profile (tp 1, fp 0.11, fn 1; `benchmarks/nab.py`), normalised over the "
         "corpus (0 = never firing, 100 = perfect); one threshold per detector for the whole corpus, swept over a "
         "grid and the best reported, as NAB's optimiser does. Event F1: `event_metrics` against the labelled "
         "windows (no tolerance), counts pooled over the corpus; its best threshold is reported separately."),
        "",
        "| detector | NAB score (threshold) | F1 at that threshold | best event F1 (threshold) | precision / recall "
        "there | at statelite's default threshold: NAB / F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for det, d in nab["detectors"].items():
        bn, bf = d["best_nab"], d["best_f1"]
        default = f"{d['default']['nab']:.1f} / {d['default']['f1']:.3f}" if "default" in d else "-"
        L.append(f"| {det_name(det)} | {bn['nab']:.1f} ({bn['threshold']:g}) | {bn['f1']:.3f} | "
                 f"{bf['f1']:.3f} ({bf['threshold']:g}) | {bf['precision']:.3f} / {bf['recall']:.3f} | {default} |")
    L += [""]
    for det, v in nab["beats"].items():
        L.append(f"- {det_name(det)} beats " + "; ".join(
            f"{det_name(b)}: NAB {'yes' if v['nab'][b] else 'NO'}, F1 {'yes' if v['f1'][b] else 'NO'}"
            for b in v["nab"]))
    main = str(c["horizon"])
    z = "zscore_probation"
    L += ["", f"Per series, each detector at its best NAB threshold (statelite horizon {main}); raw NAB score, then "
          "windows detected / detected rows outside every window / windows missed:", "",
          "| series | rows | probation | windows | statelite, substitution on | off | rolling z-score (probation "
          "rows) | flagged rows at the default threshold (on / off) | model |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    bests = {d: nab["detectors"][d]["best_nab"]["per_series"] for d in ("statelite_sub", "statelite", z)
             if d in nab["detectors"]}

    def cell(d, name):
        b = bests.get(d, {}).get(name)
        return "-" if b is None else f"{b['raw']:.2f}: {b['tp']} / {b['fp']} / {b['fn']}"

    for s in nab["series"]:
        he = s["horizons"].get(main, {})
        if "model" in he:
            m = he["model"]
            if m["persistence_rmse"] > 1e-6 * max(m["streaming_rmse"], 1e-12):
                versus = f"streaming / persistence RMSE {m['streaming_rmse'] / m['persistence_rmse']:.2f}"
            else:  # a noiseless series: persistence is (nearly) exact on the test split
                versus = f"streaming RMSE {m['streaming_rmse']:.3g}, persistence {m['persistence_rmse']:.2g}"
            model = f"{m['quant']}, window {m['window']}, {versus}"
        else:
            model = he.get("error", "-")
        L.append(f"| {s['name']} | {s['rows']} | {s['probation']} | {len(s['windows'])} | "
                 f"{cell('statelite_sub', s['name'])} | {cell('statelite', s['name'])} | {cell(z, s['name'])} | "
                 f"{he.get('flagged_rows_default_sub', '-')} / {he.get('flagged_rows_default', '-')} | {model} |")
    L.append("")
    return L


def _md_coverage(cov: dict) -> list[str]:
    L = [
        "## Interval coverage",
        "",
        ("**How measured.** Each series trained with the catalogue's options (`benchmarks/series.py`), converted, and "
         "the device monitor run with `levels=(0.8, 0.9, 0.95)` over the whole series from its first row (its online "
         "corrections adapt from the first row on). Coverage: `statelite.monitor.coverage` of the device's "
         "lower/upper bounds against the actual targets, over the forecasts made at test-split rows whose truth is "
         "known (every horizon step and target). *Calibrated only*: the same device forecasts with the online "
         "correction off (`adapt=False`). Keras: `metrics.test.coverage` of run.json (the trainer replays the Keras "
         f"forecasts from the first test row). A miss (**bold**) is more than {cov['tolerance'] * 100:.0f} points from "
         "nominal. The binomial standard error at 90% over the scored forecast steps is a lower bound on the noise "
         "of the figure (neighbouring forecasts overlap, so the steps are not independent): on the short series a "
         "few points either way is sampling noise."),
        "",
        "| series | test rows (forecast steps scored) | device 80% | 90% | 95% | binomial SE at 90% | calibrated only "
        "80 / 90 / 95 | Keras adaptive 80 / 90 / 95 | Keras calibrated 80 / 90 / 95 | quant |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def pc(v):
        return "n/a" if v is None else f"{100 * v:.1f}"

    for name, r in cov["series"].items():
        if "error" in r:
            L.append(f"| {name} | error: {r['error']} | | | | | | | | |")
            continue
        cells = []
        for lv in cov["levels"]:
            v = r["device"][f"{lv:g}"]
            text = pc(v)
            cells.append(f"**{text}**" if f"{lv:g}" in r["misses"] else text)
        k_a, k_c = r.get("keras_adaptive") or {}, r.get("keras_calibrated") or {}
        note = " (trained without its time column: the trainer refuses it)" if r["model"].get(
            "time_column_dropped") else ""
        L.append(
            f"| {name}{note} | {r['test_rows']} ({r['scored_steps']}) | " + " | ".join(cells)
            + f" | {pc(r['binomial_se']['0.9'])} | "
            + " / ".join(pc(r["device_calibrated_only"][f"{lv:g}"]) for lv in cov["levels"]) + " | "
            + " / ".join(pc(k_a.get(f"{lv:g}")) for lv in cov["levels"]) + " | "
            + " / ".join(pc(k_c.get(f"{lv:g}")) for lv in cov["levels"]) + f" | {r['model']['quant']} |")
    s = cov["summary"]
    L += ["", "| level | mean device coverage | misses (> 3 points) |", "| --- | --- | --- |"]
    for lv in cov["levels"]:
        e = s[f"{lv:g}"]
        L.append(f"| {lv:.0%} | {pc(e['mean'])} | {len(e['misses'])}/{e['series']}"
                 + (f" ({', '.join(e['misses'])})" if e["misses"] else "") + " |")
    L.append("")
    return L


def _md_cost(cost: dict) -> list[str]:
    if "error" in cost:
        return ["## Device cost", "", f"error: {cost['error']}", ""]
    return [
        "## Device cost",
        "",
        (f"**How measured.** The co2 model ({cost['model']['quant']}): `runner.step(x)` against "
         "`runner.monitor(MonitorOptions(levels=(0.9,))).step(x)` (a 90% interval and the anomaly score), each "
         f"over the same {cost['rows_per_repetition']} rows from a reset state, {cost['repetitions']} interleaved "
         "repetitions (order alternating); per repetition the mean time per step, then the median over "
         "repetitions. The machine is shared: the ratio is the figure, not the microseconds."),
        "",
        "| step (median us) | monitor step (median us) | ratio | ratio, median of paired repetitions |",
        "| --- | --- | --- | --- |",
        f"| {cost['step_us_median']:.1f} | {cost['monitor_step_us_median']:.1f} | {cost['ratio_of_medians']:.2f} | "
        f"{cost['ratio_median_paired']:.2f} |",
        "",
    ]


# -- main ------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: co2 only, 2 NAB series, 2 epochs, 1 repetition, small threshold grids")
    ap.add_argument("--out", default=None, help="where anomaly.md and anomaly.json go (default benchmarks/results; "
                    "with --quick a temporary folder)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated among {', '.join(SECTIONS)}")
    ap.add_argument("--quant", default="auto", help="conversion mode (default auto)")
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--nab-epochs", type=int, default=15)
    ap.add_argument("--nab-horizons", default="1,2", help="NAB model horizons; the first is the main one, the others "
                    "are reported beside it")
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3, help="repetitions per kind in the injected section")
    ap.add_argument("--spikes", type=int, default=8, help="spikes per series in the substitute section")
    ap.add_argument("--cost-reps", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the catalogue series' CSVs are written")
    ap.add_argument("--work", default=None, help="keep run folders and models here (default: a temporary folder)")
    args = ap.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        ap.error(f"expected sections among {', '.join(SECTIONS)}, Received: {', '.join(bad)}")
    args.score_grid, args.z_grid = SCORE_GRID, Z_GRID
    args.nab_horizons = [int(h) for h in args.nab_horizons.split(",") if h.strip()]
    if args.quick:
        args.nab_horizons = args.nab_horizons[:1]
        args.epochs, args.nab_epochs, args.reps, args.cost_reps, args.spikes = 2, 2, 1, 3, 4
        args.score_grid, args.z_grid = QUICK_SCORE_GRID, QUICK_Z_GRID
    return args


def main(argv=None) -> int:
    started = time.time()
    args = parse_args(argv)
    command = " ".join(["python", "benchmarks/anomaly.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="statelite_anomaly_")) if args.quick else ROOT / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message=r"[\s\S]*tf.lite.Interpreter is deprecated")
    from statelite import monitor as M

    own_work = args.work is None
    work = Path(tempfile.mkdtemp(prefix="statelite_anomaly_work_")) if own_work else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(("statelite", "numpy", "ai-edge-litert", "tensorflow", "keras", "statsmodels",
                              "pmdarima")),
        "source": source_state(),
        "config": {"quick": args.quick, "sections": args.sections, "quant": args.quant, "units": args.units,
                   "epochs": args.epochs, "nab_epochs": args.nab_epochs, "patience": args.patience,
                   "reps": args.reps, "spikes": args.spikes, "cost_reps": args.cost_reps, "seed": args.seed,
                   "score_grid": list(args.score_grid), "z_grid": list(args.z_grid)},
        "default_threshold": M.DEFAULT_THRESHOLD,
        "series_used": [],
    }
    log(f"sections {', '.join(args.sections)}; models in {work}")
    models = Models(work, args)
    runners = {
        "injected": section_injected, "substitute": section_substitute, "nab": section_nab,
        "coverage": section_coverage, "cost": section_cost,
    }
    used = {"injected": ["co2"] if args.quick else ["co2", "taylor", "art_daily_small_noise"],
            "substitute": ["co2"] if args.quick else ["co2", "taylor"], "nab": ["nab"],
            "coverage": ["co2"] if args.quick else list(COVERAGE_SERIES), "cost": ["co2"]}
    try:
        for name in args.sections:
            t0 = time.perf_counter()
            log(f"[{name}]")
            results[name] = runners[name](models, args)
            results[name]["seconds"] = round(time.perf_counter() - t0, 1)
            results["series_used"] += used[name]
            log(f"[{name}] done in {results[name]['seconds']:.0f} s")
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    results["models"] = {k: m.info for k, m in models.cache.items()}
    results["failed_models"] = models.failed
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["elapsed_s"] = round(time.time() - started, 1)
    (out / "anomaly.json").write_text(json.dumps(_clean(results), indent=2) + "\n")
    write_markdown(results, out / "anomaly.md")
    log(f"wrote {out / 'anomaly.md'} and {out / 'anomaly.json'} ({results['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
