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

from statelite import BadInputError, StatefulRunner, read_metadata
from statelite.cli import main
from statelite.stream import StreamConfig, run_stream


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
    rows = [["7"] + [repr(float(v)) for v in reversed(x)] + [f"t{i}"] for i, x in enumerate(xs)]
    _, out, _, _ = stream(model, "\n".join(",".join(r) for r in [header] + rows) + "\n")
    head, got = read_output(out)
    assert head[:2] == [md.time_column, "row"]
    assert [r[0] for r in got] == [f"t{i}" for i in range(25)]
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
