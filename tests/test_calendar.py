"""``statelite.calendar``: the calendar inputs training and the device compute from the time column (numpy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from statelite import BadInputError
from statelite.calendar import calendar_columns, calendar_values, cell_values, check_features, wall_seconds


def _angle(values: np.ndarray) -> float:
    """The phase in [0, 1) of one (sin, cos) pair."""
    return (math.atan2(values[0], values[1]) / (2 * math.pi)) % 1.0


def test_columns_in_order():
    assert calendar_columns(["hour", "dow"]) == ("cal_hour_sin", "cal_hour_cos", "cal_dow_sin", "cal_dow_cos")
    assert check_features("month, doy") == ("month", "doy")
    assert check_features(None) == ()


@pytest.mark.parametrize("bad, message", [(["minute"], "hour, dow, month, doy"), (["hour", "hour"], "twice")])
def test_bad_features_are_one_line(bad, message):
    with pytest.raises(BadInputError, match=message) as e:
        check_features(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cell, feature, phase", [
    ("2024-01-01T06:00:00", "hour", 0.25),  # 6 h of 24
    ("2024-01-01 18:00", "hour", 0.75),
    ("2024-01-01T12:00:00", "dow", 0.5 / 7),  # a Monday, noon: weekday 0 plus half a day
    ("2024-01-07T00:00:00", "dow", 6 / 7),  # a Sunday
    ("1970-01-01T00:00:00", "dow", 3 / 7),  # a Thursday
    ("2024-03-01T00:00:00", "month", 2 / 12),  # March starts the third twelfth
    ("2024-02-15T12:00:00", "month", (1 + 14.5 / 29) / 12),  # February of a leap year has 29 days
    ("2023-02-15T12:00:00", "month", (1 + 14.5 / 28) / 12),
    ("2024-12-31T00:00:00", "doy", 365 / 366),  # a leap year
    ("2023-12-31T00:00:00", "doy", 364 / 365),
    ("2024-01-01", "doy", 0.0),
])
def test_known_phases(cell, feature, phase):
    v = calendar_values(wall_seconds(cell), [feature])
    assert v.shape == (2,)
    assert _angle(v) == pytest.approx(phase, abs=1e-12) or _angle(v) == pytest.approx(phase + 1, abs=1e-12)
    assert np.hypot(v[0], v[1]) == pytest.approx(1.0)


def test_the_offset_is_read_not_applied():
    """The wall clock written in the cell drives the calendar: 09:00+02:00 is nine in the morning there."""
    local = wall_seconds("2024-05-01T09:00:00")
    for cell in ("2024-05-01T09:00:00+02:00", "2024-05-01T09:00:00-0530", "2024-05-01T09:00:00Z",
                 "2024-05-01 09:00:00+02"):
        assert wall_seconds(cell) == local, cell
    np.testing.assert_array_equal(cell_values(["2024-05-01T09:00:00+02:00"], ["hour"]),
                                  cell_values(["2024-05-01T09:00:00"], ["hour"]))


def test_vectorised_equals_one_by_one():
    cells = [f"2024-02-{d:02d}T{h:02d}:30:00" for d in range(1, 29, 3) for h in (0, 7, 23)]
    features = ["hour", "dow", "month", "doy"]
    all_at_once = cell_values(cells, features)
    assert all_at_once.shape == (len(cells), 8)
    for i, c in enumerate(cells):
        np.testing.assert_array_equal(all_at_once[i], calendar_values(wall_seconds(c), features))
    assert (np.abs(all_at_once) <= 1.0).all()


@pytest.mark.parametrize("cell", ["12.5", "yesterday", "", "2024-13-01"])
def test_a_cell_without_a_date_is_one_clear_error(cell):
    with pytest.raises(BadInputError) as e:
        wall_seconds(cell, "ts")
    assert "'ts'" in str(e.value) and "\n" not in str(e.value)


def test_nonfinite_times_refused():
    with pytest.raises(BadInputError, match="finite"):
        calendar_values([0.0, math.nan], ["hour"])


def test_no_features_no_columns():
    assert calendar_values([1.0, 2.0], []).shape == (2, 0)


def test_one_time_gives_the_same_values_as_many():
    # a device step computes one row with Python floats: bit-identical to the vectorised path
    from statelite.calendar import calendar_values

    times = np.random.default_rng(0).uniform(-2e9, 4e9, 2000)
    features = ("hour", "dow", "month", "doy")
    many = calendar_values(times, features)
    one = np.stack([calendar_values(t, features) for t in times])
    assert np.array_equal(many, one)
    assert calendar_values(np.array([times[0]]), features).shape == (1, 8)
