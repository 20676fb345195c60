"""Metadata format 3: ``calendar`` and ``panel``, their checks, and the per-key pieces built on them (no TensorFlow)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
from panel_models import MODELS_DIR, PANEL_SCALERS, make_panel, read_json, replace_metadata

from statelite import ModelFormatError, Panel, read_metadata
from statelite.metadata import FORMAT_VERSION, PLAIN_FORMAT_VERSION, ModelMetadata, Scaler
from statelite.monitor import ResidualCalibration, calibration_for, monitor_for
from statelite.transform import Transform

INT8 = MODELS_DIR / "gru_int8.tflite"  # scaler kept on the host: a panel can be made from it
FLOAT = MODELS_DIR / "gru_float32.tflite"  # scaler folded into the graph


@pytest.fixture(scope="module")
def panel_path(tmp_path_factory):
    return make_panel(INT8, tmp_path_factory.mktemp("panel") / "panel.tflite", PANEL_SCALERS)


def test_panel_loads_with_its_scalers(panel_path):
    md = read_metadata(panel_path)
    assert md.format_version == 3 == FORMAT_VERSION
    assert md.panel.key_column == "series" and md.panel.residual_units == "target_scale"
    assert sorted(md.panel.scalers) == sorted(PANEL_SCALERS)
    s, known = md.scaler_for("large")
    assert known and s.feature_offset == (9000.0,) and s.target_scale == (750.0,) and s.kind == md.scaler.kind
    assert md.scaler_for("nope") == (md.scaler, False)
    assert md.scaler_for(None) == (md.scaler, False)
    assert md.calendar == () and md.calendar_columns == () and md.input_width == 1
    with pytest.raises(TypeError):
        md.panel.scalers["x"] = s  # read-only


def test_round_trip_and_lowest_format_version(panel_path):
    md = read_metadata(panel_path)
    again = ModelMetadata.from_dict(json.loads(md.to_json()))
    assert again == md and again.panel == md.panel
    plain = dataclasses.replace(read_metadata(INT8), format_version=None)
    assert plain.format_version == PLAIN_FORMAT_VERSION == 2  # the converter writes 2 for a plain model
    assert "panel" not in plain.to_dict() and "calendar" not in plain.to_dict()
    assert dataclasses.replace(md, format_version=None).format_version == 3
    assert dataclasses.replace(plain, calendar=("hour",), format_version=None).format_version == 3


def test_older_files_still_load(tmp_path):
    md = read_json(INT8)
    assert md["format_version"] == 2 and read_metadata(INT8).panel is None
    v1 = {k: v for k, v in md.items() if k not in ("residuals", "sampling")}
    v1["format_version"] = 1
    path = tmp_path / "v1.tflite"
    path.write_bytes(replace_metadata(INT8.read_bytes(), v1))
    assert read_metadata(path).format_version == 1


def _bad(tmp_path, change, src=INT8):
    md = read_json(src)
    md["format_version"] = 3
    md["panel"] = {"key_column": "series", "scalers": {"a": {"feature_offset": [1.0], "feature_scale": [2.0],
                                                             "target_offset": [1.0], "target_scale": [2.0]}}}
    change(md)
    path = tmp_path / "bad.tflite"
    path.write_bytes(replace_metadata(src.read_bytes(), md))
    with pytest.raises(ModelFormatError) as e:
        read_metadata(path)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def _set(path, value):
    def change(md):
        target = md
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
    return change


SCALER = ("panel", "scalers", "a")
BAD = {
    "version 2 with a panel": (_set(("format_version",), 2), "format_version 3"),
    "zero scale": (_set(SCALER + ("feature_scale",), [0.0]), "scale is zero"),
    "infinite offset": (_set(SCALER + ("target_offset",), [math.inf]), "finite number"),
    "text scale": (_set(SCALER + ("target_scale",), ["2"]), "finite number"),
    "too many features": (_set(SCALER + ("feature_offset",), [1.0, 2.0]), "feature_offset of 1 values"),
    "no targets": (_set(SCALER + ("target_scale",), []), "target_scale of 1 values"),
    "scaler missing a field": (lambda md: md["panel"]["scalers"]["a"].pop("target_offset"), "target_offset"),
    "scaler not an object": (_set(SCALER, [1, 2]), "must be an object"),
    "no scalers": (_set(("panel", "scalers"), {}), "at least one series"),
    "scalers a list": (_set(("panel", "scalers"), []), "panel scalers must be an object"),
    "empty key": (lambda md: md["panel"]["scalers"].update({"": md["panel"]["scalers"]["a"]}), "1 to 256"),
    "long key": (lambda md: md["panel"]["scalers"].update({"k" * 300: md["panel"]["scalers"]["a"]}), "1 to 256"),
    "key column a number": (_set(("panel", "key_column"), 3), "key_column must be a string"),
    "key column empty": (_set(("panel", "key_column"), ""), "non-empty"),
    "key column a feature": (_set(("panel", "key_column"), "co2"), "key column 'co2' among the features"),
    "residual units": (_set(("panel", "residual_units"), "raw"), "residual_units must be one of target_scale"),
    "panel a list": (_set(("panel",), [1]), "panel must be an object"),
    "calendar unknown": (_set(("calendar",), ["minute"]), "hour, dow, month, doy"),
    "calendar repeated": (_set(("calendar",), ["hour", "hour"]), "distinct"),
    "calendar a string": (_set(("calendar",), "hour"), "calendar must be a list"),
    "calendar empty": (_set(("calendar",), []), "at least one feature"),
    "calendar without time column": (lambda md: md.update(calendar=["hour"], time_column=None), "time_column"),
    "calendar wider than the graph": (_set(("calendar",), ["hour"]), "1 features + 2 calendar columns"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values_are_one_line_model_format_errors(tmp_path, case):
    change, expected = BAD[case]
    assert expected in _bad(tmp_path, change)


def test_folded_scaler_refused_for_a_panel(tmp_path):
    md = read_json(FLOAT)
    assert md["graph_scales_inputs"]
    msg = _bad(tmp_path, lambda d: None, src=FLOAT)
    assert "scaler kept on the host" in msg and "graph_scales_inputs true" in msg


def test_fuzzed_panel_values_never_escape(tmp_path, panel_path):
    """Every field of the panel entry set to values of other types and sizes: loads or one ModelFormatError."""
    base = read_json(panel_path)
    values = [None, True, -1, 0, 2**63, 1e308, -0.0, "x", "", [], [1, "a"], {}, {"a": 1}, 4.5, [1e9] * 3, [math.nan]]
    paths = [("panel",), ("panel", "key_column"), ("panel", "scalers"), ("panel", "residual_units"),
             ("panel", "scalers", "mid"), ("calendar",)]
    paths += [("panel", "scalers", "mid", f) for f in ("feature_offset", "feature_scale", "target_offset",
                                                         "target_scale")]
    data = INT8.read_bytes()
    path = tmp_path / "f.tflite"
    outcomes = set()
    for p in paths:
        for v in values:
            md = copy.deepcopy(base)
            _set(p, v)(md)
            path.write_bytes(replace_metadata(data, md))
            try:
                read_metadata(path)
                outcomes.add("ok")
            except ModelFormatError as e:
                assert "\n" not in str(e)
                outcomes.add("refused")
    assert outcomes == {"ok", "refused"}


def test_residual_calibration_scaled():
    q = np.sort(np.random.default_rng(0).uniform(0.1, 1.0, size=(2, 3, 19)), axis=-1)
    cal = ResidualCalibration(50, q, np.full((2, 3), 0.2))
    s = cal.scaled([2.0, -10.0, 0.5])
    assert np.allclose(s.quantiles, q * np.array([2.0, 10.0, 0.5])[None, :, None])
    assert np.allclose(s.tail, 0.2 * np.array([2.0, 10.0, 0.5]))
    assert np.allclose(s.quantile(0.99), cal.quantile(0.99) * [2.0, 10.0, 0.5])
    assert s.steps == 50 and cal.quantiles is q  # the original is untouched
    with pytest.raises(ValueError, match="3 finite nonzero factors"):
        cal.scaled([1.0, 2.0])
    with pytest.raises(ValueError, match="finite nonzero"):
        cal.scaled([1.0, 0.0, 1.0])


def test_per_key_transform_and_monitor(panel_path):
    md = read_metadata(panel_path)
    t = Transform.from_metadata(md, key="large")
    assert t.f_offset.tolist() == [9000.0] and t.t_scale.tolist() == [750.0]
    assert Transform.from_metadata(md, key="unseen").f_offset.tolist() == list(md.scaler.feature_offset)
    assert Transform.from_metadata(md).t_scale.tolist() == list(md.scaler.target_scale)
    large = calibration_for(md, "large")
    assert np.allclose(large.quantiles, md.residuals.quantiles * 750.0)
    glob = calibration_for(md, "unseen")
    assert np.allclose(glob.tail, md.residuals.tail * abs(md.scaler.target_scale[0]))
    m = monitor_for(md, key="small")
    assert np.allclose(m.calibration.quantiles, md.residuals.quantiles * 0.01)
    plain = read_metadata(INT8)
    assert calibration_for(plain, "large") is plain.residuals  # not a panel: raw units already


def test_scaler_dataclass_equality_ignores_mapping_type():
    s = Scaler("standard", (1.0,), (2.0,), (1.0,), (2.0,))
    assert Panel("k", {"a": s}) == Panel("k", {"a": s})
    assert Panel("k", {"a": s}) != Panel("j", {"a": s})
