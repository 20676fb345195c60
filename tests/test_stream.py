"""``statelite run`` and ``run_stream``: forecasts match the runner, bad rows are skipped without touching the state,
the state is saved and resumed, and rows are handled as they arrive."""

from __future__ import annotations

import io
import select
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from device_models import CLI, ENV, device_model, read_output, sample_rows, write_csv  # noqa: F401 (fixture)

from statelite import BadInputError, StatefulRunner, StateFileError, StreamPool, read_metadata
from statelite.cli import main
from statelite.stream import StreamConfig, run_stream


def _t(i: int) -> str:
    """A readable time for row ``i`` (a minute apart: never a gap against the models' weekly sampling)."""
    return f"2020-01-01T{i // 60:02d}:{i % 60:02d}:00"

def forecasts(rows: list[list[str]], skip: int = 1) -> np.ndarray:
    """The numeric forecast columns of ``statelite run`` output rows (after ``skip`` leading columns)."""
    return np.array([[float(v) for v in r[skip:]] for r in rows])


def expected(model, xs) -> np.ndarray:
    y = StatefulRunner(model).run(xs)  # (steps, horizon, targets) -> each target's horizon contiguous
    return y.transpose(0, 2, 1).reshape(len(xs), -1)


def stream(model, text: str, config=StreamConfig(), runner=None):
    runner = runner or StatefulRunner(model)
    out, err = io.StringIO(), io.StringIO()
    result = run_stream(runner, io.StringIO(text), out, config, errors=err, source_name="in.csv")
    return result, out.getvalue(), err.getvalue(), runner


def csv_text(header, rows) -> str:
    lines = [",".join(header)] if header else []
    return "\n".join(lines + [",".join(repr(float(v)) if not isinstance(v, str) else v for v in r) for r in rows]) + "\n"


def test_matches_runner_and_names_columns(device_model):
    model = device_model("gru")
    md = read_metadata(model)
    xs = sample_rows(model, 30)
    result, out, err, _ = stream(model, csv_text(list(md.features), xs))
    header, rows = read_output(out)
    assert header == ["row"] + [f"{t}_t+{h}" for t in md.targets for h in range(1, md.horizon + 1)]
    assert [r[0] for r in rows] == [str(i) for i in range(2, 32)], "row is the input line number"
    np.testing.assert_allclose(forecasts(rows), expected(model, xs), rtol=2e-6, atol=1e-6)
    assert (result.rows, result.skipped, result.saves) == (30, 0, 0)
    assert err == ""


def test_picks_features_by_name_and_passes_time_through(device_model):
    model = device_model("differencing")
    md = read_metadata(model)
    assert md.time_column and md.difference
    xs = sample_rows(model, 25)
    # Columns shuffled, an extra column, the time column in the middle.
    header = ["extra"] + list(reversed(md.features)) + [md.time_column]
    rows = [["7"] + [repr(float(v)) for v in reversed(x)] + [_t(i)] for i, x in enumerate(xs)]
    _, out, _, _ = stream(model, "\n".join(",".join(r) for r in [header] + rows) + "\n")
    head, got = read_output(out)
    assert head[:2] == [md.time_column, "row"]
    assert [r[0] for r in got] == [_t(i) for i in range(25)]
    np.testing.assert_allclose(forecasts(got, skip=2), expected(model, xs), rtol=2e-6, atol=1e-5)


