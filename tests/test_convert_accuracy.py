"""Accuracy on data unlike the bundled series: calibration over the training split, float16 with large magnitudes,
the calibrated ranges in the metadata, and ``--quant auto`` (issue: accuracy that holds on real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from statelite import StatefulRunner, read_metadata  # noqa: E402
from statelite.convert import ConvertConfig, convert  # noqa: E402
from statelite.errors import BadInputError  # noqa: E402
from statelite.inspection import format_inspection, inspect_model  # noqa: E402
from statelite.train import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.tf


def _write(path: Path, header: str, columns: list[np.ndarray]) -> Path:
    rows = [header] + [f"{i}," + ",".join(f"{c[i]:.6f}" for c in columns) for i in range(len(columns[0]))]
    path.write_text("\n".join(rows) + "\n")
    return path


def _train(tmp_path: Path, name: str, csv: Path, **kw) -> Path:
    out = tmp_path / name
    base = dict(out=str(out), data=str(csv), time_column="step", cell="gru", units=8, layers=1, window=24,
                horizon=2, epochs=4, patience=10, seed=0)
    train(TrainConfig(**{**base, **kw}), log=None)
    return out


@pytest.fixture(scope="module")
def large_magnitude_run(tmp_path_factory):
    """Demand in the tens of thousands (kW) driven by a feature around 1e8: what float16 could not hold when the
    scaler was folded into float16 weights (input weights underflow to zero, outputs overflow past 65,504)."""
    tmp = tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(0)
    t = np.arange(700)
    volume = 1.2e8 + 2e7 * np.sin(2 * np.pi * t / 30) + 1e6 * rng.normal(size=t.size)
    demand = 40_000 + 8_000 * np.sin(2 * np.pi * t / 30 + 0.5) + 300 * rng.normal(size=t.size)
    csv = _write(tmp / "large.csv", "step,demand,volume", [demand, volume])
    return _train(tmp, "run", csv, targets=("demand",), features=("demand", "volume"))


def test_float16_holds_large_magnitudes(large_magnitude_run, tmp_path):
    result = convert(large_magnitude_run, tmp_path / "f16.tflite", ConvertConfig(quant="float16"), log=None)
    assert result.passed, result.violations
    assert result.parity["rmse_norm"] < 2e-3
    md = result.metadata
    assert not md.graph_scales_inputs and not md.graph_scales_outputs  # the scaler stays in float64 on the host
    y = StatefulRunner(result.path).run(np.array([[41_000.0, 1.25e8], [42_000.0, 1.3e8]]))
    assert np.isfinite(y).all() and 10_000 < y.mean() < 80_000


@pytest.fixture(scope="module")
def trending_run(tmp_path_factory):
    """A random walk with drift, differenced: the test split lies above the whole training range in level."""
    tmp = tmp_path_factory.mktemp("trend")
    rng = np.random.default_rng(1)
    level = 100 + np.cumsum(0.5 + rng.normal(size=700))
    csv = _write(tmp / "trend.csv", "step,price", [level])
    return _train(tmp, "run", csv, targets=("price",), difference=True)


def test_int8_calibrates_on_the_whole_training_split(trending_run, tmp_path):
    result = convert(trending_run, tmp_path / "i8.tflite", ConvertConfig(quant="int8"), log=None)
    md = result.metadata
    from statelite.train import load_run

    info, _ = load_run(trending_run)
    assert md.calibration["steps"] == info.split["train"][1] - info.split["train"][0]
    assert set(md.calibration["tensors"]) == {"x", "h_0"}
    assert md.input_range.basis == "difference"
    assert md.input_range.clip_min is not None
    assert md.input_range.clip_min[0] <= md.input_range.train_min[0] < md.input_range.train_max[0] <= md.input_range.clip_max[0]
    # A trending series forecasts, not one constant: the forecasts follow the level.
    y = StatefulRunner(result.path).run(np.linspace(300, 400, 50)[:, None])
    assert np.ptp(y[:, 0, 0]) > 50
    capped = convert(trending_run, tmp_path / "cap.tflite", ConvertConfig(quant="int8", calibration_steps=50), log=None)
    assert capped.metadata.calibration["steps"] == 50


def test_float_models_record_training_range_without_clip(trending_run, tmp_path):
    md = convert(trending_run, tmp_path / "f32.tflite", ConvertConfig(quant="float32"), log=None).metadata
    assert md.calibration is None
    assert md.input_range.clip_min is None and md.input_range.train_max[0] > 0
    assert read_metadata(tmp_path / "f32.tflite").input_range == md.input_range


def test_inspect_shows_the_ranges(trending_run, tmp_path):
    path = convert(trending_run, tmp_path / "i8.tflite", ConvertConfig(quant="int8"), log=None).path
    text = format_inspection(inspect_model(path))
    assert "input range  per column (first difference, raw units)" in text
    assert "price      trained [" in text and "clips [" in text
    assert "calibration  " in text and "h_0" in text


def test_auto_keeps_int8_when_it_holds(trending_run, tmp_path):
    lines = []
    result = convert(trending_run, tmp_path / "auto.tflite", ConvertConfig(quant="auto"), log=lines.append)
    auto = result.parity["auto"]
    tried = [t["quant"] for t in auto["tried"]]
    if auto["chose"] == "int8":
        assert tried == ["int8"] and "int8 holds its tolerance" in auto["why"]
    else:  # int8 missed: every candidate was tried and the smallest holding one kept
        assert tried == ["int8", "int16x8", "dynamic"]
        holding = [t for t in auto["tried"] if t.get("holds")]
        assert auto["chose"] == min(holding, key=lambda t: t["bytes"])["quant"]
    assert result.metadata.quant == auto["chose"]
    assert read_metadata(result.path).parity["auto"] == auto
    assert any(line.startswith("auto: chose ") for line in lines)
    assert not (tmp_path / "auto.tflite.auto").exists()  # candidates are cleaned up


def test_auto_falls_back_when_int8_misses(trained_runs, tmp_path):
    """An untrained-ish tiny model misses int8's forecast rule; auto must then pick a mode that holds, or say none."""
    result = convert(trained_runs("LSTM", 2), tmp_path / "a.tflite", ConvertConfig(quant="auto", check_parity=False),
                     log=None)
    auto = result.parity["auto"]
    first = auto["tried"][0]
    assert first["quant"] == "int8"
    if first["holds"]:
        assert auto["chose"] == "int8"
    else:
        assert [t["quant"] for t in auto["tried"]] == ["int8", "int16x8", "dynamic"]
        assert auto["chose"] != "int8" or not any(t.get("holds") for t in auto["tried"])


