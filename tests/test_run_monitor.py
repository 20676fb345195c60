"""``statelite run`` with intervals, anomaly scores, alerts, substitution and gaps in the time column, on the committed
reference models; the Python API (``StatefulRunner.monitor``, ``StreamPool.monitor``); and a metadata format 1 model
(no residual calibration, no sampling) that still runs plainly and refuses a monitor with one line."""

from __future__ import annotations

import datetime
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from statelite import BadInputError, IncompatibleModelError, StatefulRunner, StreamPool, read_metadata
from statelite.cli import main
from statelite.monitor import MonitorOptions
from statelite.stream import StreamConfig, run_stream

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
FORMAT1 = ROOT / "tests" / "data" / "format1" / "gru_float32.tflite"
GRU = MODELS / "gru_float32.tflite"
HORIZON = [f"co2_t+{h}" for h in range(1, 5)]
SPIKE = 100  # the index of the row a spike is injected in


def model(name: str) -> Path:
    path = MODELS / name
    if not path.exists():
        pytest.fail(f"reference model {name} is missing; run python models/regenerate.py")
    return path


def golden_x(name: str = "gru_float32") -> np.ndarray:
    """The golden trace's raw rows: 200 consecutive weekly CO2 readings (the test split, from 1995-06-10)."""
    with np.load(model(f"{name}.tflite").with_name(f"{name}.golden.npz")) as d:
        return d["x"].astype(np.float64)


def weekly(n: int) -> list[str]:
    """The golden rows' dates, YYYYMMDD a week apart, as the training data writes them."""
    start = datetime.date(1995, 6, 10)
    return [(start + datetime.timedelta(weeks=i)).strftime("%Y%m%d") for i in range(n)]


DATES = weekly(200)


def csv_text(xs, dates=None, header=("date", "co2"), keys=None) -> str:
    """Rows ``[key,] [date,] features``; ``dates`` None: no time column."""
    lines = [",".join(header)]
    for i, x in enumerate(xs):
        cells = ([keys[i]] if keys is not None else []) + ([dates[i]] if dates is not None else [])
        lines.append(",".join(cells + [repr(float(v)) for v in np.atleast_1d(x)]))
    return "\n".join(lines) + "\n"


def run(path, text: str, *args: str):
    result = CliRunner().invoke(main, ["run", str(path), *args], input=text)
    assert "Traceback" not in result.output, result.output
    return result


def table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in text.splitlines() if line]
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


def column(header, rows, names) -> np.ndarray:
    idx = [header.index(n) for n in names]
    return np.array([[float(r[i]) if r[i] != "" else math.nan for i in idx] for r in rows])


def plain_forecasts(path, xs) -> np.ndarray:
    return StatefulRunner(path).run(xs)[..., 0]


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line]


