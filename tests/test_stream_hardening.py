"""What ``statelite run`` reads and writes, hardened (issue 10): every reproducer found on a device-only install,
as a named regression test. Bad lines are skipped one by one with their line numbers (exit 0 without --strict),
values are plain decimal numbers, --output never overwrites the model, the state or the input, --max-streams caps
the streams of a batch-1 model, a row the runner refuses is a bad row, and nothing ends in a traceback."""

from __future__ import annotations

import io
import os
import re
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from device_models import CLI, ENV, MODELS, read_output

from statelite import BadInputError, StatefulRunner, StateliteError
from statelite.cli import main
from statelite.state_file import load_pool_state, load_state
from statelite.stream import MAX_KEY_CHARS, MAX_LINE_BYTES, StreamConfig, parse_number, read_lines, run_stream

GRU = MODELS / "gru_float32.tflite"
LSTM8 = MODELS / "lstm_int8.tflite"


def _t(i: int) -> str:
    """A readable time for row ``i`` (a minute apart: never a gap against the models' weekly sampling)."""
    return f"2020-01-01T{i // 60:02d}:{i % 60:02d}:00"


@pytest.fixture(autouse=True)
def _models():
    if not GRU.exists() or not LSTM8.exists():
        pytest.skip("needs the reference models in models/")


def values(n: int, seed: int = 0) -> list[float]:
    """CO2-like readings: small steps around 360, inside the models' training range of first differences."""
    rng = np.random.default_rng(seed)
    return (360 + np.cumsum(rng.normal(0, 0.3, n))).tolist()


def rows_bytes(vals, start: int = 0) -> bytes:
    return "".join(f"t{start + i},{v!r}\n" for i, v in enumerate(vals)).encode()


def invoke(args, data: bytes):
    return CliRunner().invoke(main, ["run", *map(str, args)], input=data)


def no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def bad_lines(stderr: str, source: str = "stdin") -> list[int]:
    return [int(n) for n in re.findall(rf"^{source} line (\d+): .*; row skipped", stderr, re.M)]


def output_lines(stdout: str) -> list[int]:
    return [int(r[1]) for r in read_output(stdout)[1]]


def reference(vals) -> np.ndarray:
    """The forecasts of an unbroken run over ``vals`` (printed as run prints them)."""
    y = StatefulRunner(GRU).run(np.array(vals)[:, None], chunked=False)
    return np.array([[float(format(float(v), ".10g")) for v in r] for r in y.transpose(0, 2, 1).reshape(len(vals), -1)])


# -- lines -----------------------------------------------------------------------------------------------------------


def test_unterminated_quote_spoils_only_its_line():
    """One unclosed '"' used to swallow every following row (10,000 rows lost, reported as one bad row, exit 0)."""
    vals = values(10_001)
    data = b"date,co2\n" + rows_bytes(vals[:1]) + b'"t1,361.0\n' + rows_bytes(vals[1:], start=2)
    result = invoke([GRU], data)
    no_traceback(result)
    assert result.exit_code == 0
    assert bad_lines(result.stderr) == [3]
    assert "stdin line 3: not readable as CSV (unexpected end of data" in result.stderr
    assert output_lines(result.stdout) == [2] + list(range(4, 10_004)), "the next 10,000 rows are forecast"
    assert "10001 rows forecast, 1 bad rows skipped" in result.stderr
    np.testing.assert_allclose(np.array([[float(v) for v in r[2:]] for r in read_output(result.stdout)[1]]),
                               reference(vals), rtol=1e-9)


@pytest.mark.parametrize("bad", ['"t1,361', 't1,"361', '"t1"x,361', 't1,"36"1'],
                         ids=["open", "open2", "stray", "inner"])
def test_broken_quotes_are_bad_rows(bad):
    vals = values(4)
    data = b"date,co2\n" + rows_bytes(vals[:2]) + bad.encode() + b"\n" + rows_bytes(vals[2:], start=3)
    result = invoke([GRU], data)
    assert result.exit_code == 0 and bad_lines(result.stderr) == [4]
    assert output_lines(result.stdout) == [2, 3, 5, 6]


def test_quoted_values_still_work():
    data = b'date,co2\n"Aug 27, 2000",360.1\n"say ""hi""",360.2\n'
    result = invoke([GRU], data)
    # The labels are not times: one line says gaps go unchecked for them; the rows are forecast all the same.
    assert result.exit_code == 0 and "statelite run: 2 rows forecast" in result.stderr
    assert "forecast without a gap check" in result.stderr
    import csv

    assert [r[0] for r in list(csv.reader(io.StringIO(result.stdout)))[1:]] == ["Aug 27, 2000", 'say "hi"']