def test_auto_refuses_int8_io():
    with pytest.raises(BadInputError, match="auto may choose a mode with float inputs"):
        ConvertConfig(quant="auto", io="int8")


def test_auto_skips_modes_the_target_cannot_load(trending_run, tmp_path):
    result = convert(trending_run, tmp_path / "t.tflite",
                     ConvertConfig(quant="auto", target="tflite-runtime-2.14", check_parity=False), log=None)
    for t in result.parity["auto"]["tried"]:
        if t["quant"] == "dynamic":
            assert "FULLY_CONNECTED" in t["skipped"]
    assert result.metadata.quant in ("int8", "int16x8")


@pytest.fixture(scope="module")
def growing_swing_run(tmp_path_factory):
    """A seasonal swing that grows, like airline passengers: the test split's forecasts leave the training range."""
    tmp = tmp_path_factory.mktemp("swing")
    rng = np.random.default_rng(2)
    t = np.arange(600)
    swing = (1 + t / 150) * np.sin(2 * np.pi * t / 12) + 0.05 * rng.normal(size=t.size)
    csv = _write(tmp / "swing.csv", "step,v", [swing])
    return _train(tmp, "run", csv, targets=("v",), window=24, horizon=1, epochs=8)


def test_int16x8_headroom_keeps_forecasts_beyond_the_training_range(growing_swing_run, tmp_path):
    """Regression: the calibrator fixes the forecast tensor's range to the training stream's, and stretching the
    calibration stream does not widen it (the forecast is a linear map of a bounded state); without the widened
    forecast range the int16x8 model clipped every forecast beyond the training range."""
    narrow = convert(growing_swing_run, tmp_path / "h1.tflite",
                     ConvertConfig(quant="int16x8", calibration_headroom=1, check_parity=False), log=None)
    wide = convert(growing_swing_run, tmp_path / "h4.tflite", ConvertConfig(quant="int16x8", check_parity=False),
                   log=None)
    assert wide.metadata.calibration["headroom"] == 4.0 and narrow.metadata.calibration["headroom"] == 1
    assert wide.parity["max_abs_norm"] < narrow.parity["max_abs_norm"] / 5, (narrow.parity, wide.parity)
    assert wide.passed, wide.violations
