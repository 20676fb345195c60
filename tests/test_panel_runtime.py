"""Panel models on the device: per-key scalers in StatefulRunner, StreamPool, monitors, run, verify, inspect and bench.

The models are the committed int8 reference models relabelled as panels (``panel_models``): no TensorFlow. Each key's
scaler is the global scaler times a factor, so a key's forecast of ``b`` times a series is exactly ``b`` times the
global model's forecast of the series: the numbers the per-key scaling must give are known by hand.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
from device_models import read_output, run_cli, write_csv
from panel_models import FACTORS, MODELS_DIR, make_factor_panel

from statelite import BadInputError, StatefulRunner, StreamPool, UnseenKeyWarning, read_metadata
from statelite.golden import read_golden, write_golden
from statelite.verify import verify

GRU = MODELS_DIR / "gru_int8.tflite"
LSTM_B8 = MODELS_DIR / "lstm_int8_b8.tflite"


@pytest.fixture(scope="module")
def panels(tmp_path_factory):
    folder = tmp_path_factory.mktemp("panels")
    for src in (GRU, LSTM_B8):
        if not src.exists():
            pytest.fail(f"reference model {src.name} is missing; run python models/regenerate.py")
    return {"gru": make_factor_panel(GRU, folder / "gru_panel.tflite"),
            "pool": make_factor_panel(LSTM_B8, folder / "lstm_b8_panel.tflite")}


def _golden_x(n: int = 40) -> np.ndarray:
    with np.load(MODELS_DIR / "gru_int8.golden.npz") as d:
        return d["x"][:n].astype(np.float64)


def _quiet(*args, **kwargs) -> StatefulRunner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnseenKeyWarning)
        return StatefulRunner(*args, **kwargs)


def test_each_key_gets_exactly_its_scalers_forecast(panels):
    x0 = _golden_x()
    y0 = StatefulRunner(GRU).run(x0)  # the global model's numbers
    for key, b in FACTORS.items():
        runner = StatefulRunner(panels["gru"], key=key)
        assert runner.key == key and runner.key_known
        y = runner.run(b * x0)
        np.testing.assert_allclose(y, b * y0, rtol=1e-9, atol=1e-12 * b)
        # step by step, on the single-sensor path, the same
        runner.reset()
        steps = np.stack([runner.step(row) for row in b * x0])
        np.testing.assert_allclose(steps, b * y0, rtol=1e-9, atol=1e-12 * b)
    # the three keys' forecasts of one series differ: each key really has its own scaler
    same = [StatefulRunner(panels["gru"], key=k).run(x0)[-1, 0, 0] for k in FACTORS]
    assert len({round(v, 6) for v in same}) == 3


def test_unseen_key_uses_the_global_scaler_and_warns_once(panels):
    x0 = _golden_x()
    with pytest.warns(UnseenKeyWarning, match="stream 'site-9' was not in the training panel") as record:
        runner = StatefulRunner(panels["gru"], key="site-9")
        y = runner.run(x0)
        runner.step(x0[-1])
    assert len([w for w in record if issubclass(w.category, UnseenKeyWarning)]) == 1
    assert runner.key == "site-9" and not runner.key_known
    runner.reset()
    np.testing.assert_array_equal(runner.run(x0), StatefulRunner(GRU).run(x0))
    np.testing.assert_array_equal(y, StatefulRunner(GRU).run(x0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenKeyWarning)
        StatefulRunner(panels["gru"])  # no key: the global scaler, asked for; no warning
        StatefulRunner(GRU, key="anything")  # not a panel: the key means nothing


def test_pool_lanes_with_different_keys_equal_separate_runners(panels):
    x0 = _golden_x(30)
    pool = StreamPool(panels["pool"])
    keys = ["large", "small", "unknown", "mid"]
    with pytest.warns(UnseenKeyWarning, match="'unknown'"):
        for k in keys:
            pool.add(k)
    assert [pool.key_known(k) for k in keys] == [True, True, False, True]
    factor = {**FACTORS, "unknown": 1.0}
    ys = {k: [] for k in keys}
    for i, row in enumerate(x0):
        # the streams tick in a changing order and subsets: lanes must not mix scalers
        ticking = keys if i % 3 else keys[::-1][:3]
        out = pool.step({k: factor[k] * row for k in ticking})
        for k in ticking:
            ys[k].append((i, out[k]))
    for k in keys:
        rows = [factor[k] * x0[i] for i, _ in ys[k]]
        runner = _quiet(panels["pool"], key=k)  # a batch-8 runner: every lane this key's series
        expected = runner.run(np.repeat(np.asarray(rows)[:, None], runner.batch, axis=1))[:, 0]
        np.testing.assert_allclose(np.stack([y for _, y in ys[k]]), expected, rtol=1e-9, atol=1e-12 * factor[k])
    # step_all: rows in pool.keys order
    pool2 = StreamPool(panels["pool"])
    for k in keys:
        pool2.add(k, warn=False)
    y_all = pool2.step_all(np.stack([factor[k] * x0[0] for k in keys]))
    for j, k in enumerate(keys):
        np.testing.assert_allclose(y_all[j], factor[k] * y_all[2], rtol=1e-9, atol=1e-12 * factor[k])


def test_pool_warns_once_per_key(panels):
    pool = StreamPool(panels["pool"])
    with pytest.warns(UnseenKeyWarning) as record:
        pool.add("x")
        pool.remove("x")
        pool.add("x")
        pool.add(7)  # not text: looked up as "7"
    assert [str(w.message).split("'")[1] for w in record if issubclass(w.category, UnseenKeyWarning)] == ["x", "7"]


def test_monitor_calibration_in_each_keys_units(panels):
    md = read_metadata(panels["gru"])
    base = md.residuals.quantiles
    for key, b in FACTORS.items():
        m = StatefulRunner(panels["gru"], key=key).monitor()
        s = md.scaler.target_scale[0] * b
        np.testing.assert_allclose(m.monitor.calibration.quantiles, base * s)
    unseen = _quiet(panels["gru"], key="nope").monitor()
    np.testing.assert_allclose(unseen.monitor.calibration.quantiles, base * md.scaler.target_scale[0])
    pool = StreamPool(panels["pool"])
    pool.add("large")
    pm = pool.monitor("large")
    np.testing.assert_allclose(pm.monitor.calibration.quantiles,
                               read_metadata(panels["pool"]).residuals.quantiles * 750 * md.scaler.target_scale[0])
    # intervals of a big series are wide in its units, of a small one narrow
    x0 = _golden_x(20)
    big = StatefulRunner(panels["gru"], key="large").monitor()
    small = StatefulRunner(panels["gru"], key="small").monitor()
    for row in x0:
        ob, os_ = big.step(750 * row), small.step(0.01 * row)
    np.testing.assert_allclose(ob.upper - ob.forecast, 75000 * (os_.upper - os_.forecast), rtol=1e-6)


def _csv_rows(x0: np.ndarray, keys_factors: dict, start_day: int = 1):
    rows = []
    for i, v in enumerate(x0[:, 0]):
        for key, b in keys_factors.items():
            week = np.datetime64("2001-01-01") + np.timedelta64(7 * i, "D")
            rows.append([str(week), key, repr(float(b * v))])
    return rows


def test_run_stream_key_end_to_end(panels, tmp_path):
    x0 = _golden_x(25)
    keys = {"large": 750.0, "ghost": 1.0, "small": 0.01, "phantom": 2.0}
    src = write_csv(tmp_path / "in.csv", ["date", "series", "co2"], _csv_rows(x0, keys))
    out = tmp_path / "out.csv"
    for model in (panels["gru"], panels["pool"]):
        r = run_cli("run", str(model), "--input", str(src), "--output", str(out), "--stream-key", "series")
        assert r.returncode == 0, r.stderr
        unseen = [line for line in r.stderr.splitlines() if "not in the training panel" in line]
        assert unseen == [
            "statelite: stream 'ghost' was not in the training panel: using the global scaler",
            "statelite: stream 'phantom' was not in the training panel: using the global scaler",
        ], r.stderr
        header, rows = read_output(out.read_text())
        assert header[:3] == ["date", "row", "series"]
        got = {k: np.array([[float(v) for v in row[3:]] for row in rows if row[2] == k]) for k in keys}
        glob = StatefulRunner(GRU).run(x0)[:, :, 0]
        if model == panels["pool"]:
            glob = StatefulRunner(LSTM_B8).run(np.repeat(x0[:, None], 8, axis=1))[:, 0, :, 0]
        np.testing.assert_allclose(got["large"], 750 * glob, rtol=1e-8)
        np.testing.assert_allclose(got["small"], 0.01 * glob, rtol=1e-8)
        np.testing.assert_allclose(got["ghost"], glob, rtol=1e-8)


def test_run_without_stream_key_says_the_global_scaler_is_used(panels, tmp_path):
    x0 = _golden_x(5)
    src = write_csv(tmp_path / "one.csv", ["date", "co2"],
                    [[str(np.datetime64("2001-01-01") + np.timedelta64(7 * i, "D")), repr(float(v))]
                     for i, v in enumerate(x0[:, 0])])
    r = run_cli("run", str(panels["gru"]), "--input", str(src))
    assert r.returncode == 0, r.stderr
    assert "without --stream-key every row is one stream, scaled with the global scaler (pass --stream-key " \
           "series" in r.stderr


def test_verify_uses_the_golden_key(panels, tmp_path):
    g = read_golden(MODELS_DIR / "gru_int8.golden.npz")
    data = panels["gru"].read_bytes()
    path = tmp_path / "g.golden.npz"
    md = read_metadata(panels["gru"])
    tol = {"max_abs": g.tol_max_abs, "rmse": g.tol_rmse}
    write_golden(path, data, md, 750 * g.x, 750 * g.y, 750 * g.target_scale, tol, key="large")
    back = read_golden(path, hashlib.sha256(data).hexdigest())
    assert back.key == "large" and back.times is None
    report = verify(panels["gru"], path)
    assert report.passed, report.problems
    # the same trace said to come from another series is scaled wrongly, and fails
    write_golden(path, data, md, 750 * g.x, 750 * g.y, 750 * g.target_scale, tol, key="small")
    assert not verify(panels["gru"], path).passed


def test_golden_key_and_times_are_checked(panels, tmp_path):
    from statelite.errors import GoldenFileError

    g = read_golden(MODELS_DIR / "gru_int8.golden.npz")
    md = read_metadata(panels["gru"])
    path = tmp_path / "t.golden.npz"
    tol = {"max_abs": 1.0, "rmse": 1.0}
    write_golden(path, b"m", md, g.x, g.y, g.target_scale, tol, times=["2020-01-01"] * len(g.x))
    assert read_golden(path).times == ("2020-01-01",) * len(g.x)
    write_golden(path, b"m", md, g.x, g.y, g.target_scale, tol, times=["2020-01-01"] * 3)
    with pytest.raises(GoldenFileError, match=f"times must be {len(g.x)} texts"):
        read_golden(path)
    write_golden(path, b"m", md, g.x, g.y, g.target_scale, tol, key="k" * 300)
    with pytest.raises(GoldenFileError, match="key must be 1 to 256"):
        read_golden(path)


def test_inspect_and_bench_show_the_panel(panels):
    r = run_cli("inspect", str(panels["gru"]))
    assert r.returncode == 0, r.stderr
    assert "panel        3 series by column 'series': small, mid, large; each scaled with its own scaler" in r.stdout
    assert "(metadata format 3)" in r.stdout and "in units of each series' target scale" in r.stdout
    from statelite.bench import bench

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenKeyWarning)
        for model, streams in ((panels["gru"], None), (panels["gru"], 2), (panels["pool"], None)):
            report = bench(model, steps=20, warmup=2, streams=streams)
            assert report.steps == 20 and report.median_us > 0


def test_state_file_keeps_each_keys_stream(panels, tmp_path):
    """A panel pool's state saved and loaded under --stream-key: each stream keeps its key's scaler."""
    x0 = _golden_x(12)
    keys = {"large": 750.0, "small": 0.01}
    rows = _csv_rows(x0, keys)
    first = write_csv(tmp_path / "a.csv", ["date", "series", "co2"], rows[:12])
    second = write_csv(tmp_path / "b.csv", ["date", "series", "co2"], rows[12:])
    whole = write_csv(tmp_path / "all.csv", ["date", "series", "co2"], rows)
    state = tmp_path / "s.npz"
    outs = []
    for src in (first, second):
        r = run_cli("run", str(panels["pool"]), "--input", str(src), "--stream-key", "series", "--state", str(state))
        assert r.returncode == 0, r.stderr
        outs += read_output(r.stdout)[1]
    r = run_cli("run", str(panels["pool"]), "--input", str(whole), "--stream-key", "series")
    assert [row[2:] for row in outs] == [row[2:] for row in read_output(r.stdout)[1]]


def test_runner_time_is_ignored_without_a_calendar(panels):
    runner = StatefulRunner(panels["gru"], key="mid")
    x0 = _golden_x(3)
    a = [runner.step(row, time="not a time") for row in x0]
    runner.reset()
    np.testing.assert_array_equal(a, runner.run(x0, times=["x"] * 3))
    with pytest.raises(BadInputError):
        runner.step([1.0, 2.0])