def test_long_line_bare_cr_and_binary_on_stdin_are_skipped_in_a_process():
    """A line over 128 KB, a bare CR and binary with NUL on a real stdin pipe used to end a non-strict run with
    exit 2. Each is now one bad row with its line number."""
    vals = values(6)
    data = b"date,co2\n" + rows_bytes(vals[:1])
    data += b"t1," + b"9" * 200_000 + b"\n"  # line 3: 200 KB
    data += rows_bytes(vals[1:2], start=2)  # line 4
    data += b"t3\r,360.5\n"  # line 5: a bare CR
    data += rows_bytes(vals[2:3], start=4)  # line 6
    data += b"t5,3\x0060.1\x01\xff\xfe\n"  # line 7: NUL and binary
    data += b"t6,\xff\xfe360\n"  # line 8: not UTF-8
    data += rows_bytes(vals[3:], start=7)  # lines 9-11, the last with CRLF below
    data = data[:-1] + b"\r\n"
    done = subprocess.run([*CLI, "run", str(GRU)], input=data, capture_output=True, env=ENV, timeout=60, check=False)
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "Traceback" not in err
    assert bad_lines(err) == [3, 5, 7, 8]
    assert "stdin line 3: the line is 200004 bytes long, more than the 65536 a line may have" in err
    assert "stdin line 5: the line holds a carriage return (\\r) at byte 3" in err
    assert "stdin line 7: the line holds the control byte 0x00 at byte 5 (binary data?)" in err
    assert "stdin line 8: the line is not UTF-8 text (byte 0xff at byte 4)" in err
    assert output_lines(done.stdout.decode()) == [2, 4, 6, 9, 10, 11]
    assert "6 rows forecast, 4 bad rows skipped" in err


@pytest.mark.parametrize("size", [MAX_LINE_BYTES - 1, MAX_LINE_BYTES, MAX_LINE_BYTES + 1, 5 * MAX_LINE_BYTES + 7])
def test_line_limit_counts_the_line_end_and_memory_stays_bounded(size):
    """A line of ``size`` bytes with its newline: over the limit it is one bad line, read in chunks (never more
    than the limit, plus one, in one read), and the line after it is read normally."""
    line = b"x" * (size - 1) + b"\n"

    class Reads(io.BytesIO):
        largest = 0

        def readline(self, limit=-1):
            out = super().readline(limit)
            Reads.largest = max(Reads.largest, len(out))
            return out

    got = list(read_lines(Reads(line + b"next\n")))
    assert Reads.largest <= MAX_LINE_BYTES + 1
    if size <= MAX_LINE_BYTES:
        assert got[0][1] == "x" * (size - 1) and got[0][2] is None
    else:
        assert got[0][1] is None and f"the line is {size} bytes long" in got[0][2]
    assert got[1] == (2, "next", None)


def test_bom_crlf_and_text_sources():
    assert list(read_lines(io.BytesIO(b"\xef\xbb\xbfdate,co2\r\nt0,1\r\n\r\n"))) == [
        (1, "date,co2", None), (2, "t0,1", None), (3, "", None)
    ]
    assert list(read_lines(io.StringIO("\ufeffa\nb"))) == [(1, "a", None), (2, "b", None)]
    assert list(read_lines(io.StringIO("a\x00b\n")))[0][2].startswith("the line holds the control byte 0x00")


def test_strict_stops_at_a_bad_line_with_exit_2_and_its_number():
    data = b"date,co2\n" + rows_bytes(values(2)) + b"t2,36\x000\n" + rows_bytes(values(2), start=3)
    result = invoke([GRU, "--strict"], data)
    no_traceback(result)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: stdin line 4: the line holds the control byte 0x00 at byte 6 (binary data?) (--strict "
                      "stops at the first bad row)."]
    assert output_lines(result.stdout) == [2, 3]


def test_an_unreadable_header_is_one_line_exit_2():
    result = invoke([GRU], b"da\x00te,co2\n" + rows_bytes(values(2)))
    no_traceback(result)
    assert result.exit_code == 2
    assert "Error: stdin line 1 (the header): the line holds the control byte 0x00" in result.stderr


