"""The model contract: the ``statelite`` metadata entry embedded in every converted ``.tflite`` file.

The converter writes it and the runtime reads it; this module owns the format. It is one JSON object stored in the
model's metadata list under the name ``statelite`` (see the README, "Model and metadata format"). Readers accept
every ``format_version`` up to ``FORMAT_VERSION`` and refuse newer ones with a clear error.
"""

from __future__ import annotations

import dataclasses
import json

from .errors import IncompatibleModelError, ModelFormatError
from .tflite_file import TFLiteFile, read_tflite

METADATA_NAME = "statelite"
FORMAT_VERSION = 1
CHUNK_SIGNATURE_KEY = "step_chunk"  # sorts after "step", so the step signature stays the primary subgraph


@dataclasses.dataclass(frozen=True)
class Quantization:
    """Affine quantization of one tensor: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def to_dict(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: dict | None) -> Quantization | None:
        return None if d is None else cls(float(d["scale"]), int(d["zero_point"]))


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
        return cls(d["name"], tuple(int(s) for s in d["shape"]), d["dtype"], Quantization.from_dict(d.get("quantization")))


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
        return cls(d["name"], int(d["layer"]), d["kind"], TensorSpec.from_dict(d["input"]), TensorSpec.from_dict(d["output"]))


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
        return cls(
            d["kind"],
            tuple(map(float, d["feature_offset"])),
            tuple(map(float, d["feature_scale"])),
            tuple(map(float, d["target_offset"])),
            tuple(map(float, d["target_scale"])),
        )


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

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> InputRange | None:
        if d is None:
            return None

        def floats(key):
            v = d.get(key)
            return None if v is None else tuple(map(float, v))

        return cls(str(d["basis"]), floats("train_min"), floats("train_max"), floats("clip_min"), floats("clip_max"))


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
    versions: dict = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION

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
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False).encode("utf-8")

    @classmethod
    def from_dict(cls, d: dict) -> ModelMetadata:
        version = d.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise ModelFormatError(f"statelite metadata has no valid format_version; received {version!r}.")
        if version > FORMAT_VERSION:
            raise IncompatibleModelError(
                f"the model's statelite metadata is format version {version}, newer than this statelite reads "
                f"(up to {FORMAT_VERSION}). Upgrade statelite on this device (pip install -U statelite), or convert "
                f"the model with the statelite version installed here."
            )
        return cls(
            signature_key=d["signature_key"],
            x=TensorSpec.from_dict(d["x"]),
            y=TensorSpec.from_dict(d["y"]),
            states=tuple(StateSpec.from_dict(s) for s in d["states"]),
            features=tuple(d["features"]),
            targets=tuple(d["targets"]),
            time_column=d.get("time_column"),
            horizon=int(d["horizon"]),
            scaler=Scaler.from_dict(d["scaler"]),
            graph_scales_inputs=bool(d.get("graph_scales_inputs", False)),
            graph_scales_outputs=bool(d.get("graph_scales_outputs", False)),
            difference=bool(d["difference"]),
            layers=tuple(d["layers"]),
            quant=d["quant"],
            io=d["io"],
            batch=int(d["batch"]),
            chunk=int(d.get("chunk", 1)),
            chunk_x=TensorSpec.from_dict(d["chunk_signature"]["x"]) if d.get("chunk_signature") else None,
            chunk_y=TensorSpec.from_dict(d["chunk_signature"]["y"]) if d.get("chunk_signature") else None,
            target=d["target"],
            warmup_steps=int(d["warmup_steps"]),
            parity=d.get("parity"),
            calibration=d.get("calibration"),
            input_range=InputRange.from_dict(d.get("input_range")),
            versions=dict(d.get("versions", {})),
            format_version=version,
        )

    @classmethod
    def from_json(cls, raw: bytes, source: str = "model") -> ModelMetadata:
        try:
            d = json.loads(raw.decode("utf-8"))
            if not isinstance(d, dict) or d.get("format") != METADATA_NAME:
                raise ValueError(f"expected a JSON object with format 'statelite', received {str(d)[:60]!r}")
            return cls.from_dict(d)
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, ModelFormatError):
                raise
            raise ModelFormatError(
                f"{source}: the statelite metadata entry is unreadable ({type(exc).__name__}: {exc}). "
                f"Convert the model again with 'statelite convert'."
            ) from None


def read_model_file(path) -> tuple[bytes, TFLiteFile]:
    """Read a ``.tflite`` file and parse its flatbuffer, with clear errors for missing or foreign files."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ModelFormatError(f"model file not found: {path}. Expected a .tflite file written by 'statelite convert'.") from None
    except IsADirectoryError:
        raise ModelFormatError(f"expected a .tflite file, received a directory: {path}.") from None
    return data, read_tflite(data, source=str(path))


def metadata_from_file(info: TFLiteFile, source: str = "model") -> ModelMetadata:
    """The statelite metadata of a parsed model, or a ``ModelFormatError`` that says how to get it."""
    raw = info.metadata.get(METADATA_NAME)
    if raw is None:
        present = ", ".join(sorted(info.metadata)) or "none"
        raise ModelFormatError(
            f"{source} is a TFLite model without statelite metadata (metadata entries present: {present}). "
            f"statelite runs models written by 'statelite convert', which embeds the state names, scaler and "
            f"tolerances the device needs; convert your Keras model with it."
        )
    return ModelMetadata.from_json(raw, source=source)


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
