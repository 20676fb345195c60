"""The golden trace: one module writes it (the converter) and reads it (``statelite verify``), with one version.

``<model stem>.golden.npz`` beside the model holds raw input rows ``x`` (steps, features), the Keras model's raw
forecasts for them ``y_keras`` (steps, horizon, targets), ``target_scale`` (targets,) that errors are divided by,
the tolerances ``tol_max_abs`` and ``tol_rmse`` (normalised), ``quant``, ``model_sha256`` (the SHA-256 of the whole
model file it was written with) and ``format_version``. numpy only, no pickles.

Version 2 adds, for a model with a residual calibration whose targets are among its features, what the device's
monitor (``statelite.monitor``, default options) makes of the Keras forecasts over the same rows: ``monitor_levels``
(levels,), the interval bounds ``monitor_lower``/``monitor_upper`` (steps, levels, horizon, targets) and the anomaly
scores ``monitor_score`` (steps,), -1 where a row is not scored (warm-up). Version 1 files are read without them.

Optional in version 2 (older readers skip them; they cannot load the format-3 models that need them): ``key``, the
series a panel model's trace was made from (its scaler, and its calibration's units), and ``times`` (steps,), the
time cells of a calendar model's rows as text, from which its calendar inputs are computed.

Reading checks everything before use: the file is a regular file under ``MAX_GOLDEN_BYTES``; every zip member is a
known key of bounded size; every array has the dtype, shape and finiteness it must have. Any problem is one
``GoldenFileError`` (a ``ModelFormatError``: the CLI exits 2 with one line).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import BadInputError, GoldenFileError, IncompatibleModelError
from .files import read_bounded

GOLDEN_FORMAT_VERSION = 2
# A golden trace is a few hundred rows (kilobytes); anything this large is the wrong file.
MAX_GOLDEN_BYTES = 64 * 1024 * 1024
_KEYS = ("format_version", "model_sha256", "x", "y_keras", "target_scale", "tol_max_abs", "tol_rmse")
_OPTIONAL = ("quant", "monitor_levels", "monitor_lower", "monitor_upper", "monitor_score", "key", "times")
_MAX_KEY_CHARS = 256
_MAX_TIME_CHARS = 64
_UNSCORED = -1.0  # monitor_score of a row not scored (NaN is refused in a golden trace)


def golden_path_for(model_path) -> Path:
    """Where the converter writes a model's golden trace: ``<stem>.golden.npz`` beside it."""
    p = Path(model_path)
    return p.with_name(p.stem + ".golden.npz")


@dataclasses.dataclass(frozen=True)
class Golden:
    """A golden trace: raw inputs ``x`` (steps, features), Keras forecasts ``y`` (steps, horizon, targets), float64."""

    path: str
    model_sha256: str
    quant: str
    x: np.ndarray
    y: np.ndarray
    target_scale: np.ndarray
    tol_max_abs: float
    tol_rmse: float
    format_version: int = GOLDEN_FORMAT_VERSION
    # {"levels", "lower", "upper", "score"} (score NaN where not scored), or None (version 1, or no calibration)
    monitor: dict | None = None
    key: str | None = None  # a panel model's series the trace was made from (None: the global scaler)
    times: tuple[str, ...] | None = None  # a calendar model's time cells, one per row


def monitor_trace(metadata, x: np.ndarray, y: np.ndarray, levels=None, key: str | None = None) -> dict | None:
    """What the device's monitor makes of forecasts ``y`` for rows ``x`` of one stream: default options, or the
    interval ``levels`` given (``verify`` uses the levels the golden trace recorded).

    The converter records it for the Keras forecasts; ``verify`` recomputes it for the device's and compares. A
    panel model's calibration is taken in the units of series ``key`` (``monitor.calibration_for``).

    Returns:
        ``{"levels", "lower", "upper", "score"}``, or None when the model has no residual calibration or its
        targets are not among its features.
    """
    from .monitor import MonitorOptions, calibration_for, replay, target_columns

    tidx = target_columns(metadata)
    if metadata.residuals is None or tidx is None:
        return None
    options = MonitorOptions() if levels is None else MonitorOptions(levels=tuple(float(v) for v in levels))
    out = replay(calibration_for(metadata, key), y, np.asarray(x, np.float64)[:, tidx], options,
                 metadata.warmup_steps)
    return {"levels": np.asarray(options.levels), "lower": out["lower"], "upper": out["upper"], "score": out["score"]}