# -- numbers ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell, message",
    [
        ("1_000", "is '1_000', not a number (only plain decimal digits"),
        ("١٢٣", "is '١٢٣', not a number (only plain decimal digits"),  # Arabic-Indic digits: float() takes them
        ("0x10", "is '0x10', not a number (only plain decimal digits"),
        ("３６０", "is '３６０', not a number"),  # full-width digits
        ("1e400", "is '1e400', beyond the float64 range; every value must be finite"),
        ("-1e999", "is '-1e999', beyond the float64 range"),
        ("nan", "is 'nan'; every value must be finite"),
        ("Infinity", "is 'Infinity'; every value must be finite"),
        ("   ", "is empty"),
        ("\t", "is empty"),
        ("1 2", "is '1 2', not a number"),
        ("360.1.2", "is '360.1.2', not a number"),
        ("e5", "is 'e5', not a number"),
        ("360e", "is '360e', not a number"),
    ],
)
def test_numbers_must_be_plain_decimal(cell, message):
    vals = values(3)
    data = b"date,co2\n" + rows_bytes(vals[:1]) + f"t1,{cell}\n".encode() + rows_bytes(vals[1:], start=2)
    result = invoke([GRU], data)
    no_traceback(result)
    assert result.exit_code == 0 and bad_lines(result.stderr) == [3]
    assert f"stdin line 3: column 'co2' {message}" in result.stderr
    assert output_lines(result.stdout) == [2, 4, 5]


@pytest.mark.parametrize("cell", ["360", "+360", "-0.5", "360.", ".5", "3.6e2", "3.6E+2", "36000e-2", " 360 ", "\t360"])
def test_plain_decimal_numbers_are_accepted(cell):
    assert parse_number(cell) == float(cell)


def test_huge_finite_reading_is_a_bad_row_and_never_saved(tmp_path):
    """1e30 used to poison the float model (every later forecast NaN). The runner refuses it now (a BadInputError
    from its step): run skips it as a bad row, and the saved state is that of the rows around it."""
    probe = StatefulRunner(GRU)
    probe.step([360.0])
    try:
        probe.step([1e30])
    except BadInputError:
        pass
    else:
        pytest.xfail("the runner does not refuse 1e30 yet (another change of issue 10)")
    vals = values(6)
    state = tmp_path / "s.npz"
    data = b"date,co2\n" + rows_bytes(vals[:3]) + b"t3,1e30\n" + b"t4,-1e308\n" + rows_bytes(vals[3:], start=5)
    result = invoke([GRU, "--state", state, "--save-every", "1"], data)
    no_traceback(result)
    assert result.exit_code == 0 and bad_lines(result.stderr) == [5, 6]
    assert output_lines(result.stdout) == [2, 3, 4, 7, 8, 9]
    np.testing.assert_allclose(np.array([[float(v) for v in r[2:]] for r in read_output(result.stdout)[1]]),
                               reference(vals), rtol=1e-9)
    want = StatefulRunner(GRU)
    want.run(np.array(vals)[:, None], chunked=False)
    got = load_state(state, want.model_sha256, {k: v.shape for k, v in want.state.items()})
    for name, value in want.state.items():
        np.testing.assert_array_equal(got[name], value)
    result = invoke([GRU, "--strict"], data)
    assert result.exit_code == 2 and "Error: stdin line 5: " in result.stderr
    no_traceback(result)


def test_huge_first_reading_does_not_pin_the_stream():
    """A differencing model's first row has no previous row: its level is checked against the levels' training
    range (input_range level_min/max), so a glitch there is refused instead of becoming the reference every later
    reading differs from by ~1e30."""
    vals = values(3)
    result = invoke([GRU], b"date,co2\nt0,1e30\n" + rows_bytes(vals, start=1))
    no_traceback(result)
    assert result.exit_code == 0
    assert output_lines(result.stdout) == [3, 4, 5], result.stderr


def test_a_state_that_is_not_finite_is_never_saved(tmp_path):
    """Should a non-finite state ever get past the runner, run keeps it out of the state file and says so."""

    class Poisoned(StatefulRunner):
        poisoned = False

        @property
        def state(self):
            s = StatefulRunner.state.fget(self)
            return {k: np.full_like(v, np.nan) for k, v in s.items()} if self.poisoned else s

    vals = values(5)
    runner = Poisoned(GRU)
    real_step = runner.step  # the runner may bind its fastest path per instance: wrap the instance's own

    def step(x):
        y = real_step(x)
        runner.poisoned = runner.poisoned or float(np.ravel(x)[0]) > 365
        return y

    runner.step = step
    state = tmp_path / "s.npz"
    text = "date,co2\n" + "".join(f"{_t(i)},{v!r}\n" for i, v in enumerate(vals[:3])) + f"{_t(3)},366\n{_t(4)},360\n"
    err = io.StringIO()
    result = run_stream(runner, io.StringIO(text), io.StringIO(), StreamConfig(state_path=str(state), save_every=1),
                        errors=err, source_name="in.csv")
    assert result.not_saved and result.saves == 3 and result.rows == 5
    assert err.getvalue().count("is not finite") == 1, "said once"
    assert "after in.csv line 5 the state h_0 is not finite (NaN or inf); it is not saved" in err.getvalue()
    want = StatefulRunner(GRU)
    want.run(np.array(vals[:3])[:, None], chunked=False)
    got = load_state(state, want.model_sha256, {k: v.shape for k, v in want.state.items()})
    np.testing.assert_array_equal(got["h_0"], want.state["h_0"])


