"""The time column: parsing its cells, the sampling period recorded at training, and gap detection on the device.

A time cell is a date-time (``TimeKind.DATETIME``, held as seconds since 1970-01-01 UTC) or a plain number in the
column's own unit (``TimeKind.NUMBER``: a year fraction, an epoch count, a step index). Training records a
``Sampling`` (``estimate_sampling``) in the model metadata; the device feeds each row's time to a ``GapTracker``,
which tells a regular step from a gap, a repeat or a time going backwards. Stdlib and numpy only.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np

from .errors import BadInputError

DEFAULT_TOLERANCE = 0.5
_DAY = 86400.0
# Calendar units in seconds, on average over the Gregorian 400-year cycle (365.2425 days a year).
MONTH = 365.2425 * _DAY / 12
# (average length, shortest and longest in days, words): a series is calendar-sampled when its steps vary in that range.
_CALENDAR = ((MONTH, 28, 31, "~1 month"), (3 * MONTH, 89, 92, "~3 months"), (12 * MONTH, 365, 366, "~1 year"))
_MAX_CELL = 64  # the longest time cell read: an ISO 8601 date-time with nanoseconds and an offset is ~35 characters
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DIGITS = re.compile(r"[0-9]{8}(?:[0-9]{4}(?:[0-9]{2})?)?")  # YYYYMMDD, YYYYMMDDHHMM, YYYYMMDDHHMMSS
_MONTH_CELL = re.compile(r"([0-9]{4})-([0-9]{2})")
_QUARTER_CELL = re.compile(r"([0-9]{4})[- ]?[Qq]([1-4])")  # 1959Q1, 1959-Q1: statsmodels' macrodata and others
_ISO = re.compile(r"[0-9]{4}-?[0-9A-Za-z:+\-., ]*")  # ASCII only: fromisoformat is the judge of the rest


class TimeKind(str, enum.Enum):
    """What a time column holds."""

    DATETIME = "datetime"  # seconds since 1970-01-01 UTC
    NUMBER = "number"  # a plain number in the column's own unit


def _shown(text: str) -> str:
    return repr(text[:40]) + (f"... ({len(text)} characters)" if len(text) > 40 else "") if text else "an empty cell"


def _bad(text: str, column: str, why: str = "") -> BadInputError:
    return BadInputError(f"expected a time in the {column!r} column (ISO 8601 like 2015-08-31 18:22:00, YYYYMMDD, "
                         f"or a number), received {_shown(text)}{why}")


def _mismatch(text: str, column: str, kind: TimeKind) -> BadInputError:
    want, got = ("a date-time", "number") if kind is TimeKind.DATETIME else ("a number", "date-time")
    return BadInputError(f"expected {want} in the {column!r} column (it holds {want[2:]}s), received the {got} "
                         f"{_shown(text)}")


def _seconds(dt: datetime) -> float:
    if dt.tzinfo is None:  # naive times are taken as UTC
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - _EPOCH).total_seconds()


def _digits_date(text: str) -> float | None:
    """Seconds of 'YYYYMMDD[HHMM[SS]]', or None when it is not a valid date-time."""
    try:
        parts = [int(text[0:4]), int(text[4:6]), int(text[6:8])]
        parts += [int(text[i:i + 2]) for i in range(8, len(text), 2)]
        return _seconds(datetime(*parts))
    except ValueError:
        return None


_OFFSET4 = re.compile(r"([+-])([0-9]{2})([0-9]{2})$")
_OFFSET2 = re.compile(r"([+-])([0-9]{2})$")
_FRACTION = re.compile(r"\.([0-9]+)")


def _iso_for_python310(text: str) -> str:
    """The forms Python 3.10's ``fromisoformat`` lacks, rewritten to ones it reads (3.11 reads both): a ``Z`` zone,
    ``+HHMM`` and ``+HH`` offsets, and fractions of other than 3 or 6 digits. Only the time part is touched."""
    for i, ch in enumerate(text):
        if ch in "Tt " and i >= 8:
            date, sep, clock = text[:i], text[i], text[i + 1:]
            break
    else:
        return text
    if clock[-1:] in ("Z", "z"):
        clock = clock[:-1] + "+00:00"
    elif _OFFSET4.search(clock) and len(clock) > 5:
        clock = _OFFSET4.sub(r"\1\2:\3", clock)
    elif _OFFSET2.search(clock) and len(clock) > 3:
        clock = _OFFSET2.sub(r"\1\2:00", clock)
    clock = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], clock, count=1)
    return date + sep + clock


def parse_time(cell: str, kind: TimeKind | None = None, column: str = "time") -> tuple[float, TimeKind]:
    """One time cell as ``(value, kind)``: seconds since 1970-01-01 UTC for a date-time, else the number itself.

    Formats: ISO 8601 date or date-time (``T`` or space separator, fractional seconds, ``Z`` or ±HH:MM / ±HHMM
    offsets; naive times are UTC), ``YYYY-MM`` (the month's first day), ``YYYYQn`` (the quarter's first day), ``YYYYMMDD``, ``YYYYMMDDHHMM[SS]``, and plain
    decimal numbers. 8, 12 or 14 digits are a date-time when valid, else a number; a given ``kind`` decides instead
    (``NUMBER``: a number; ``DATETIME``: an invalid date is an error). Whitespace and quotes around are stripped.
    Raises ``BadInputError`` (one line, naming the column and the received text, truncated) for anything else, a
    value that is not finite, or a cell of the other kind than ``kind`` (a column does not switch kinds mid-stream).
    """
    if not isinstance(cell, str):
        raise BadInputError(f"expected the {column!r} column's cell as text, received {type(cell).__name__}")
    text = cell.strip().strip("\"'").strip()
    if len(text) > _MAX_CELL:
        raise _bad(text, column)
    if _NUMBER.fullmatch(text):
        if kind is not TimeKind.NUMBER and _DIGITS.fullmatch(text):
            t = _digits_date(text)
            if t is not None:
                return t, TimeKind.DATETIME
            if kind is TimeKind.DATETIME:
                raise _bad(text, column, ", not a valid YYYYMMDD[HHMM[SS]] date")
        if kind is TimeKind.DATETIME:
            raise _mismatch(text, column, kind)
        v = float(text)
        if not math.isfinite(v):
            raise _bad(text, column, ", beyond the float64 range")
        return v, TimeKind.NUMBER
    quarter = _QUARTER_CELL.fullmatch(text)
    if quarter:  # the quarter's first day
        text = f"{quarter.group(1)}-{3 * int(quarter.group(2)) - 2:02d}"
    m = _MONTH_CELL.fullmatch(text)
    if not m and not _ISO.fullmatch(text):
        raise _bad(text, column)
    try:
        t = _seconds(
            datetime(int(m.group(1)), int(m.group(2)), 1) if m else datetime.fromisoformat(_iso_for_python310(text))
        )
    except (ValueError, OverflowError):
        raise _bad(text, column) from None
    if kind is TimeKind.NUMBER:
        raise _mismatch(text, column, kind)
    return t, TimeKind.DATETIME


def _check(value, what: str, low: float = -math.inf, high: float = math.inf, above: bool = False) -> float:
    """A finite real number in [low, high] (above: > low), or ``BadInputError`` saying what was expected."""
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
    v = float(value) if ok else math.nan
    if not (math.isfinite(v) and (v > low if above else v >= low) and v <= high):
        bounds = [f"above {low:g}" if above else f"at least {low:g}"] if low > -math.inf else []
        bounds += [f"at most {high:g}"] if high < math.inf else []
        raise BadInputError(f"expected {what} to be a finite number {' and '.join(bounds)}".rstrip()
                            + f", received {value!r:.60}")
    return v


@dataclasses.dataclass(frozen=True)
class Sampling:
    """A series' sampling. ``period``: the median positive step (seconds for ``DATETIME``), or an average calendar
    unit (``MONTH``, 3 * ``MONTH``, 12 * ``MONTH``) when the steps near the median vary like months, quarters or
    years do. ``regular``: the fraction of training steps within ``tolerance`` (relative) of the period."""

    kind: TimeKind
    period: float
    regular: float

    def __post_init__(self):
        if self.kind not in tuple(TimeKind):  # a str enum: "datetime" is TimeKind.DATETIME
            raise BadInputError(f"expected the sampling kind to be one of {[k.value for k in TimeKind]}, "
                                f"received {self.kind!r:.60}")
        object.__setattr__(self, "kind", TimeKind(self.kind))
        object.__setattr__(self, "period", _check(self.period, "the sampling period", 0.0, above=True))
        object.__setattr__(self, "regular", _check(self.regular, "the regular fraction", 0.0, 1.0))

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "period": self.period, "regular": self.regular}

    @classmethod
    def from_dict(cls, d) -> Sampling:
        """The inverse of ``to_dict``; keys it does not know are ignored. Raises ``BadInputError`` (a ValueError)."""
        if not isinstance(d, dict) or not {"kind", "period", "regular"} <= d.keys():
            raise BadInputError(f"expected the sampling as a dict with kind, period and regular, received {d!r:.80}")
        return cls(d["kind"], d["period"], d["regular"])

    def describe(self) -> str:
        """``every 5 min``, ``every 1 day``, ``every 7 days``, ``every ~1 month``, ``every 0.25 (number)``."""
        p = self.period
        if self.kind is TimeKind.NUMBER:
            return f"every {p:g} (number)"
        words = [w for unit, _, _, w in _CALENDAR if math.isclose(p, unit, rel_tol=1e-9)]
        if words:
            return f"every {words[0]}"
        units = ((_DAY, "day"), (3600.0, "h"), (60.0, "min"), (1.0, "s"))
        for size, name in units:  # the largest unit the period is a whole number of
            n = p / size
            if n >= 1 and abs(n - round(n)) <= 1e-9 * n:
                return f"every {round(n)} {name}{'s' if name == 'day' and round(n) != 1 else ''}"
        if p < 1:
            return f"every {p:g} s"
        size, name = next((s, n) for s, n in units if p >= s)
        return f"every ~{p / size:.3g} {name}{'s' if name == 'day' else ''}"


def _cell_text(c) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, (bool, np.bool_)):
        v = float(c)  # 19580329.0 (an integer column read as float, or with NaNs) is the date 19580329 as well
        return str(int(c)) if isinstance(c, (int, np.integer)) or v.is_integer() and abs(v) < 1e15 else repr(v)
    raise BadInputError(f"expected time cells as strings or numbers, received {type(c).__name__} {c!r:.40}")


def _parse_all(texts: list[str], kind: TimeKind | None, column: str) -> list[tuple[float, TimeKind]]:
    out = []
    for i, text in enumerate(texts):
        try:
            out.append(parse_time(text, kind, column))
        except BadInputError as exc:
            raise BadInputError(f"training row {i + 1}: {exc}") from None
    return out


def estimate_sampling(cells: Sequence[str] | np.ndarray, column: str = "time",
                      tolerance: float = DEFAULT_TOLERANCE) -> Sampling | None:
    """The sampling of a training time column (strings or numbers; an integer 19580329 reads as the cell would).

    The kind is the cells' common kind; when mixed: numbers if every cell reads as one (8/12/14-digit step indices
    can be valid dates), else the majority kind, the first cell of the other kind an error (``BadInputError``, as
    for a bad cell). Steps that are not positive (disorder) are left out of the median but count as irregular. None
    with fewer than 3 rows (two steps cannot tell a period from a gap) or no positive step (there is no period).
    """
    tolerance = _check(tolerance, "the tolerance", 0.0)
    texts = [_cell_text(c) for c in (cells.tolist() if isinstance(cells, np.ndarray) else cells)]
    if len(texts) < 3:
        return None
    parsed = _parse_all(texts, None, column)
    kinds = [k for _, k in parsed]
    kind = kinds[0]
    if any(k is not kind for k in kinds):  # mixed: numbers throughout, else the majority kind
        try:
            parsed, kind = _parse_all(texts, TimeKind.NUMBER, column), TimeKind.NUMBER
        except BadInputError:
            kind = max((kind, TimeKind.NUMBER, TimeKind.DATETIME), key=kinds.count)  # ties: the first cell's kind
            parsed = _parse_all(texts, kind, column)  # raises at the first cell of the other kind
    steps = np.diff(np.array([v for v, _ in parsed], dtype=np.float64))
    positive = steps[steps > 0]
    if positive.size == 0:
        return None
    period = float(np.median(positive))
    if kind is TimeKind.DATETIME:
        for unit, low, high, _ in _CALENDAR:
            near = positive[(positive >= low * _DAY) & (positive <= high * _DAY)]
            if low * _DAY <= period <= high * _DAY and np.ptp(near) > 0:  # varying lengths: calendar units
                period = unit
    regular = float(np.mean(np.abs(steps - period) <= tolerance * period))
    return Sampling(kind, period, regular)


class GapKind(str, enum.Enum):
    OK = "ok"
    GAP = "gap"
    BACKWARDS = "backwards"
    REPEAT = "repeat"
    FIRST = "first"


@dataclasses.dataclass(frozen=True)
class TimeStep:
    kind: GapKind
    time: float
    previous: float | None
    missing: int  # GAP: whole periods missing between previous and time (>= 1); else 0


class GapTracker:
    """Fed one time per row; classifies each against the previous accepted time (``last``) and the period.

    A step ``dt`` is a GAP when ``dt > (1 + tolerance) * period`` (``missing = round(dt / period) - 1``, at least 1),
    REPEAT when 0, BACKWARDS when negative, else OK (slightly irregular steps too, like months of 28-31 days). After
    BACKWARDS or REPEAT ``last`` stays the previous good time. ``state()``/``restore()`` carry ``last`` as a float
    (NaN: none) for a state file.
    """

    def __init__(self, sampling: Sampling, tolerance: float = DEFAULT_TOLERANCE, column: str = "time"):
        if not isinstance(sampling, Sampling):
            raise BadInputError(f"expected a Sampling, received {type(sampling).__name__}")
        self.sampling = sampling
        self.tolerance = _check(tolerance, "the gap tolerance", 0.0)
        self.column = column
        self.last: float | None = None

    def observe(self, cell_or_value: str | float) -> TimeStep:
        """One row's time (a cell, parsed with the sampling's kind, or a value); a bad one raises, changing nothing."""
        if isinstance(cell_or_value, str):
            t, _ = parse_time(cell_or_value, self.sampling.kind, self.column)
        else:
            t = _check(cell_or_value, f"the {self.column!r} time")
        prev = self.last
        if prev is None:
            self.last = t
            return TimeStep(GapKind.FIRST, t, None, 0)
        dt = t - prev
        if dt < 0:
            return TimeStep(GapKind.BACKWARDS, t, prev, 0)
        if dt == 0:
            return TimeStep(GapKind.REPEAT, t, prev, 0)
        self.last = t
        period = self.sampling.period
        if dt > (1 + self.tolerance) * period:
            return TimeStep(GapKind.GAP, t, prev, max(1, round(min(dt / period, 1e18)) - 1))
        return TimeStep(GapKind.OK, t, prev, 0)

    def reset(self) -> None:
        self.last = None

    def state(self) -> float:
        return math.nan if self.last is None else self.last

    def restore(self, value: float | None) -> None:
        """Set ``last`` from ``state()``'s float (NaN or None: no previous time)."""
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(()).item()
        nan = value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))
        self.last = None if nan else _check(value, "the restored time")
