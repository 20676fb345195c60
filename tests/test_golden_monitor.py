"""Golden format 2: the monitor's interval bounds and scores in the golden trace (``monitor_trace``, ``write_golden``,
``read_golden``), version 1 traces still read, and ``verify`` comparing the device's monitor trace with the golden one
(``compare_monitor``): tampered bounds fail, a corrupt monitor key is one ``GoldenFileError`` line."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from statelite import IncompatibleModelError, StatefulRunner, read_metadata
from statelite.cli import main
from statelite.errors import GoldenFileError
from statelite.golden import GOLDEN_FORMAT_VERSION, monitor_trace, read_golden, write_golden
from statelite.monitor import MonitorOptions, replay
from statelite.verify import BOUND_SLACK, SCORE_MARGIN, compare_monitor, verify, write_junit

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
FORMAT1 = ROOT / "tests" / "data" / "format1"
MONITOR_KEYS = ("monitor_levels", "monitor_lower", "monitor_upper", "monitor_score")


def model(name: str) -> Path:
    path = MODELS / f"{name}.tflite"
    if not (path.exists() and golden_of(path).exists()):
        pytest.fail(f"reference model {name} or its golden trace is missing; run python models/regenerate.py")
    return path


def golden_of(path: Path) -> Path:
    return path.with_name(path.stem + ".golden.npz")


def rewrite(src: Path, dst: Path, **changes) -> Path:
    """``src``'s arrays with ``changes`` (None deletes a key), saved as ``dst``: the model's sha is kept."""
    with np.load(src) as d:
        arrays = {k: d[k] for k in d.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(dst, **arrays)
    return dst


def raw(path: Path) -> dict:
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


# -- the trace ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gru_float32", "gru_int8", "lstm_int8", "gru2_int8"])
def test_monitor_trace_reproduces_the_converters_record(name):
    path = model(name)
    md = read_metadata(path)
    g = read_golden(golden_of(path))
    assert g.format_version == GOLDEN_FORMAT_VERSION == 2 and g.monitor is not None
    trace = monitor_trace(md, g.x, g.y)
    assert set(trace) == {"levels", "lower", "upper", "score"}
    np.testing.assert_array_equal(trace["levels"], [0.9])
    assert trace["lower"].shape == (len(g.x), 1, md.horizon, 1) and trace["score"].shape == (len(g.x),)
    np.testing.assert_array_equal(g.monitor["levels"], trace["levels"])
    np.testing.assert_allclose(g.monitor["lower"], trace["lower"], rtol=1e-12)
    np.testing.assert_allclose(g.monitor["upper"], trace["upper"], rtol=1e-12)
    np.testing.assert_allclose(g.monitor["score"], trace["score"], rtol=1e-12, atol=1e-12)  # NaN where NaN
    unscored = md.warmup_steps + 1
    assert np.isnan(trace["score"][:unscored]).all() and np.isfinite(trace["score"][unscored:]).all()


def test_monitor_trace_is_what_the_runners_monitor_makes_of_the_same_forecasts():
    path = model("gru_float32")
    md = read_metadata(path)
    x = read_golden(golden_of(path)).x
    m = StatefulRunner(path).monitor()
    obs = [m.step(row) for row in x]
    trace = monitor_trace(md, x, np.array([o.forecast for o in obs]))
    np.testing.assert_allclose(trace["lower"], [o.lower for o in obs], rtol=1e-12)
    np.testing.assert_allclose(trace["upper"], [o.upper for o in obs], rtol=1e-12)
    np.testing.assert_allclose(trace["score"], [o.score for o in obs], rtol=1e-12, atol=1e-12)
    replayed = replay(md.residuals, np.array([o.forecast for o in obs]), x[:, [0]], MonitorOptions(), md.warmup_steps)
    np.testing.assert_array_equal(trace["lower"], replayed["lower"])


def test_monitor_trace_is_none_without_a_calibration_or_with_targets_outside_the_features():
    md1 = read_metadata(FORMAT1 / "gru_float32.tflite")
    g1 = read_golden(FORMAT1 / "gru_float32.golden.npz")
    assert md1.residuals is None and monitor_trace(md1, g1.x, g1.y) is None
    md = read_metadata(model("gru_float32"))
    g = read_golden(golden_of(model("gru_float32")))
    assert monitor_trace(dataclasses.replace(md, targets=("co2_next",)), g.x, g.y) is None


# -- writing and reading -------------------------------------------------------------------------------------------


def test_write_golden_with_a_monitor_round_trips(tmp_path):
    path = model("gru_float32")
    md = read_metadata(path)
    g = read_golden(golden_of(path))
    trace = monitor_trace(md, g.x, g.y)
    data = path.read_bytes()
    out = tmp_path / "m.golden.npz"
    write_golden(out, data, md, g.x, g.y, g.target_scale, {"max_abs": 1e-4, "rmse": 1e-5}, monitor=trace)
    stored = raw(out)
    assert set(MONITOR_KEYS) <= set(stored) and int(stored["format_version"]) == 2
    unscored = md.warmup_steps + 1
    assert (stored["monitor_score"][:unscored] == -1.0).all(), "NaN is stored as -1 (not scored)"
    back = read_golden(out, expected_model_sha256=StatefulRunner(path).model_sha256)
    assert back.format_version == 2
    np.testing.assert_array_equal(back.monitor["levels"], trace["levels"])
    np.testing.assert_array_equal(back.monitor["lower"], trace["lower"])
    np.testing.assert_array_equal(back.monitor["upper"], trace["upper"])
    np.testing.assert_array_equal(back.monitor["score"], trace["score"])  # NaN read back where it was NaN
    assert not (tmp_path / "m.golden.npz.tmp.npz").exists()
    plain = tmp_path / "p.golden.npz"
    write_golden(plain, data, md, g.x, g.y, g.target_scale, {"max_abs": 1e-4, "rmse": 1e-5})
    assert not set(MONITOR_KEYS) & set(raw(plain)) and read_golden(plain).monitor is None


def test_version1_golden_is_still_read_and_verified(tmp_path):
    golden = FORMAT1 / "gru_float32.golden.npz"
    assert int(raw(golden)["format_version"]) == 1 and not set(MONITOR_KEYS) & set(raw(golden))
    g = read_golden(golden)
    assert g.format_version == 1 and g.monitor is None and g.x.shape == (200, 1)
    report = verify(FORMAT1 / "gru_float32.tflite")
    assert report.passed and report.monitor is None and report.to_dict()["monitor"] is None
    assert "monitor      not in the golden trace" in report.format().splitlines()
    # A format 2 model with a version 1 trace (no monitor keys): verified without the monitor.
    v1 = rewrite(golden_of(model("gru_float32")), tmp_path / "v1.golden.npz", **{k: None for k in MONITOR_KEYS},
                 format_version=np.int64(1))
    report = verify(model("gru_float32"), v1)
    assert report.passed and report.monitor is None


def test_a_newer_golden_format_is_incompatible(tmp_path):
    bad = rewrite(golden_of(model("gru_float32")), tmp_path / "v3.golden.npz", format_version=np.int64(3))
    with pytest.raises(IncompatibleModelError, match="golden format version 3; this statelite reads up to 2"):
        read_golden(bad)


# -- verify --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gru_float32", "gru_int8", "gru_float32_b8", "gru2_int8"])
def test_verify_compares_the_monitor_trace(name):
    path = model(name)
    report = verify(path)
    assert report.passed, report.format()
    m = report.monitor
    warmup = read_metadata(path).warmup_steps
    assert m["levels"] == "90%" and m["bounds_within"] and m["flag_disagreements"] == 0
    assert m["scored"] == report.steps - warmup - 1
    assert 0 <= m["bound_excess"] <= 1.0 and m["score_max_diff"] < 0.5
    lines = report.format().splitlines()
    (line,) = [s for s in lines if s.startswith("monitor ")]
    assert line == (
        f"monitor      90% interval bounds within tolerance: yes (worst {m['bound_excess']:.2f}x the tolerance); "
        f"scores max diff {m['score_max_diff']:.3g} over {m['scored']} rows; flags disagreeing 0"
    )
    assert lines[-1] == "result       PASS"


def test_compare_monitor_measures_bounds_against_their_tolerance_and_flags_far_from_the_threshold():
    path = model("gru_float32")
    md = read_metadata(path)
    g = read_golden(golden_of(path))
    same = compare_monitor(g, dict(g.monitor), md)
    assert same == {"levels": "90%", "bounds_within": True, "bound_excess": 0.0, "worst_step": 0,
                    "score_max_diff": 0.0, "scored": 186, "flag_disagreements": 0}
    allowed = g.tol_max_abs * g.target_scale + BOUND_SLACK * (g.monitor["upper"] - g.monitor["lower"]) / 2
    device = {k: np.array(v, copy=True) for k, v in g.monitor.items()}
    device["lower"][50, 0, 2, 0] -= 3.0 * allowed[50, 0, 2, 0]
    device["upper"][120, 0, 1, 0] += 0.9 * allowed[120, 0, 1, 0]  # within its tolerance
    out = compare_monitor(g, device, md)
    assert not out["bounds_within"] and out["worst_step"] == 50
    assert out["bound_excess"] == pytest.approx(3.0, rel=1e-9)
    # Scores: a flag on one side only counts when both scores are more than SCORE_MARGIN from the threshold.
    device = {k: np.array(v, copy=True) for k, v in g.monitor.items()}
    assert g.monitor["score"][40] < 4.0 - SCORE_MARGIN
    device["score"][40] = 6.0
    device["score"][60] = 4.5  # golden's is far below, but 4.5 is within the margin: either side is fine
    device["score"][70] = math.nan  # not scored on the device: not compared
    out = compare_monitor(g, device, md)
    assert out["flag_disagreements"] == 1 and out["scored"] == 185 and out["bounds_within"]
    assert out["score_max_diff"] == pytest.approx(6.0 - g.monitor["score"][40])


def test_tampered_bounds_fail_verify_naming_the_interval_bounds(tmp_path):
    path = model("gru_float32")
    g = golden_of(path)
    lower = raw(g)["monitor_lower"]
    bad = rewrite(g, tmp_path / "shifted.golden.npz", monitor_lower=lower - 0.5)
    report = verify(path, bad)
    assert not report.passed
    assert report.max_abs_norm <= report.tol_max_abs, "the forecasts themselves still agree"
    (problem,) = report.problems
    excess = report.monitor["bound_excess"]
    assert excess > 1.5
    assert re.fullmatch(rf"interval bounds differ by up to {re.escape(f'{excess:.3g}')}x their tolerance "
                        rf"\((first|worst) at step {report.monitor['worst_step']}\)", problem), problem
    text = report.format()
    assert "monitor      90% interval bounds within tolerance: NO" in text
    assert text.splitlines()[-1] == f"result       FAIL: {problem}"
    result = CliRunner().invoke(main, ["verify", str(path), "--golden", str(bad), "--junit", str(tmp_path / "j.xml")])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: verify failed for {path}: {problem}."
    failure = ET.parse(tmp_path / "j.xml").getroot().find("testcase/failure")
    assert failure is not None and failure.get("message") == problem


def test_tampered_scores_fail_verify_as_flag_disagreements(tmp_path):
    path = model("gru_float32")
    g = golden_of(path)
    score = raw(g)["monitor_score"].copy()
    assert 0 <= score[100] < 1.0
    score[100] = 9.0
    report = verify(path, rewrite(g, tmp_path / "flag.golden.npz", monitor_score=score))
    assert not report.passed and report.monitor["bounds_within"]
    assert report.problems == ("1 rows flagged anomalous on one side only, away from the threshold",)


def test_the_step_named_in_the_bounds_problem_is_what_it_says(tmp_path):
    path = model("gru_float32")
    g = golden_of(path)
    lower = raw(g)["monitor_lower"]
    bad = rewrite(g, tmp_path / "shifted.golden.npz", monitor_lower=lower - 0.5)
    report = verify(path, bad)
    golden = read_golden(bad)  # compare_monitor's tolerance: from the (tampered) golden's half-widths
    half = (golden.monitor["upper"] - golden.monitor["lower"]) / 2
    allowed = golden.tol_max_abs * golden.target_scale + BOUND_SLACK * half
    over = (0.5 / allowed).reshape(len(allowed), -1).max(axis=1) > 1.0
    first, worst = int(np.argmax(over)), report.monitor["worst_step"]
    assert first != worst, "the shift makes the first and the worst step differ"
    (problem,) = report.problems
    word, step = re.search(r"\((first|worst) at step (\d+)\)", problem).groups()
    assert int(step) == (first if word == "first" else worst), problem


def _lower(f):
    return lambda d: {"monitor_lower": f(d["monitor_lower"])}


def _with_nan(a):
    a = a.copy()
    a[7, 0, 1, 0] = np.nan
    return a


@pytest.mark.parametrize("change, message", [
    (_lower(_with_nan), r"is not a readable golden trace \(truncated or corrupt: monitor_lower holds NaN or "
                        r"infinite values\)"),
    (lambda d: {"monitor_score": np.where(np.arange(200) == 30, np.inf, d["monitor_score"])},
     "monitor_score holds NaN or infinite values"),
    (_lower(lambda a: a[1:]), r"expected monitor bounds of shape \(200, 1, 4, 1\) and scores \(200,\); received "
                              r"\(199, 1, 4, 1\), \(200, 1, 4, 1\) and \(200,\)\.$"),
    (lambda d: {"monitor_upper": d["monitor_upper"][:, :, :3]}, r"received \(200, 1, 4, 1\), \(200, 1, 3, 1\)"),
    (lambda d: {"monitor_score": d["monitor_score"][:-1]}, r"and \(199,\)\.$"),
    (_lower(lambda a: a[..., 0]), "monitor_lower must be a 4-D array of numbers; received dtype float64, shape "
                                  r"\(200, 1, 4\)"),
    (lambda d: {"monitor_levels": np.array(["0.9"])}, "monitor_levels must be a 1-D array of numbers"),
    (lambda d: {"monitor_levels": np.array([1.5])}, r"monitor levels must lie in \(0, 1\) and scores be >= 0"),
    (lambda d: {"monitor_score": np.where(np.arange(200) == 30, -2.0, d["monitor_score"])},
     r"scores be >= 0 \(or -1: not scored\)"),
    (lambda d: {"monitor_levels": None}, r"monitor keys \['monitor_levels'\] are missing"),
    (lambda d: {"monitor_lower": None, "monitor_upper": None},
     r"monitor keys \['monitor_lower', 'monitor_upper'\] are missing"),
    (lambda d: {"monitor_score": None}, r"monitor keys \['monitor_score'\] are missing"),
], ids=["nan", "inf-score", "short-lower", "short-upper", "short-score", "3d", "text-levels", "level-1.5",
        "negative-score", "no-levels", "no-bounds", "no-score"])
def test_a_corrupt_monitor_key_is_one_golden_file_error(tmp_path, change, message):
    path = model("gru_float32")
    g = golden_of(path)
    bad = rewrite(g, tmp_path / "bad.golden.npz", **change(raw(g)))
    with pytest.raises(GoldenFileError, match=message) as info:
        read_golden(bad)
    assert "\n" not in str(info.value)
    result = CliRunner().invoke(main, ["verify", str(path), "--golden", str(bad)])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {bad}") and "Traceback" not in result.output


@pytest.mark.parametrize("levels", [(0.8,), (0.8, 0.9)])
def test_verify_uses_the_levels_the_golden_trace_records(tmp_path, levels):
    path = model("gru_float32")
    md = read_metadata(path)
    g = read_golden(golden_of(path))
    out = replay(md.residuals, g.y, g.x[:, [0]], MonitorOptions(levels=levels), md.warmup_steps)
    bad = rewrite(golden_of(path), tmp_path / "levels.golden.npz", monitor_levels=np.array(levels),
                  monitor_lower=out["lower"], monitor_upper=out["upper"])
    assert read_golden(bad).monitor["lower"].shape == (200, len(levels), 4, 1)
    report = verify(path, bad)
    assert report.passed, report.problems
    assert report.monitor["levels"] == "/".join(f"{v:.0%}" for v in levels)


def test_junit_and_json_carry_the_monitor(tmp_path):
    report = verify(model("gru_float32"))
    assert report.to_dict()["monitor"] == report.monitor
    write_junit(report, tmp_path / "j.xml")
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "j.xml").getroot().iter("property")}
    assert props["monitor"] == str(report.monitor)
