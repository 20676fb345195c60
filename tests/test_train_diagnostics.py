"""Warnings about a trained model (worse than persistence, and why) and the timing, in run.json and in the log."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from statelite.train import TrainConfig, load_run, train  # noqa: E402
from statelite.train import data as D  # noqa: E402
from statelite.train.trainer import FEW_CHUNKS, diagnose, diagnostics_text  # noqa: E402

pytestmark = pytest.mark.tf


def write_series(path, values):
    path.write_text("y\n" + "\n".join(f"{v:.5f}" for v in values) + "\n")
    return str(path)


def small(tmp_path, values, **overrides):
    options = dict(
        out=str(tmp_path / "run"), data=write_series(tmp_path / "s.csv", values), targets=("y",), units=8,
        window=16, horizon=2, epochs=3, batch_size=16, learning_rate=0.01, val_fraction=0.2, test_fraction=0.2,
    )
    options.update(overrides)
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def trending_run(tmp_path_factory):
    """A rising series modelled in levels: the test split lies above everything the model was trained on."""
    rng = np.random.default_rng(0)
    t = np.arange(240)
    values = 0.05 * t + 0.3 * np.sin(2 * np.pi * t / 12) + 0.05 * rng.normal(size=t.size)
    lines = []
    result = train(small(tmp_path_factory.mktemp("trend"), values), log=lines.append)
    return result, lines


def test_a_trend_without_differencing_is_flagged_with_its_cause(trending_run):
    result, lines = trending_run
    raw = json.loads((result.run_dir / "run.json").read_text())
    codes = [d["code"] for d in raw["diagnostics"]]
    assert codes[:2] == ["worse_than_persistence", "test_outside_train_range"], codes
    worse, outside = raw["diagnostics"][:2]
    test = raw["metrics"]["test"]
    assert worse["streaming_rmse"] == pytest.approx(test["streaming"]["rmse"])
    assert worse["persistence_rmse"] == pytest.approx(test["persistence"]["rmse"])
    assert worse["ratio"] == pytest.approx(worse["streaming_rmse"] / worse["persistence_rmse"]) and worse["ratio"] > 1
    assert outside["measured_on"] == "levels" and outside["suggestion"] == "--difference"
    assert outside["columns"]["y"]["fraction_outside"] == 1.0  # every test row is above the training maximum
    assert outside["columns"]["y"]["test_range"][0] > outside["columns"]["y"]["train_range"][1]
    # one paragraph at the end of the log: the figures, the ratio, the cause and what to do
    paragraph = lines[-1]
    assert paragraph.startswith("warning: The model is no better than persistence")
    assert f"{worse['ratio']:.2f}x" in paragraph and "Likely causes:" in paragraph and "--difference" in paragraph
    # before it, the epochs and (a short series) the warning that few validation positions calibrate the intervals
    assert all(line.startswith(("epoch", "warning: The prediction intervals")) for line in lines[:-1])
    assert result.diagnostics == tuple(raw["diagnostics"])


def test_timing_is_recorded(trending_run):
    result, _ = trending_run
    info, _ = load_run(result.run_dir)
    assert set(info.timing) == {"fit_seconds", "total_seconds", "windows_per_second"}
    assert 0 < info.timing["fit_seconds"] <= info.timing["total_seconds"]
    windows = info.metrics["throughput"]["windows"]
    assert info.timing["windows_per_second"] == pytest.approx(windows / info.timing["fit_seconds"], rel=0.01)
    assert info.timing["total_seconds"] == pytest.approx(result.seconds, abs=1e-3)
    assert info.diagnostics == result.diagnostics


def test_a_well_behaved_series_gets_no_warning(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(240)
    lines = []
    result = train(small(tmp_path, np.sin(2 * np.pi * t / 8) + 0.05 * rng.normal(size=t.size)), log=lines.append)
    assert result.test["streaming"]["rmse"] < result.test["persistence"]["rmse"]
    raw = json.loads((result.run_dir / "run.json").read_text())
    assert raw["diagnostics"] == [] and not any("warning" in line for line in lines)
    assert raw["timing"]["fit_seconds"] > 0


def test_load_run_reads_a_run_json_from_before_diagnostics(tmp_path, trending_run):
    old = tmp_path / "old"
    shutil.copytree(trending_run[0].run_dir, old)
    raw = json.loads((old / "run.json").read_text())
    del raw["diagnostics"], raw["timing"]
    (old / "run.json").write_text(json.dumps(raw))
    info, _ = load_run(old)
    assert info.diagnostics == () and info.timing is None


# diagnose() itself, on hand-made figures: no training needed.

def figures(streaming, persistence, chunks=200, history=((1.0,), (0.5,), (0.4,))):
    history = [{"epoch": i + 1, "loss": v[0], "val_loss": v[0]} for i, v in enumerate(history)]
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    metrics = {
        "test": {"streaming": {"rmse": streaming}, "persistence": {"rmse": persistence}},
        "best_val_loss": history[best]["val_loss"], "best_epoch": best + 1, "epochs_run": len(history),
        "train_chunks": chunks,
    }
    return metrics, history


def series_of(values):
    values = np.asarray(values, dtype=np.float64)[:, None]
    return D.Series(values, values, None, ("y",), ("y",), None, "test")


def config(difference=False):
    return TrainConfig(out="unused", data="unused.csv", targets=("y",), window=4, horizon=1, difference=difference)


def test_few_chunks_and_a_stalled_validation_loss_are_named_as_causes():
    stationary = series_of(np.tile([0.0, 1.0, 2.0, 1.0], 25))  # 100 rows, the test split inside the training range
    metrics, history = figures(2.0, 1.0, chunks=FEW_CHUNKS - 1, history=((1.0,), (1.01,), (1.02,)))
    found = diagnose(stationary, (60, 80), config(), metrics, history)
    assert [d["code"] for d in found] == ["worse_than_persistence", "few_training_chunks", "validation_stalled"]
    assert found[1]["train_chunks"] == FEW_CHUNKS - 1
    assert found[2]["best_epoch"] == 1 and found[2]["epochs_run"] == 3
    [paragraph] = diagnostics_text(found)
    assert "2.00x" in paragraph and f"only {FEW_CHUNKS - 1} chunks" in paragraph and "never improved" in paragraph
    # enough chunks and a falling validation loss: the headline stays, with no cause to name
    metrics, history = figures(2.0, 1.0)
    found = diagnose(stationary, (60, 80), config(), metrics, history)
    assert [d["code"] for d in found] == ["worse_than_persistence"]
    assert "None of the measured causes applies" in diagnostics_text(found)[0]


def test_out_of_range_test_split_is_a_warning_even_when_the_model_wins():
    rising = series_of(np.arange(100.0))  # levels: the whole test split is above the training split
    metrics, history = figures(0.5, 1.0)
    [found] = diagnose(rising, (60, 80), config(), metrics, history)
    assert found["code"] == "test_outside_train_range" and found["threshold"] == 0.2
    assert found["columns"]["y"]["fraction_outside"] == 1.0 and found["suggestion"] == "--difference"
    assert diagnostics_text([found])[0].startswith("warning: Test-split values outside")
    # the same series differenced steps by a constant 1: nothing outside, nothing to say
    assert diagnose(rising, (60, 80), config(difference=True), metrics, history) == []
    # a few stray test rows: below the warning threshold when the model wins
    few_out = series_of(np.r_[np.tile([0.0, 1.0], 40), [1.5], np.tile([0.0, 1.0], 9), [0.5]])
    assert diagnose(few_out, (60, 80), config(), metrics, history) == []
