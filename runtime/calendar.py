"""Known calendar covariates: the time of day, the day of the week, the month and the day of the year as sin/cos
pairs, derived from the time column.

Training (``statelite train --calendar``) and the device compute them with these functions, from the same cell text,
so the model sees the same inputs in both places. They are the wall-clock time written in the cell: an ISO 8601
offset (``+02:00``) is read but not applied, since the time of day that drives a load or a sensor is the local one.
Each feature ``f`` gives two model inputs, ``cal_f_sin`` and ``cal_f_cos``, of the angle ``2 pi * phase`` where the
phase in [0, 1) is:

* ``hour``: the seconds since midnight over 86,400.
* ``dow``: (the weekday, Monday 0, plus the day's phase) over 7.
* ``month``: (the month - 1 plus (the day of the month - 1 plus the day's phase) over the month's days) over 12.
* ``doy``: (the day of the year - 1 plus the day's phase) over the year's days (365 or 366).

Numpy and the standard library only.
"""

from __future__ import annotations

import calendar as calendar_module
import datetime
import functools
import math
from collections.abc import Sequence

import numpy as np

from .errors import BadInputError
from .options import CalendarFeature
from .timecol import TimeKind, parse_time

PREFIX = "cal_"
_DAY = 86400.0
_EPOCH_DATE = datetime.date(1970, 1, 1)


def check_features(features: Sequence[str] | str | None) -> tuple[str, ...]:
    """The calendar features as a tuple of known, distinct names (a comma-separated string is split).

    Raises:
        BadInputError: an unknown or repeated name (naming the known ones).
    """
    if features is None:
        return ()
    if isinstance(features, str):
        features = [f for f in (part.strip() for part in features.split(",")) if f]
    known = [f.value for f in CalendarFeature]
    out: list[str] = []
    for f in features:
        name = f.value if isinstance(f, CalendarFeature) else f
        if name not in known:
            raise BadInputError(
                f"expected calendar features among {', '.join(known)}, Received: {name!r}"
            )
        if name in out:
            raise BadInputError(f"expected each calendar feature once, Received: {name!r} twice")
        out.append(name)
    return tuple(out)


def calendar_columns(features: Sequence[str]) -> tuple[str, ...]:
    """The model input names of ``features``: ``cal_hour_sin``, ``cal_hour_cos``, ..."""
    return tuple(f"{PREFIX}{f}_{part}" for f in check_features(features) for part in ("sin", "cos"))


def wall_seconds(cell: str, column: str = "time") -> float:
    """The wall-clock date-time written in ``cell`` as seconds since 1970-01-01 (an offset is not applied).

    Raises:
        BadInputError: the cell is not a date-time (a plain number has no time of day), naming the column.
    """
    value, kind = parse_time(cell, TimeKind.DATETIME, column)
    text = cell.strip().strip("\"'").strip()
    offset = _offset_seconds(text)
    return value + offset if kind is TimeKind.DATETIME else value


def _offset_seconds(text: str) -> float:
    """The UTC offset written at the end of an ISO date-time, in seconds (0 for none or ``Z``)."""
    for i, ch in enumerate(text):
        if ch in "Tt " and i >= 8:
            clock = text[i + 1:]
            break
    else:
        return 0.0
    for sign_at in range(len(clock) - 1, 0, -1):
        if clock[sign_at] in "+-":
            zone = clock[sign_at + 1:].replace(":", "")
            if zone.isdigit() and len(zone) in (2, 4):
                hours, minutes = int(zone[:2]), int(zone[2:] or 0)
                sign = 1.0 if clock[sign_at] == "+" else -1.0
                return sign * (hours * 3600.0 + minutes * 60.0)
            return 0.0
    return 0.0


