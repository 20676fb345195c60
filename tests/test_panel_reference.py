"""The trained reference panel models (three NAB traffic sensors, per-sensor scalers, hour and weekday inputs) on
the device: ``run --stream-key`` over the sensors' interleaved rows gives each sensor what a runner with its key
gives over its rows alone, an unseen sensor runs on the global scaler with one warning, and the 4-lane pool model
agrees with the batch-1 one."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from statelite import StatefulRunner, StreamPool, read_metadata

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "gru_panel_int8.tflite"
POOL = ROOT / "models" / "gru_panel_float32_b4.tflite"
NAB = ROOT / "benchmarks" / "data" / "nab" / "realTraffic"
SENSORS = ("speed_6005", "speed_7578", "speed_t4013")
ROWS = 200


def _sensor(name: str, rows: int = ROWS) -> tuple[list[str], np.ndarray]:
    with open(NAB / f"{name}.csv", newline="") as f:
        lines = list(csv.reader(f))[1:][-rows:]  # the end of each file: its test split
    return [t for t, _ in lines], np.array([[float(v)] for _, v in lines])


@pytest.fixture(scope="module")
def interleaved(tmp_path_factory):
    streams = {name: _sensor(name) for name in SENSORS}
    times, values = _sensor("occupancy_6005")  # a sensor the model never saw, of another kind
    streams["occupancy_6005"] = (times, values)
    path = tmp_path_factory.mktemp("panel") / "sensors.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sensor", "timestamp", "value"])
        for i in range(ROWS):
            for name, (t, v) in streams.items():
                writer.writerow([name, t[i], repr(float(v[i, 0]))])
    return path, streams


def _run(model: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "statelite", "run", str(model), "--input", str(data),
                           "--stream-key", "sensor", "--gaps", "ignore"],  # the sensors skip readings: no fill
                          capture_output=True, text=True, timeout=300)


def test_the_reference_panel_model_is_a_panel_with_calendar_inputs():
    md = read_metadata(MODEL)
    assert md.panel is not None and set(md.panel.scalers) == set(SENSORS) and md.calendar == ("hour", "dow")
    assert md.format_version == 3 and md.time_column == "timestamp"


@pytest.mark.parametrize("model", [MODEL, POOL], ids=["batch-1 runners", "4-lane pool"])
def test_run_stream_key_scales_each_sensor_with_its_own_scaler(interleaved, model):
    data, streams = interleaved
    r = _run(model, data)
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if "training panel" in line] == [
        "statelite: stream 'occupancy_6005' was not in the training panel: using the global scaler"
    ]
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == ROWS * len(streams)
    horizon = read_metadata(model).horizon
    for name, (times, values) in streams.items():
        got = np.array([[float(row[f"value_t+{k}"]) for k in range(1, horizon + 1)] for row in rows
                        if row["sensor"] == name])
        alone = StatefulRunner(MODEL, key=name) if name in SENSORS else StatefulRunner(MODEL)
        expected = alone.run(values, times=times)[:, :, 0]
        if model == MODEL:
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
        else:  # float32 against int8: the same forecasts within int8's error, in the sensor's own units
            scale = np.abs(expected).mean()
            assert np.sqrt(np.mean((got - expected) ** 2)) < 0.1 * scale, name


def test_a_sensors_forecast_uses_its_own_scaler():
    times, values = _sensor("speed_7578")
    own = StatefulRunner(MODEL, key="speed_7578").run(values, times=times)[:, 0, 0]
    global_ = StatefulRunner(MODEL).run(values, times=times)[:, 0, 0]
    assert np.abs(own - global_).max() > 0.1  # the global scaler is another map: not silently the same
    truth = values[1:, 0]
    # within reach of persistence on its own test rows (the reference model beats it on the pooled test split)
    assert np.sqrt(np.mean((own[:-1] - truth) ** 2)) < 1.5 * np.sqrt(np.mean((values[:-1, 0] - truth) ** 2))


def test_pool_lanes_with_different_sensors_match_runners_with_their_keys():
    pool = StreamPool(POOL)
    data = {name: _sensor(name, 50) for name in SENSORS}
    for name in SENSORS:
        pool.add(name)
    out = {name: [] for name in SENSORS}
    for i in range(50):
        step = pool.step({n: data[n][1][i] for n in SENSORS}, times={n: data[n][0][i] for n in SENSORS})
        for n in SENSORS:
            out[n].append(step[n])
    for n in SENSORS:
        alone = StatefulRunner(MODEL, key=n).run(data[n][1], times=data[n][0])
        got = np.array(out[n])
        assert np.sqrt(np.mean((got - alone) ** 2)) < 0.1 * np.abs(alone).mean(), n