def write_golden(path, model_bytes: bytes, metadata, x: np.ndarray, y: np.ndarray, scale, tol: dict,
                 monitor: dict | None = None, key: str | None = None, times=None) -> None:
    """Write a golden trace atomically (a temporary file beside it, then renamed over it).

    Args:
        path: the ``.golden.npz`` to write.
        model_bytes: the model file's bytes exactly as written (``model_sha256`` is their SHA-256).
        metadata: the model's ``ModelMetadata`` (its ``quant`` is recorded).
        x: raw input rows (steps, features).
        y: the Keras model's raw forecasts (steps, horizon, targets).
        scale: per-target scale errors are divided by.
        tol: ``{"max_abs": ..., "rmse": ...}``, normalised.
        monitor: ``monitor_trace`` of the same rows and forecasts, or None.
        key: for a panel model, the series the rows come from (``verify`` scales them with its scaler).
        times: for a calendar model, each row's time cell as text (steps of them).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    extra = {}
    if monitor is not None:
        extra = {
            "monitor_levels": np.asarray(monitor["levels"], np.float64),
            "monitor_lower": np.asarray(monitor["lower"], np.float64),
            "monitor_upper": np.asarray(monitor["upper"], np.float64),
            "monitor_score": np.where(np.isnan(monitor["score"]), _UNSCORED, monitor["score"]),
        }
    if key is not None:
        extra["key"] = np.str_(key)
    if times is not None:
        extra["times"] = np.asarray([str(t) for t in times], dtype=np.str_)
    np.savez(
        tmp,
        format_version=np.int64(GOLDEN_FORMAT_VERSION),
        model_sha256=np.str_(hashlib.sha256(model_bytes).hexdigest()),
        quant=np.str_(metadata.quant),
        x=np.asarray(x, dtype=np.float64),
        y_keras=np.asarray(y, dtype=np.float64),
        target_scale=np.asarray(scale, np.float64).reshape(-1),
        tol_max_abs=np.float64(tol["max_abs"]),
        tol_rmse=np.float64(tol["rmse"]),
        **extra,
    )
    os.replace(tmp, path)


def _corrupt(path: str, what: str) -> GoldenFileError:
    return GoldenFileError(
        f"{path} is not a readable golden trace (truncated or corrupt: {what}). Copy it again from the machine that "
        f"converted the model."
    )


def _read_bytes(path: str) -> bytes:
    return read_bounded(
        path, MAX_GOLDEN_BYTES, "a golden trace file", GoldenFileError, missing_error=BadInputError,
        missing=(f"golden trace not found: {path}. 'statelite convert' writes it beside the model as "
                 f"<stem>.golden.npz; copy it along with the model, or pass --golden FILE."),
    )


def _load_arrays(path: str, data: bytes) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = z.infolist()
            names = [m.filename[:-4] if m.filename.endswith(".npy") else m.filename for m in members]
            total = sum(m.file_size for m in members)
            if total > MAX_GOLDEN_BYTES or len(members) > 32:
                raise _corrupt(path, f"{len(members)} members of {total:,} bytes uncompressed")
            missing = [k for k in _KEYS if k not in names]
            if missing:
                raise GoldenFileError(
                    f"{path} is not a statelite golden trace: keys {missing} are missing (present: {sorted(names)}). "
                    f"Expected the <model>.golden.npz that 'statelite convert' wrote beside the model."
                )
            out = {}
            for m, name in zip(members, names):
                if name not in _KEYS + _OPTIONAL:
                    continue
                with z.open(m) as f:
                    raw = f.read(m.file_size + 1)
                if len(raw) != m.file_size:
                    raise _corrupt(path, f"member {name!r} is not the size its header says")
                out[name] = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
            return out
    except GoldenFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError, TypeError,
            OverflowError, MemoryError, RecursionError, NotImplementedError, UnicodeDecodeError, IndexError) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None


def _scalar(path: str, a: np.ndarray, name: str, kind: str):
    if a.shape != () or a.dtype.kind not in kind:
        raise _corrupt(path, f"{name} must be a scalar of kind {kind!r}; received dtype {a.dtype}, shape {a.shape}")
    return a.item()


def _float_array(path: str, a: np.ndarray, name: str, ndim: int) -> np.ndarray:
    if a.dtype.kind not in "fiu" or a.ndim != ndim:
        raise _corrupt(path, f"{name} must be a {ndim}-D array of numbers; received dtype {a.dtype}, shape {a.shape}")
    # float64: raw values (CO2 near 400 ppm) have a float32 step as large as the float32 tolerance.
    out = a.astype(np.float64)
    if not np.isfinite(out).all():
        raise _corrupt(path, f"{name} holds NaN or infinite values")
    return out


def read_golden(path, expected_model_sha256: str | None = None) -> Golden:
    """Read and check a golden trace file.

    Args:
        path: the ``.golden.npz`` file.
        expected_model_sha256: when given, the SHA-256 of the model the trace must belong to.

    Returns:
        A ``Golden`` whose arrays are float64, finite and of consistent shapes.

    Raises:
        BadInputError: the file does not exist or is not a regular file, or belongs to another model.
        GoldenFileError: not a readable golden trace: truncated, corrupt, keys missing, or values of the wrong dtype,
            shape or range (a ``ModelFormatError``).
        IncompatibleModelError: a golden format newer than this statelite reads.
    """
    path = str(path)
    d = _load_arrays(path, _read_bytes(path))
    version = _scalar(path, d["format_version"], "format_version", "iu")
    if version > GOLDEN_FORMAT_VERSION:
        raise IncompatibleModelError(
            f"{path} is golden format version {version}; this statelite reads up to {GOLDEN_FORMAT_VERSION}. "
            f"Upgrade statelite on this device."
        )
    if version < 1:
        raise _corrupt(path, f"format_version {version}")
    sha = _scalar(path, d["model_sha256"], "model_sha256", "U")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise _corrupt(path, f"model_sha256 must be 64 hex characters; received {sha[:70]!r}")
    quant = _scalar(path, d["quant"], "quant", "U") if "quant" in d else ""
    x = _float_array(path, d["x"], "x", 2)
    y = _float_array(path, d["y_keras"], "y_keras", 3)
    scale = _float_array(path, d["target_scale"], "target_scale", 1)
    tol_max_abs = float(_scalar(path, d["tol_max_abs"], "tol_max_abs", "fiu"))
    tol_rmse = float(_scalar(path, d["tol_rmse"], "tol_rmse", "fiu"))
    if not (np.isfinite(tol_max_abs) and np.isfinite(tol_rmse) and tol_max_abs >= 0 and tol_rmse >= 0):
        raise _corrupt(path, f"tolerances must be finite and not negative; received {tol_max_abs}, {tol_rmse}")
    if (scale <= 0).any():
        raise _corrupt(path, "target_scale must be positive")
    if len(x) == 0 or len(x) != len(y) or y.shape[2] != len(scale) or 0 in x.shape or 0 in y.shape:
        raise GoldenFileError(
            f"{path}: expected x (steps, features) and y_keras (steps, horizon, targets) with the same steps and "
            f"target_scale (targets,); received x {x.shape}, y_keras {y.shape}, target_scale {scale.shape}."
        )
    if expected_model_sha256 is not None and sha != expected_model_sha256:
        raise BadInputError(
            f"{path} was written for another model: golden model sha256 {sha[:12]}…, the model is sha256 "
            f"{expected_model_sha256[:12]}…. Expected the golden trace converted together with this model "
            f"(pass --golden FILE, or copy both files again)."
        )
    monitor = None
    monitor_keys = ("monitor_levels", "monitor_lower", "monitor_upper", "monitor_score")
    if any(k in d for k in monitor_keys):
        missing = [k for k in monitor_keys if k not in d]
        if missing:
            raise _corrupt(path, f"monitor keys {missing} are missing")
        levels = _float_array(path, d["monitor_levels"], "monitor_levels", 1)
        lower = _float_array(path, d["monitor_lower"], "monitor_lower", 4)
        upper = _float_array(path, d["monitor_upper"], "monitor_upper", 4)
        score = _float_array(path, d["monitor_score"], "monitor_score", 1)
        shape = (len(x), len(levels)) + y.shape[1:]
        if lower.shape != shape or upper.shape != shape or score.shape != (len(x),):
            raise GoldenFileError(
                f"{path}: expected monitor bounds of shape {shape} and scores ({len(x)},); received "
                f"{lower.shape}, {upper.shape} and {score.shape}."
            )
        if not ((levels > 0) & (levels < 1)).all() or ((score < 0) & (score != _UNSCORED)).any():
            raise _corrupt(path, "monitor levels must lie in (0, 1) and scores be >= 0 (or -1: not scored)")
        monitor = {"levels": levels, "lower": lower, "upper": upper,
                   "score": np.where(score == _UNSCORED, np.nan, score)}
    key = None
    if "key" in d:
        key = _scalar(path, d["key"], "key", "U")
        if not 0 < len(key) <= _MAX_KEY_CHARS:
            raise _corrupt(path, f"key must be 1 to {_MAX_KEY_CHARS} characters; received {len(key)}")
    times = None
    if "times" in d:
        t = d["times"]
        if t.dtype.kind != "U" or t.shape != (len(x),) or t.dtype.itemsize > 4 * _MAX_TIME_CHARS:
            raise _corrupt(path, f"times must be {len(x)} texts of at most {_MAX_TIME_CHARS} characters; received "
                                 f"dtype {t.dtype}, shape {t.shape}")
        times = tuple(str(v) for v in t)
    return Golden(path, sha, quant, x, y, scale, tol_max_abs, tol_rmse, int(version), monitor, key, times)


def _rmse(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if a.size else float("nan")


def error_metrics(y: np.ndarray, keras_y: np.ndarray, scale: np.ndarray) -> dict:
    """How far the model's forecasts are from Keras's over one stream: the figures parity (at conversion) and
    ``verify`` (on the device) both report, computed in one place.

    Args:
        y: the model's raw forecasts (steps, [batch,] horizon, targets).
        keras_y: Keras's (steps, horizon, targets); broadcast over the batch lanes of a batched ``y``.
        scale: per target; ``*_norm`` figures are errors divided by it (the tolerances' units).

    Returns:
        ``{"steps", "max_abs", "rmse", "max_abs_norm", "rmse_norm", "worst_step", "drift_first_tenth",
        "drift_last_tenth"}``; drift is the mean absolute normalised error over the first and last tenth of steps.
    """
    y = np.asarray(y, dtype=np.float64)
    keras_y = np.asarray(keras_y, dtype=np.float64)
    if y.ndim == keras_y.ndim + 1:  # batched model: every lane ran the same stream
        keras_y = np.broadcast_to(keras_y[:, None], y.shape)
    err = y - keras_y
    norm = err / scale
    n = len(err)
    tenth = max(n // 10, 1)
    per_step = np.abs(norm).reshape(n, -1).mean(axis=1)
    return {
        "steps": int(n),
        "max_abs": float(np.abs(err).max()) if err.size else 0.0,
        "rmse": _rmse(err),
        "max_abs_norm": float(np.abs(norm).max()) if norm.size else 0.0,
        "rmse_norm": _rmse(norm),
        "worst_step": int(per_step.argmax()) if n else 0,
        "drift_first_tenth": float(per_step[:tenth].mean()) if n else 0.0,
        "drift_last_tenth": float(per_step[-tenth:].mean()) if n else 0.0,
    }
