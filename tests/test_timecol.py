"""runtime/timecol.py: time cells, the training sampling period, and gap detection on the device."""

from __future__ import annotations

import csv
import json
import math
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statelite.errors import BadInputError
from statelite.timecol import (
    MONTH,
    GapKind,
    GapTracker,
    Sampling,
    TimeKind,
    estimate_sampling,
    parse_time,
)

ROOT = Path(__file__).resolve().parents[1]
DT, NUM = TimeKind.DATETIME, TimeKind.NUMBER


def utc(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


# ---------------------------------------------------------------------------------------------------------- parse_time

@pytest.mark.parametrize("cell, expected", [
    ("2015-08-31 18:22:00", utc(2015, 8, 31, 18, 22)),  # NAB style
    ("2015-08-31T18:22:00", utc(2015, 8, 31, 18, 22)),
    ("2015-08-31", utc(2015, 8, 31)),
    ("2015-08-31T18:22:00Z", utc(2015, 8, 31, 18, 22)),
    ("2015-08-31T18:22:00+02:00", utc(2015, 8, 31, 16, 22)),  # two hours earlier in UTC
    ("2015-08-31T18:22:00+0200", utc(2015, 8, 31, 16, 22)),
    ("2015-08-31 18:22:00-05:30", utc(2015, 8, 31, 23, 52)),
    ("2015-08-31T18:22:00.25", utc(2015, 8, 31, 18, 22) + 0.25),
    ("2015-08-31T18:22:00.123456Z", utc(2015, 8, 31, 18, 22, 0, 123456)),
    ("2015-08", utc(2015, 8, 1)),
    ("19580329", utc(1958, 3, 29)),  # train/data/co2.csv
    ("201508311822", utc(2015, 8, 31, 18, 22)),
    ("20150831182230", utc(2015, 8, 31, 18, 22, 30)),
    ("1970-01-01", 0.0),
])
def test_datetime_formats_give_epoch_seconds(cell, expected):
    assert parse_time(cell) == (expected, DT)
    assert parse_time(cell, DT) == (expected, DT)


def test_epoch_values_by_hand():
    assert parse_time("1970-01-02T00:00:01Z")[0] == 86401.0
    assert parse_time("1970-01-01T02:00:00+02:00")[0] == 0.0
    assert parse_time("19691231")[0] == -86400.0


@pytest.mark.parametrize("cell, expected", [
    ("1959.25", 1959.25), ("1440000000", 1440000000.0), ("-3", -3.0), ("1e3", 1000.0), ("7", 7.0),
    ("20151301", 20151301.0),  # 8 digits but not a valid date: a number
    ("1440000000000", 1440000000000.0),  # 13 digits: an epoch in milliseconds
])
def test_numbers(cell, expected):
    assert parse_time(cell) == (expected, NUM)


@pytest.mark.parametrize("cell", ['"2015-08-31 18:22:00"', "'2015-08-31 18:22:00'", "  2015-08-31 18:22:00\t",
                                  ' "2015-08-31 18:22:00" '])
def test_quotes_and_whitespace_are_stripped(cell):
    assert parse_time(cell) == (utc(2015, 8, 31, 18, 22), DT)


def test_quoted_number():
    assert parse_time('"1959.25"') == (1959.25, NUM)


def test_kind_decides_eight_digits():
    assert parse_time("19580329", NUM) == (19580329.0, NUM)
    with pytest.raises(BadInputError, match=r"20151301.*not a valid"):
        parse_time("20151301", DT, column="date")


@pytest.mark.parametrize("cell, kind", [("1959.25", DT), ("1440000000", DT), ("2015-08-31", NUM), ("2015-08", NUM)])
def test_kind_mismatch_raises(cell, kind):
    with pytest.raises(BadInputError) as info:
        parse_time(cell, kind, column="when")
    msg = str(info.value)
    assert "'when'" in msg and cell in msg and "\n" not in msg


@pytest.mark.parametrize("cell", ["31/08/2015", "", "   ", '""', "nan", "inf", "-inf", "2015-13-01", "1e400",
                                  "2015-02-30", "2015-08-31T25:00", "yesterday", "٢٠١٥", "1_000", "0x10",
                                  "2015-08-31T18:22:00+25:00", "x" * 10_000])
def test_bad_cells(cell):
    with pytest.raises(BadInputError) as info:
        parse_time(cell, column="date")
    msg = str(info.value)
    assert "\n" not in msg and "'date'" in msg and len(msg) < 300
    assert "expected" in msg and "received" in msg
    shown = cell.strip().strip('"')
    assert (shown[:40] in msg) if shown else "empty" in msg


def test_long_cell_is_truncated_and_fast():
    start = time.perf_counter()
    with pytest.raises(BadInputError, match=r"10000 characters"):
        parse_time("1" * 10_000)
    assert time.perf_counter() - start < 0.1


def test_not_a_string():
    with pytest.raises(BadInputError):
        parse_time(None)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=50)