def test_no_header(device_model):
    model = device_model("gru")
    xs = sample_rows(model, 10)
    _, out, _, _ = stream(model, csv_text(None, xs), StreamConfig(header=False))
    head, rows = read_output(out)
    assert head[0] == "row" and [r[0] for r in rows] == [str(i) for i in range(1, 11)]
    np.testing.assert_allclose(forecasts(rows), expected(model, xs), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("abc", "is 'abc', not a number"),
        ("nan", "is 'nan'; every value must be finite"),
        ("-inf", "is '-inf'; every value must be finite"),
        ("", "is empty"),
        (None, "expected {n} columns, received {m}"),
        ("1,2", "expected {n} columns, received {p}"),
    ],
)
def test_bad_rows_are_skipped_without_touching_state(device_model, bad, message):
    model = device_model("gru")
    md = read_metadata(model)
    n = len(md.features)
    xs = sample_rows(model, 12)
    # An id column first, so that a row is never blank, even for a one-feature model.
    lines = ["id," + ",".join(md.features)] + [f"{i}," + ",".join(repr(v) for v in x) for i, x in enumerate(xs.tolist())]
    good = ["x"] + [repr(float(v)) for v in xs[5]]
    broken = good[:-1] + ([] if bad is None else [bad])  # the last feature missing, or replaced
    lines.insert(6, ",".join(broken))  # becomes line 7
    result, out, err, _ = stream(model, "\n".join(lines) + "\n")
    assert "in.csv line 7: " in err and message.format(n=n + 1, m=n, p=n + 2) in err
    assert "row skipped, state unchanged" in err
    _, rows = read_output(out)
    assert result.skipped == 1 and result.rows == 12
    assert "7" not in [r[0] for r in rows]
    np.testing.assert_allclose(forecasts(rows), expected(model, xs), rtol=2e-6, atol=1e-6)


def test_strict_stops_at_first_bad_row(device_model):
    model = device_model("gru")
    md = read_metadata(model)
    text = csv_text(list(md.features), sample_rows(model, 3)) + ",".join(["x"] * len(md.features)) + "\n"
    with pytest.raises(BadInputError, match=r"in.csv line 5: column .* not a number \(--strict"):
        stream(model, text, StreamConfig(strict=True))


def test_header_without_features(device_model):
    model = device_model("gru")
    with pytest.raises(BadInputError, match=r"the header lacks the model's feature columns .*Pass --no-header"):
        stream(model, "time,foo,bar\n1,2,3\n")


def test_empty_input(device_model):
    model = device_model("gru")
    result, out, err, _ = stream(model, "")
    assert result.rows == 0 and read_output(out)[0][0] == "row"
    assert "in.csv is empty" in err
    result, out, err, _ = stream(model, "\n\n")
    assert result.rows == 0 and "is empty" in err


def test_state_saved_and_resumed(tmp_path, device_model):
    model = device_model("int8")
    md = read_metadata(model)
    xs = sample_rows(model, 30)
    state = str(tmp_path / "s.npz")
    config = StreamConfig(state_path=state, save_every=7)
    first, out1, _, r1 = stream(model, csv_text(list(md.features), xs[:18]), config)
    assert not first.resumed and first.saves == 3  # after rows 7 and 14, and at the end
    second, out2, _, _ = stream(model, csv_text(list(md.features), xs[18:]), config)
    assert second.resumed
    got = np.concatenate([forecasts(read_output(out1)[1]), forecasts(read_output(out2)[1])])
    np.testing.assert_allclose(got, expected(model, xs), rtol=2e-6, atol=1e-6)


def test_reset_every(device_model):
    model = device_model("gru")
    md = read_metadata(model)
    xs = sample_rows(model, 20)
    _, out, _, _ = stream(model, csv_text(list(md.features), xs), StreamConfig(reset_every=8))
    want = np.concatenate([expected(model, xs[i : i + 8]) for i in range(0, 20, 8)])
    np.testing.assert_allclose(forecasts(read_output(out)[1]), want, rtol=2e-6, atol=1e-6)


class _InterruptAfter(io.StringIO):
    """A source whose reader presses Ctrl-C after ``n`` lines."""

    def __init__(self, text: str, n: int):
        super().__init__(text)
        self.left = n

    def readline(self, *args):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return super().readline(*args)


