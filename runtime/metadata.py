"""The model contract: the ``statelite`` metadata entry embedded in every converted ``.tflite`` file.

The converter writes it and the runtime reads it; this module owns the format. It is one JSON object stored in the
model's metadata list under the name ``statelite`` (see the README, "Model and metadata format"). Readers accept
every ``format_version`` up to ``FORMAT_VERSION`` and refuse newer ones with a clear error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
from collections.abc import Mapping

from .errors import IncompatibleModelError, ModelFormatError
from .files import read_bounded
from .integrity import check_integrity
from .monitor import ResidualCalibration
from .tflite_file import TFLiteFile, read_tflite

METADATA_NAME = "statelite"
# 2: adds ``residuals`` (the validation split's residual calibration: intervals and anomaly scores) and ``sampling``
# (the training time column's period: gap detection). Version 1 files load, without those two.
# 3: adds ``calendar`` (sin/cos inputs from the time column) and ``panel`` (one scaler per training series, by key).
# A file is written with the lowest version that holds it (``ModelMetadata.format_version`` left None): a model
# without either field stays version 2, so devices with an older statelite keep loading it.
FORMAT_VERSION = 3
PLAIN_FORMAT_VERSION = 2
RESIDUAL_UNITS = ("target_scale",)
MAX_KEY_CHARS = 256  # a stream key's length limit (run --stream-key): every training key can be served
CHUNK_SIGNATURE_KEY = "step_chunk"  # sorts after "step", so the step signature stays the primary subgraph
# The largest model file read: statelite's models are kilobytes to a few megabytes; a bigger "model" is the wrong
# file (or /dev/zero), and reading it whole would exhaust a small device's memory.
MAX_MODEL_BYTES = 256 * 1024 * 1024
_DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32")


class _Bad(ValueError):
    """Internal: a metadata value of the wrong type or range (becomes a ``ModelFormatError``)."""


def _int(v, what: str, low: int = 0, high: int = 1 << 31) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise _Bad(f"{what} must be an integer in [{low}, {high}]; received {v!r:.60}")
    return v


def _float(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Bad(f"{what} must be a finite number; received {v!r:.60}")
    return float(v)


def _str(v, what: str) -> str:
    if not isinstance(v, str):
        raise _Bad(f"{what} must be a string; received {v!r:.60}")
    return v


def _bool(v, what: str) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"{what} must be true or false; received {v!r:.60}")
    return v


def _list(v, what: str) -> list:
    if not isinstance(v, list):
        raise _Bad(f"{what} must be a list; received {v!r:.60}")
    return v


def _dict(v, what: str) -> dict:
    if not isinstance(v, dict):
        raise _Bad(f"{what} must be an object; received {v!r:.60}")
    return v


def _floats(v, what: str) -> tuple[float, ...]:
    return tuple(_float(x, f"{what}[{i}]") for i, x in enumerate(_list(v, what)))


def _number(v, what: str) -> float:
    """A number that may be NaN (parity figures of an empty comparison are), not a string or a list."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"{what} must be a number; received {v!r:.60}")
    return float(v)


def _check_parity(p) -> None:
    """The parity record is information (``inspect`` prints it), but its figures must be numbers to print."""
    if p is None:
        return
    p = _dict(p, "parity")
    for key in ("max_abs", "rmse", "max_abs_norm", "rmse_norm", "drift_first_tenth", "drift_last_tenth"):
        if key in p:
            _number(p[key], f"parity {key}")
    if "tolerance" in p:
        for key, v in _dict(p["tolerance"], "parity tolerance").items():
            _number(v, f"parity tolerance {key}")


def _check_calibration(c) -> None:
    """Per tensor ``{min, max}``: two numbers, or two lists of numbers of one length (per column)."""
    if c is None:
        return
    c = _dict(c, "calibration")
    for name, t in _dict(c.get("tensors", {}), "calibration tensors").items():
        t = _dict(t, f"calibration of {name!r}")
        lo, hi = t["min"], t["max"]
        if isinstance(lo, list) or isinstance(hi, list):
            if len(_floats(lo, f"calibration {name!r} min")) != len(_floats(hi, f"calibration {name!r} max")):
                raise _Bad(f"calibration of {name!r}: min and max of different lengths")
        else:
            _float(lo, f"calibration {name!r} min")
            _float(hi, f"calibration {name!r} max")