def calendar_values(seconds, features: Sequence[str]) -> np.ndarray:
    """The calendar inputs of wall-clock times (seconds since 1970-01-01, any shape): ``(..., 2 * len(features))``
    float64, in the order of ``calendar_columns(features)``."""
    features = check_features(features)
    t = np.asarray(seconds, dtype=np.float64)
    if not np.isfinite(t).all():
        raise BadInputError("expected finite times for the calendar inputs, Received: NaN or inf")
    if t.size == 1:  # one step on a device: Python floats cost a few microseconds, numpy's datetime64 tens
        return np.asarray(_one_row(float(t.reshape(-1)[0]), features)).reshape(t.shape + (2 * len(features),))
    days = np.floor(t / _DAY)
    day_phase = (t - days * _DAY) / _DAY
    phases = []
    dates = None
    for f in features:
        if f == "hour":
            phase = day_phase
        elif f == "dow":
            phase = (np.mod(days + 3.0, 7.0) + day_phase) / 7.0  # 1970-01-01 was a Thursday (Monday is 0)
        else:
            if dates is None:
                dates = _dates(days)
            year, month, mday, yday, month_days, year_days = dates
            if f == "month":
                phase = (month - 1 + (mday - 1 + day_phase) / month_days) / 12.0
            else:
                phase = (yday - 1 + day_phase) / year_days
        phases.append(phase)
    if not phases:
        return np.zeros(t.shape + (0,))
    angle = 2.0 * math.pi * np.stack(phases, axis=-1)
    out = np.empty(t.shape + (2 * len(features),))
    out[..., 0::2] = np.sin(angle)
    out[..., 1::2] = np.cos(angle)
    return out


@functools.lru_cache(maxsize=8)
def _day(days: int) -> tuple[int, int, float, int, float]:
    """Month, day of month, days in the month, day of year and days in the year of day ``days`` since 1970."""
    d = _EPOCH_DATE + datetime.timedelta(days=days)
    first_next = datetime.date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    month_days = (first_next - d.replace(day=1)).days
    year_days = 366 if calendar_module.isleap(d.year) else 365
    return d.month, d.day, float(month_days), d.timetuple().tm_yday, float(year_days)


def _one_row(t: float, features: tuple[str, ...]) -> list[float]:
    """``calendar_values`` of one time, with Python floats (the same phases, in the same order)."""
    days = math.floor(t / _DAY)
    day_phase = (t - days * _DAY) / _DAY
    out = []
    for f in features:
        if f == "hour":
            phase = day_phase
        elif f == "dow":
            phase = (((days + 3.0) % 7.0) + day_phase) / 7.0
        else:
            month, mday, month_days, yday, year_days = _day(int(days))
            if f == "month":
                phase = (month - 1 + (mday - 1 + day_phase) / month_days) / 12.0
            else:
                phase = (yday - 1 + day_phase) / year_days
        angle = 2.0 * math.pi * phase
        out += [math.sin(angle), math.cos(angle)]
    return out


def _dates(days: np.ndarray):
    """Year, month, day of month, day of year, days in the month and days in the year of day numbers since 1970."""
    d = days.astype("int64").astype("datetime64[D]")
    years = d.astype("datetime64[Y]")
    months = d.astype("datetime64[M]")
    year = years.astype(np.int64) + 1970
    month = (months.astype(np.int64) % 12) + 1
    mday = (d - months).astype(np.int64) + 1
    yday = (d - years).astype(np.int64) + 1
    month_days = ((months + 1).astype("datetime64[D]") - months.astype("datetime64[D]")).astype(np.int64)
    year_days = ((years + 1).astype("datetime64[D]") - years.astype("datetime64[D]")).astype(np.int64)
    return year, month, mday, yday, month_days.astype(np.float64), year_days.astype(np.float64)


def cell_values(cells: Sequence[str], features: Sequence[str], column: str = "time") -> np.ndarray:
    """``calendar_values`` of time cells as written in a CSV: ``(len(cells), 2 * len(features))``."""
    return calendar_values(np.array([wall_seconds(str(c), column) for c in cells], dtype=np.float64), features)


__all__ = ["PREFIX", "calendar_columns", "calendar_values", "cell_values", "check_features", "wall_seconds"]
