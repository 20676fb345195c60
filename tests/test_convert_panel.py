"""Converting a panel model with calendar inputs: format-3 metadata with every series' scaler by key and the global
one, the scaler kept on the host, calibration over several series, parity and a golden trace on one named series,
and ``verify`` passing on the device's path."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import statelite  # noqa: E402
from statelite.convert import ConvertConfig, convert  # noqa: E402
from statelite.golden import read_golden  # noqa: E402
from statelite.train import TrainConfig, train  # noqa: E402
from statelite.verify import verify  # noqa: E402

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def panel_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("panel")
    rng = np.random.default_rng(1)
    lines = ["site,time,load"]
    start = np.datetime64("2026-02-02T00:00")
    for site, scale, offset in (("a", 1.0, 10.0), ("b", 50.0, 900.0)):
        for h in range(300):
            value = offset + scale * (np.sin(2 * np.pi * h / 24) + 0.1 * rng.normal())
            lines.append(f"{site},{start + np.timedelta64(h, 'h')},{value:.6f}")
    (tmp / "sites.csv").write_text("\n".join(lines) + "\n")
    config = TrainConfig(out=str(tmp / "run"), data=str(tmp / "sites.csv"), targets=("load",), time_column="time",
                         series_column="site", calendar=("hour",), units=8, window=24, horizon=2, epochs=2,
                         batch_size=16, learning_rate=0.01)
    return train(config)


@pytest.mark.parametrize("quant", ["float32", "int8"])
def test_a_panel_model_converts_with_its_scalers_and_passes_verify(panel_run, tmp_path, quant):
    lines = []
    result = convert(panel_run.run_dir, tmp_path / f"m_{quant}.tflite", ConvertConfig(quant=quant), log=lines.append)
    assert result.passed, result.violations
    md = result.metadata
    raw = json.loads((panel_run.run_dir / "run.json").read_text())
    assert md.format_version == 3 and md.calendar == ("hour",) and md.time_column == "time"
    assert md.panel.key_column == "site" and set(md.panel.scalers) == {"a", "b"}
    for key in ("a", "b"):
        assert md.panel.scalers[key].target_scale == tuple(raw["panel"]["series"][key]["scaler"]["target_scale"])
    assert md.scaler.target_scale == tuple(raw["scaler"]["target_scale"])  # the global one, for unseen keys
    assert not md.graph_scales_inputs and not md.graph_scales_outputs  # the host scales, per key
    assert md.x.shape[-1] == 1 + 2
    if quant == "int8":
        assert any("training splits of 2 series" in line for line in lines)
    golden = read_golden(result.golden_path)
    assert golden.key == "a" and golden.times is not None and len(golden.times) == len(golden.x)
    report = verify(result.path)
    assert report.passed, report


def test_the_device_forecast_of_a_key_is_in_that_series_units(panel_run, tmp_path):
    result = convert(panel_run.run_dir, tmp_path / "m.tflite", ConvertConfig(quant="float32"), log=None)
    golden = read_golden(result.golden_path)
    runner = statelite.StatefulRunner(result.path, key="a")
    y = runner.run(golden.x, times=list(golden.times))
    assert np.allclose(y, golden.y, atol=1e-4 * np.abs(golden.y).max())
    # the same rows scaled as series "b" would be: a different forecast, not silently the same
    other = statelite.StatefulRunner(result.path, key="b")
    assert not np.allclose(other.run(golden.x, times=list(golden.times)), golden.y, atol=1e-3)
