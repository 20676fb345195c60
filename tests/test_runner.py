"""StatefulRunner on the committed reference models: no TensorFlow needed."""

from __future__ import annotations

import json

import numpy as np
import pytest

import statelite
from statelite import BadInputError, IncompatibleModelError, StatefulRunner
from statelite.metadata import ModelMetadata, read_metadata


@pytest.fixture(params=["gru_float32", "gru_int8", "lstm_float32", "lstm_int8"])
def model(request, reference_model):
    return reference_model(request.param + ".tflite")


def _golden(model):
    with np.load(model.with_name(model.stem + ".golden.npz")) as g:
        return {k: g[k] for k in g.files}


def test_run_matches_golden_trace(model):
    g = _golden(model)
    y = StatefulRunner(model).run(g["x"])
    err = (y - g["y_keras"]) / g["target_scale"]
    assert np.abs(err).max() <= g["tol_max_abs"] and np.sqrt((err**2).mean()) <= g["tol_rmse"]


def test_step_equals_run_and_reset_restarts(model):
    g = _golden(model)
    a = StatefulRunner(model)
    ys = a.run(g["x"][:30])
    b = StatefulRunner(model)
    np.testing.assert_array_equal(np.stack([b.step(x) for x in g["x"][:30]]), ys)
    b.reset()
    np.testing.assert_array_equal(b.run(g["x"][:30]), ys)


def test_state_round_trip_continues_the_stream(model):
    g = _golden(model)
    whole = StatefulRunner(model).run(g["x"][:40])
    first = StatefulRunner(model)
    first.run(g["x"][:20])
    second = StatefulRunner(model)
    second.state = first.state
    np.testing.assert_allclose(second.run(g["x"][20:40]), whole[20:], rtol=0, atol=1e-9)


def test_state_is_named_and_shaped(reference_model):
    runner = StatefulRunner(reference_model("lstm_float32.tflite"))
    state = runner.state
    assert list(state) == ["h_0", "c_0", "x_prev"]
    assert state["h_0"].shape == (1, 32) and not state["h_0"].any()
    assert np.isnan(state["x_prev"]).all()


def test_state_matters(reference_model):
    """Guard against a runner that ignores its state: a warm state changes the forecast."""
    model = reference_model("gru_float32.tflite")
    g = _golden(model)
    warm = StatefulRunner(model)
    warm.run(g["x"][:50])
    cold = StatefulRunner(model)
    cold.state = {**warm.state, "h_0": np.zeros((1, 32))}
    assert np.abs(warm.step(g["x"][50]) - cold.step(g["x"][50])).max() > 1e-3


def test_wrong_shape_is_refused_and_state_kept(model):
    runner = StatefulRunner(model)
    g = _golden(model)
    runner.run(g["x"][:5])
    before = runner.state
    with pytest.raises(BadInputError, match=r"x must have shape \(1,\) \(features: co2\); received shape \(3,\)"):
        runner.step([1.0, 2.0, 3.0])
    after = runner.state
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_nan_is_refused_unless_allowed(model):
    runner = StatefulRunner(model)
    with pytest.raises(BadInputError, match="NaN or inf"):
        runner.step([np.nan])
    StatefulRunner(model, allow_nonfinite=True).step([np.inf])


def test_bad_state_is_refused(reference_model):
    runner = StatefulRunner(reference_model("gru_float32.tflite"))
    with pytest.raises(BadInputError, match=r"state must have exactly the keys \['h_0', 'x_prev'\]"):
        runner.state = {"h_0": np.zeros((1, 32))}
    with pytest.raises(BadInputError, match=r"state 'h_0' must have shape \(1, 32\); received shape \(32,\)"):
        runner.state = {"h_0": np.zeros(32), "x_prev": np.zeros((1, 1))}


def test_future_metadata_version_is_refused(reference_model):
    md = read_metadata(reference_model("gru_float32.tflite"))
    raw = json.loads(md.to_json())
    raw["format_version"] = 99
    with pytest.raises(IncompatibleModelError, match="format version 99, newer than this statelite reads"):
        ModelMetadata.from_dict(raw)


def test_unknown_backend_lists_the_choices(reference_model):
    with pytest.raises(statelite.InterpreterNotFoundError, match="expected one of: auto, litert"):
        StatefulRunner(reference_model("gru_float32.tflite"), backend="onnx")