def _strs(v, what: str) -> tuple[str, ...]:
    return tuple(_str(x, f"{what}[{i}]") for i, x in enumerate(_list(v, what)))


@dataclasses.dataclass(frozen=True)
class Quantization:
    """Affine quantization of one tensor: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def to_dict(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: dict | None) -> Quantization | None:
        if d is None:
            return None
        d = _dict(d, "quantization")
        scale = _float(d["scale"], "quantization scale")
        if scale <= 0:
            raise _Bad(f"quantization scale must be positive; received {scale!r}")
        return cls(scale, _int(d["zero_point"], "quantization zero_point", -(1 << 31), 1 << 31))


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A signature input or output: its signature name, shape and dtype (``float32`` or ``int8``)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization | None = None

    def to_dict(self) -> dict:
        q = self.quantization.to_dict() if self.quantization else None
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "quantization": q}

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        d = _dict(d, "tensor")
        name = _str(d["name"], "tensor name")
        shape = tuple(_int(s, f"shape of {name!r}", 1, 1 << 24) for s in _list(d["shape"], f"shape of {name!r}"))
        dtype = _str(d["dtype"], f"dtype of {name!r}")
        if dtype not in _DTYPES:
            raise _Bad(f"dtype of {name!r} must be one of {', '.join(_DTYPES)}; received {dtype!r:.40}")
        q = Quantization.from_dict(d.get("quantization"))
        if q is None and dtype not in ("float32", "float16"):
            raise _Bad(f"integer tensor {name!r} ({dtype}) has no quantization")
        return cls(name, shape, dtype, q)


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor: fed in as ``input.name``, comes out as ``output.name``; paired by these names.

    ``name`` is the state's key in ``StatefulRunner.state`` (``h_0``, ``c_0``, ``h_1``, ...), ``layer`` the recurrent
    layer it belongs to and ``kind`` ``h`` (hidden) or ``c`` (LSTM cell).
    """

    name: str
    layer: int
    kind: str
    input: TensorSpec
    output: TensorSpec

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "layer": self.layer,
            "kind": self.kind,
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> StateSpec:
        d = _dict(d, "state")
        kind = _str(d["kind"], "state kind")
        if kind not in ("h", "c"):
            raise _Bad(f"state kind must be 'h' or 'c'; received {kind!r:.20}")
        return cls(
            _str(d["name"], "state name"), _int(d["layer"], "state layer", 0, 1 << 16), kind,
            TensorSpec.from_dict(d["input"]), TensorSpec.from_dict(d["output"]),
        )


@dataclasses.dataclass(frozen=True)
class Scaler:
    """``model = (value - offset) / scale`` for features and targets (after differencing when it is on)."""

    kind: str
    feature_offset: tuple[float, ...]
    feature_scale: tuple[float, ...]
    target_offset: tuple[float, ...]
    target_scale: tuple[float, ...]

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        d = _dict(d, "scaler")
        out = cls(
            _str(d["kind"], "scaler kind"),
            _floats(d["feature_offset"], "scaler feature_offset"),
            _floats(d["feature_scale"], "scaler feature_scale"),
            _floats(d["target_offset"], "scaler target_offset"),
            _floats(d["target_scale"], "scaler target_scale"),
        )
        if 0.0 in out.feature_scale or 0.0 in out.target_scale:
            raise _Bad("a scaler scale is zero (values are divided by it)")
        return out