def test_ctrl_c_saves_state(tmp_path, device_model):
    model = device_model("gru")
    md = read_metadata(model)
    xs = sample_rows(model, 20)
    runner = StatefulRunner(model)
    state = tmp_path / "s.npz"
    source = _InterruptAfter(csv_text(list(md.features), xs), 1 + 9)
    result = run_stream(runner, source, io.StringIO(), StreamConfig(state_path=str(state), save_every=100))
    assert result.interrupted and result.rows == 9 and result.saves == 1
    reference = StatefulRunner(model)
    reference.run(xs[:9])
    loaded = StatefulRunner(model)
    loaded.load_state(state)
    for name, value in reference.state.items():
        np.testing.assert_array_equal(loaded.state[name], value)


def test_bad_options():
    with pytest.raises(BadInputError, match="save_every must be at least 1; received save_every=0"):
        StreamConfig(save_every=0)
    with pytest.raises(BadInputError, match="reset_every must be at least 1"):
        StreamConfig(reset_every=0)


# -- the command ---------------------------------------------------------------------------------------------------


def test_cli_files(tmp_path, device_model):
    model = device_model("gru")
    md = read_metadata(model)
    xs = sample_rows(model, 15)
    write_csv(tmp_path / "in.csv", list(md.features), xs)
    result = CliRunner().invoke(
        main, ["run", str(model), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"),
               "--state", str(tmp_path / "s.npz")]
    )
    assert result.exit_code == 0, result.output
    assert f"statelite run: 15 rows forecast, state saved to {tmp_path / 's.npz'}" in result.stderr
    _, rows = read_output((tmp_path / "out.csv").read_text())
    np.testing.assert_allclose(forecasts(rows), expected(model, xs), rtol=2e-6, atol=1e-6)


def test_cli_stdin_bad_rows_and_strict(device_model):
    model = device_model("gru")
    md = read_metadata(model)
    text = csv_text(list(md.features), sample_rows(model, 3)) + ",".join(["nan"] * len(md.features)) + "\n"
    result = CliRunner().invoke(main, ["run", str(model)], input=text)
    assert result.exit_code == 0
    assert "stdin line 5: column" in result.stderr and "1 bad rows skipped" in result.stderr
    assert len(read_output(result.stdout)[1]) == 3
    result = CliRunner().invoke(main, ["run", str(model), "--strict"], input=text)
    assert result.exit_code == 2
    assert "Error: stdin line 5: column" in result.stderr and "Traceback" not in result.output


def test_cli_missing_input(tmp_path, device_model):
    result = CliRunner().invoke(main, ["run", str(device_model("gru")), "--input", str(tmp_path / "none.csv")])
    assert result.exit_code == 2
    assert f"cannot read the input {tmp_path / 'none.csv'}: No such file or directory" in result.stderr


def _readline(p: subprocess.Popen, timeout: float = 30) -> str:
    # One line is in flight at a time, so nothing waits in Python's buffer while select looks at the pipe.
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    assert ready, f"no output line within {timeout}s"
    return p.stdout.readline()