# -- files -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "dotted"])
def test_output_naming_the_model_is_refused(tmp_path, how):
    model = tmp_path / "m.tflite"
    model.write_bytes(GRU.read_bytes())
    target = {"same": model, "symlink": tmp_path / "link.csv", "hardlink": tmp_path / "hard.csv",
              "dotted": tmp_path / "sub" / ".." / "m.tflite"}[how]
    if how == "symlink":
        target.symlink_to(model)
    elif how == "hardlink":
        os.link(model, target)
    elif how == "dotted":
        (tmp_path / "sub").mkdir()
    before = model.read_bytes()
    result = invoke([model, "--output", target], b"date,co2\n" + rows_bytes(values(3)))
    no_traceback(result)
    assert result.exit_code == 2
    assert f"Error: --output {target} is the model ({model}): writing forecasts there would destroy it" in result.stderr
    assert model.read_bytes() == before


def test_output_naming_the_state_or_input_and_state_naming_the_model_are_refused(tmp_path):
    csv_file = tmp_path / "in.csv"
    csv_file.write_bytes(b"date,co2\n" + rows_bytes(values(3)))
    state = tmp_path / "s.npz"
    assert invoke([GRU, "--input", csv_file, "--state", state], b"").exit_code == 0
    kept = state.read_bytes(), csv_file.read_bytes()
    result = invoke([GRU, "--input", csv_file, "--state", state, "--output", state], b"")
    assert result.exit_code == 2 and f"--output {state} is the --state file" in result.stderr
    result = invoke([GRU, "--input", csv_file, "--output", csv_file], b"")
    assert result.exit_code == 2 and f"--output {csv_file} is the --input file" in result.stderr
    result = invoke([GRU, "--input", csv_file, "--state", csv_file], b"")
    assert result.exit_code == 2 and f"--state {csv_file} is the --input file" in result.stderr
    result = invoke([GRU, "--input", csv_file, "--state", GRU], b"")
    assert result.exit_code == 2 and f"--state {GRU} is the model" in result.stderr
    assert (state.read_bytes(), csv_file.read_bytes()) == kept