@given(st.text(max_size=80), st.sampled_from([None, DT, NUM]))
def test_fuzz_returns_or_raises_bad_input(text, kind):
    try:
        value, got = parse_time(text, kind, column="t")
    except BadInputError as exc:
        assert "\n" not in str(exc)
        return
    assert math.isfinite(value) and got in (DT, NUM) and (kind is None or got is kind)


@settings(max_examples=200, deadline=50)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.integers(-23 * 60 - 59, 23 * 60 + 59), st.sampled_from(["T", " "]))
def test_fuzz_iso_round_trip(dt, offset_minutes, sep):
    tz = timezone(timedelta(minutes=offset_minutes))
    aware = dt.replace(tzinfo=tz)
    value, kind = parse_time(aware.isoformat(sep=sep))
    assert kind is DT
    assert value == (aware - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()


# ---------------------------------------------------------------------------------------------------- estimate_sampling

def five_minute_cells(n: int, gaps: dict[int, int]) -> list[str]:
    """n rows every 5 minutes, with `gaps[i]` extra steps skipped before row i."""
    t, out = datetime(2015, 8, 31), []
    for i in range(n):
        t += timedelta(minutes=5 * (1 + gaps.get(i, 0)))
        out.append(t.strftime("%Y-%m-%d %H:%M:%S"))
    return out


def test_five_minute_data_with_gaps():
    cells = five_minute_cells(200, {50: 3, 100: 1, 150: 10})
    s = estimate_sampling(cells)
    assert s.kind is DT and s.period == 300.0
    assert s.regular == pytest.approx(1 - 3 / 199)
    assert s.describe() == "every 5 min"


def test_disorder_is_not_the_period():
    cells = five_minute_cells(20, {})
    cells[10], cells[11] = cells[11], cells[10]  # one step back, one of two periods
    cells[15] = cells[14]  # a repeat
    s = estimate_sampling(cells)
    assert s.period == 300.0 and s.regular < 1


def test_monthly_data():
    cells = [f"{y}-{m:02d}" for y in range(2000, 2006) for m in range(1, 13)]
    s = estimate_sampling(cells)
    assert s.kind is DT and s.period == pytest.approx(30.44 * 86400, rel=1e-3) and s.period == MONTH
    assert s.regular == 1.0
    assert "month" in s.describe()


def test_co2_weekly():
    with open(ROOT / "train" / "data" / "co2.csv", newline="") as f:
        cells = [row["date"] for row in csv.DictReader(f)]
    assert cells[0] == "19580329"
    s = estimate_sampling(cells, column="date")
    assert s.kind is DT and s.period == 7 * 86400.0
    assert s.describe() == "every 7 days"
    # An integer column (as a CSV reader with type inference gives it) reads the same way.
    assert estimate_sampling(np.array([int(c) for c in cells])) == s


def test_numeric_quarterly():
    s = estimate_sampling([f"{1959 + 0.25 * i}" for i in range(40)])
    assert s.kind is NUM and s.period == 0.25 and s.regular == 1.0
    assert s.describe() == "every 0.25 (number)"
    assert estimate_sampling(1959 + 0.25 * np.arange(40)) == s


def test_mixed_digits_are_numbers():
    # Step indices around 20151230 cross 20151232, which is no date: the column is numbers throughout.
    s = estimate_sampling([str(20151228 + i) for i in range(8)])
    assert s.kind is NUM and s.period == 1.0


def test_too_few_rows_or_no_positive_step():
    assert estimate_sampling([]) is None
    assert estimate_sampling(["2015-08-31", "2015-09-01"]) is None
    assert estimate_sampling(["2015-08-31"] * 5) is None
    assert estimate_sampling(["3", "2", "1"]) is None


def test_bad_training_cell_names_the_row():
    with pytest.raises(BadInputError, match=r"training row 3: .*'date'.*'31/08/2015'"):
        estimate_sampling(["2015-08-29", "2015-08-30", "31/08/2015"], column="date")
    with pytest.raises(BadInputError, match=r"row 3: .*number"):
        estimate_sampling(["2015-08-29", "2015-08-30", "7"])


@pytest.mark.parametrize("period, words", [(300.0, "every 5 min"), (86400.0, "every 1 day"),
                                           (7 * 86400.0, "every 7 days"), (3600.0, "every 1 h"),
                                           (1.5, "every ~1.5 s"), (0.01, "every 0.01 s"),
                                           (3 * MONTH, "every ~3 months"), (12 * MONTH, "every ~1 year")])
def test_describe(period, words):
    assert Sampling(DT, period, 1.0).describe() == words


def test_sampling_round_trip():
    s = Sampling(DT, 300.0, 0.985)
    d = json.loads(json.dumps(s.to_dict()))
    assert d == {"kind": "datetime", "period": 300.0, "regular": 0.985}
    assert Sampling.from_dict(d) == s
    assert Sampling.from_dict({**d, "future": 1}) == s


@pytest.mark.parametrize("d", [
    None, [], {}, {"kind": "datetime", "period": 300.0},
    {"kind": "date", "period": 300.0, "regular": 1.0},
    {"kind": 1, "period": 300.0, "regular": 1.0},
    {"kind": "datetime", "period": 0.0, "regular": 1.0},
    {"kind": "datetime", "period": -300.0, "regular": 1.0},
    {"kind": "datetime", "period": float("nan"), "regular": 1.0},
    {"kind": "datetime", "period": float("inf"), "regular": 1.0},
    {"kind": "datetime", "period": "300", "regular": 1.0},
    {"kind": "datetime", "period": True, "regular": 1.0},
    {"kind": "datetime", "period": 300.0, "regular": 1.5},
    {"kind": "datetime", "period": 300.0, "regular": -0.1},
    {"kind": "datetime", "period": 300.0, "regular": None},
])
def test_from_dict_rejects(d):
    with pytest.raises(ValueError, match=r"expected .* received"):
        Sampling.from_dict(d)


# ----------------------------------------------------------------------------------------------------------- GapTracker

FIVE_MIN = Sampling(DT, 300.0, 1.0)


def test_first_then_ok():
    g = GapTracker(FIVE_MIN)
    first = g.observe("2015-08-31 18:20:00")
    assert first.kind is GapKind.FIRST and first.previous is None and first.missing == 0
    step = g.observe("2015-08-31 18:25:00")
    assert step.kind is GapKind.OK and step.previous == first.time and step.missing == 0
    assert g.observe(g.last + 310.0).kind is GapKind.OK  # slightly late is fine
    assert g.last == utc(2015, 8, 31, 18, 30, 10)


def test_gap_counts_missing_periods():
    g = GapTracker(FIVE_MIN)
    g.observe(0.0)
    step = g.observe(4 * 300.0)
    assert step.kind is GapKind.GAP and step.missing == 3 and g.last == 1200.0
    assert g.observe(1200.0 + 1.6 * 300).missing == 1  # just beyond the tolerance: one missing
    strict = GapTracker(FIVE_MIN, tolerance=0.1)
    strict.observe(0.0)
    assert strict.observe(1.2 * 300).missing == 1  # at least 1 for a gap


def test_month_of_31_days_is_ok():
    g = GapTracker(estimate_sampling([f"2015-{m:02d}" for m in range(1, 13)]))
    assert [g.observe(f"2016-{m:02d}").kind for m in range(1, 13)] == [GapKind.FIRST] + [GapKind.OK] * 11
    g.reset()
    assert g.observe("2016-01-01").kind is GapKind.FIRST
    assert g.observe("2016-02-01").kind is GapKind.OK  # 31 days
    assert g.observe("2016-03-01").kind is GapKind.OK  # 29 days
    step = g.observe("2016-05-01")  # April missing
    assert step.kind is GapKind.GAP and step.missing == 1


def test_backwards_and_repeat_do_not_move_last():
    g = GapTracker(FIVE_MIN)
    g.observe(1000.0)
    g.observe(1300.0)
    back = g.observe(700.0)
    assert back.kind is GapKind.BACKWARDS and back.previous == 1300.0 and g.last == 1300.0
    rep = g.observe(1300.0)
    assert rep.kind is GapKind.REPEAT and rep.missing == 0 and g.last == 1300.0
    assert g.observe(1600.0).kind is GapKind.OK  # judged against 1300, not 700


def test_bad_cell_changes_nothing():
    g = GapTracker(FIVE_MIN, column="date")
    g.observe("2015-08-31 18:20:00")
    before = g.last
    for bad in ("31/08/2015", "1959.25", "", float("nan"), float("inf"), True, None):
        with pytest.raises(BadInputError):
            g.observe(bad)
        assert g.last == before


def test_number_tracker_parses_with_its_kind():
    g = GapTracker(Sampling(NUM, 1.0, 1.0))
    assert g.observe("20150831").time == 20150831.0  # a step index, not a date
    assert g.observe("20150832").kind is GapKind.OK


def test_reset_and_state_round_trip():
    g = GapTracker(FIVE_MIN)
    assert math.isnan(g.state())
    g.observe(600.0)
    saved = g.state()
    assert saved == 600.0
    g.reset()
    assert g.last is None and g.observe(900.0).kind is GapKind.FIRST
    other = GapTracker(FIVE_MIN)
    other.restore(saved)
    assert other.last == 600.0 and other.observe(900.0).kind is GapKind.OK
    other.restore(np.float64("nan"))
    assert other.last is None and other.observe(900.0).kind is GapKind.FIRST
    other.restore(np.array([300.0]))
    assert other.last == 300.0
    for bad in (float("inf"), "600", True):
        with pytest.raises(BadInputError):
            other.restore(bad)
        assert other.last == 300.0


def test_tracker_rejects_bad_arguments():
    with pytest.raises(BadInputError):
        GapTracker({"kind": "datetime", "period": 300.0, "regular": 1.0})  # type: ignore[arg-type]
    with pytest.raises(BadInputError):
        GapTracker(FIVE_MIN, tolerance=-0.5)


@pytest.mark.parametrize("text, rewritten", [
    ("2015-08-31T18:22:00Z", "2015-08-31T18:22:00+00:00"),
    ("2015-08-31 18:22:00+0200", "2015-08-31 18:22:00+02:00"),
    ("2015-08-31T20:22:00-05", "2015-08-31T20:22:00-05:00"),
    ("2015-08-31T18:22:00.5", "2015-08-31T18:22:00.500000"),
    ("2015-08-31T18:22:00.123456789Z", "2015-08-31T18:22:00.123456+00:00"),
    ("2015-08-31", "2015-08-31"),  # no time part: untouched (its '-31' is not an offset)
    ("2015-08-31 18:22:00", "2015-08-31 18:22:00"),
])
def test_iso_forms_python_3_10_lacks_are_rewritten_to_ones_it_reads(text, rewritten):
    """requires-python is >= 3.10, whose datetime.fromisoformat reads neither 'Z', '+HHMM', '+HH' nor a fraction
    of other than 3 or 6 digits; the rewrite gives the same instant on 3.10 and 3.11."""
    from statelite.timecol import _iso_for_python310

    assert _iso_for_python310(text) == rewritten
    assert parse_time(text)[0] == parse_time(rewritten)[0]


def test_quarters_read_as_their_first_day():
    """statsmodels' macrodata labels its rows 1959Q1: a quarter is its first day, every ~3 months."""
    assert parse_time("1959Q1")[0] == parse_time("1959-01")[0]
    assert parse_time("1959-Q4")[0] == parse_time("1959-10-01")[0]
    assert estimate_sampling(["1959Q1", "1959Q2", "1959Q3", "1959Q4", "1960Q1"]).describe() == "every ~3 months"
    with pytest.raises(BadInputError):
        parse_time("1959Q5")
