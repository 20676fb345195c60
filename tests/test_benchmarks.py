"""The benchmark script runs end to end in its tiny configuration and writes both result files.

No timing assertions: the numbers of a smoke run on a shared machine mean nothing; the structure does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.tf

SECTIONS = (
    "## Targets",
    "## Per step, one stream",
    "## StreamPool against separate runners",
    "## Chunked (K=16) against single steps",
    "## Model size",
    "## Device process",
)


def test_bench_grid_quick_writes_results(tmp_path):
    pytest.importorskip("tensorflow")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_grid.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "measuring per-step latency" in p.stdout  # progress is printed

    md = (tmp_path / "results.md").read_text()
    for section in SECTIONS:
        assert section in md
    assert "--quick" in md  # the exact command
    assert "Versions: python" in md and "ai-edge-litert" in md

    data = json.loads((tmp_path / "results.json").read_text())
    assert {"command", "machine", "versions", "method", "models", "pool", "chunk", "sizes", "process", "targets"} <= set(data)
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu"]
    assert [(m["cell"], m["units"], m["layers"]) for m in data["models"]] == [("gru", 16, 1)] * 2
    for m in data["models"]:
        assert m["step_us"] > 0 and m["bare_us"] > 0 and m["keras_us"] > 0
        assert m["keras_step_check_max_abs"] < 1e-4  # the Keras contender computes what the Keras model computes
        if m["onnx_us"] is None:
            assert "pip install onnxruntime tf2onnx" in m["onnx_note"]
    assert len(data["pool"]) == 2 and all(r["streams"] == 64 for r in data["pool"])
    chunk = data["chunk"]
    assert chunk["rows"] if chunk["available"] else chunk["note"]
    assert len(data["sizes"]) == 1
    proc = data["process"]
    if "device" in proc:
        assert proc["device"]["tensorflow_imported"] is False
        assert proc["tensorflow"]["tensorflow_imported"] is True
    assert [t["target"] for t in data["targets"]] == ["step_vs_bare", "step_vs_onnx", "pool", "chunk", "size", "process"]
