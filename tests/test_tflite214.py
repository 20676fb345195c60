"""The tflite-runtime-2.14 target: every allowed mode loads and matches Keras under tflite-runtime 2.14, numpy<2.

Runs the checkout's runtime in a second virtual environment (STATELITE_TFLITE214_PYTHON, made by .ci/run) that has
tflite-runtime 2.14 and numpy<2 but neither TensorFlow nor ai-edge-litert.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorflow")

from statelite.convert import ConvertConfig, convert  # noqa: E402
from statelite.convert.checks import COMPATIBLE_2_14  # noqa: E402

pytestmark = [pytest.mark.tf, pytest.mark.tflite214]

CHECK = r"""
import json, sys
import numpy as np
import statelite
from statelite.runner import StatefulRunner
out = {"numpy": np.__version__, "modules": []}
for path in sys.argv[1:]:
    r = StatefulRunner(path, backend="tflite-runtime")
    g = np.load(path[:-len(".tflite")] + ".golden.npz")
    y = r.run(g["x"])
    err = (y - g["y_keras"]) / g["target_scale"]
    out["modules"].append({"path": path, "backend": r.backend, "version": r.backend_version,
        "max_abs": float(np.abs(err).max()), "rmse": float(np.sqrt((err ** 2).mean())),
        "tol_max_abs": float(g["tol_max_abs"]), "tol_rmse": float(g["tol_rmse"])})
import sys as s
out["tensorflow_loaded"] = "tensorflow" in s.modules
print(json.dumps(out))
"""


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_allowed_modes_run_on_tflite_runtime_214(trained_runs, tfl214, tmp_path, cell):
    paths = []
    for quant in COMPATIBLE_2_14:
        path = tmp_path / f"{cell}_{quant.value}.tflite"
        convert(trained_runs(cell, 2), path, ConvertConfig(quant=quant, target="tflite-runtime-2.14"), log=None)
        paths.append(str(path))
    proc = tfl214(CHECK, *paths)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["numpy"].startswith("1.")
    assert not report["tensorflow_loaded"]
    for m in report["modules"]:
        assert m["backend"] == "tflite-runtime" and m["version"].startswith("2.14")
        assert m["max_abs"] <= m["tol_max_abs"] and m["rmse"] <= m["tol_rmse"], m


def test_int8_io_model_runs_on_tflite_runtime_214(trained_runs, tfl214, tmp_path):
    path = tmp_path / "io8.tflite"
    convert(trained_runs("gru", 1), path, ConvertConfig(quant="int8", io="int8", target="tflite-runtime-2.14"), log=None)
    proc = tfl214(CHECK, str(path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])["modules"][0]
    assert m["max_abs"] <= m["tol_max_abs"] and m["rmse"] <= m["tol_rmse"], m


def test_chunk_model_runs_on_tflite_runtime_214(trained_runs, tfl214, tmp_path):
    path = tmp_path / "chunk.tflite"
    convert(trained_runs("lstm", 1), path, ConvertConfig(quant="int8", chunk=8, target="tflite-runtime-2.14"), log=None)
    code = CHECK.replace("y = r.run(g[\"x\"])", "y = r.run(g[\"x\"]); assert r._chunk is not None")
    proc = tfl214(code, str(path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])["modules"][0]
    assert m["max_abs"] <= m["tol_max_abs"] and m["rmse"] <= m["tol_rmse"], m
