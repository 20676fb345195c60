"""The data transforms the converter and device runtime repeat: numpy only, no TensorFlow needed to run them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("statelite.train", exc_type=ImportError)

from statelite.errors import BadInputError  # noqa: E402
from statelite.train import Cell, Fill, ScalerKind, TrainConfig  # noqa: E402
from statelite.train import data as D  # noqa: E402


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def series_of(features, targets=None):
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    targets = features if targets is None else np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    return D.Series(features, targets, None, ("x",) * features.shape[1], ("y",) * targets.shape[1], None, "test")


# --- differencing ---------------------------------------------------------------------------------------------


def test_difference_first_row_is_zero_and_round_trips():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(30, 3)).cumsum(axis=0)
    d = D.difference(values)
    np.testing.assert_array_equal(d[0], 0.0)
    np.testing.assert_allclose(d[5], values[5] - values[4])
    np.testing.assert_allclose(D.undifference(values[0], d), values, atol=1e-12)


@pytest.mark.parametrize("differenced", [False, True])
def test_encoded_targets_decode_back_to_the_actual_future(differenced):
    rng = np.random.default_rng(1)
    y = rng.normal(size=(40, 2)).cumsum(axis=0) + 100
    horizon = 3
    scaler = D.Scaler.fit(ScalerKind.STANDARD, D.stream_values(y, differenced))
    encoded, valid = D.model_targets(y, scaler, horizon, differenced)
    positions = np.flatnonzero(valid)
    decoded = D.decode_forecast(encoded[positions], y[positions], scaler, horizon, differenced)
    np.testing.assert_allclose(decoded, D.actual_future(y, positions, horizon), atol=1e-9)


def test_target_layout_is_k_times_T_plus_j():
    n, horizon = 10, 3
    y = np.stack([np.arange(n) * 10.0, np.arange(n) * 10.0 + 1], axis=1)  # value = 10*row + column
    identity = D.Scaler(ScalerKind.STANDARD, np.zeros(2), np.ones(2))
    out, valid = D.model_targets(y, identity, horizon, differenced=False)
    assert out.shape == (n, horizon * 2)
    for k in range(horizon):
        for j in range(2):
            assert out[4, k * 2 + j] == 10 * (4 + k + 1) + j
    np.testing.assert_array_equal(valid, np.arange(n) + horizon < n)
    assert not np.isnan(out).any()  # past the end: zeros, never NaN


# --- split and scaler -----------------------------------------------------------------------------------------


def test_split_is_chronological_and_half_open():
    a, b = D.split_bounds(100, 0.15, 0.2, min_rows=10)
    assert (a, b) == (65, 80)


def test_split_too_short_gives_the_numbers():
    with pytest.raises(BadInputError, match=r"at least window \+ horizon = 56 rows, Received: rows=100"):
        D.split_bounds(100, 0.15, 0.15, min_rows=56)


def test_scalers():
    values = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    standard = D.Scaler.fit("standard", values)
    np.testing.assert_allclose(standard.offset, [3.0, 5.0])
    np.testing.assert_allclose(standard.scale, [np.std([1, 3, 5]), 1.0])  # constant column: scale 1
    minmax = D.Scaler.fit("minmax", values)
    np.testing.assert_allclose(minmax.transform(values)[:, 0], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(minmax.scale, [4.0, 1.0])
    np.testing.assert_allclose(minmax.inverse(minmax.transform(values)), values)


@pytest.mark.parametrize("kind", ["standard", "minmax"])
@pytest.mark.parametrize("differenced", [False, True])
def test_planted_value_outside_train_split_does_not_move_the_scaler(kind, differenced):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 1)).cumsum(axis=0)
    a, b = D.split_bounds(100, 0.2, 0.2)
    clean = D.fit_scalers(series_of(x), a, kind, differenced)
    for row in (a, b, 99):  # first val row (its difference reaches back into train), first test row, last row
        planted = x.copy()
        planted[row] = 1e9
        fx, fy = D.fit_scalers(series_of(planted), a, kind, differenced)
        np.testing.assert_array_equal(fx.offset, clean[0].offset)
        np.testing.assert_array_equal(fx.scale, clean[0].scale)
        np.testing.assert_array_equal(fy.offset, clean[1].offset)
    planted = x.copy()
    planted[a - 1] = 1e9  # the last training row does move it
    assert D.fit_scalers(series_of(planted), a, kind, differenced)[0].scale[0] > 1e3


# --- chunks and windows ---------------------------------------------------------------------------------------


def test_training_chunks_stay_inside_the_train_split_and_weight_burn_in_and_end():
    n, window, horizon, burn_in = 60, 8, 2, 3
    rows = np.arange(n, dtype=np.float64)[:, None]
    a, _ = D.split_bounds(n, 0.2, 0.2)
    identity = D.Scaler(ScalerKind.STANDARD, np.zeros(1), np.ones(1))
    x = D.model_inputs(rows[:a], identity, differenced=False)
    y, valid = D.model_targets(rows[:a], identity, horizon, differenced=False)
    starts = D.chunk_starts(len(x), window, np.random.default_rng(0))
    assert sorted(starts) == list(range(a - window + 1))
    xs, ys, ws = D.chunk_batch(x, y, valid, starts, window, burn_in)
    assert xs.shape == (len(starts), window, 1) and ys.shape == (len(starts), window, horizon)
    assert xs.max() < a and (ys * ws[..., None]).max() < a  # no input and no supervised target from val/test
    assert (ws[:, :burn_in] == 0).all() and (ws[:, burn_in:-horizon] == 1).all()
    last = int(np.argmax(starts))  # the chunk ending at the split end: its last `horizon` steps are unsupervised
    assert (ws[last, -horizon:] == 0).all()
    with pytest.raises(BadInputError):
        D.chunk_batch(x, y, valid, np.array([a - window + 1]), window, burn_in)


def test_windows_and_eval_positions():
    length, window, horizon = 20, 5, 3
    values = np.arange(length, dtype=np.float64)[:, None]
    positions = D.eval_positions(length, window, horizon)
    assert positions[0] == window - 1 and positions[-1] + horizon == length - 1
    w = D.windows(values, positions, window)
    assert w.shape == (len(positions), window, 1)
    np.testing.assert_array_equal(w[:, -1, 0], positions)
    np.testing.assert_array_equal(w[:, 0, 0], positions - window + 1)


# --- CSV loading ----------------------------------------------------------------------------------------------


def test_bundled_co2_loads_and_fills():
    series = D.load_series(None, ("co2",), ("co2",), "date", Fill.INTERPOLATE)
    assert series.features.shape == (2284, 1) and series.targets.dtype == np.float64
    assert not np.isnan(series.features).any()
    assert series.time[0] == "19580329" and series.source == "bundled:co2"


def test_missing_values_name_the_column_lines_and_fill(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["t", "v"], [[0, 1], [1, ""], [2, 3], [3, "NA"], [4, 5]])
    with pytest.raises(BadInputError, match=r"column 'v'.*2 empty cell\(s\) at CSV line\(s\) 3, 5; pass --fill"):
        D.load_series(path, ("v",), ("v",))
    interp = D.load_series(path, ("v",), ("v",), fill="interpolate")
    np.testing.assert_array_equal(interp.targets[:, 0], [1, 2, 3, 4, 5])
    ffill = D.load_series(path, ("v",), ("v",), fill="ffill")
    np.testing.assert_array_equal(ffill.targets[:, 0], [1, 1, 3, 3, 5])


def test_fill_edges():
    values = np.array([np.nan, 2.0, np.nan, 6.0, np.nan])
    np.testing.assert_array_equal(D.fill_missing(values, "interpolate"), [2, 2, 4, 6, 6])
    np.testing.assert_array_equal(D.fill_missing(values, "ffill"), [2, 2, 2, 6, 6])


def test_text_cell_names_column_line_and_value(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["v"], [[1], [2], ["abc"], [4]])
    with pytest.raises(BadInputError, match=r"column 'v', Received: 'abc' at CSV line 4"):
        D.load_series(path, ("v",), ("v",))


def test_unknown_column_lists_the_available_ones(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["date", "v"], [[1, 1]])
    with pytest.raises(BadInputError, match=r"unknown column\(s\) 'w'; available columns: date, v"):
        D.load_series(path, ("w",), ("w",))


def test_ragged_and_missing_files(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(BadInputError, match="Received: 1 cells at CSV line 3"):
        D.read_csv(path)
    with pytest.raises(BadInputError, match="cannot read the data file"):
        D.read_csv(tmp_path / "nope.csv")


# --- config ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"units": 0}, "Received: units=0"),
        ({"layers": 5}, r"expected layers to be an integer in \[1, 4\], Received: layers=5"),
        ({"window": 8, "burn_in": 8}, "Received: burn_in=8"),
        ({"dropout": 1.0}, "Received: dropout=1.0"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction < 1"),
        ({"season": 2, "horizon": 4}, "season >= horizon"),
        ({"cell": "rnn"}, "expected cell to be one of gru, lstm, simplernn, Received: cell='rnn'"),
        ({"features": ("x",)}, "every target to also be a feature when differencing"),
        ({"time_column": "co2"}, "neither a feature nor a target"),
        ({"targets": ()}, r"at least one target column \(--target\)"),
    ],
)
def test_config_rejects_impossible_options(overrides, message):
    with pytest.raises(BadInputError, match=message):
        TrainConfig.co2(out="run", **overrides)


def test_config_resolves_defaults_and_round_trips():
    config = TrainConfig.co2(out="run", cell="LSTM", window=20, features=["co2", "x"])
    assert config.cell is Cell.LSTM and config.burn_in == 5 and config.features == ("co2", "x")
    plain = TrainConfig(out="run", data="d.csv", targets=["y"])
    assert plain.features == ("y",) and plain.fill is Fill.NONE and plain.difference is False
    for c in (config, plain):
        assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(BadInputError, match="Received: \\['bogus'\\]"):
        TrainConfig.from_dict({**plain.to_dict(), "bogus": 1})