@dataclasses.dataclass(frozen=True)
class Panel:
    """A model trained on many series (metadata ``panel``): each series' own scaler, by its key.

    Attributes:
        key_column: the column that named the series in training (``run --stream-key``'s default).
        scalers: ``{key: Scaler}``, read-only; every one of the global scaler's kind. A key not here gets the global
            scaler (``ModelMetadata.scaler``).
        residual_units: what the residual calibration is measured in: ``target_scale`` (each key's target scale, so
            a series' intervals are the calibration times its own scale).
    """

    key_column: str
    scalers: Mapping[str, Scaler]
    residual_units: str = "target_scale"

    def __post_init__(self):
        object.__setattr__(self, "scalers", types.MappingProxyType(dict(self.scalers)))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Panel):
            return NotImplemented
        return (self.key_column, dict(self.scalers), self.residual_units) == (
            other.key_column, dict(other.scalers), other.residual_units)

    __hash__ = None

    def to_dict(self) -> dict:
        return {
            "key_column": self.key_column,
            "scalers": {
                k: {f: list(getattr(s, f)) for f in ("feature_offset", "feature_scale", "target_offset", "target_scale")}
                for k, s in self.scalers.items()
            },
            "residual_units": self.residual_units,
        }

    @classmethod
    def from_dict(cls, d, kind: str) -> Panel | None:
        """The ``panel`` entry, its scalers of the global scaler's ``kind`` (None when absent)."""
        if d is None:
            return None
        d = _dict(d, "panel")
        key_column = _str(d["key_column"], "panel key_column")
        if not key_column:
            raise _Bad("panel key_column must be a non-empty string; received ''")
        units = _str(d.get("residual_units", "target_scale"), "panel residual_units")
        if units not in RESIDUAL_UNITS:
            raise _Bad(f"panel residual_units must be one of {', '.join(RESIDUAL_UNITS)}; received {units!r:.40}")
        raw = _dict(d["scalers"], "panel scalers")
        if not raw:
            raise _Bad("panel scalers must name at least one series; received {}")
        scalers = {}
        for key, entry in raw.items():
            if not key or len(key) > MAX_KEY_CHARS:
                raise _Bad(f"panel scaler keys must be 1 to {MAX_KEY_CHARS} characters; received {key!r:.60}")
            entry = _dict(entry, f"panel scaler {key!r:.40}")
            scalers[key] = Scaler.from_dict({"kind": kind, **{f: entry[f] for f in (
                "feature_offset", "feature_scale", "target_offset", "target_scale")}})
        return cls(key_column, scalers, units)


def _check_calendar(v) -> tuple[str, ...]:
    """The ``calendar`` entry: distinct ``CalendarFeature`` values (() when absent)."""
    if v is None:
        return ()
    from .options import CalendarFeature

    names = _strs(v, "calendar")
    known = [f.value for f in CalendarFeature]
    for name in names:
        if name not in known:
            raise _Bad(f"calendar features must be among {', '.join(known)}; received {name!r:.40}")
    if len(set(names)) != len(names):
        raise _Bad(f"calendar features must be distinct; received {list(names)}")
    if not names:
        raise _Bad("calendar must name at least one feature (or be null); received []")
    return names


