"""Panel and calendar models for the device tests, made by rewriting a converted model's metadata.

The converter's panel support is written separately; these tests build their models themselves: a converted graph
whose input is ``F + 2 * C`` wide is relabelled as ``F`` features plus ``C`` calendar features, with a ``panel`` of
scalers by key, and resealed. A panel model without a calendar can be made from a committed reference model (no
TensorFlow); a calendar model needs a graph of the right width, converted from a tiny bare ``.keras`` file.

The new metadata JSON is longer than the old, so it is not patched in place: it is appended at the end of the file
as a new byte vector, and the ``statelite`` buffer's data offset is pointed at it (flatbuffer offsets point forward,
and the end of the file is after every table).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from statelite.integrity import seal
from statelite.metadata import METADATA_NAME
from statelite.tflite_file import _Reader

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

# Three series of very different scales: a key's forecast must follow its own scaler.
PANEL_SCALERS = {
    "small": {"offset": 0.5, "scale": 0.01},
    "mid": {"offset": 40.0, "scale": 3.0},
    "large": {"offset": 9000.0, "scale": 750.0},
}


def replace_metadata(data: bytes, md: dict) -> bytes:
    """``data`` with its ``statelite`` metadata entry replaced by the JSON of ``md``, resealed."""
    r = _Reader(bytes(data))
    model = r.table(r.u32(0))
    buffers = r.tables(model, 4)
    for entry in r.tables(model, 6):
        if r.string(entry, 0) == METADATA_NAME:
            buffer = buffers[r.scalar(entry, 1, "<I", 0)]
            break
    else:
        raise AssertionError("no statelite metadata entry")
    field = r.field(buffer, 0)  # Buffer.data: an offset to a [ubyte] vector
    assert field, "the statelite buffer has no data vector"
    payload = json.dumps(md, separators=(",", ":")).encode()
    out = bytearray(data)
    while (len(out) + 4) % 16:  # the vector's bytes 16-aligned, as the converter writes buffers
        out.append(0)
    start = len(out)
    out += struct.pack("<I", len(payload)) + payload
    struct.pack_into("<I", out, field, start - field)
    return seal(bytes(out))


def read_json(path: Path) -> dict:
    from statelite.metadata import read_model_file

    _, info = read_model_file(path)
    return json.loads(info.metadata[METADATA_NAME])


def scaler_entry(md: dict, offset: float, scale: float) -> dict:
    """A per-key scaler of ``md``'s shape: every feature and target ``(v - offset) / scale``."""
    nf, nt = len(md["features"]), len(md["targets"])
    return {"feature_offset": [offset] * nf, "feature_scale": [scale] * nf,
            "target_offset": [offset] * nt, "target_scale": [scale] * nt}


def make_panel(src: Path, dst: Path, scalers: dict | None = None, key_column: str = "series",
               calendar: list[str] | None = None, features: list[str] | None = None,
               targets: list[str] | None = None, time_column: str | None = None, **fields) -> Path:
    """A copy of model ``src`` relabelled as a panel (``scalers``: key -> {offset, scale}; None: not a panel) and/or
    a calendar model, format version 3, resealed. ``fields`` overwrite other top-level metadata fields."""
    md = read_json(src)
    if features is not None:
        md["features"] = list(features)
    if targets is not None:
        md["targets"] = list(targets)
        t = len(targets)
        sc = md["scaler"]
        sc["target_offset"], sc["target_scale"] = sc["target_offset"][:1] * t, sc["target_scale"][:1] * t
    nf = len(md["features"])
    sc = md["scaler"]
    if len(sc["feature_offset"]) != nf:
        sc["feature_offset"], sc["feature_scale"] = [0.0] * nf, [1.0] * nf
    if time_column is not None:
        md["time_column"] = time_column
    if calendar:
        md["calendar"] = list(calendar)
    if scalers is not None:
        md["panel"] = {
            "key_column": key_column,
            "scalers": {k: scaler_entry(md, v["offset"], v["scale"]) for k, v in scalers.items()},
            "residual_units": "target_scale",
        }
    md["format_version"] = 3
    md["input_range"] = None  # the raw ranges of the source's one series mean nothing for other scales
    md.update(fields)
    dst.write_bytes(replace_metadata(Path(src).read_bytes(), md))
    return dst


