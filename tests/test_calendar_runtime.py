"""Calendar models on the device: the graph input is the scaled features then the calendar columns of each row's time.

The graph is a tiny seeded GRU 6 inputs wide, converted from a bare ``.keras`` file (TensorFlow, once per module),
relabelled as 2 features + the hour and day-of-week calendar (4 columns) with a panel of 3 keys. The same graph
unrelabelled (6 features, identity scaler) is the reference: fed the scaled features and ``calendar_values`` by hand,
it must give the relabelled model's forecasts.
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pytest
from device_models import read_output, run_cli, write_csv
from panel_models import CAL_CALENDAR, PANEL_SCALERS, build_calendar_graph, make_calendar_panel

from statelite import BadInputError, StatefulRunner, StreamPool, UnseenKeyWarning, read_metadata
from statelite.calendar import calendar_values, cell_values, wall_seconds
from statelite.golden import write_golden
from statelite.verify import verify

pytestmark = pytest.mark.tf

OFFSET, SCALE = np.array([10.0, 20.0]), np.array([2.0, 5.0])  # make_calendar_panel's global feature scaler
T_OFFSET, T_SCALE = 10.0, 2.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("tensorflow")
    folder = tmp_path_factory.mktemp("calendar")
    out = {}
    for name, kw in {"f32": {}, "int8": {"quant": "int8", "io": "int8"}, "b4": {"batch": 4}}.items():
        graph = build_calendar_graph(folder, **kw)
        out[name + "_graph"] = graph
        out[name] = make_calendar_panel(graph, folder / f"{name}_panel.tflite", PANEL_SCALERS)
    return out


def _rows(n: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return OFFSET + SCALE * rng.standard_normal((n, 2))


def _cells(n: int = 30, start: str = "2024-03-08T20:00:00") -> list[str]:
    t0 = np.datetime64(start)
    return [str(t0 + np.timedelta64(i, "h")) for i in range(n)]


def _by_hand(graph, xs, cells, offset=OFFSET, scale=SCALE, t_offset=T_OFFSET, t_scale=T_SCALE, batch=1):
    """The reference graph fed [scaled features, calendar values]; its outputs unscaled by hand."""
    ref = StatefulRunner(graph)
    inputs = np.concatenate([(xs - offset) / scale, cell_values(cells, CAL_CALENDAR)], axis=1)
    if batch > 1:
        inputs = np.repeat(inputs[:, None], batch, axis=1)
    y = ref.run(inputs)  # identity scaler: graph units
    y = y if batch == 1 else y[:, 0]
    # the bare graph's outputs y0, y1 (horizon 1) are the relabelled model's one target at t+1, t+2
    return y.reshape(len(xs), 2, 1) * t_scale + t_offset


def test_calendar_values_fed_equal_calendar_values(models):
    md = read_metadata(models["f32"])
    assert md.calendar == ("hour", "dow") and md.input_width == 6 and md.x.shape == (1, 6)
    xs, cells = _rows(), _cells()
    runner = StatefulRunner(models["f32"])  # no key: the global scaler
    y = np.stack([runner.step(x, time=c) for x, c in zip(xs, cells)])
    np.testing.assert_allclose(y, _by_hand(models["f32_graph"], xs, cells), rtol=1e-6, atol=1e-9)
    runner.reset()
    np.testing.assert_array_equal(runner.run(xs, times=cells), y)


def test_per_key_scaler_with_calendar(models):
    xs, cells = _rows(), _cells()
    for key, s in PANEL_SCALERS.items():
        runner = StatefulRunner(models["f32"], key=key)
        raw = s["offset"] + s["scale"] * (xs - OFFSET) / SCALE  # the same scaled inputs in the key's units
        expected = _by_hand(models["f32_graph"], raw, cells, offset=s["offset"], scale=s["scale"],
                            t_offset=s["offset"], t_scale=s["scale"])
        np.testing.assert_allclose(runner.run(raw, times=cells), expected, rtol=1e-6, atol=1e-9 * s["scale"])


def test_time_as_text_datetime_or_seconds(models):
    x = _rows(1)[0]
    cell = "2024-07-04T15:30:00+02:00"
    forms = [cell, dt.datetime(2024, 7, 4, 15, 30), dt.datetime(2024, 7, 4, 15, 30, tzinfo=dt.timezone.utc),
             np.datetime64("2024-07-04T15:30"), wall_seconds(cell), int(wall_seconds(cell))]
    runner = StatefulRunner(models["f32"])
    first = runner.step(x, time=forms[0])
    for form in forms[1:]:
        runner.reset()
        np.testing.assert_array_equal(runner.step(x, time=form), first, err_msg=repr(form))


def test_bad_or_missing_time_is_one_error_and_the_state_is_kept(models):
    runner = StatefulRunner(models["f32"], key="mid")
    xs, cells = _rows(5), _cells(5)
    runner.run(xs[:3], times=cells[:3])
    before = runner.state
    for bad, message in [(None, "expected time=... for a model with calendar inputs (hour, dow"),
                         ("yesterday", "'ts'"), ("12.5", "'ts'"), (float("nan"), "finite"), ([1, 2], "one time"),
                         (object(), "expected time as the time column's text, a datetime or seconds")]:
        with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
            runner.step(xs[3], time=bad)
        assert "\n" not in str(e.value)
        for k, v in runner.state.items():
            np.testing.assert_array_equal(v, before[k])
    with pytest.raises(BadInputError, match="expected 5 times value"):
        runner.run(xs, times=cells[:4])
    with pytest.raises(BadInputError, match="expected times=..."):
        runner.run(xs)
    for k, v in runner.state.items():
        np.testing.assert_array_equal(v, before[k])


def test_integer_input_quantizes_the_calendar_columns(models):
    md = read_metadata(models["int8"])
    assert md.x.dtype == "int8"
    xs, cells = _rows(), _cells()
    y = StatefulRunner(models["int8"]).run(xs, times=cells)
    np.testing.assert_allclose(y, _by_hand(models["int8_graph"], xs, cells), rtol=1e-6, atol=1e-9)


def test_pool_lanes_with_keys_and_times_equal_separate_runners(models):
    xs = _rows(12)
    starts = {"small": "2024-01-01T00:00:00", "large": "2024-06-15T13:00:00", "other": "2023-12-31T22:00:00"}
    pool = StreamPool(models["b4"])
    with pytest.warns(UnseenKeyWarning):
        for k in starts:
            pool.add(k)
    cells = {k: _cells(len(xs), s) for k, s in starts.items()}
    got = {k: [] for k in starts}
    for i, x in enumerate(xs):
        rows = {k: x for k in starts}
        out = pool.step(rows, times={k: cells[k][i] for k in starts})
        for k in starts:
            got[k].append(out[k])
    for k in starts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnseenKeyWarning)
            one = StatefulRunner(models["f32"], key=k)  # the batch-1 graph of the same Keras model
        np.testing.assert_allclose(np.stack(got[k]), one.run(xs, times=cells[k]), rtol=1e-5, atol=1e-6)
    with pytest.raises(BadInputError, match="expected times=\\{key: time\\}"):
        pool.step({"small": xs[0]})
    # step_all: one time for every stream
    y = pool.step_all(np.stack([xs[0]] * 3), times="2024-01-01T05:00:00")
    assert y.shape == (3, 2, 1)


def test_monitor_steps_with_time_and_fills_with_times(models):
    runner = StatefulRunner(models["f32"], key="large")
    m = runner.monitor()
    xs, cells = _rows(6), _cells(6)
    obs = [m.step(x, time=c) for x, c in zip(xs, cells)]
    assert np.isfinite(obs[-1].upper).all()
    with pytest.raises(BadInputError, match="expected the times of the 2 missing rows"):
        m.fill(2)
    assert m.fill(2, times=_cells(2, "2024-03-09T02:00:00")) == 2


def test_run_with_calendar_and_panel_end_to_end(models, tmp_path):
    xs, cells = _rows(20), _cells(20)
    rows = []
    for i, (x, c) in enumerate(zip(xs, cells)):
        for key in ("small", "mid", "newcomer"):
            s = PANEL_SCALERS.get(key, {"offset": 10.0, "scale": 2.0})
            raw = s["offset"] + s["scale"] * (x - OFFSET) / SCALE
            rows.append([c if not (key == "mid" and i == 7) else "not a time", key, repr(float(raw[0])),
                         repr(float(raw[1]))])
    src = write_csv(tmp_path / "in.csv", ["ts", "site", "load", "temp"], rows)
    r = run_cli("run", str(models["f32"]), "--input", str(src), "--stream-key", "site")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert [x for x in lines if "training panel" in x] == [
        "statelite: stream 'newcomer' was not in the training panel: using the global scaler"]
    bad = [x for x in lines if "not a time" in x]
    assert len(bad) == 1 and "the model's calendar inputs are computed from it); row skipped" in bad[0], r.stderr
    header, out = read_output(r.stdout)
    assert header == ["ts", "row", "site", "load_t+1", "load_t+2"]
    small = np.array([[float(v) for v in row[3:]] for row in out if row[2] == "small"])
    s = PANEL_SCALERS["small"]
    expected = StatefulRunner(models["f32"], key="small").run(s["offset"] + s["scale"] * (xs - OFFSET) / SCALE,
                                                              times=cells)[:, :, 0]
    np.testing.assert_allclose(small, expected, rtol=1e-8, atol=1e-12)
    assert len([row for row in out if row[2] == "mid"]) == 19
    # the header must hold the time column the calendar is computed from
    no_time = write_csv(tmp_path / "nt.csv", ["site", "load", "temp"], [["small", "1", "2"]])
    r = run_cli("run", str(models["f32"]), "--input", str(no_time), "--stream-key", "site")
    assert r.returncode == 2 and "the header lacks the time column 'ts'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("run", str(models["f32"]), "--input", str(src), "--no-header")
    assert r.returncode == 2 and "needs a header naming it" in r.stderr


def test_verify_and_bench_a_calendar_model(models, tmp_path):
    xs, cells = _rows(40), _cells(40)
    runner = StatefulRunner(models["f32"], key="mid")
    s = PANEL_SCALERS["mid"]
    raw = s["offset"] + s["scale"] * (xs - OFFSET) / SCALE
    y = runner.run(raw, times=cells)
    md = read_metadata(models["f32"])
    path = tmp_path / "cal.golden.npz"
    data = models["f32"].read_bytes()
    tol = {"max_abs": 1e-3, "rmse": 1e-3}
    write_golden(path, data, md, raw, y, [s["scale"]], tol, key="mid", times=cells)
    assert verify(models["f32"], path).passed
    shifted = [str(np.datetime64(c) + np.timedelta64(5, "h")) for c in cells]  # other hours: other forecasts
    write_golden(path, data, md, raw, y, [s["scale"]], tol, key="mid", times=shifted)
    assert not verify(models["f32"], path).passed
    write_golden(path, data, md, raw, y, [s["scale"]], tol, key="mid")
    from statelite.errors import GoldenFileError

    with pytest.raises(GoldenFileError, match="expected the rows' times"):
        verify(models["f32"], path)
    from statelite.bench import bench

    for model in (models["f32"], models["b4"]):
        assert bench(model, steps=10, warmup=2).steps == 10
    r = run_cli("inspect", str(models["f32"]))
    assert "calendar     hour, dow from time column ts: graph inputs cal_hour_sin, cal_hour_cos, cal_dow_sin, " \
           "cal_dow_cos after the features" in r.stdout
    assert np.allclose(calendar_values(wall_seconds(cells[0]), ["hour"]), cell_values(cells[:1], ["hour"])[0])
