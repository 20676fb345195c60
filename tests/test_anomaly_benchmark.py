"""The anomaly benchmark runs end to end in its quick configuration and writes both result files.

No detection or timing assertions: two epochs of training on a shared machine say nothing about the detector; the
structure of the report and the presence of its figures do.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = (
    "## Models",
    "## Injected anomalies",
    "## Anomalies kept out of the state",
    "## NAB",
    "## Interval coverage",
    "## Device cost",
    "## Series and licences",
)


def test_anomaly_quick_writes_results(tmp_path):
    pytest.importorskip("tensorflow")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "anomaly.py"), "--quick", "--out", str(out),
         "--cache", str(tmp_path / "cache"), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    for progress in ("[injected]", "[substitute]", "[nab]", "[coverage]", "[cost]", "co2: trained"):
        assert progress in p.stdout

    md = (out / "anomaly.md").read_text()
    for section in SECTIONS:
        assert section in md, section
    assert md.count("**How measured.**") == 5
    assert "--quick" in md  # the exact command
    assert "public domain" in md and "Numenta" in md  # the licences
    assert "Versions: python" in md
    # every table has figures in it: F1s, NAB scores, coverages and the cost ratio
    assert re.search(r"\| co2 \| spike \| \d\.\d\d \(", md)
    assert re.search(r"\| statelite \(substitution on\) \| -?\d+\.\d \(", md)
    assert re.search(r"\| co2 \| \d+ \(\d+\) \| \d+\.\d", md)

    data = json.loads((out / "anomaly.json").read_text())
    assert {"command", "date", "machine", "versions", "source", "config", "elapsed_s", "models", "injected",
            "substitute", "nab", "coverage", "cost"} <= set(data)
    assert data["config"]["quick"] is True and data["machine"]["cores"] >= 1

    inj = data["injected"]["series"]["co2"]
    assert inj["replay_matches_device"] is True
    for det in ("statelite", "statelite_sub", "persistence", "zscore"):
        tuned = inj["tuned"][det]
        assert 0.0 <= tuned["mean_f1"] <= 1.0 and tuned["threshold"] > 0
        assert set(tuned["kinds"]) == {"spike", "level_shift", "drift", "stuck", "noise", "dropout"}
    assert 0.0 <= inj["default"]["mean_f1"] <= 1.0

    sub = data["substitute"]["series"]["co2"]
    for side in ("off", "on"):
        assert isinstance(sub["runs"][side]["excess_1step_mean"], float)
        assert sub["runs"][side]["recovery_rows_mean"] >= 0

    nab = data["nab"]
    assert len(nab["series"]) == 2
    for det in ("statelite", "statelite_sub", "persistence", "zscore_day", "zscore_probation"):
        d = nab["detectors"][det]
        assert isinstance(d["best_nab"]["nab"], float) and 0.0 <= d["best_f1"]["f1"] <= 1.0

    cov = data["coverage"]["series"]["co2"]
    assert set(cov["device"]) == {"0.8", "0.9", "0.95"}
    assert all(0.0 <= v <= 1.0 for v in cov["device"].values())

    cost = data["cost"]
    assert cost["step_us_median"] > 0 and cost["monitor_step_us_median"] > 0 and cost["ratio_of_medians"] > 0
