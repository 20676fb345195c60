"""``statelite verify``: the golden trace replayed on this device; PASS exits 0, FAIL 1, an unusable file 2."""

from __future__ import annotations

import json
import platform
import shutil
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner
from device_models import device_model, golden_path  # noqa: F401 (device_model is a fixture)

from statelite import BadInputError, ModelFormatError, StatefulRunner
from statelite.cli import main
from statelite.verify import VerifyReport, load_golden, verify, write_junit


@pytest.mark.parametrize("kind", ["gru", "int8"])
def test_passes_and_reports(device_model, kind):
    model = device_model(kind)
    report = verify(model)
    assert isinstance(report, VerifyReport) and report.passed, report.format()
    golden = load_golden(golden_path(model))
    assert report.steps == len(golden.x)
    assert report.golden == str(golden_path(model))
    assert 0 <= report.max_abs_norm <= report.tol_max_abs and 0 <= report.rmse_norm <= report.tol_rmse
    assert 0 <= report.worst_step < report.steps
    assert report.machine == platform.machine() and report.backend == StatefulRunner(model).backend
    # The figures are the runner's own: recompute the max abs error from a fresh run.
    y = StatefulRunner(model).run(golden.x)
    assert report.max_abs == pytest.approx(float(np.abs(y - golden.y).max()), rel=1e-6)


def test_cli_pass_prints_report_and_junit(tmp_path, device_model):
    model = device_model("gru")
    result = CliRunner().invoke(main, ["verify", str(model), "--junit", str(tmp_path / "v.xml")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for label in ("steps", "max abs err", "RMSE", "worst step", "drift", "first tenth", "last tenth", "interpreter",
                  "machine", "result       PASS"):
        assert label in out
    suite = ET.parse(tmp_path / "v.xml").getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "1" and suite.get("failures") == "0"
    (case,) = suite.findall("testcase")
    assert case.get("name") == model.name and case.find("failure") is None


def test_cli_json(device_model):
    result = CliRunner().invoke(main, ["verify", str(device_model("gru")), "--json"])
    assert result.exit_code == 0
    d = json.loads(result.stdout)
    assert d["passed"] is True and d["steps"] > 0 and "backend_version" in d


def _edited_golden(src, dst, **changes):
    with np.load(src) as d:
        arrays = {k: d[k] for k in d.files}
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    np.savez(dst, **arrays)
    return dst


def test_cli_fail_exits_1_with_junit_failure(tmp_path, device_model):
    model = device_model("gru")
    g = golden_path(model)
    with np.load(g) as d:
        y, scale = d["y_keras"], d["target_scale"]
    wrong = y + (2.0 * scale).astype(np.float32)  # off by two target scales
    bad = _edited_golden(g, tmp_path / "wrong.golden.npz", y_keras=wrong)
    report = verify(model, bad)
    assert not report.passed and "max abs error (normalised)" in report.problems[0]
    result = CliRunner().invoke(main, ["verify", str(model), "--golden", str(bad), "--junit", str(tmp_path / "v.xml")])
    assert result.exit_code == 1
    assert "result       FAIL: max abs error (normalised) 2" in result.stdout
    assert result.stderr.startswith(f"Error: verify failed for {model}: max abs error (normalised) 2")
    assert "Traceback" not in result.output
    suite = ET.parse(tmp_path / "v.xml").getroot()
    assert suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure is not None and "tolerance" in failure.get("message")


def test_write_junit_round_trip(tmp_path, device_model):
    report = verify(device_model("gru"))
    write_junit(report, tmp_path / "j.xml")
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "j.xml").getroot().iter("property")}
    assert props["steps"] == str(report.steps) and props["machine"] == report.machine


def test_golden_missing(tmp_path, device_model):
    model = tmp_path / "m.tflite"
    shutil.copy(device_model("gru"), model)
    with pytest.raises(BadInputError, match=r"golden trace not found: .*m.golden.npz.*--golden FILE"):
        verify(model)
    result = CliRunner().invoke(main, ["verify", str(model)])
    assert result.exit_code == 2 and "Error: golden trace not found" in result.stderr


@pytest.mark.parametrize("cut", [0, 100, 0.5, -20])
def test_golden_truncated(tmp_path, device_model, cut):
    model = device_model("gru")
    data = golden_path(model).read_bytes()
    bad = tmp_path / "t.golden.npz"
    bad.write_bytes(data[: cut if isinstance(cut, int) and cut >= 0 else int(len(data) * cut) if cut > 0 else cut])
    with pytest.raises(ModelFormatError, match="is not a readable golden trace .*truncated or corrupt"):
        verify(model, bad)
    result = CliRunner().invoke(main, ["verify", str(model), "--golden", str(bad)])
    assert result.exit_code == 2 and "is not a readable golden trace" in result.stderr
    assert "Traceback" not in result.output


def test_golden_missing_keys(tmp_path, device_model):
    model = device_model("gru")
    bad = _edited_golden(golden_path(model), tmp_path / "k.golden.npz", y_keras=None, tol_rmse=None)
    with pytest.raises(ModelFormatError, match=r"keys \['y_keras', 'tol_rmse'\] are missing"):
        verify(model, bad)


def test_golden_wrong_shape(tmp_path, device_model):
    model = device_model("gru")
    with np.load(golden_path(model)) as d:
        x = d["x"]
    bad = _edited_golden(golden_path(model), tmp_path / "s.golden.npz", x=np.concatenate([x, x], axis=1))
    with pytest.raises(ModelFormatError, match=r"expected x \(steps, \d+\) and y_keras"):
        verify(model, bad)


def test_golden_of_another_model(device_model):
    gru, lstm = device_model("gru"), device_model("lstm")
    with np.load(golden_path(lstm)) as d:
        other = str(d["model_sha256"])
    with pytest.raises(BadInputError, match=f"written for another model: golden model sha256 {other[:12]}") as e:
        verify(gru, golden_path(lstm))
    assert StatefulRunner(gru).model_sha256[:12] in str(e.value)
    result = CliRunner().invoke(main, ["verify", str(gru), "--golden", str(golden_path(lstm))])
    assert result.exit_code == 2 and "written for another model" in result.stderr
