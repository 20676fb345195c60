"""The accuracy benchmark runs end to end in its quick configuration and writes both result files.

No accuracy assertions: two epochs of training say nothing about the converter; the structure of the report does.
The series catalogue is checked without TensorFlow or the dataset packages: every entry is documented and its options fit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.series import CATALOGUE  # noqa: E402

SECTIONS = (
    "## Summary",
    "## Series",
    "## Forecast RMSE, TFLite / Keras",
    "## Model against persistence",
    "## Parity details",
)


def test_catalogue_documents_every_series():
    pypi = [s for s in CATALOGUE if s.package is not None]
    assert len(pypi) >= 8
    tags = {t for s in pypi for t in s.tags}
    assert {"trending", "large magnitude", "multivariate", "long"} <= tags
    trending = [s for s in pypi if "trending" in s.tags]
    assert any(not s.difference for s in trending)  # levels of a trend: the case quantized models used to break
    assert any(s.difference for s in trending)
    assert len({s.name for s in CATALOGUE}) == len(CATALOGUE)
    for s in CATALOGUE:
        assert s.title and s.loader and s.source and s.licence and s.frequency, s.name
        assert set(s.targets) <= set(s.features), s.name  # differencing needs it; the catalogue keeps it throughout
        assert s.season is None or s.season >= s.horizon, s.name


@pytest.mark.tf
def test_accuracy_quick_writes_results(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("statsmodels", reason="the quick run uses statsmodels' macrodata: pip install -e '.[bench]'")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "accuracy.py"), "--quick", "--out", str(out),
         "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "co2 gru: trained" in p.stdout  # progress is printed

    md = (out / "accuracy.md").read_text()
    for section in SECTIONS:
        assert section in md
    assert "--quick" in md  # the exact command
    assert "Versions: python" in md and "statsmodels" in md
    assert "public domain" in md  # the licences are in the catalogue

    data = json.loads((out / "accuracy.json").read_text())
    assert {"command", "date", "machine", "versions", "source", "config", "series", "runs", "summary",
            "elapsed_s", "unavailable"} <= set(data)
    assert data["machine"]["cores"] >= 1
    assert [s["name"] for s in data["series"]] == ["co2", "macrodata"]
    assert [s["rows"] for s in data["series"]] == [600, 203]
    assert [(r["series"], r["cell"]) for r in data["runs"]] == [("co2", "gru"), ("macrodata", "gru")]
    for r in data["runs"]:
        t = r["train"]
        assert t["streaming_rmse"] > 0 and t["persistence_rmse"] > 0
        assert t["streaming_over_persistence"] == pytest.approx(t["streaming_rmse"] / t["persistence_rmse"])
        assert [c["mode"] for c in r["conversions"]] == ["float32", "int8"]
        for c in r["conversions"]:
            assert "error" not in c, c.get("error")
            assert c["bytes"] > 0 and isinstance(c["passed"], bool)
            assert {"max_abs_norm", "rmse_norm", "forecast_rmse_keras", "forecast_rmse_tflite", "passed",
                    "tolerance"} <= set(c["parity"])
            assert c["ratio"] == pytest.approx(c["parity"]["forecast_rmse_tflite"] / c["parity"]["forecast_rmse_keras"])
        assert r["conversions"][0]["ratio"] == pytest.approx(1.0, abs=1e-3)  # float32 is the Keras model
    assert [s["mode"] for s in data["summary"]] == ["float32", "int8"]
    assert all(s["conversions"] == 2 for s in data["summary"])
    assert data["int8_sized_mode"] == "int8"