# -- columns -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gru_float32", "gru_int8", "lstm_int8"])
def test_intervals_and_scores_columns(name):
    path = model(f"{name}.tflite")
    xs = golden_x(name)[:60]
    result = run(path, csv_text(xs, DATES), "--intervals", "0.9", "--anomaly")
    assert result.exit_code == 0, result.output
    header, rows = table(result.stdout)
    assert header == ["date", "row"] + HORIZON + [f"{h}_lo" for h in HORIZON] + [f"{h}_hi" for h in HORIZON] + [
        "score", "anomaly"]
    f = column(header, rows, HORIZON)
    lo = column(header, rows, [f"{h}_lo" for h in HORIZON])
    hi = column(header, rows, [f"{h}_hi" for h in HORIZON])
    assert len(rows) == 60 and (lo < f).all() and (f < hi).all()
    np.testing.assert_allclose(f, plain_forecasts(path, xs), rtol=1e-9, atol=1e-6)
    # The same bounds and scores as the API's monitor with the same options.
    m = StatefulRunner(path).monitor(MonitorOptions(levels=(0.9,)))
    obs = [m.step(x) for x in xs]
    np.testing.assert_allclose(lo, [o.lower[0, :, 0] for o in obs], rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(hi, [o.upper[0, :, 0] for o in obs], rtol=1e-9, atol=1e-6)
    warmup = read_metadata(path).warmup_steps
    scores = [r[header.index("score")] for r in rows]
    assert scores[: warmup + 1] == [""] * (warmup + 1), "unscored during the warm-up: an empty cell"
    np.testing.assert_allclose([float(s) for s in scores[warmup + 1:]], [o.score for o in obs[warmup + 1:]],
                               atol=1e-3)
    assert {r[-1] for r in rows} == {"0"}, "clean CO2 readings are not anomalous"


def test_several_levels_get_suffixed_names_and_nested_intervals():
    xs = golden_x()[:40]
    result = run(GRU, csv_text(xs, DATES), "--intervals", "0.8,0.95", "--intervals", "0.9")
    assert result.exit_code == 0, result.output
    header, rows = table(result.stdout)
    names = [f"{h}_{side}{tag}" for tag in ("80", "95", "90") for side in ("lo", "hi") for h in HORIZON]
    assert header == ["date", "row"] + HORIZON + names, "levels in the order given; no score without --anomaly"
    f = column(header, rows, HORIZON)
    b = {name: column(header, rows, [f"{h}_{name}" for h in HORIZON]) for name in
         ("lo80", "hi80", "lo90", "hi90", "lo95", "hi95")}
    assert (b["lo95"] < b["lo90"]).all() and (b["lo90"] < b["lo80"]).all() and (b["lo80"] < f).all()
    assert (f < b["hi80"]).all() and (b["hi80"] < b["hi90"]).all() and (b["hi90"] < b["hi95"]).all()


@pytest.mark.parametrize("args, message", [
    (["--intervals", "1.5"], "Error: expected interval levels between 0 and 1 (e.g. 0.9); received 1.5."),
    (["--intervals", "0.9,abc"], "Error: --intervals expects levels between 0 and 1 (e.g. 0.9); received 'abc'."),
    (["--intervals", "0.9", "--intervals", "0.9"], "Error: expected each interval level once; received [0.9, 0.9]."),
    (["--anomaly", "--threshold", "-1"],
     "Error: expected a threshold >= 0 (a score, -log10 of a p-value); received -1.0."),
])
def test_bad_monitor_options_exit_2_with_one_line(args, message):
    result = run(GRU, csv_text(golden_x()[:3], DATES), *args)
    assert result.exit_code == 2 and stderr_lines(result) == [message]
    assert result.stdout == ""


# -- anomalies and alerts ----------------------------------------------------------------------------------------


def spiked(xs: np.ndarray, size: float = 8.0) -> np.ndarray:
    out = xs.copy()
    out[SPIKE] += size
    return out


def test_a_spike_is_flagged_and_alerted_once(tmp_path):
    xs = spiked(golden_x()[:150])
    alerts = tmp_path / "alerts.jsonl"
    result = run(GRU, csv_text(xs, DATES), "--alerts", str(alerts))  # --alerts turns the scores on
    assert result.exit_code == 0, result.output
    header, rows = table(result.stdout)
    assert header[-2:] == ["score", "anomaly"]
    flagged = [i for i, r in enumerate(rows) if r[-1] == "1"]
    assert flagged[0] == SPIKE and flagged == list(range(SPIKE, flagged[-1] + 1)), "one run of rows from the spike"
    scores = column(header, rows, ["score"])[:, 0]
    (line,) = alerts.read_text().splitlines()
    record = json.loads(line)
    end = flagged[-1]
    peak = SPIKE + int(np.argmax(scores[SPIKE:end + 1]))
    assert record == {
        "stream": None, "start": DATES[SPIKE], "end": DATES[end], "start_row": SPIKE + 2, "end_row": end + 2,
        "rows": len(flagged), "peak_score": round(float(scores[peak]), 3), "peak": DATES[peak],
    }
    assert record["peak_score"] >= 10
    assert f"statelite: {len(flagged)} anomalous rows in 1 event" in stderr_lines(result)
    # A restarted device appends: the earlier run's event stays.
    assert run(GRU, csv_text(xs, DATES), "--alerts", str(alerts)).exit_code == 0
    assert alerts.read_text().splitlines() == [line, line]


def test_a_clean_run_writes_no_alert(tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    result = run(GRU, csv_text(golden_x(), DATES), "--anomaly", "--alerts", str(alerts))
    assert result.exit_code == 0 and alerts.read_text() == ""
    assert "statelite: 0 anomalous rows in 0 events" in stderr_lines(result)


def test_run_stream_alerts_and_counts():
    xs = spiked(golden_x()[:150])
    out, err, alerts = io.StringIO(), io.StringIO(), io.StringIO()
    result = run_stream(StatefulRunner(GRU), io.StringIO(csv_text(xs, DATES)), out,
                        StreamConfig(anomaly=True, substitute=True), errors=err, source_name="in.csv", alerts=alerts)
    assert result.watch == {"anomalies": 1, "events": 1, "gaps": 0, "filled": 0, "disorder": 0, "substituted": 1,
                            "bad_times": 0}
    assert json.loads(alerts.getvalue())["rows"] == 1
    assert "statelite: 1 anomalous row in 1 event; 1 fed the model's forecast instead (--substitute)" in err.getvalue()


def test_alerts_name_the_stream_of_a_pool_lane(tmp_path):
    xs = golden_x()[:120]
    rows, keys, dates = [], [], []
    for i in range(120):
        for key, series in (("A", xs), ("B", spiked(xs))):
            rows.append(series[i])
            keys.append(key)
            dates.append(DATES[i])
    alerts = tmp_path / "alerts.jsonl"
    result = run(model("gru_float32_b8.tflite"), csv_text(rows, dates, header=("sensor", "date", "co2"), keys=keys),
                 "--stream-key", "sensor", "--alerts", str(alerts))
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert record["stream"] == "B" and record["start"] == DATES[SPIKE]
    assert record["start_row"] == 2 + 2 * SPIKE + 1, "B's row of the spike week"
    header, out = table(result.stdout)
    assert {r[-1] for r in out if r[2] == "A"} == {"0"}


def test_a_reset_at_a_gap_ends_the_open_event(tmp_path):
    xs = golden_x()
    xs = xs.copy()
    xs[29] += 8.0  # the last row before the gap
    alerts = tmp_path / "alerts.jsonl"
    result = run(GRU, gap_text(xs), "--gaps", "reset", "--alerts", str(alerts))
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert (record["start"], record["end"], record["start_row"], record["end_row"], record["rows"]) == (
        DATES[29], DATES[29], 31, 31, 1)
    header, rows = table(result.stdout)
    assert [r[-1] for r in rows].count("1") == 1 and rows[29][-1] == "1"


@pytest.mark.parametrize("what", ["model", "input", "output", "state"])
def test_alerts_must_not_name_a_file_the_run_uses(tmp_path, what):
    path = tmp_path / "m.tflite"
    path.write_bytes(GRU.read_bytes())
    source = tmp_path / "in.csv"
    source.write_text(csv_text(golden_x()[:5], DATES))
    files = {"model": path, "input": source, "output": tmp_path / "out.csv", "state": tmp_path / "s.npz"}
    files["output"].write_text("keep\n")
    target = files[what]
    before = target.read_bytes() if target.exists() else None
    result = CliRunner().invoke(main, [
        "run", str(path), "--input", str(source), "--output", str(files["output"]), "--state", str(files["state"]),
        "--alerts", str(target)])
    label = {"model": "the model", "input": "the --input file", "output": "the --output file",
             "state": "the --state file"}[what]
    assert result.exit_code == 2
    assert stderr_lines(result) == [
        f"Error: --alerts {target} is {label} ({target}): appending alerts there would damage it. Pass another "
        f"--alerts file."
    ]
    assert (target.read_bytes() if target.exists() else None) == before
    assert files["output"].read_text() == "keep\n" and not files["state"].exists()


def test_substitute_keeps_the_forecasts_after_a_spike_near_the_clean_ones():
    xs = golden_x()[:130]
    clean = column(*table(run(GRU, csv_text(xs, DATES), "--anomaly").stdout), HORIZON)
    spike = spiked(xs)
    plain = run(GRU, csv_text(spike, DATES), "--anomaly")
    sub = run(GRU, csv_text(spike, DATES), "--anomaly", "--substitute")
    assert plain.exit_code == 0 and sub.exit_code == 0
    f_plain, f_sub = column(*table(plain.stdout), HORIZON), column(*table(sub.stdout), HORIZON)
    np.testing.assert_array_equal(f_sub[:SPIKE], clean[:SPIKE])
    after = slice(SPIKE, SPIKE + 12)
    err_plain = np.abs(f_plain[after] - clean[after]).mean()
    err_sub = np.abs(f_sub[after] - clean[after]).mean()
    assert err_sub < 0.1 * err_plain, (err_sub, err_plain)
    # Fed its own one-step forecast, the model's forecast after the spike is the one it would make on it.
    expect = StatefulRunner(GRU)
    y = expect.run(xs[:SPIKE])[-1]
    np.testing.assert_allclose(f_sub[SPIKE], expect.step([y[0, 0]])[:, 0], rtol=1e-9)
    assert "1 fed the model's forecast instead (--substitute)" in sub.stderr


# -- gaps in the time column -------------------------------------------------------------------------------------


GAP = (30, 31, 32)  # the rows removed: three weeks missing
KEEP = [i for i in range(60) if i not in GAP]


def gap_text(xs) -> str:
    return csv_text(xs[KEEP], [DATES[i] for i in KEEP])


def gap_line(action: str, n: int = 1) -> str:
    return (f"stdin line 32: gap: 3 missing rows between {DATES[29]} and {DATES[33]} (every 7 days); {action} "
            f"(gap {n}).")


def filled_forecasts(path, xs) -> np.ndarray:
    """The model stepped over the gap on its own one-step forecasts, then on the rows after it: (57, horizon)."""
    r = StatefulRunner(path)
    before = r.run(xs[:30])
    y = before[-1]
    for _ in GAP:
        y = r.step([y[0, 0]])
    return np.concatenate([before, r.run(xs[33:60])])[..., 0]


@pytest.mark.parametrize("name", ["gru_float32", "gru_int8"])
def test_gap_fill_steps_the_model_over_the_missing_rows(name):
    path = model(f"{name}.tflite")
    assert read_metadata(path).sampling == {"kind": "datetime", "period": 604800.0, "regular": 1.0}
    xs = golden_x(name)
    result = run(path, gap_text(xs), "--anomaly", "--intervals", "0.9")
    assert result.exit_code == 0, result.output
    assert stderr_lines(result)[:1] == [gap_line("filled with the model's own forecasts")]
    assert "statelite: 1 gap in the time column (3 rows filled), 0 rows out of order or repeated" in result.stderr
    assert "statelite run: 57 rows forecast" in result.stderr
    header, rows = table(result.stdout)
    np.testing.assert_allclose(column(header, rows, HORIZON)[30:], filled_forecasts(path, xs)[30:], rtol=1e-9)
    assert rows[30][1] == "32" and rows[30][0] == DATES[33]
    assert rows[30][header.index("score")] != "", "the filled forecasts cover the row after the gap"
    # The scores and intervals after the gap: the API's monitor filled over the same gap (StreamMonitor.fill).
    m = StatefulRunner(path).monitor(MonitorOptions(levels=(0.9,)))
    for x in xs[:30]:
        m.step(x)
    assert m.fill(3) == 3
    obs = [m.step(x) for x in xs[33:60]]
    np.testing.assert_allclose(column(header, rows, ["score"])[30:, 0], [o.score for o in obs], atol=1e-3)
    np.testing.assert_allclose(column(header, rows, [f"{h}_lo" for h in HORIZON])[30:],
                               [o.lower[0, :, 0] for o in obs], rtol=1e-9)
    ignored = column(*table(run(path, gap_text(xs), "--gaps", "ignore").stdout), HORIZON)
    assert np.abs(column(header, rows, HORIZON)[30:] - ignored[30:]).max() > 1e-3


def test_gap_ignore_reports_and_changes_nothing():
    xs = golden_x()
    result = run(GRU, gap_text(xs), "--gaps", "ignore")
    assert result.exit_code == 0
    assert stderr_lines(result)[0] == gap_line("ignored (--gaps ignore)")
    assert "statelite: 1 gap in the time column (0 rows filled), 0 rows out of order or repeated" in result.stderr
    no_time = run(GRU, csv_text(xs[KEEP], header=("co2",)))
    assert no_time.stderr.strip() == "statelite run: 57 rows forecast", "without a time column: no gap check"
    np.testing.assert_array_equal(column(*table(result.stdout), HORIZON), column(*table(no_time.stdout), HORIZON))


@pytest.mark.parametrize("args, action", [
    (["--gaps", "reset"], "state reset; forecasts warm up again"),
    (["--max-fill", "2"], "state reset (longer than --max-fill 2); forecasts warm up again"),
])
def test_gap_reset_and_gaps_longer_than_max_fill(args, action):
    xs = golden_x()
    result = run(GRU, gap_text(xs), "--anomaly", *args)
    assert result.exit_code == 0
    assert stderr_lines(result)[0] == gap_line(action)
    header, rows = table(result.stdout)
    f = column(header, rows, HORIZON)
    np.testing.assert_allclose(f[:30], plain_forecasts(GRU, xs[:30]), rtol=1e-9)
    np.testing.assert_allclose(f[30:], plain_forecasts(GRU, xs[33:60]), rtol=1e-9)  # a fresh state after the gap
    warmup = read_metadata(GRU).warmup_steps
    scores = [r[header.index("score")] for r in rows[30:]]
    assert scores[: warmup + 1] == [""] * (warmup + 1) and "" not in scores[warmup + 1:], "warm-up again"


def test_max_fill_equal_to_the_gap_fills():
    result = run(GRU, gap_text(golden_x()), "--max-fill", "3")
    assert stderr_lines(result)[0] == gap_line("filled with the model's own forecasts")


def test_times_backwards_or_repeated_are_reported_and_forecast():
    xs = golden_x()[:12]
    order = [0, 1, 2, 3, 4, 5, 2, 6, 7, 7, 8, 9]  # a late row from week 2, then week 7 twice
    result = run(GRU, csv_text(xs[order], [DATES[i] for i in order]))
    assert result.exit_code == 0
    assert stderr_lines(result) == [
        f"stdin line 8: the time goes backwards: {DATES[2]} after {DATES[5]}; the row is forecast as it comes (1 such "
        f"rows so far).",
        f"stdin line 11: the time repeats: {DATES[7]} after {DATES[7]}; the row is forecast as it comes (2 such rows "
        f"so far).",
        "statelite: 0 gaps in the time column (0 rows filled), 2 rows out of order or repeated",
        "statelite run: 12 rows forecast",
    ]
    np.testing.assert_allclose(column(*table(result.stdout), HORIZON), plain_forecasts(GRU, xs[order]), rtol=1e-9)


@pytest.mark.parametrize("name", ["gru_float32", "gru_float32_b8"], ids=["runners", "pool"])
def test_each_stream_tracks_its_own_gaps(name):
    path = model(f"{name}.tflite")
    xs = golden_x()
    b = xs[:60] + 1.0
    # Both streams on the same dates, interleaved: one tracker for both would see every other time repeat.
    rows, dates, keys = [], [], []
    for i in range(60):
        for key, series in (("A", xs), ("B", b)):
            if key == "A" and i in GAP:
                continue
            rows.append(series[i])
            dates.append(DATES[i])
            keys.append(key)
    result = run(path, csv_text(rows, dates, header=("sensor", "date", "co2"), keys=keys), "--stream-key", "sensor")
    assert result.exit_code == 0, result.output
    line = 2 + keys.index("A", 2 * 30)  # A's row after the gap
    assert stderr_lines(result)[0] == (
        f"stdin line {line} (stream 'A'): gap: 3 missing rows between {DATES[29]} and {DATES[33]} (every 7 days); "
        f"filled with the model's own forecasts (gap 1)."
    )
    assert "statelite: 1 gap in the time column (3 rows filled), 0 rows out of order or repeated" in result.stderr
    header, out = table(result.stdout)
    assert header[:3] == ["date", "row", "sensor"]
    by = {k: column(header, [r for r in out if r[2] == k], HORIZON) for k in ("A", "B")}
    np.testing.assert_allclose(by["B"], plain_forecasts(GRU, b), rtol=1e-6)
    np.testing.assert_allclose(by["A"][30:], filled_forecasts(GRU, xs)[30:], rtol=1e-6)


@pytest.mark.parametrize("bad", [
    "abc", "100000",
], ids=["unreadable", "refused"])
@pytest.mark.parametrize("where", [35, 33], ids=["later", "right-after-gap"])
def test_a_skipped_row_counts_as_missing(bad, where):
    """A row skipped as bad is a missing row: the next good row's gap check fills its week too, so the forecasts
    after it are those of the run without that row."""
    xs = golden_x()
    with_bad = gap_text(xs).splitlines()
    with_bad[1 + KEEP.index(where)] = f"{DATES[where]},{bad}"
    without = [j for j in KEEP if j != where]
    result = run(GRU, "\n".join(with_bad) + "\n")
    reference = run(GRU, csv_text(xs[without], [DATES[j] for j in without]))
    assert "row skipped, state unchanged (1 so far)" in result.stderr
    np.testing.assert_array_equal(column(*table(result.stdout), HORIZON)[-20:],
                                  column(*table(reference.stdout), HORIZON)[-20:])


# -- a model without residuals (metadata format 1) ---------------------------------------------------------------


def test_format1_model_runs_plainly():
    md = read_metadata(FORMAT1)
    assert md.format_version == 1 and md.residuals is None and md.sampling is None
    xs = golden_x()[:60]
    result = run(FORMAT1, gap_text(golden_x()))  # a gap, but no sampling to judge it against
    assert result.exit_code == 0 and stderr_lines(result) == ["statelite run: 57 rows forecast"]
    result = run(FORMAT1, csv_text(xs, DATES))
    assert result.exit_code == 0 and stderr_lines(result) == ["statelite run: 60 rows forecast"]
    header, rows = table(result.stdout)
    assert header == ["date", "row"] + HORIZON
    np.testing.assert_allclose(column(header, rows, HORIZON), plain_forecasts(FORMAT1, xs), rtol=1e-9)


@pytest.mark.parametrize("args", [["--anomaly"], ["--intervals", "0.9"], ["--substitute"]])
def test_format1_model_refuses_a_monitor_with_one_line(args):
    result = run(FORMAT1, csv_text(golden_x()[:5], DATES), *args)
    assert result.exit_code == 2
    (line,) = stderr_lines(result)
    assert line.startswith("Error: expected a model with a residual calibration (metadata 'residuals') for "
                           "intervals and anomaly scores; received format version 1 without one.")
    assert result.stdout == "", "refused before any output"


def test_format1_model_api_monitor_is_incompatible():
    with pytest.raises(IncompatibleModelError, match="received format version 1 without one"):
        StatefulRunner(FORMAT1).monitor()


# -- the Python API ----------------------------------------------------------------------------------------------


def test_runner_monitor_substitutes_only_the_target_of_a_two_feature_model():
    path = model("gru2_int8.tflite")
    md = read_metadata(path)
    assert md.features == ("co2", "season") and md.targets == ("co2",)
    xs = golden_x("gru2_int8")
    m = StatefulRunner(path).monitor(MonitorOptions(levels=(0.9,), substitute=True))
    obs = [m.step(x) for x in xs[:SPIKE]]
    assert obs[-1].lower.shape == obs[-1].upper.shape == (1, 4, 1)
    assert (obs[-1].lower < obs[-1].forecast[None]).all() and (obs[-1].forecast[None] < obs[-1].upper).all()
    one_step = obs[-1].forecast[0, 0]
    x = xs[SPIKE] + np.array([8.0, 0.0])
    spike = m.step(x)
    assert spike.anomaly and spike.substituted
    assert spike.fed.tolist() == [one_step, x[1]]


def test_runner_monitor_refuses_a_batched_model():
    with pytest.raises(BadInputError, match=r"expected a one-stream model for StatefulRunner.monitor; received batch 8"
                                            r"\. Use StreamPool.monitor\(key\)"):
        StatefulRunner(model("gru_float32_b8.tflite")).monitor()


def test_pool_monitor_steps_only_its_lane():
    pool = StreamPool(model("gru_float32_b8.tflite"))
    xs = golden_x()
    pool.add("a")
    pool.add("b")
    for x in xs[:10]:
        pool.step({"b": x + 2.0})
    b_state = pool.state("b")
    m = pool.monitor("a")
    obs = [m.step(x) for x in xs[:30]]
    for name, v in pool.state("b").items():
        np.testing.assert_array_equal(v, b_state[name], err_msg="lane b untouched")
    single = StatefulRunner(GRU).monitor()
    ref = [single.step(x) for x in xs[:30]]
    np.testing.assert_allclose([o.forecast for o in obs], [o.forecast for o in ref], rtol=1e-6)
    np.testing.assert_allclose([o.lower for o in obs], [o.lower for o in ref], rtol=1e-6)
    np.testing.assert_allclose([o.upper for o in obs], [o.upper for o in ref], rtol=1e-6)
    assert obs[-1].lower.shape == (1, 4, 1) and math.isfinite(obs[-1].score)
    with pytest.raises(BadInputError, match=r"no stream 'zzz' in the pool; add it first \(streams: 2\)"):
        pool.monitor("zzz")


# -- the monitor's state across restarts ------------------------------------------------------------------------


def _monitored(result) -> np.ndarray:
    """Every output column after ``row`` (forecasts, bounds, score, anomaly) as text: the row numbers differ."""
    header, rows = table(result.stdout)
    start = header.index("row") + 1
    return np.array([r[start:] for r in rows])


@pytest.mark.parametrize("name, keyed", [("gru_int8", False), ("gru_float32_b8", True)])
def test_a_restart_with_state_keeps_adapting_where_it_stopped(tmp_path, name, keyed):
    """Run in two halves with --state: the second half's forecasts, bounds and scores are those of one run over
    both, because the monitor's corrections and pending forecasts are saved with the recurrent state."""
    path = model(f"{name}.tflite")
    xs = golden_x(name.replace("_b8", ""))[:120]
    keys = ["s1"] * 120 if keyed else None
    header = ("sensor", "date", "co2") if keyed else ("date", "co2")
    extra = ["--stream-key", "sensor"] if keyed else []
    opts = ["--intervals", "0.8,0.95", "--anomaly", *extra]
    whole = run(path, csv_text(xs, DATES, header, keys), *opts)
    state = tmp_path / "state.npz"
    first = run(path, csv_text(xs[:70], DATES[:70], header, keys and keys[:70]), "--state", str(state), *opts)
    second = run(path, csv_text(xs[70:], DATES[70:120], header, keys and keys[70:]), "--state", str(state), *opts)
    assert whole.exit_code == first.exit_code == second.exit_code == 0, second.output
    assert "monitor state" not in second.stderr
    joined = np.concatenate([_monitored(first), _monitored(second)])
    assert (joined == _monitored(whole)).all()
    # The file holds the monitor next to the recurrent state; a run without a monitor reads it as before.
    with np.load(state) as d:
        assert {"monitor.theta", "monitor.ring", "monitor.counters"} <= set(d.files)
    plain = run(path, csv_text(xs[:5], DATES[:5], header, keys and keys[:5]), "--state", str(state), *extra)
    assert plain.exit_code == 0, plain.output


def test_a_state_saved_with_other_levels_starts_the_monitor_afresh_and_says_so(tmp_path):
    path = model("gru_int8.tflite")
    xs = golden_x("gru_int8")[:40]
    state = tmp_path / "state.npz"
    assert run(path, csv_text(xs[:20], DATES[:20]), "--state", str(state), "--intervals", "0.9").exit_code == 0
    result = run(path, csv_text(xs[20:], DATES[20:40]), "--state", str(state), "--intervals", "0.8")
    assert result.exit_code == 0, result.output
    assert stderr_lines(result)[0] == (
        "statelite: the state file holds no monitor state for these options (saved without --intervals/--anomaly, "
        "or with other --intervals levels): intervals and scores start from the model's calibration"
    )


@pytest.mark.parametrize("monitored", [False, True], ids=["plain", "monitored"])
def test_a_gap_across_a_restart_is_filled(tmp_path, monitored):
    """A power cut: the run stops after row 29 and starts again at row 33. The state file keeps the last time and
    the last row and forecast, so the first row after the restart finds the 3 missing weeks and fills them, as one
    run over the same rows does."""
    path = model("gru_float32.tflite")
    xs = golden_x()
    opts = ["--intervals", "0.9", "--anomaly"] if monitored else []
    state = tmp_path / "state.npz"
    first = run(path, csv_text(xs[:30], DATES[:30]), "--state", str(state), *opts)
    second = run(path, csv_text(xs[33:60], DATES[33:60]), "--state", str(state), *opts)
    assert first.exit_code == second.exit_code == 0, second.output
    assert stderr_lines(second)[0] == (
        f"stdin line 2: gap: 3 missing rows between 1995-12-30 00:00:00 and {DATES[33]} (every 7 days); filled with "
        f"the model's own forecasts (gap 1)."
    )
    whole = run(path, gap_text(xs), *opts)
    split = np.concatenate([_monitored(first), _monitored(second)])
    assert (split == _monitored(whole)).all()
    np.testing.assert_allclose(column(*table(second.stdout), HORIZON), filled_forecasts(path, xs)[30:], rtol=1e-6)