def test_an_output_that_cannot_be_written_is_one_line(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    result = invoke([GRU, "--output", "/dev/full", "--state", tmp_path / "s.npz"],
                    b"date,co2\n" + rows_bytes(values(3)))
    no_traceback(result)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr


def test_an_unexpected_error_in_a_step_is_one_line_naming_the_line(tmp_path):
    runner = StatefulRunner(GRU)
    real_step, calls = runner.step, []

    def step(x):
        calls.append(x)
        if len(calls) == 3:
            raise RuntimeError("interpreter fell over")
        return real_step(x)

    runner.step = step
    state = tmp_path / "s.npz"
    text = "date,co2\n" + "".join(f"{_t(i)},{v!r}\n" for i, v in enumerate(values(5)))
    with pytest.raises(StateliteError, match=r"^in.csv line 4: the run stopped on an unexpected error: RuntimeError: "
                                             r"interpreter fell over$"):
        run_stream(runner, io.StringIO(text), io.StringIO(), StreamConfig(state_path=str(state)),
                   errors=io.StringIO(), source_name="in.csv")
    assert state.exists(), "the state of the rows before it is saved"


# -- streams ---------------------------------------------------------------------------------------------------------


def keyed(order: list[str]) -> bytes:
    vals = values(len(order))
    return b"date,sensor,co2\n" + "".join(f"{_t(i)},{k},{vals[i]!r}\n" for i, k in enumerate(order)).encode()


def test_max_streams_caps_a_batch1_model(tmp_path):
    """Each stream of a batch-1 model holds its own interpreter (about 180 KiB): 3,000 keys used to cost 591 MB with
    no cap. With --max-streams 3 and 5 keys, the 2 late keys are reported once each and their rows skipped."""
    order = ["a", "b", "c", "d", "e"] * 4
    state = tmp_path / "s.npz"
    result = invoke([GRU, "--stream-key", "sensor", "--max-streams", 3, "--state", state], keyed(order))
    no_traceback(result)
    assert result.exit_code == 0
    refused = [line for line in result.stderr.splitlines() if "does not fit" in line]
    assert refused == [
        "stdin line 5: stream 'd' does not fit: 3 streams are running, as many as --max-streams allows; its rows are "
        "skipped (raise --max-streams, or use a model converted with --batch, to run it).",
        "stdin line 6: stream 'e' does not fit: 3 streams are running, as many as --max-streams allows; its rows are "
        "skipped (raise --max-streams, or use a model converted with --batch, to run it).",
    ]
    got = read_output(result.stdout)[1]
    assert sorted({r[2] for r in got}) == ["a", "b", "c"] and len(got) == 12
    assert "12 rows forecast for 3 streams, 8 rows of 2 streams skipped (--max-streams: 3 streams)" in result.stderr
    sha = StatefulRunner(GRU).model_sha256
    shapes = {k: v.shape for k, v in StatefulRunner(GRU).state.items()}
    assert list(load_pool_state(state, sha, shapes)) == ["a", "b", "c"]
    # A state file with more streams than the cap is refused before anything runs, and kept.
    before = state.read_bytes()
    result = invoke([GRU, "--stream-key", "sensor", "--max-streams", 2, "--state", state], keyed(order))
    no_traceback(result)
    assert result.exit_code == 2 and "holds 3 streams, more than max_streams allows (2); pass --max-streams 3" in \
        result.stderr
    assert state.read_bytes() == before
    result = invoke([GRU, "--stream-key", "sensor", "--max-streams", 3, "--strict"], keyed(order))
    assert result.exit_code == 2
    assert "Error: stdin line 5: stream 'd' does not fit: 3 streams are running, as many as --max-streams allows. " \
           "Raise --max-streams" in result.stderr
    result = invoke([GRU, "--stream-key", "sensor", "--max-streams", 0], keyed(order))
    assert result.exit_code == 2 and "--max-streams" in result.stderr


def test_max_streams_default_and_pool_lanes():
    from statelite.stream import DEFAULT_MAX_STREAMS

    assert DEFAULT_MAX_STREAMS == 256
    order = [f"s{i}" for i in range(10)]
    result = invoke([MODELS / "gru_float32_b8.tflite", "--stream-key", "sensor"], keyed(order))
    assert result.exit_code == 0 and "(pool full: 8 streams)" in result.stderr
    result = invoke([MODELS / "gru_float32_b8.tflite", "--stream-key", "sensor", "--max-streams", 4], keyed(order))
    assert result.exit_code == 0 and "(--max-streams: 4 streams)" in result.stderr
    assert "does not fit: 4 streams are running, as many as --max-streams allows" in result.stderr


def test_a_stream_key_longer_than_the_limit_is_a_bad_row():
    order = ["a", "k" * (MAX_KEY_CHARS + 1), "a"]
    result = invoke([GRU, "--stream-key", "sensor"], keyed(order))
    assert result.exit_code == 0 and bad_lines(result.stderr) == [3]
    assert f"is {MAX_KEY_CHARS + 1} characters long; at most {MAX_KEY_CHARS}" in result.stderr


def test_a_second_run_on_the_same_state_file_stops_at_start(tmp_path):
    """Two ``statelite run --state`` on one file used to interleave their saves. The first holds the state file's
    lock for its whole run; the second stops at once with one line and exit 2, its --output untouched."""
    state, out = tmp_path / "s.npz", tmp_path / "out.csv"
    out.write_text("keep me\n")
    first = subprocess.Popen([*CLI, "run", str(GRU), "--state", str(state)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        first.stdin.write(b"date,co2\n" + rows_bytes(values(2)))
        first.stdin.flush()
        for _ in range(3):
            assert first.stdout.readline(), "the first run is reading"
        second = subprocess.run([*CLI, "run", str(GRU), "--state", str(state), "--output", str(out)],
                                input=b"date,co2\n" + rows_bytes(values(2)), capture_output=True, env=ENV, timeout=60)
        err = second.stderr.decode()
        assert second.returncode == 2 and "Traceback" not in err
        assert err.strip().splitlines() == [
            f"Error: state file {state} is being written by another process (pid {first.pid}); run one writer per "
            f"state file."
        ]
        assert out.read_text() == "keep me\n"
        first.stdin.close()
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stdout.close()
        first.stderr.close()
    done = subprocess.run([*CLI, "run", str(GRU), "--state", str(state), "--output", str(out)],
                          input=b"date,co2\n" + rows_bytes(values(2)), capture_output=True, env=ENV, timeout=60)
    assert done.returncode == 0 and "resumed from" in done.stderr.decode(), "released at the end of the first run"
