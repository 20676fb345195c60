"""Training calibrates the device's intervals and anomaly scores on the validation split, measures their coverage on
the test split, records the time column's sampling, and the converter carries both into the model (format 2).

One small model on 750 five-minute readings (2.6 days): the little history a new sensor comes with.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import statelite  # noqa: E402
from statelite.errors import BadInputError  # noqa: E402
from statelite.monitor import PROBS, ResidualCalibration  # noqa: E402
from statelite.train import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.tf

ROWS = 750


def _csv(path, rows: int = ROWS):
    rng = np.random.default_rng(3)
    t = np.arange(rows)
    values = 20 + 3 * np.sin(2 * np.pi * t / 288) + np.cumsum(rng.normal(0, 0.05, rows)) + rng.normal(0, 0.2, rows)
    start = np.datetime64("2026-03-01T00:00")
    times = [str(start + np.timedelta64(5 * int(i), "m")).replace("T", " ") for i in t]
    path.write_text("ts,temp\n" + "".join(f"{a},{v:.4f}\n" for a, v in zip(times, values)))
    return str(path)


def _config(tmp_path, **overrides):
    options = dict(out=str(tmp_path / "run"), data=_csv(tmp_path / "s.csv"), targets=("temp",), time_column="ts",
                   units=8, window=24, horizon=3, epochs=4, batch_size=16, learning_rate=0.01)
    options.update(overrides)
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    return train(_config(tmp_path_factory.mktemp("short")))


def test_validation_residuals_calibrate_and_the_test_split_measures_coverage(short_run):
    raw = json.loads((short_run.run_dir / "run.json").read_text())
    cal = ResidualCalibration.from_dict(raw["residuals"], horizon=3, targets=1)
    a, b = raw["split"]["val"]
    # every validation position whose horizon ends inside the split, after the window's warm-up
    assert cal.steps == b - 1 - a and cal.source == "validation split"
    assert cal.quantiles.shape == (3, 1, len(PROBS)) and (np.diff(cal.quantiles, axis=-1) >= 0).all()
    # errors grow with the horizon on a random walk plus noise
    assert cal.quantile(0.9)[2, 0] > cal.quantile(0.9)[0, 0]
    coverage = short_run.test["coverage"]
    assert set(coverage) == {"adaptive", "calibrated"} and set(coverage["adaptive"]) == {"0.8", "0.9", "0.95"}
    shares = [coverage["adaptive"][k] for k in ("0.8", "0.9", "0.95")]
    assert shares == sorted(shares) and all(0.6 < s <= 1.0 for s in shares), coverage
    assert 0.0 <= short_run.test["anomaly_rate"] < 0.05
    assert short_run.metrics["calibration_steps"] == cal.steps


def test_the_sampling_is_recorded_and_the_converter_carries_both(short_run, tmp_path):
    from statelite.convert import ConvertConfig, convert

    raw = json.loads((short_run.run_dir / "run.json").read_text())
    assert raw["sampling"] == {"kind": "datetime", "period": 300.0, "regular": 1.0}
    out = tmp_path / "m.tflite"
    convert(short_run.run_dir, out, ConvertConfig(quant="float32"), log=lambda *a: None)
    md = statelite.read_metadata(out)
    assert md.format_version == 2 and md.sampling == raw["sampling"]
    assert md.residuals == ResidualCalibration.from_dict(raw["residuals"])
    obs = statelite.StatefulRunner(out).monitor().step(np.array([20.0]))
    assert obs.lower.shape == (1, 3, 1) and (obs.lower <= obs.forecast).all()


def test_a_series_too_short_for_the_window_names_one_that_fits(tmp_path):
    with pytest.raises(BadInputError) as info:
        train(_config(tmp_path, window=120))
    message = str(info.value)
    assert "too short for this window" in message and "--window 109 or less fits these rows" in message
    # and that window does fit
    assert train(_config(tmp_path, window=109, epochs=1)).metrics["epochs_run"] == 1


def test_a_time_column_of_labels_trains_without_a_sampling(tmp_path):
    """A time column that holds labels, not times, is kept for the plots as before; the model then records no
    sampling, and the device checks no gaps."""
    rows = [f"week-{i},{20 + np.sin(i / 5):.4f}" for i in range(300)]
    (tmp_path / "l.csv").write_text("label,temp\n" + "\n".join(rows) + "\n")
    result = train(TrainConfig(out=str(tmp_path / "run"), data=str(tmp_path / "l.csv"), targets=("temp",),
                               time_column="label", units=4, window=16, horizon=2, epochs=1))
    assert json.loads((result.run_dir / "run.json").read_text())["sampling"] is None