@dataclasses.dataclass(frozen=True)
class InputRange:
    """The range of each graph input column the model has seen, in raw units of what the graph is fed: the raw
    feature value, or its first difference when the model differences (``basis``).

    ``train_min``/``train_max`` span the training split. ``clip_min``/``clip_max`` are where an integer input
    quantization clips (an int8 or int16 activation range fixed by calibration, widened by half a quantization step,
    the rounding error every value gets), or None for a float input: a value beyond them reaches the model as the
    grid's end.
    """

    basis: str  # "value" | "difference"
    train_min: tuple[float, ...]
    train_max: tuple[float, ...]
    clip_min: tuple[float, ...] | None = None
    clip_max: tuple[float, ...] | None = None
    # A differencing model's first row after a reset has no previous row: its level is checked against these (the
    # raw values' training range), so a glitch there cannot become the reference every later row differs from.
    level_min: tuple[float, ...] | None = None
    level_max: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> InputRange | None:
        if d is None:
            return None
        d = _dict(d, "input_range")

        def floats(key):
            v = d.get(key)
            return None if v is None else _floats(v, f"input_range {key}")

        basis = _str(d["basis"], "input_range basis")
        if basis not in ("value", "difference"):
            raise _Bad(f"input_range basis must be 'value' or 'difference'; received {basis!r:.30}")
        if floats("train_min") is None or floats("train_max") is None:
            raise _Bad("input_range has no train_min or train_max")
        return cls(basis, floats("train_min"), floats("train_max"), floats("clip_min"), floats("clip_max"),
                   floats("level_min"), floats("level_max"))


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """Everything the device needs to run a converted model, as stored in the file."""

    signature_key: str
    x: TensorSpec
    y: TensorSpec
    states: tuple[StateSpec, ...]
    features: tuple[str, ...]
    targets: tuple[str, ...]
    horizon: int
    scaler: Scaler
    difference: bool
    layers: tuple[dict, ...]
    quant: str
    io: str
    batch: int
    target: str
    warmup_steps: int
    time_column: str | None = None
    graph_scales_inputs: bool = False
    graph_scales_outputs: bool = False
    chunk: int = 1
    chunk_x: TensorSpec | None = None
    chunk_y: TensorSpec | None = None
    parity: dict | None = None
    # {"steps": rows of the training split rolled through the float step, "source": ..., "tensors": {name: [min, max]}}
    # in model units: what the integer modes were calibrated on (None for float and dynamic-range graphs).
    calibration: dict | None = None
    input_range: InputRange | None = None
    # The validation split's streaming residuals (``statelite.monitor``): what intervals and anomaly scores are
    # calibrated on. None in version 1 files and in models converted from a bare Keras file (no validation split).
    residuals: ResidualCalibration | None = None
    # The training time column's sampling (``statelite.timecol.Sampling`` as a dict): what gaps are judged against.
    sampling: dict | None = None
    versions: dict = dataclasses.field(default_factory=dict)
    # None: the lowest version that holds the fields used (3 with ``calendar`` or ``panel``, else 2).
    format_version: int | None = None
    # The name of the metadata entry holding the file's content digest ("statelite_sha256"), set by the converter
    # when it seals the file: a file whose digest entry went missing (a damaged name or table) is then refused
    # instead of loading as one converted before digests. None in older files.
    content_digest: str | None = None
    # Calendar features (``statelite.calendar``): each adds two graph inputs after the features, computed from the
    # time column (format version 3).
    calendar: tuple[str, ...] = ()
    # One scaler per training series (format version 3); ``scaler`` is then the global one, for unseen keys.
    panel: Panel | None = None

    def __post_init__(self):
        object.__setattr__(self, "calendar", tuple(self.calendar or ()))
        if self.format_version is None:
            uses_v3 = bool(self.calendar) or self.panel is not None
            object.__setattr__(self, "format_version", FORMAT_VERSION if uses_v3 else PLAIN_FORMAT_VERSION)

    @property
    def calendar_columns(self) -> tuple[str, ...]:
        """The graph inputs the calendar adds after the features: ``cal_hour_sin``, ``cal_hour_cos``, ..."""
        from .calendar import calendar_columns

        return calendar_columns(self.calendar) if self.calendar else ()

    @property
    def input_width(self) -> int:
        """The graph input row's width: the features, then two calendar columns per calendar feature."""
        return len(self.features) + 2 * len(self.calendar)

    def scaler_for(self, key: str | None) -> tuple[Scaler, bool]:
        """The scaler of series ``key``.

        Returns:
            ``(its scaler, True)`` for a key of the training panel, else ``(the global scaler, False)`` (always so
            for a model that is not a panel).
        """
        if self.panel is not None and key is not None:
            s = self.panel.scalers.get(key)
            if s is not None:
                return s, True
        return self.scaler, False

    def to_dict(self) -> dict:
        return {
            "format": METADATA_NAME,
            "format_version": self.format_version,
            "versions": dict(self.versions),
            "signature_key": self.signature_key,
            "x": self.x.to_dict(),
            "y": self.y.to_dict(),
            "states": [s.to_dict() for s in self.states],
            "features": list(self.features),
            "targets": list(self.targets),
            "time_column": self.time_column,
            "horizon": self.horizon,
            "scaler": self.scaler.to_dict(),
            "graph_scales_inputs": self.graph_scales_inputs,
            "graph_scales_outputs": self.graph_scales_outputs,
            "difference": self.difference,
            "layers": [dict(layer) for layer in self.layers],
            "quant": self.quant,
            "io": self.io,
            "batch": self.batch,
            "chunk": self.chunk,
            "chunk_signature": (
                {"key": CHUNK_SIGNATURE_KEY, "x": self.chunk_x.to_dict(), "y": self.chunk_y.to_dict()}
                if self.chunk > 1
                else None
            ),
            "target": self.target,
            "warmup_steps": self.warmup_steps,
            "parity": self.parity,
            "calibration": self.calibration,
            "input_range": self.input_range.to_dict() if self.input_range else None,
            "residuals": self.residuals.to_dict() if self.residuals is not None else None,
            "sampling": self.sampling,
            **({"calendar": list(self.calendar)} if self.calendar else {}),
            **({"panel": self.panel.to_dict()} if self.panel is not None else {}),
            **({"content_digest": self.content_digest} if self.content_digest else {}),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False).encode("utf-8")

    @classmethod
    def from_dict(cls, d: dict, source: str = "model") -> ModelMetadata:
        """The metadata from its JSON object; any missing key or value of the wrong type is a ``ModelFormatError``.

        Raises:
            ModelFormatError: a field is missing, of the wrong type, or out of range.
            IncompatibleModelError: a newer format version than this statelite reads.
        """
        try:
            return cls._from_dict(_dict(d, "the metadata"))
        except (ModelFormatError, IncompatibleModelError):
            raise
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
            what = f"field {exc} is missing" if isinstance(exc, KeyError) else str(exc)
            raise ModelFormatError(
                f"{source}: the statelite metadata entry is unreadable ({what}). "
                f"Convert the model again with 'statelite convert'."
            ) from None

    @classmethod
    def _from_dict(cls, d: dict) -> ModelMetadata:
        version = d.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise ModelFormatError(f"statelite metadata has no valid format_version; received {version!r}.")
        if version > FORMAT_VERSION:
            raise IncompatibleModelError(
                f"the model's statelite metadata is format version {version}, newer than this statelite reads "
                f"(up to {FORMAT_VERSION}). Upgrade statelite on this device (pip install -U statelite), or convert "
                f"the model with the statelite version installed here."
            )
        chunk_sig = d.get("chunk_signature")
        chunk_sig = None if chunk_sig is None else _dict(chunk_sig, "chunk_signature")
        time_column = d.get("time_column")
        _check_parity(d.get("parity"))
        _check_calibration(d.get("calibration"))
        residuals = d.get("residuals")
        residuals = None if residuals is None else ResidualCalibration.from_dict(residuals)
        sampling = d.get("sampling")
        if sampling is not None:
            from .timecol import Sampling

            Sampling.from_dict(_dict(sampling, "sampling"))  # checked here; the stream builds its own
        scaler = Scaler.from_dict(d["scaler"])
        calendar = _check_calendar(d.get("calendar"))
        panel = Panel.from_dict(d.get("panel"), scaler.kind)
        if (calendar or panel is not None) and version < 3:
            raise _Bad(f"calendar and panel need format_version 3 or later; received format_version {version}")
        if calendar and time_column is None:
            raise _Bad(f"calendar {list(calendar)} needs a time_column to compute it from; received null")
        return cls(
            signature_key=_str(d["signature_key"], "signature_key"),
            x=TensorSpec.from_dict(d["x"]),
            y=TensorSpec.from_dict(d["y"]),
            states=tuple(StateSpec.from_dict(s) for s in _list(d["states"], "states")),
            features=_strs(d["features"], "features"),
            targets=_strs(d["targets"], "targets"),
            time_column=None if time_column is None else _str(time_column, "time_column"),
            horizon=_int(d["horizon"], "horizon", 1, 1 << 20),
            scaler=scaler,
            graph_scales_inputs=_bool(d.get("graph_scales_inputs", False), "graph_scales_inputs"),
            graph_scales_outputs=_bool(d.get("graph_scales_outputs", False), "graph_scales_outputs"),
            difference=_bool(d["difference"], "difference"),
            layers=tuple(_dict(layer, "a layer") for layer in _list(d["layers"], "layers")),
            quant=_str(d["quant"], "quant"),
            io=_str(d["io"], "io"),
            batch=_int(d["batch"], "batch", 1, 1 << 20),
            chunk=_int(d.get("chunk", 1), "chunk", 1, 1 << 20),
            chunk_x=TensorSpec.from_dict(chunk_sig["x"]) if chunk_sig else None,
            chunk_y=TensorSpec.from_dict(chunk_sig["y"]) if chunk_sig else None,
            target=_str(d["target"], "target"),
            warmup_steps=_int(d["warmup_steps"], "warmup_steps", 0, 1 << 40),
            parity=d.get("parity"),
            calibration=d.get("calibration"),
            input_range=InputRange.from_dict(d.get("input_range")),
            residuals=residuals,
            sampling=sampling,
            versions=dict(_dict(d.get("versions", {}), "versions")),
            format_version=version,
            content_digest=None if d.get("content_digest") is None else _str(d["content_digest"], "content_digest"),
            calendar=calendar,
            panel=panel,
        )

    @classmethod
    def from_json(cls, raw: bytes, source: str = "model") -> ModelMetadata:
        try:
            d = json.loads(raw.decode("utf-8"))
            if not isinstance(d, dict) or d.get("format") != METADATA_NAME:
                raise ValueError(f"expected a JSON object with format 'statelite', received {str(d)[:60]!r}")
        except (ValueError, KeyError, TypeError, RecursionError, OverflowError) as exc:
            raise ModelFormatError(
                f"{source}: the statelite metadata entry is unreadable ({type(exc).__name__}: {exc}). "
                f"Convert the model again with 'statelite convert'."
            ) from None
        return cls.from_dict(d, source=source)


