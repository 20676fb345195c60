"""Small converted models for the device-side tests, and helpers to feed them CSV.

The committed reference models in ``models/`` serve the device kinds, so these tests need no TensorFlow; a missing
one is an error (regenerate them with ``python models/regenerate.py``), never a silent fallback to another model.
The few kinds no reference file serves (a dynamic-range model, a TFLite file without statelite metadata) are built
with TensorFlow once per session, and skipped with the reason where TensorFlow is absent.

Use the ``device_model`` fixture by importing it into a test module: ``from device_models import device_model``.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from statelite.integrity import seal

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

# kind -> reference file in models/ that serves it.
REFERENCE = {"gru": "gru_float32.tflite", "int8": "gru_int8.tflite", "lstm": "lstm_float32.tflite"}
# kind -> (cell, layers, units, quant) built with TensorFlow: no reference file serves it.
BUILT = {
    # 32 units: weights big enough for dynamic-range quantization, which gives FULLY_CONNECTED version 12.
    "dynamic_fc12": ("GRU", 1, 32, "dynamic"),
}

CLI = [sys.executable, "-c", "from statelite.cli import main; main()"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _keras_model(path: Path, cell: str, layers: int, units: int, features: int = 2, outputs: int = 3) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((None, features))
    h = inp
    for _ in range(layers):
        h = getattr(keras.layers, cell)(units, return_sequences=True)(h)
    keras.Model(inp, keras.layers.Dense(outputs)(h)).save(path)
    return path


class _Models:
    def __init__(self, factory):
        self.factory = factory
        self.folder: Path | None = None
        self.cache: dict[str, Path] = {}

    def _dir(self) -> Path:
        if self.folder is None:
            self.folder = self.factory.mktemp("device_models")
        return self.folder

    def _need_tf(self, kind: str) -> None:
        if not has_tensorflow():
            pytest.skip(f"model {kind!r}: no reference file in models/ and no TensorFlow to build one")

    def get(self, kind: str) -> Path:
        if kind not in self.cache:
            self.cache[kind] = self._make(kind)
        return self.cache[kind]

    def _make(self, kind: str) -> Path:
        ref = REFERENCE.get(kind)
        if ref:
            path = MODELS / ref
            if not (path.exists() and path.with_name(path.stem + ".golden.npz").exists()):
                pytest.fail(f"reference model {ref} or its golden trace is missing; run python models/regenerate.py")
            return path
        if kind in BUILT:
            self._need_tf(kind)
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            from statelite.convert import ConvertConfig, convert

            cell, layers, units, quant = BUILT[kind]
            source = _keras_model(self._dir() / f"{kind}.keras", cell, layers, units)
            out = self._dir() / f"{kind}.tflite"
            convert(source, out, ConvertConfig(quant=quant), log=None)
            return out
        if kind == "differencing":
            return self._differencing()
        if kind == "plain":
            return self._plain()
        raise KeyError(kind)

    def _differencing(self) -> Path:
        """A differencing model with a time column: the reference GRU (the shape of the CO2 models)."""
        from statelite import read_metadata

        gru = self.get("gru")
        md = read_metadata(gru)
        assert md.difference and md.time_column, f"{gru} should difference and have a time column"
        return gru

    def _plain(self) -> Path:
        """A valid TFLite model without statelite metadata, converted with plain tf.lite."""
        self._need_tf("plain")
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec([1, 2], tf.float32)])
        def f(x):
            return {"y": tf.tanh(x) * 2.0}

        conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
        out = self._dir() / "plain.tflite"
        out.write_bytes(conv.convert())
        return out


_models: _Models | None = None


@pytest.fixture(scope="session")
def device_model(tmp_path_factory):
    """``kind -> Path`` of a converted model: ``gru`` (float32), ``int8``, ``lstm`` (float32, has c states),
    ``differencing`` (with a time column), ``dynamic_fc12`` (FULLY_CONNECTED v12), ``plain`` (no statelite metadata).
    """
    global _models
    if _models is None:
        _models = _Models(tmp_path_factory)
    return _models.get


def golden_path(model: Path) -> Path:
    return model.with_name(model.stem + ".golden.npz")


def sample_rows(model: Path, n: int = 60) -> np.ndarray:
    """``n`` realistic raw input rows for ``model``: its golden trace's inputs, repeated if needed."""
    g = golden_path(model)
    if g.exists():
        with np.load(g) as d:
            x = d["x"]
    else:
        from statelite import read_metadata

        md = read_metadata(model)
        rng = np.random.default_rng(0)
        x = np.cumsum(rng.normal(size=(n, len(md.features))), axis=0) + 400.0 * md.difference
    return np.resize(x, (n, x.shape[1])).astype(np.float64)


def write_csv(path: Path, header: list[str] | None, rows) -> Path:
    """Write rows (lists of cells; floats written with repr, so they parse back to the same value)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if header is not None:
            w.writerow(header)
        for row in rows:
            w.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in row])
    return path


def read_output(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of ``statelite run`` output."""
    lines = [line for line in text.splitlines() if line]
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


def run_cli(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``statelite ARGS`` in a fresh interpreter, as a user's shell would run it."""
    return subprocess.run([*CLI, *args], input=input, capture_output=True, text=True, env=ENV, timeout=timeout)


def patch_operator_version(model: bytes, version: int) -> tuple[bytes, int]:
    """``model`` with the first operator code that stores an explicit version set to ``version``.

    Returns the patched bytes and the index of the operator code patched. Flatbuffers omit fields equal to their
    default (version 1), so only codes with version > 1 can be patched in place; skips the test if there is none.
    """
    from flatbuffers.table import Table

    data = bytearray(model)
    root = Table(data, struct.unpack_from("<I", data, 0)[0])
    codes = root.Offset(4 + 2 * 1)  # Model.operator_codes
    start = root.Vector(codes)
    for i in range(root.VectorLen(codes)):
        code = Table(data, root.Indirect(start + 4 * i))
        field = code.Offset(4 + 2 * 2)  # OperatorCode.version
        if field:
            struct.pack_into("<i", data, code.Pos + field, version)
            return seal(bytes(data)), i  # a deliberate edit: its content digest recomputed
    pytest.skip("no operator code with an explicit version to patch in this model")


def strip_statelite_metadata(model: bytes) -> bytes:
    """``model`` with its ``statelite`` metadata entry renamed, as a TFLite file from another tool would look."""
    name = struct.pack("<I", 9) + b"statelite"  # the flatbuffer string: length prefix, then bytes
    assert model.count(name) == 1
    return seal(model.replace(name, struct.pack("<I", 9) + b"other_md_"))