# The calendar test model: 2 features and 2 calendar features (4 columns) into a graph 6 wide, forecasting one
# target 2 steps ahead, with an hourly time column.
CAL_FEATURES = ["load", "temp"]
CAL_CALENDAR = ["hour", "dow"]
CAL_TIME = "ts"
CAL_HORIZON = 2


def residuals_entry(horizon: int, targets: int, scale: float = 1.0) -> dict:
    """A residual calibration of a plausible shape: |residual| quantiles growing with the horizon step."""
    from statelite.monitor import PROBS

    q = [[[scale * (h + 1) * (0.05 + 2.0 * p) for p in PROBS] for _ in range(targets)] for h in range(horizon)]
    return {"source": "validation split", "steps": 200, "probs": list(PROBS), "quantiles": q,
            "tail": [[0.5 * scale * (h + 1)] * targets for h in range(horizon)]}


def build_calendar_graph(folder: Path, quant: str = "float32", io: str = "float", batch: int = 1,
                         chunk: int = 1) -> Path:
    """A tiny seeded GRU whose input is ``len(CAL_FEATURES) + 2 * len(CAL_CALENDAR)`` wide, converted from a bare
    ``.keras`` file (TensorFlow)."""
    import keras

    from statelite.convert import ConvertConfig, convert

    width = len(CAL_FEATURES) + 2 * len(CAL_CALENDAR)
    keras.utils.set_random_seed(3)
    inp = keras.Input((None, width))
    h = keras.layers.GRU(8, return_sequences=True)(inp)
    src = folder / f"cal_{width}.keras"
    if not src.exists():
        keras.Model(inp, keras.layers.Dense(CAL_HORIZON)(h)).save(src)
    out = folder / f"cal_{quant}_{io}_b{batch}_c{chunk}.tflite"
    convert(src, out, ConvertConfig(quant=quant, io=io, batch=batch, chunk=chunk), log=None)
    return out


def make_calendar_panel(graph: Path, dst: Path, scalers: dict | None = None, residuals: bool = True) -> Path:
    """``graph`` (from ``build_calendar_graph``) relabelled: features load, temp; target load over 2 steps; time
    column ts (hourly); calendar hour, dow; a panel of ``scalers`` (key -> {offset, scale}) when given."""
    md = read_json(graph)
    sampling = {"kind": "datetime", "period": 3600.0, "regular": 1.0}
    extra = {"residuals": residuals_entry(CAL_HORIZON, 1)} if residuals else {}
    return make_panel(
        graph, dst, scalers, key_column="site", calendar=CAL_CALENDAR, features=CAL_FEATURES, targets=["load"],
        time_column=CAL_TIME, horizon=CAL_HORIZON, graph_scales_inputs=False, graph_scales_outputs=False,
        scaler={"kind": "standard", "feature_offset": [10.0, 20.0], "feature_scale": [2.0, 5.0],
                "target_offset": [10.0], "target_scale": [2.0]},
        sampling=sampling, warmup_steps=0, parity=None, **extra,
    )


# Per-key scalers that are the global scaler times a factor: a series b times another's values, scaled with b times
# its scaler, reaches the graph as the same numbers, so its forecast is exactly b times the other's.
FACTORS = {"small": 0.01, "mid": 3.0, "large": 750.0}


def factor_scalers(src: Path, factors: dict = FACTORS) -> dict:
    """``{key: {feature_offset, ...}}`` of ``src``'s scaler times each key's factor (offsets and scales)."""
    sc = read_json(src)["scaler"]
    return {k: {f: [b * v for v in sc[f]] for f in ("feature_offset", "feature_scale", "target_offset",
                                                     "target_scale")} for k, b in factors.items()}


def make_factor_panel(src: Path, dst: Path, factors: dict = FACTORS, key_column: str = "series", **fields) -> Path:
    """A copy of ``src`` as a panel whose keys' scalers are its global scaler times ``factors``."""
    md = read_json(src)
    md["panel"] = {"key_column": key_column, "scalers": factor_scalers(src, factors), "residual_units": "target_scale"}
    md["format_version"] = 3
    md["input_range"] = None
    md.update(fields)
    dst.write_bytes(replace_metadata(Path(src).read_bytes(), md))
    return dst