def read_model_file(path) -> tuple[bytes, TFLiteFile]:
    """Read a ``.tflite`` file, parse its flatbuffer and check its content digest, before any interpreter sees it.

    Only a regular file of at most ``MAX_MODEL_BYTES`` is read (a FIFO would block, a device such as ``/dev/zero``
    never ends). The returned ``TFLiteFile`` has ``integrity`` ``"verified"`` or ``"not recorded"``.

    Raises:
        ModelFormatError: missing, not a regular file, too large, unreadable, not a TFLite model, truncated or
            corrupt, or its bytes do not match the digest recorded at conversion.
    """
    source = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    data = read_bounded(
        path, MAX_MODEL_BYTES, "a .tflite file", ModelFormatError,
        missing=f"model file not found: {source}. Expected a .tflite file written by 'statelite convert'.",
    )
    info = read_tflite(data, source=source)
    integrity = check_integrity(data, info, source=source)
    return data, dataclasses.replace(info, integrity=integrity)


def metadata_from_file(info: TFLiteFile, source: str = "model", check: bool = True) -> ModelMetadata:
    """The statelite metadata of a parsed model, checked against its graph (``check_against_graph``).

    Args:
        info: the parsed file.
        source: the file's name for messages.
        check: check every field against the graph (turn off only to read a file's metadata as it is).

    Raises:
        ModelFormatError: no statelite metadata, unreadable, or not matching the graph.
        IncompatibleModelError: metadata of a newer format version than this statelite reads.
    """
    raw = info.metadata.get(METADATA_NAME)
    if raw is None:
        present = ", ".join(sorted(info.metadata)) or "none"
        raise ModelFormatError(
            f"{source} is a TFLite model without statelite metadata (metadata entries present: {present}). "
            f"statelite runs models written by 'statelite convert', which embeds the state names, scaler and "
            f"tolerances the device needs; convert your Keras model with it."
        )
    md = ModelMetadata.from_json(raw, source=source)
    if check:
        check_against_graph(md, info, source=source)
    return md


