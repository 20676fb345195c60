"""Fuzz: random byte streams through ``statelite run`` (in-process, click's ``CliRunner``, real bytes on stdin).

Each input is a header and a mix of valid rows and mutated ones (hypothesis): broken quotes, extra or missing
separators, a carriage return inside a line, NUL and other control bytes, lines over the 64 KiB limit, bytes that
are not UTF-8, non-ASCII digits, '1_000' and hex, values beyond float64, huge finite values, random garbage, blank
lines, and valid variants that must still be forecast (quoted time values with commas and quotes, Unicode text,
CRLF line ends, signs, exponents, spaces around a number). On the float32 GRU and the int8 LSTM, without
``--strict``:

- never a traceback (``result.exception`` is None or ``SystemExit``) and exit code 0;
- every valid row is forecast exactly once, under its own line number, and every bad row is reported with its own
  line number and not forecast; a row the test cannot classify in advance (random garbage; huge finite values when
  the runner does not refuse them) is one or the other, never both and never lost;
- the summary line counts the same.

Default run: about 150 inputs; ``-m slow``: 2,000.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statelite import BadInputError, StatefulRunner
from statelite.cli import main
from statelite.stream import MAX_LINE_BYTES

MODELS = Path(__file__).resolve().parents[2] / "models"
OK, BAD, EITHER, BLANK = "ok", "bad", "either", "blank"
NAMES = ["gru_float32.tflite", "lstm_int8.tflite"]

_refuses_huge: dict = {}


def refuses_huge(model) -> bool:
    """Whether the runner refuses a huge finite reading (1e30) as a ``BadInputError`` (issue 10's runner change)."""
    if model not in _refuses_huge:
        runner = StatefulRunner(model)
        runner.step([360.0])
        try:
            runner.step([1e30])
            _refuses_huge[model] = False
        except BadInputError:
            _refuses_huge[model] = True
    return _refuses_huge[model]


def csv_line(time: str, value: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([time, value])
    return buf.getvalue().encode()


# Time values: printable text with the characters CSV must quote, and Unicode (no control characters).
times = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)
readings = st.floats(355, 365, allow_nan=False)


@st.composite
def number_text(draw) -> str:
    v = draw(readings)
    form = draw(st.sampled_from(["repr", "g", "exp", "plus", "spaced", "int"]))
    return {
        "repr": repr(v), "g": format(v, ".6g"), "exp": format(v, ".4e"), "plus": "+" + repr(v),
        "spaced": f"  {v!r}\t", "int": str(int(v)),
    }[form]


def garbage(line: bytes) -> tuple[bytes, str]:
    """Random bytes, and what is certain about them: control bytes or broken UTF-8 make a bad row, blank text is a
    blank line, anything else may happen to be a readable row."""
    content = line[:-1] if line.endswith(b"\r") else line  # a CR before the newline is a CRLF line end
    if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", content):
        return line, BAD
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return line, BAD
    return line, BLANK if not text.strip() else EITHER


@st.composite
def row(draw, huge_kind: str) -> tuple[bytes, str]:
    """One input line (without its line end, unless the row chooses CRLF) and what run must do with it."""
    kind = draw(st.sampled_from([
        "valid", "valid", "valid", "valid", "valid", "crlf", "quote_open", "quote_stray", "extra_sep", "no_sep",
        "cr_inside", "control", "long", "not_utf8", "unicode_digits", "underscore", "hex", "overflow", "huge",
        "garbage", "blank",
    ]))
    time = draw(times)
    value = draw(number_text())
    plain = draw(st.text("abcdefghij0123456789", min_size=1, max_size=8))
    if kind == "valid":
        return csv_line(time, value), OK
    if kind == "crlf":
        return csv_line(time, value) + b"\r", OK
    if kind == "quote_open":
        return f'"{plain},{value}'.encode(), BAD
    if kind == "quote_stray":
        return f'"{plain}"x,{value}'.encode(), BAD
    if kind == "extra_sep":
        return csv_line(time, value) + b"," + draw(st.sampled_from([b"", b"1", b"x"])), BAD
    if kind == "no_sep":
        return (plain + value.strip()).encode(), BAD
    if kind in ("cr_inside", "control"):
        line = csv_line(time, value)
        at = draw(st.integers(0, len(line) - 1))  # before at least one byte: never a CRLF line end
        byte = b"\r" if kind == "cr_inside" else bytes([draw(st.sampled_from([0, 1, 7, 8, 11, 12, 27, 31, 127]))])
        return line[:at] + byte + line[at:], BAD
    if kind == "long":
        size = draw(st.integers(MAX_LINE_BYTES + 1, 3 * MAX_LINE_BYTES))
        return b"t," + b"9" * size, BAD
    if kind == "not_utf8":
        line = csv_line(time, value)
        at = draw(st.integers(0, len(line)))
        return line[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"])) + line[at:], BAD
    if kind == "unicode_digits":
        digits = draw(st.sampled_from(["٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９", "०१२३४५६७८९"]))
        text = "".join(digits[int(c)] if c.isdigit() else c for c in value.strip())
        return csv_line(time, text), BAD
    if kind == "underscore":
        return csv_line(time, value.strip()[:1] + "_" + value.strip()[1:]) if value.strip()[1:2].isdigit() else \
            csv_line(time, "36_0"), BAD
    if kind == "hex":
        return csv_line(time, draw(st.sampled_from(["0x10", "0X168", "0x1.68p8", "0b101", "0o17"]))), BAD
    if kind == "overflow":
        return csv_line(time, draw(st.sampled_from(["1e400", "-1e309", "9" * 400, "nan", "-inf", "Infinity"]))), BAD
    if kind == "huge":
        exponent = draw(st.integers(30, 308))
        return csv_line(time, f"{draw(st.sampled_from(['', '-']))}1e{exponent}"), huge_kind
    if kind == "garbage":
        return garbage(draw(st.binary(min_size=1, max_size=40)).replace(b"\n", b""))
    return draw(st.sampled_from([b"", b"   ", b"\t", b" \t "])), BLANK


@st.composite
def inputs(draw):
    model = MODELS / draw(st.sampled_from(NAMES))
    huge_kind = BAD if refuses_huge(model) else EITHER
    # A valid row first: a differencing model takes its first row without a previous one to difference against,
    # so a huge first reading is the runner's own case (tests/test_stream_hardening.py::
    # test_huge_first_reading_does_not_pin_the_stream), not this harness's.
    first = csv_line(draw(times), draw(number_text()))
    lines = [(first, OK)] + draw(st.lists(row(huge_kind), max_size=30))
    return model, lines


def check(model, lines) -> None:
    data = b"date,co2\n" + b"".join(line + b"\n" for line, _ in lines)
    result = CliRunner().invoke(main, ["run", str(model)], input=data)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == 0, result.stderr
    expect = {i + 2: what for i, (_, what) in enumerate(lines)}  # line numbers: the header is line 1
    out = list(csv.reader(io.StringIO(result.stdout)))
    assert out[0][:2] == ["date", "row"]
    forecast = [int(r[1]) for r in out[1:]]
    reported = [int(n) for n in re.findall(r"^stdin line (\d+): .*; row skipped", result.stderr, re.M)]
    assert len(forecast) == len(set(forecast)), "a row forecast twice"
    assert len(reported) == len(set(reported)), "a row reported twice"
    assert not set(forecast) & set(reported), "a row both forecast and reported"
    for n, what in expect.items():
        if what == OK:
            assert n in forecast, f"valid line {n} not forecast: {lines[n - 2][0][:80]!r}\n{result.stderr}"
        elif what == BAD:
            assert n in reported, f"bad line {n} not reported: {lines[n - 2][0][:80]!r}\n{result.stderr}"
        elif what == EITHER:
            assert (n in forecast) != (n in reported), f"line {n} lost: {lines[n - 2][0][:80]!r}"
        else:
            assert n not in forecast and n not in reported, f"blank line {n} handled as a row"
    if EITHER not in expect.values():
        assert len(forecast) == sum(w == OK for w in expect.values()), "output rows == valid input rows"
    summary = result.stderr.strip().splitlines()[-1]
    want = f"statelite run: {len(forecast)} rows forecast" + (f", {len(reported)} bad rows skipped" if reported else "")
    assert summary.startswith(want), summary


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def _models():
    if not all((MODELS / name).exists() for name in NAMES):
        pytest.skip("needs the reference models in models/")


@fuzz(150)
@given(inputs())
def test_fuzz_run_input(case):
    check(*case)


@pytest.mark.slow
@fuzz(2000)
@given(inputs())
def test_fuzz_run_input_many(case):
    check(*case)
