"""The panel benchmark runs end to end in its quick configuration and writes both result files.

No accuracy or speed assertions: one epoch on a few series says nothing about either; the structure of the report
does, and so does the one hard fact of the run: the two worker processes end with the same weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = (
    "## Panel against one model per series (World Bank fertility)",
    "## Calendar inputs on daily-cycle sensors (NAB real traffic)",
    "## Training throughput: 1 and 2 worker processes",
    "## Peak memory with 10x the rows",
    "## Data",
)


@pytest.mark.tf
def test_panel_quick_writes_results(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("statsmodels", reason="the fertility panel comes from statsmodels: pip install -e '.[bench]'")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "panel.py"), "--quick", "--out", str(out),
         "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, env=env, timeout=400, check=False,
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]

    md = (out / "panel.md").read_text()
    for section in SECTIONS:
        assert section in md
    assert "--quick" in md and "Versions: python" in md
    assert "World Bank" in md and "MIT (Numenta)" in md  # sources and licences

    data = json.loads((out / "panel.json").read_text())
    assert {"command", "date", "machine", "versions", "source", "config", "datasets", "throughput", "memory",
            "panel_vs_per_series", "calendar", "elapsed_s"} <= set(data)
    assert data["machine"]["cores"] >= 1 and data["machine"]["load_average_at_end"]

    pv = data["panel_vs_per_series"]
    assert len(pv["keys"]) == 3
    assert pv["panel_wins"] + pv["per_series_wins"] == 3
    for approach in ("panel", "per_series"):
        assert set(pv[approach]["series"]) == set(pv["keys"])
        assert pv[approach]["seconds"] > 0 and pv[approach]["summary"]["series"] == 3
        for s in pv[approach]["series"].values():
            assert s["positions"] > 0 and s["rmse_ratio"] == pytest.approx(s["rmse"] / s["persistence_rmse"])
    # the same series, so the same persistence at the same positions whichever model is scored
    for k in pv["keys"]:
        persistence = pv["per_series"]["series"][k]["persistence_rmse"]
        assert pv["panel"]["series"][k]["persistence_rmse"] == pytest.approx(persistence)

    cal = data["calendar"]
    assert cal["with"]["calendar"] == ["hour", "dow"] and cal["without"]["calendar"] == []
    assert set(cal["with"]["series"]) == set(cal["keys"])

    tp = data["throughput"]
    runs = [(r["strategy"], r["workers"]) for r in tp["rows"]]
    assert runs == [("none", 1), ("multi-worker", 1), ("multi-worker", 2)]
    for r in tp["rows"]:
        assert r["windows_per_second"] > 0 and r["windows"] > 0
        assert len(r["processes"]) == r["workers"]
        assert all(proc["peak_rss_mib"] > 50 and proc["returncode"] == 0 for proc in r["processes"])
    two = tp["rows"][2]
    assert two["digests_match"] and tp["digests_match"]
    assert len(two["digests"]) == 2 and two["digests"][0] == two["digests"][1] == two["weights_sha256"]
    assert tp["ratio_2_workers_to_1_worker"] == pytest.approx(
        two["windows_per_second"] / tp["rows"][1]["windows_per_second"], rel=1e-3)

    mem = data["memory"]
    assert [r["factor"] for r in mem["runs"]] == [1, 10]
    assert mem["runs"][1]["shards"] == 10 * mem["runs"][0]["shards"]
    assert mem["runs"][1]["windows"] > 5 * mem["runs"][0]["windows"]
    assert mem["ratio_10x_to_1x"] == pytest.approx(mem["runs"][1]["peak_rss_mib"] / mem["runs"][0]["peak_rss_mib"],
                                                  rel=1e-3)
    assert isinstance(mem["met"], bool)
