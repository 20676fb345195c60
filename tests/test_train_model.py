"""The Keras model, the training loop and the run folder, on tiny synthetic series (seconds per run on 2 cores)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from statelite.errors import BadInputError, IncompatibleModelError  # noqa: E402
from statelite.train import Cell, RunInfo, TrainConfig, load_run, train  # noqa: E402
from statelite.train import data as D  # noqa: E402

pytestmark = pytest.mark.tf


def synthetic_csv(path, rows=240, seed=0):
    """Two noisy seasonal signals with a trend, one missing cell; column ``t`` is the time."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    a = np.sin(2 * np.pi * t / 20) + 0.01 * t + 0.05 * rng.normal(size=rows)
    b = np.cos(2 * np.pi * t / 20) + 0.05 * rng.normal(size=rows)
    lines = ["t,a,b"] + [f"{i},{x:.5f},{y:.5f}" for i, x, y in zip(t, a, b)]
    lines[10] = "9,,0.5"
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny(tmp_path, **overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    options = dict(
        out=str(tmp_path / "run"), data=str(synthetic_csv(tmp_path / "s.csv")), targets=("a",), features=("a", "b"),
        time_column="t", fill="interpolate", units=8, window=16, horizon=2, epochs=3, batch_size=16,
        learning_rate=0.01, val_fraction=0.2, test_fraction=0.2, season=20,
    )
    options.update(overrides)
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory):
    config = tiny(tmp_path_factory.mktemp("gru"), difference=True)
    return config, train(config)


def test_model_shapes_and_layers():
    from statelite.train.model import build_model

    model = build_model(features=3, outputs=8, cell="lstm", units=5, layers=2, dropout=0.1)
    assert [layer.name for layer in model.layers] == ["x", "rnn_0", "dropout_0", "rnn_1", "dropout_1", "head"]
    assert not any(getattr(layer, "stateful", False) for layer in model.layers)
    assert model.predict(np.zeros((2, 7, 3), np.float32), verbose=0).shape == (2, 7, 8)
    gru = build_model(features=1, outputs=4, cell=Cell.GRU, units=4, layers=1)
    assert gru.get_layer("rnn_0").cell.reset_after is True


@pytest.mark.parametrize("cell", ["gru", "lstm", "simplernn"])
def test_each_cell_trains_and_its_loss_falls(tmp_path, cell):
    result = train(tiny(tmp_path, cell=cell))
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.model.get_layer("rnn_0").__class__.__name__.lower() == cell


def test_run_folder_contents(gru_run):
    config, result = gru_run
    run = result.run_dir
    for name in ("model.keras", "history.csv", "loss.png", "forecast.png", "series.npz", "run.json"):
        assert (run / name).stat().st_size > 0, name
    raw = json.loads((run / "run.json").read_text())
    assert raw["format"] == "statelite-run" and raw["format_version"] == 1
    assert set(raw["versions"]) == {"statelite", "tensorflow", "keras", "numpy", "python"}
    assert raw["split"] == {"train": [0, 144], "val": [144, 192], "test": [192, 240]}
    assert raw["data"] == {
        "source": config.data, "time_column": "t", "features": ["a", "b"], "targets": ["a"], "rows": 240,
        "fill": "interpolate",
    }
    assert raw["model"] == {"file": "model.keras", "layers": [{"cell": "gru", "units": 8}], "dropout": 0.0}
    assert (raw["difference"], raw["window"], raw["horizon"], raw["burn_in"]) == (True, 16, 2, 4)
    assert raw["metrics"]["epochs_run"] == len(result.history)
    assert (run / "history.csv").read_text().splitlines()[0] == "epoch,loss,val_loss"
    test = raw["metrics"]["test"]
    assert set(test) == {"positions", "windowed", "streaming", "persistence", "seasonal_naive", "coverage", "anomaly_rate"}
    assert test["positions"] == 48 - 16 - 2 + 1


def test_load_run_round_trip_and_baselines(gru_run):
    config, result = gru_run
    info, series = load_run(result.run_dir)
    assert isinstance(info, RunInfo) and info.config == config
    assert info.split["test"] == (192, 240) and info.model_path.name == "model.keras"
    assert series.features.shape == (240, 2) and series.time[0] == "0"
    fresh = D.load_series(config.data, config.features, config.targets, config.time_column, config.fill)
    np.testing.assert_array_equal(series.features, fresh.features)
    fx, fy = D.fit_scalers(fresh, 144, config.scaler, config.difference)
    np.testing.assert_allclose(info.feature_scaler.offset, fx.offset)
    np.testing.assert_allclose(info.target_scaler.scale, fy.scale)
    # the persistence figure is reproducible from the run folder alone, at the documented positions
    b, n, h = 192, 240, config.horizon
    t = b + D.eval_positions(n - b, config.window, h)
    actual = D.actual_future(series.targets, t, h)
    rmse = np.sqrt(np.mean((actual - series.targets[t][:, None, :]) ** 2))
    assert rmse == pytest.approx(info.metrics["test"]["persistence"]["rmse"])


def test_streaming_metric_matches_one_pass_of_the_saved_model(gru_run):
    import keras

    config, result = gru_run
    info, series = load_run(result.run_dir)
    model = keras.saving.load_model(info.model_path)
    b, n = info.split["test"]
    x = D.model_inputs(series.features[b:n], info.feature_scaler, info.difference)
    out = model.predict(x[None].astype(np.float32), verbose=0)[0]
    local = D.eval_positions(n - b, info.window, info.horizon)
    t = b + local
    forecast = D.decode_forecast(out[local], series.targets[t], info.target_scaler, info.horizon, info.difference)
    rmse = np.sqrt(np.mean((forecast - D.actual_future(series.targets, t, info.horizon)) ** 2))
    assert rmse == pytest.approx(info.metrics["test"]["streaming"]["rmse"], rel=1e-5)


def test_same_seed_same_metrics(tmp_path):
    first = train(tiny(tmp_path / "1", seed=7, epochs=2))
    second = train(tiny(tmp_path / "2", seed=7, epochs=2))
    assert first.metrics == second.metrics
    assert first.history == second.history


def test_load_run_errors(tmp_path, gru_run):
    with pytest.raises(BadInputError, match="expected a run folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(BadInputError, match="expected run.json in the run folder"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(BadInputError, match="unreadable"):
        load_run(tmp_path)
    raw = json.loads((gru_run[1].run_dir / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**raw, "format_version": 2}))
    with pytest.raises(IncompatibleModelError, match="Received: format_version=2"):
        load_run(tmp_path)
    del raw["scaler"]
    (tmp_path / "run.json").write_text(json.dumps(raw))
    with pytest.raises(BadInputError, match="expected key 'scaler'"):
        load_run(tmp_path)
