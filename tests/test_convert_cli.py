"""``statelite convert`` through the CLI: accepted inputs, bad inputs (exit 2 and the message), metadata round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tensorflow")

from statelite import read_metadata  # noqa: E402
from statelite.cli import main  # noqa: E402
from statelite.metadata import ModelMetadata  # noqa: E402

pytestmark = pytest.mark.tf


def _invoke(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    assert "Traceback" not in result.output
    return result


def test_convert_run_folder_prints_parity_and_writes_golden(trained_runs, tmp_path):
    out = tmp_path / "m.tflite"
    result = _invoke("convert", trained_runs("gru", 1), "--quant", "int8", "--out", out)
    assert result.exit_code == 0, result.output
    assert "parity over the test split (PASS)" in result.output
    assert "forecast RMSE vs truth" in result.output
    md = read_metadata(out)
    assert md.quant == "int8" and md.features == ("a", "b") and md.targets == ("a",) and md.horizon == 2
    assert md.parity["passed"] and md.parity["steps"] == 105
    with np.load(tmp_path / "m.golden.npz") as golden:
        assert golden["x"].shape == (105, 2) and golden["y_keras"].shape == (105, 2, 1)


def test_metadata_round_trip(trained_runs, tmp_path):
    out = tmp_path / "m.tflite"
    assert _invoke("convert", trained_runs("lstm", 2), "--out", out).exit_code == 0
    md = read_metadata(out)
    assert ModelMetadata.from_json(md.to_json()) == md
    raw = json.loads(md.to_json())
    assert raw["format"] == "statelite" and raw["format_version"] == 2
    assert [s["input"]["name"] for s in raw["states"]] == ["h_0", "c_0", "h_1", "c_1"]
    assert raw["versions"]["tensorflow"]


def test_user_keras_model_is_accepted(keras_models, tmp_path):
    out = tmp_path / "user.tflite"
    result = _invoke("convert", keras_models("GRU", 2), "--out", out)
    assert result.exit_code == 0, result.output
    md = read_metadata(out)
    assert md.features == ("x0", "x1") and md.targets == ("y0", "y1", "y2") and md.scaler.kind == "none"


def test_time_distributed_head_is_accepted(tmp_path):
    import keras

    inp = keras.Input((None, 1))
    h = keras.layers.LSTM(6, return_sequences=True)(inp)
    model = keras.Model(inp, keras.layers.TimeDistributed(keras.layers.Dense(2))(h))
    model.save(tmp_path / "td.keras")
    assert _invoke("convert", tmp_path / "td.keras", "--out", tmp_path / "td.tflite").exit_code == 0


def test_last_layer_without_sequences_is_accepted(tmp_path):
    import keras

    inp = keras.Input((None, 1))
    h = keras.layers.GRU(6, return_sequences=True)(inp)
    h = keras.layers.GRU(5)(h)
    keras.Model(inp, keras.layers.Dense(1)(h)).save(tmp_path / "last.keras")
    result = _invoke("convert", tmp_path / "last.keras", "--out", tmp_path / "last.tflite")
    assert result.exit_code == 0, result.output


def test_unsupported_layer_names_it_and_lists_supported(tmp_path):
    import keras

    inp = keras.Input((None, 2))
    h = keras.layers.Conv1D(4, 3, padding="causal")(inp)
    h = keras.layers.GRU(4, return_sequences=True)(h)
    keras.Model(inp, keras.layers.Dense(1)(h)).save(tmp_path / "conv.keras")
    result = _invoke("convert", tmp_path / "conv.keras", "--out", tmp_path / "x.tflite")
    assert result.exit_code == 2
    assert "is a Conv1D, which statelite cannot convert" in result.output
    assert "Supported layers: InputLayer, SimpleRNN, GRU, LSTM, Dropout, Dense, TimeDistributed(Dense)" in result.output
    assert not (tmp_path / "x.tflite").exists()


def test_bidirectional_is_refused(tmp_path):
    import keras

    inp = keras.Input((None, 1))
    h = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True))(inp)
    keras.Model(inp, keras.layers.Dense(1)(h)).save(tmp_path / "bi.keras")
    result = _invoke("convert", tmp_path / "bi.keras", "--out", tmp_path / "x.tflite")
    assert result.exit_code == 2 and "is a Bidirectional" in result.output


def test_int8_io_needs_int8_quant(trained_runs, tmp_path):
    result = _invoke("convert", trained_runs("gru", 1), "--quant", "float16", "--io", "int8", "--out", tmp_path / "x.tflite")
    assert result.exit_code == 2
    assert "--io int8 needs --quant int8 (integer-only graph); received quant=float16." in result.output


def test_not_a_run_folder(tmp_path):
    result = _invoke("convert", tmp_path, "--out", tmp_path / "x.tflite")
    assert result.exit_code == 2
    assert f"expected run.json in the run folder, Received: none in {str(tmp_path)!r}" in result.output
    result = _invoke("convert", tmp_path / "missing.keras", "--out", tmp_path / "x.tflite")
    assert result.exit_code == 2 and "(not found)" in result.output


def test_corrupt_keras_file(tmp_path):
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    result = _invoke("convert", tmp_path / "bad.keras", "--out", tmp_path / "x.tflite")
    assert result.exit_code == 2 and "could not load the Keras model" in result.output


def test_parity_failure_exits_1_and_says_by_how_much(trained_runs, tmp_path, monkeypatch):
    from statelite.convert import parity

    tight = {**parity.TOLERANCES, parity.Quant.INT8: {"max_abs": 1e-6, "rmse": 1e-7}}
    monkeypatch.setattr(parity, "TOLERANCES", tight)
    out = tmp_path / "m.tflite"
    result = _invoke("convert", trained_runs("gru", 1), "--quant", "int8", "--out", out)
    assert result.exit_code == 1
    assert "parity check failed" in result.output and "exceeds the int8 tolerance 1e-06 by" in result.output
    assert out.exists()  # kept for inspection