def test_rows_are_handled_as_they_arrive(device_model):
    """A forecast comes out for each row written, while the input stays open (no read-ahead, no output buffer)."""
    model = device_model("gru")
    md = read_metadata(model)
    xs = sample_rows(model, 3)
    p = subprocess.Popen(
        [*CLI, "run", str(model)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=ENV,
    )
    try:
        p.stdin.write(",".join(md.features) + "\n")
        p.stdin.flush()
        assert _readline(p).startswith("row,")
        for i, x in enumerate(xs):
            p.stdin.write(",".join(repr(float(v)) for v in x) + "\n")
            p.stdin.flush()
            assert _readline(p).split(",")[0] == str(i + 2)
        p.stdin.close()
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


# -- many streams in one input (--stream-key) ----------------------------------------------------------------------


@pytest.fixture(params=["gru_float32_b8", "lstm_int8_b8"], ids=["f32", "int8"])
def batched(request, reference_model):
    return reference_model(request.param + ".tflite")


def keyed_rows(streams: dict, order: list) -> list[list[str]]:
    """Interleaved ``date,sensor,co2`` rows: ``order`` lists the key of each row; each key takes its series in turn."""
    taken = {k: 0 for k in streams}
    rows = []
    for key in order:
        i = taken[key]
        taken[key] += 1
        rows.append([_t(i), key, repr(float(streams[key][i]))])
    return rows


def keyed_text(rows, header=("date", "sensor", "co2")) -> str:
    return "\n".join(",".join(r) for r in [list(header)] + rows) + "\n"


def series(keys, steps, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: 360 + 10 * i + np.cumsum(rng.normal(0, 0.5, steps)) for i, k in enumerate(keys)}


def interleaving(keys, counts: dict, seed=1) -> list:
    order = [k for k in keys for _ in range(counts[k])]
    np.random.default_rng(seed).shuffle(order)
    return order


def by_key(out: str) -> tuple[list[str], dict]:
    """The header and ``{key: (rows, forecasts)}`` of keyed ``statelite run`` output (time, row, key, forecasts...)."""
    header, rows = read_output(out)
    k = header.index("row") + 1
    got: dict = {}
    for r in rows:
        lines, ys = got.setdefault(r[k], ([], []))
        lines.append(int(r[k - 1]))
        ys.append([float(v) for v in r[k + 1 :]])
    return header, {key: (lines, np.array(ys)) for key, (lines, ys) in got.items()}


def pool_reference(model, data: dict, keys, counts: dict, reset_every=None) -> tuple[dict, StreamPool]:
    """Each key's forecasts from a StreamPool of the same model with the same lanes, stepping one stream at a time."""
    pool = StreamPool(model)
    for key in keys:
        pool.add(key)
    want = {}
    for key in keys:
        ys = []
        for i in range(counts[key]):
            if reset_every and i and i % reset_every == 0:
                pool.reset(key)
            ys.append(pool.step({key: [data[key][i]]})[key].T.reshape(-1))
        want[key] = np.array(ys)
    return want, pool


def _format(v) -> str:
    return format(float(v), ".10g")  # as statelite run writes a forecast


def keyed_stream(model, text, config, new_runner=None):
    runner = StreamPool(model) if read_metadata(model).batch > 1 else StatefulRunner(model)
    out, err = io.StringIO(), io.StringIO()
    result = run_stream(runner, io.StringIO(text), out, config, errors=err, source_name="in.csv", new_runner=new_runner)
    return result, out.getvalue(), err.getvalue(), runner


def test_interleaved_streams_each_get_their_own_forecasts(batched):
    """Rows of three sensors interleave at random, and one sensor stops sending early: each stream's forecasts are
    exactly what its lane computes when stepped alone, and the silent stream keeps its state."""
    keys = ["s1", "s2", "quiet"]
    counts = {"s1": 30, "s2": 22, "quiet": 4}
    data = series(keys, 30)
    order = [k for k in ("s1", "quiet", "s2", "quiet", "quiet", "quiet")]  # the quiet one stops after its 4 rows
    order += interleaving(["s1", "s2"], {"s1": 29, "s2": 21})
    text = keyed_text(keyed_rows(data, order))
    result, out, err, pool = keyed_stream(batched, text, StreamConfig(stream_key="sensor"))
    assert err == "" and (result.rows, result.streams, result.refused) == (56, 3, 0)
    header, got = by_key(out)
    md = read_metadata(batched)
    assert header == ["date", "row", "sensor"] + [f"co2_t+{h}" for h in range(1, md.horizon + 1)]
    want, reference = pool_reference(batched, data, ["s1", "quiet", "s2"], counts)
    for key in keys:
        lines, ys = got[key]
        assert lines == [i + 2 for i, k in enumerate(order) if k == key], "row is the input line number"
        np.testing.assert_allclose(ys, want[key], rtol=1e-9, atol=0)  # .10g text: exact to print precision
    for name, value in reference.state("quiet").items():
        np.testing.assert_array_equal(pool.state("quiet")[name], value)


def test_float_pool_stream_equals_single_stream_run(reference_model):
    """The same series through the batch-8 pool (with other streams around it) and through a plain single-stream
    ``statelite run`` of the batch-1 model agree to float32 precision."""
    keys = ["a", "b"]
    data = series(keys, 25)
    order = interleaving(keys, {"a": 25, "b": 25})
    _, out, _, _ = keyed_stream(
        reference_model("gru_float32_b8.tflite"), keyed_text(keyed_rows(data, order)), StreamConfig(stream_key="sensor")
    )
    _, got = by_key(out)
    single = reference_model("gru_float32.tflite")
    for key in keys:
        _, alone, _, _ = stream(single, csv_text(["co2"], data[key][:, None]))
        np.testing.assert_allclose(got[key][1], forecasts(read_output(alone)[1]), rtol=0, atol=1e-4)


def test_batch1_model_runs_one_runner_per_stream(reference_model):
    model = reference_model("gru_float32.tflite")
    keys = ["x", "y", "z"]
    counts = {"x": 12, "y": 9, "z": 5}
    data = series(keys, 12)
    order = interleaving(keys, counts)
    made = []

    def new_runner():
        made.append(StatefulRunner(model))
        return made[-1]

    result, out, _, _ = keyed_stream(model, keyed_text(keyed_rows(data, order)), StreamConfig(stream_key="sensor"),
                                     new_runner=new_runner)
    assert result.streams == 3 and len(made) == 2, "the caller's runner serves the first stream"
    _, got = by_key(out)
    for key in keys:
        want = expected(model, data[key][: counts[key], None])
        np.testing.assert_array_equal(got[key][1], np.array([[float(_format(v)) for v in r] for r in want]))


def test_reset_every_counts_each_stream(batched):
    keys = ["a", "b"]
    counts = {"a": 14, "b": 9}
    data = series(keys, 14)
    order = interleaving(keys, counts)
    config = StreamConfig(stream_key="sensor", reset_every=4)
    _, out, _, _ = keyed_stream(batched, keyed_text(keyed_rows(data, order)), config)
    _, got = by_key(out)
    want, _ = pool_reference(batched, data, [k for k in dict.fromkeys(order)], counts, reset_every=4)
    for key in keys:
        np.testing.assert_allclose(got[key][1], want[key], rtol=1e-9, atol=0)


@pytest.mark.parametrize("model_name", ["gru_float32_b8", "lstm_int8_b8", "gru_float32"])
def test_keyed_state_saved_and_resumed(tmp_path, reference_model, model_name):
    """Stop after some rows and resume from the state file with a new pool (or new runners): the continued
    forecasts equal an unbroken run's, including those of a stream that was silent from before the stop until the
    last row."""
    model = reference_model(model_name + ".tflite")
    data = series(["a", "b", "c"], 20)
    order = ["c"] * 3 + interleaving(["a", "b"], {"a": 20, "b": 16}) + ["c"]
    rows = keyed_rows(data, order)
    state = str(tmp_path / "pool.npz")
    _, whole, _, _ = keyed_stream(model, keyed_text(rows), StreamConfig(stream_key="sensor"))
    cut = 21
    config = StreamConfig(stream_key="sensor", state_path=state, save_every=5)
    first, out1, _, _ = keyed_stream(model, keyed_text(rows[:cut]), config)
    assert not first.resumed and first.saves == 5  # after 5, 10, 15, 20 rows, and at the end
    second, out2, _, _ = keyed_stream(model, keyed_text(rows[cut:]), config)
    assert second.resumed and second.streams == 3
    tail = [r.split(",")[2:] for r in out2.splitlines()[1:]]  # line numbers restart in the second file
    assert tail == [r.split(",")[2:] for r in whole.splitlines()[1 + cut :]]
    assert out1.splitlines() == whole.splitlines()[: 1 + cut]


def test_pool_full_skips_new_streams_and_reports_once(reference_model):
    model = reference_model("gru_float32_b8.tflite")
    keys = [f"s{i}" for i in range(10)]
    data = series(keys, 6)
    order = [k for _ in range(6) for k in keys]  # round-robin: s8 and s9 arrive when the pool is full
    result, out, err, _ = keyed_stream(model, keyed_text(keyed_rows(data, order)), StreamConfig(stream_key="sensor"))
    assert (result.rows, result.refused, result.refused_streams, result.streams) == (48, 12, 2, 8)
    lines = err.splitlines()
    assert len(lines) == 2, "each stream that does not fit is reported once"
    assert lines[0] == (
        "in.csv line 10: stream 's8' does not fit: the pool is full with 8 streams (the model's batch); its rows are "
        "skipped (convert with a larger --batch to run it)."
    )
    _, got = by_key(out)
    assert sorted(got) == keys[:8]
    want, _ = pool_reference(model, data, keys[:8], {k: 6 for k in keys[:8]})
    for key in keys[:8]:
        np.testing.assert_allclose(got[key][1], want[key], rtol=1e-9, atol=0)
    with pytest.raises(BadInputError, match=r"in.csv line 10: stream 's8' does not fit: the pool is full with 8 "
                                            r"streams .*--strict stops at the first stream that does not fit"):
        keyed_stream(model, keyed_text(keyed_rows(data, order)), StreamConfig(stream_key="sensor", strict=True))


def test_keyed_bad_rows(reference_model):
    model = reference_model("gru_float32_b8.tflite")
    text = keyed_text([["t0", "a", "360.0"], ["t1", "", "361.0"], ["t2", "b", "nan"], ["t3", "b", "362.0"]])
    result, out, err, _ = keyed_stream(model, text, StreamConfig(stream_key="sensor"))
    assert "in.csv line 3: column 'sensor' (the stream key) is empty; row skipped" in err
    assert "in.csv line 4: column 'co2' is 'nan'; every value must be finite; row skipped" in err
    assert (result.rows, result.skipped, result.streams) == (2, 2, 2)
    assert [r[1:3] for r in read_output(out)[1]] == [["2", "a"], ["5", "b"]]


def test_keyed_configuration_errors(reference_model, tmp_path):
    b8, b1 = reference_model("gru_float32_b8.tflite"), reference_model("gru_float32.tflite")
    with pytest.raises(BadInputError, match=r"the header lacks the stream key column 'sensor' \(--stream-key\)"):
        keyed_stream(b8, "date,co2\nt0,360\n", StreamConfig(stream_key="sensor"))
    with pytest.raises(BadInputError, match="stream key column must not be one of the model's features"):
        keyed_stream(b8, "date,co2\nt0,360\n", StreamConfig(stream_key="co2"))
    with pytest.raises(BadInputError, match="stream_key names a header column.*header=False"):
        StreamConfig(stream_key="sensor", header=False)
    with pytest.raises(BadInputError, match="a StreamPool runs many streams: set stream_key"):
        run_stream(StreamPool(b8), io.StringIO(""), io.StringIO())
    with pytest.raises(BadInputError, match="converted with batch 8. Pass --stream-key COL"):
        run_stream(StatefulRunner(b8), io.StringIO(""), io.StringIO())
    # A single-stream state file and a pool state file refuse each other by name.
    single = tmp_path / "one.npz"
    StatefulRunner(b1).save_state(single)
    with pytest.raises(StateFileError, match="holds one stream's state .*saved without --stream-key"):
        keyed_stream(b1, "date,sensor,co2\n", StreamConfig(stream_key="sensor", state_path=str(single)))
    many = tmp_path / "many.npz"
    two = keyed_text([["t0", "a", "360"], ["t0", "b", "370"]])
    keyed_stream(b1, two, StreamConfig(stream_key="sensor", state_path=str(many)))
    with pytest.raises(StateFileError, match="holds the states of 2 streams"):
        stream(b1, "date,co2\n", StreamConfig(state_path=str(many)))


def test_cli_stream_key(tmp_path, reference_model):
    model = reference_model("gru_float32_b8.tflite")
    keys = [f"s{i}" for i in range(9)]
    data = series(keys, 3)
    rows = keyed_rows(data, [k for _ in range(3) for k in keys])
    (tmp_path / "in.csv").write_text(keyed_text(rows))
    state = tmp_path / "pool.npz"
    args = ["run", str(model), "--stream-key", "sensor", "--input", str(tmp_path / "in.csv"), "--state", str(state)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"statelite run: 24 rows forecast for 8 streams, 3 rows of 1 streams skipped (pool full: 8 streams), " \
           f"state saved to {state}" in result.stderr
    assert "stream 's8' does not fit" in result.stderr and "Traceback" not in result.output
    assert read_output(result.stdout)[0][:3] == ["date", "row", "sensor"]
    assert state.exists()
    result = CliRunner().invoke(main, args + ["--strict"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "stream 's8' does not fit: the pool is full with 8 streams" in result.stderr
    result = CliRunner().invoke(main, ["run", str(model), "--stream-key", "sensor", "--no-header"], input="1\n")
    assert result.exit_code == 2 and "Error: stream_key names a header column" in result.stderr
    result = CliRunner().invoke(main, ["run", str(model)], input="date,co2\nt0,360\n")
    assert result.exit_code == 2 and "Pass --stream-key COL" in result.stderr


def test_keyed_sigterm_then_resume_in_a_process(tmp_path, reference_model):
    """A real ``statelite run --stream-key`` stopped by SIGTERM mid-stream saves every stream; the next run resumes
    them and its forecasts continue exactly as one unbroken run's."""
    import signal

    model = reference_model("lstm_int8_b8.tflite")
    keys = ["a", "b", "c"]
    counts = {"a": 10, "b": 8, "c": 6}
    data = series(keys, 10)
    rows = keyed_rows(data, interleaving(keys, counts))
    _, whole, _, _ = keyed_stream(model, keyed_text(rows), StreamConfig(stream_key="sensor"))
    want = [r.split(",")[2:] for r in whole.splitlines()[1:]]
    state = tmp_path / "pool.npz"
    p = subprocess.Popen(
        [*CLI, "run", str(model), "--stream-key", "sensor", "--state", str(state)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    try:
        p.stdin.write("date,sensor,co2\n")
        p.stdin.flush()
        assert _readline(p).startswith("date,row,sensor,")
        got = []
        for r in rows[:11]:
            p.stdin.write(",".join(r) + "\n")
            p.stdin.flush()
            got.append(_readline(p).strip().split(",")[2:])
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
        p.stdin.close()
    assert "statelite run: stopped, 11 rows forecast for 3 streams" in err and "Traceback" not in err
    done = subprocess.run(
        [*CLI, "run", str(model), "--stream-key", "sensor", "--state", str(state)],
        input=keyed_text(rows[11:]), capture_output=True, text=True, env=ENV, timeout=60, check=False,
    )
    assert done.returncode == 0 and "resumed from" in done.stderr
    got += [r.split(",")[2:] for r in done.stdout.splitlines()[1:]]
    assert got == want


# -- CSV: quoting, delimiters ----------------------------------------------------------------------------------------


def test_time_with_a_comma_or_quote_round_trips(device_model):
    import csv

    model = device_model("differencing")
    md = read_metadata(model)
    xs = sample_rows(model, 4)
    times = ["Aug 27, 2000 14:00", 'the "first"', "plain", "a,b,\"c\""]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([md.time_column] + list(md.features))
    w.writerows([[t] + [repr(float(v)) for v in x] for t, x in zip(times, xs)])
    _, out, err, _ = stream(model, buf.getvalue())
    got = list(csv.reader(io.StringIO(out)))
    assert [r[0] for r in got[1:]] == times
    assert out.splitlines()[1].startswith('"Aug 27, 2000 14:00",2,')
    np.testing.assert_allclose(forecasts(got[1:], skip=2), expected(model, xs), rtol=2e-6, atol=1e-5)
    # Labels, not times: said once (with the first row) and counted at exit, never once per row.
    lines = err.splitlines()
    assert len(lines) == 2 and "received 'Aug 27, 2000 14:00'" in lines[0], err
    assert lines[1] == "statelite: 4 rows with a time that cannot be read: forecast without a gap check"


@pytest.mark.parametrize("delimiter, config", [(";", StreamConfig()), ("\t", StreamConfig()),
                                               (";", StreamConfig(delimiter=";"))])
def test_semicolon_and_tab_input(device_model, delimiter, config):
    model = device_model("gru")
    md = read_metadata(model)
    xs = sample_rows(model, 6)
    text = "\n" + delimiter.join(["t"] + list(md.features)) + "\n"  # a blank line first: detection skips it
    text += "".join(delimiter.join([f"x,{i}"] + [repr(float(v)) for v in x]) + "\n" for i, x in enumerate(xs))
    _, out, err, _ = stream(model, text, config)
    _, rows = read_output(out)
    assert err == "" and [r[0] for r in rows] == [str(i) for i in range(3, 9)], "row numbers count the blank line"
    np.testing.assert_allclose(forecasts(rows), expected(model, xs), rtol=2e-6, atol=1e-6)


def test_wrong_delimiter_hints_at_the_option(device_model):
    model = device_model("gru")
    md = read_metadata(model)
    xs = sample_rows(model, 3)
    header = ";".join(["t"] + list(md.features))
    rows = "".join(";".join(["d"] + [repr(float(v)) for v in x]) + "\n" for x in xs)
    with pytest.raises(BadInputError, match=r"header looks delimited by ';', not ',': pass --delimiter ';'"):
        stream(model, header + "\n" + rows, StreamConfig(delimiter=","))
    # A comma header over semicolon rows: each row is skipped with the hint.
    _, _, err, _ = stream(model, ",".join(["t"] + list(md.features)) + "\n" + rows)
    assert "in.csv line 2: expected 2 columns, received 1 (the row looks delimited by ';': pass --delimiter ';')" in err
    result = CliRunner().invoke(main, ["run", str(model), "--delimiter", ","], input=header + "\n" + rows)
    assert result.exit_code == 2 and "pass --delimiter ';'" in result.stderr


def test_cli_delimiter_option(device_model):
    model = device_model("gru")
    md = read_metadata(model)
    xs = sample_rows(model, 5)
    text = "\t".join(list(md.features) + ["note;a;b"]) + "\n"  # detection would take ';' from this header
    text += "".join("\t".join([repr(float(v)) for v in x] + ["a;b;c"]) + "\n" for x in xs)
    result = CliRunner().invoke(main, ["run", str(model)], input=text)
    assert result.exit_code == 2 and "the header lacks" in result.stderr
    for value in ("tab", "\\t", "\t"):
        result = CliRunner().invoke(main, ["run", str(model), "--delimiter", value], input=text)
        assert result.exit_code == 0, result.output
        _, rows = read_output(result.stdout)
        np.testing.assert_allclose(forecasts(rows), expected(model, xs), rtol=2e-6, atol=1e-6)
    result = CliRunner().invoke(main, ["run", str(model), "--delimiter", ";;"], input=text)
    assert result.exit_code == 2 and "delimiter must be one character" in result.stderr