def _mismatch(source: str, expected: str, received: str) -> ModelFormatError:
    return ModelFormatError(
        f"{source}: the file's metadata does not match its graph: expected {expected}, received {received}; "
        f"convert the model again."
    )


def _same_scale(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def _check_tensor(spec: TensorSpec, tensors: dict, side: str, sig_key: str, source: str) -> None:
    t = tensors.get(spec.name)
    if t is None:
        raise _mismatch(source, f"{side} {spec.name!r} in signature {sig_key!r}", f"{side}s {sorted(tensors)}")
    if tuple(t.shape) != tuple(spec.shape) or t.dtype != spec.dtype:
        raise _mismatch(
            source, f"{side} {spec.name!r} of shape {tuple(spec.shape)} {spec.dtype}",
            f"shape {tuple(t.shape)} {t.dtype} in the graph",
        )
    q = spec.quantization
    if q is not None and t.scale is not None and not (_same_scale(q.scale, t.scale) and q.zero_point == t.zero_point):
        raise _mismatch(
            source, f"{side} {spec.name!r} quantized with scale {q.scale:.6g}, zero point {q.zero_point}",
            f"scale {t.scale:.6g}, zero point {t.zero_point} in the graph",
        )


def check_against_graph(md: ModelMetadata, info: TFLiteFile, source: str = "model") -> None:
    """Check every metadata field the runtime uses against the graph and against the other fields.

    The signature's inputs and outputs are exactly ``x``, ``y`` and the states, with the recorded names, shapes,
    dtypes and quantization; ``batch`` is every shape's first dimension; ``x`` is ``(batch, features)`` and ``y``
    ``(batch, horizon * targets)``; the scaler and input range have one value per column; each recurrent layer has
    its ``h`` state (and an LSTM its ``c``) of its units; a chunk signature matches. A file that passes runs without
    a shape surprise at the first step.

    Raises:
        ModelFormatError: the first mismatch, as "expected ..., received ...".
    """
    sigs = {s.key: s for s in info.signatures}
    sig = sigs.get(md.signature_key)
    if sig is None:
        raise _mismatch(source, f"signature {md.signature_key!r}", f"signatures {sorted(sigs) or 'none'}")
    n_f, n_t, b = len(md.features), len(md.targets), md.batch
    if not n_f or not n_t:
        raise _mismatch(source, "at least one feature and one target", f"{n_f} features, {n_t} targets")
    for what, names in (("features", md.features), ("targets", md.targets)):
        if len(set(names)) != len(names):
            raise _mismatch(source, f"distinct {what}", f"{list(names)}")
    if md.difference and not set(md.targets) <= set(md.features):
        raise _mismatch(source, "with differencing, every target among the features",
                        f"targets {list(md.targets)}, features {list(md.features)}")
    n_x = md.input_width
    cal = md.calendar_columns
    if md.x.shape != (b, n_x):
        want = f"{n_f} features + {len(cal)} calendar columns" if cal else f"{n_f} features"
        raise _mismatch(source, f"x of shape (batch {b}, {want})", f"x {md.x.shape}")
    if set(cal) & set(md.features):
        raise _mismatch(source, "calendar columns apart from the features",
                        f"features {sorted(set(cal) & set(md.features))} named like calendar columns")
    if (cal or md.panel is not None) and (md.graph_scales_inputs or md.graph_scales_outputs):
        # The per-series scaler (and the unscaled calendar columns) stay on the host: folded into the weights,
        # the graph would serve one series only.
        raise _mismatch(source, "the scaler kept on the host (graph_scales_inputs and graph_scales_outputs false) "
                        "for a panel or calendar model",
                        f"graph_scales_inputs {str(md.graph_scales_inputs).lower()}, "
                        f"graph_scales_outputs {str(md.graph_scales_outputs).lower()}")
    if md.panel is not None and md.panel.key_column in md.features:
        raise _mismatch(source, "the panel key column apart from the features",
                        f"key column {md.panel.key_column!r} among the features")
    if md.y.shape != (b, md.horizon * n_t):
        raise _mismatch(source, f"y of shape (batch {b}, horizon {md.horizon} x {n_t} targets)", f"y {md.y.shape}")
    if md.residuals is not None and (md.residuals.horizon, md.residuals.targets) != (md.horizon, n_t):
        raise _mismatch(source, f"residuals for horizon {md.horizon} x {n_t} targets",
                        f"{md.residuals.horizon} x {md.residuals.targets}")
    sc = md.scaler
    for what, values, n in (("feature_offset", sc.feature_offset, n_f), ("feature_scale", sc.feature_scale, n_f),
                            ("target_offset", sc.target_offset, n_t), ("target_scale", sc.target_scale, n_t)):
        if len(values) != n:
            raise _mismatch(source, f"scaler {what} of {n} values", f"{len(values)}")
    for key, ks in (md.panel.scalers.items() if md.panel is not None else ()):
        for what, n in (("feature_offset", n_f), ("feature_scale", n_f), ("target_offset", n_t),
                        ("target_scale", n_t)):
            if len(getattr(ks, what)) != n:
                raise _mismatch(source, f"panel scaler {key!r:.40} {what} of {n} values",
                                f"{len(getattr(ks, what))}")
    r = md.input_range
    if r is not None:
        for what in ("train_min", "train_max", "clip_min", "clip_max", "level_min", "level_max"):
            values = getattr(r, what)
            if values is not None and len(values) != n_f:
                raise _mismatch(source, f"input_range {what} of {n_f} values", f"{len(values)}")
        if (r.clip_min is None) != (r.clip_max is None):
            raise _mismatch(source, "input_range clip_min and clip_max both or neither", "only one")
        if (r.level_min is None) != (r.level_max is None):
            raise _mismatch(source, "input_range level_min and level_max both or neither", "only one")
    # Each layer: {cell, units}; its states: h, and c for an LSTM.
    kinds: dict[int, list[str]] = {}
    for s in md.states:
        kinds.setdefault(s.layer, []).append(s.kind)
    for i, layer in enumerate(md.layers):
        cell, units = layer.get("cell"), layer.get("units")
        if not isinstance(cell, str) or isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise _mismatch(source, f"layer {i} as {{cell, units}}", f"{str(layer)[:60]}")
        want = ["h", "c"] if "lstm" in cell.lower() else ["h"]
        if sorted(kinds.get(i, [])) != sorted(want):
            raise _mismatch(source, f"layer {i} ({cell}) with states {want}", f"{kinds.get(i, [])}")
    if set(kinds) - set(range(len(md.layers))):
        raise _mismatch(source, f"states of layers 0..{len(md.layers) - 1}", f"layers {sorted(kinds)}")
    names = [s.name for s in md.states]
    ins = [md.x.name] + [s.input.name for s in md.states]
    outs = [md.y.name] + [s.output.name for s in md.states]
    if len(set(names)) != len(names) or len(set(ins)) != len(ins) or len(set(outs)) != len(outs):
        raise _mismatch(source, "distinct state, input and output names", f"inputs {ins}, outputs {outs}")
    if set(ins) != set(sig.input_tensors) or set(outs) != set(sig.output_tensors):
        raise _mismatch(
            source, f"signature {sig.key!r} with inputs {sorted(ins)} and outputs {sorted(outs)}",
            f"inputs {sorted(sig.input_tensors)} and outputs {sorted(sig.output_tensors)}",
        )
    units_of = {i: layer["units"] for i, layer in enumerate(md.layers)}
    for s in md.states:
        if s.input.shape != s.output.shape or s.input.dtype != s.output.dtype:
            raise _mismatch(source, f"state {s.name!r} in and out of one shape and dtype",
                            f"{s.input.shape} {s.input.dtype} and {s.output.shape} {s.output.dtype}")
        if s.input.shape != (b, units_of[s.layer]):
            raise _mismatch(source, f"state {s.name!r} of shape (batch {b}, {units_of[s.layer]} units)",
                            f"{s.input.shape}")
    _check_tensor(md.x, sig.input_tensors, "input", sig.key, source)
    _check_tensor(md.y, sig.output_tensors, "output", sig.key, source)
    for s in md.states:
        _check_tensor(s.input, sig.input_tensors, "input", sig.key, source)
        _check_tensor(s.output, sig.output_tensors, "output", sig.key, source)
    if md.chunk > 1:
        chunk = sigs.get(CHUNK_SIGNATURE_KEY)
        if chunk is None or md.chunk_x is None or md.chunk_y is None:
            raise _mismatch(source, f"chunk {md.chunk}: a {CHUNK_SIGNATURE_KEY!r} signature and its x and y",
                            f"signatures {sorted(sigs)}")
        if md.chunk_x.shape != (b, md.chunk, n_x) or md.chunk_y.shape != (b, md.chunk, md.horizon * n_t):
            raise _mismatch(source, f"chunk x {(b, md.chunk, n_x)} and y {(b, md.chunk, md.horizon * n_t)}",
                            f"x {md.chunk_x.shape} and y {md.chunk_y.shape}")
        if md.chunk_x.name != md.x.name or md.chunk_y.name != md.y.name:
            raise _mismatch(source, f"chunk x and y named {md.x.name!r}, {md.y.name!r}",
                            f"{md.chunk_x.name!r}, {md.chunk_y.name!r}")
        if set(ins) != set(chunk.input_tensors) or set(outs) != set(chunk.output_tensors):
            raise _mismatch(source, f"signature {chunk.key!r} with the step's input and output names",
                            f"inputs {sorted(chunk.input_tensors)}, outputs {sorted(chunk.output_tensors)}")
        _check_tensor(md.chunk_x, chunk.input_tensors, "input", chunk.key, source)
        _check_tensor(md.chunk_y, chunk.output_tensors, "output", chunk.key, source)
        for s in md.states:
            _check_tensor(s.input, chunk.input_tensors, "input", chunk.key, source)
            _check_tensor(s.output, chunk.output_tensors, "output", chunk.key, source)


def read_metadata(path) -> ModelMetadata:
    """Read the statelite metadata of a ``.tflite`` file without creating an interpreter.

    Args:
        path: the model file.

    Returns:
        The ``ModelMetadata`` stored in the file.

    Raises:
        ModelFormatError: not a TFLite model, truncated, or no statelite metadata.
        IncompatibleModelError: metadata of a newer format version than this statelite reads.
    """
    _, info = read_model_file(path)
    return metadata_from_file(info, source=str(path))
