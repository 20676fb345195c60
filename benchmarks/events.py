"""Event-level detection metrics, synthetic anomaly injection, and a rolling z-score baseline detector.

Row-level precision and recall reward a detector for flagging every row of a long anomaly and punish it for stopping
early; operators care about events: was each anomaly caught, how late, and how many alarms were false. This module
turns per-row flags into events (maximal runs of True) and scores them against truth windows.

    flags = rolling_zscore(values, window=100, min_periods=20) > 4
    m = event_metrics(flags, truth=[(500, 540)], start=100, tolerance=5)
    m.recall, m.precision, m.delays

Injection plants known anomalies into a clean series so that detectors can be scored on series whose truth is
exact: ``plan_injections`` places them without overlap, ``inject`` plants one and returns its truth window.

    rng = np.random.default_rng(0)
    scale = robust_scale(values)
    for kind, at, length in plan_injections(len(values), KINDS, start=500, count_per_kind=2, length=30, rng=rng,
                                            gap=100):
        values, window = inject(values, kind, at, length, rng, scale)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

KINDS = ("spike", "level_shift", "drift", "stuck", "noise", "dropout")

# Default magnitudes, in multiples of the robust scale. Chosen so each anomaly stands well clear of the noise a
# forecaster sees: a spike of 6 scales is far beyond what normal noise produces (P(|z| > 6) ~ 2e-9); a sustained
# shift or noise burst needs less per row because it lasts many rows.
MAGNITUDES = {
    "spike": 6.0,  # one row, +/- 6 scales
    "level_shift": 4.0,  # a step of +/- 4 scales for `length` rows
    "drift": 5.0,  # a ramp from 5/length up to +/- 5 scales at the last row, then straight back
    "noise": 3.0,  # added Gaussian noise with standard deviation 3 scales
    "dropout": 4.0,  # when 0 is inside the series' range: fall to 4 scales below its minimum (see inject)
}
MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian times this is its standard deviation


@dataclasses.dataclass(frozen=True)
class EventMetrics:
    """Event-level scores of per-row flags against truth windows.

    Attributes:
        tp: truth windows detected (a flagged row in ``[start, end + tolerance]``).
        fp: detected events overlapping no truth window (widened by ``tolerance`` at the end).
        fn: truth windows not detected.
        n_events: detected events counted (those at or after ``start``).
        precision: detected events overlapping a window / detected events.
        recall: ``tp / (tp + fn)``.
        f1: harmonic mean of precision and recall.
        delays: per detected window, in window order: rows from the window's start to its first flagged row.
        mean_delay: mean of ``delays``; NaN when no window was detected.
    """

    tp: int
    fp: int
    fn: int
    n_events: int
    precision: float
    recall: float
    f1: float
    delays: list[int]
    mean_delay: float


def _as_flags(flags: np.ndarray) -> np.ndarray:
    """Check per-row flags are a 1-D bool array (a float array of scores would be silently truthy)."""
    f = np.asarray(flags)
    if f.dtype != np.bool_:
        raise TypeError(f"expected a bool flags array, received dtype {f.dtype}")
    if f.ndim != 1:
        raise ValueError(f"expected 1-D flags, received shape {f.shape}")
    return f


def events(flags: np.ndarray) -> list[tuple[int, int]]:
    """The maximal runs of consecutive True in ``flags``.

    Args:
        flags: 1-D bool array.

    Returns:
        ``(start, end)`` inclusive row indices of each run, in order.
    """
    f = _as_flags(flags)
    # Pad with False on both sides so every run has a rising and a falling edge.
    edges = np.diff(np.concatenate(([0], f.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def event_metrics(flags: np.ndarray, truth: Sequence[tuple[int, int]], start: int = 0, tolerance: int = 0,
                  zero_division: float = 0.0) -> EventMetrics:
    """Score flags as events against truth windows.

    Only rows ``>= start`` count: flags before ``start`` are dropped (a run crossing ``start`` is cut there) and
    truth windows ending before ``start`` are dropped. A truth window ``(a, b)`` is detected when a flagged row lies
    in ``[a, b + tolerance]``; its delay is that row minus ``a`` (for a window crossing ``start``, still measured
    from ``a``). A detected event is a false positive when it overlaps no ``[a, b + tolerance]``.

    Empty cases follow scikit-learn's ``zero_division``: precision is ``zero_division`` when there are no detected
    events, recall when there are no truth windows, and F1 when there are neither; otherwise F1 is the harmonic mean
    (0 when precision and recall are both 0). The default 0.0 therefore scores a detector that stays silent on a
    clean series 0, not 1: read ``fp == 0`` for that case, or pass ``zero_division=1.0``.

    Args:
        flags: 1-D bool array, True where the detector fires.
        truth: inclusive ``(start, end)`` truth windows, inside the series.
        start: first row that counts (e.g. the end of a warm-up period).
        tolerance: rows after a window's end where a detection still counts for it.
        zero_division: the value of a metric whose denominator is 0.

    Returns:
        The counts, precision, recall, F1 and detection delays.
    """
    f = _as_flags(flags)
    n = len(f)
    if not 0 <= start <= n:
        raise ValueError(f"expected 0 <= start <= {n}, received {start}")
    if tolerance < 0:
        raise ValueError(f"expected tolerance >= 0, received {tolerance}")
    for a, b in truth:
        if not 0 <= a <= b < n:
            raise ValueError(f"expected a truth window with 0 <= start <= end < {n}, received ({a}, {b})")

    f = f.copy()
    f[:start] = False
    windows = [(int(a), int(b)) for a, b in truth if b >= start]
    found = events(f)

    # Prefix counts of flagged rows give "any flag in [lo, hi]" in O(1) per window.
    flagged = np.flatnonzero(f)
    delays, tp = [], 0
    for a, b in windows:
        hi = min(b + tolerance, n - 1)
        k = np.searchsorted(flagged, a, side="left")
        if k < len(flagged) and flagged[k] <= hi:
            tp += 1
            delays.append(int(flagged[k] - a))

    hit_events = sum(1 for ea, eb in found if any(ea <= b + tolerance and eb >= a for a, b in windows))
    fp = len(found) - hit_events
    fn = len(windows) - tp

    precision = hit_events / len(found) if found else zero_division
    recall = tp / len(windows) if windows else zero_division
    if not found and not windows:
        f1 = zero_division
    elif precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return EventMetrics(tp=tp, fp=fp, fn=fn, n_events=len(found), precision=float(precision), recall=float(recall),
                        f1=float(f1), delays=delays, mean_delay=float(np.mean(delays)) if delays else math.nan)


def robust_scale(values: np.ndarray) -> float | np.ndarray:
    """The noise level of a series, robust to outliers: ``1.4826 * MAD(first differences) / sqrt(2)``.

    Why first differences: they remove level, trend and slow seasonality, so the scale measures the row-to-row noise
    a one-step forecaster has to see through, and "k scales" means the same thing on a trending series as on a flat
    one. The ``/ sqrt(2)`` undoes the doubling of variance that differencing independent noise causes. The MAD makes
    existing spikes and steps count for little. When the differences' MAD is 0 (a square wave, a flatline, a
    quantised series with mostly repeated values) we fall back to ``1.4826 * MAD(values)``, then to the standard
    deviation of the values, then to 1.0, so the scale is always positive.

    Args:
        values: ``(n,)`` or ``(n, k)`` finite values, ``n >= 2``.

    Returns:
        A float for ``(n,)`` input, a ``(k,)`` array (one scale per column) for ``(n, k)`` input.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim not in (1, 2) or len(x) < 2:
        raise ValueError(f"expected values of shape (n,) or (n, k) with n >= 2, received shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("expected finite values, received NaN or inf")
    cols = x if x.ndim == 2 else x[:, None]
    out = np.empty(cols.shape[1])
    for j in range(cols.shape[1]):
        c = cols[:, j]
        d = np.diff(c)
        candidates = (
            MAD_TO_SIGMA * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0),
            MAD_TO_SIGMA * np.median(np.abs(c - np.median(c))),
            np.std(c),
        )
        out[j] = next((float(s) for s in candidates if s > 0), 1.0)
    return float(out[0]) if x.ndim == 1 else out


def inject(values: np.ndarray, kind: str, at: int, length: int, rng: np.random.Generator,
           scale: float | np.ndarray, magnitude: float | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Plant one anomaly into a copy of ``values``.

    Kinds (magnitudes in multiples of ``scale``, defaults in ``MAGNITUDES``; the sign, where there is one, is drawn
    from ``rng`` and shared by all columns):

    * ``spike``: one row moves by +/- 6 scales. ``length`` must be 1.
    * ``level_shift``: ``length`` rows move by +/- 4 scales, then the series returns to its level.
    * ``drift``: row ``at + j`` moves by +/- 5 scales × (j + 1) / length: a linear ramp reaching 5 scales on the last
      row, after which the series snaps back. The truth window is the whole ramp, although its first rows deviate by
      less than one scale; a detector's delay therefore includes the time the drift takes to become visible.
    * ``stuck``: ``length`` rows hold the value of row ``at`` (a frozen sensor); row ``at`` itself is unchanged.
    * ``noise``: ``length`` rows get added Gaussian noise of standard deviation 3 scales (independent per column).
    * ``dropout``: ``length`` rows read 0 (a sensor reporting nothing) when 0 lies outside the column's range
      ``[min, max]``; where 0 is an ordinary value (a series around 0, or one that often reads 0) a fall to 0 would
      be invisible, so those rows fall to ``min - 4 scales`` instead.

    For ``(n, k)`` values the anomaly hits every column, each with its own scale.

    Args:
        values: ``(n,)`` or ``(n, k)`` finite values; not modified.
        kind: one of ``KINDS``.
        at: first anomalous row.
        length: number of anomalous rows (1 for ``spike``).
        rng: the source of the sign and of the noise.
        scale: the series' robust spread (``robust_scale(values)``): a float, or one per column.
        magnitude: overrides the kind's default magnitude (multiples of scale); not used by ``stuck``.

    Returns:
        The new values (float64) and the truth window ``(at, at + length - 1)``.
    """
    x = np.array(values, dtype=np.float64)  # a copy: callers keep their clean series
    if x.ndim not in (1, 2):
        raise ValueError(f"expected values of shape (n,) or (n, k), received shape {x.shape}")
    if kind not in KINDS:
        raise ValueError(f"expected a kind in {KINDS}, received {kind!r}")
    n = len(x)
    if length < 1 or not 0 <= at or at + length > n:
        raise ValueError(f"expected 0 <= at and 1 <= length with at + length <= {n}, received at={at}, "
                         f"length={length}")
    if kind == "spike" and length != 1:
        raise ValueError(f"a spike is one row: expected length 1, received {length}")
    s = np.asarray(scale, dtype=np.float64)
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"expected a positive finite scale, received {scale!r}")
    if x.ndim == 2 and s.ndim == 1 and s.shape != (x.shape[1],):
        raise ValueError(f"expected one scale per column ({x.shape[1]}), received {s.shape[0]}")
    mag = MAGNITUDES.get(kind, 0.0) if magnitude is None else float(magnitude)
    rows = slice(at, at + length)
    sign = 1.0 if rng.random() < 0.5 else -1.0

    if kind in ("spike", "level_shift"):
        x[rows] += sign * mag * s
    elif kind == "drift":
        ramp = (np.arange(1, length + 1) / length) * mag * sign
        x[rows] += ramp[:, None] * s if x.ndim == 2 else ramp * s
    elif kind == "stuck":
        x[rows] = x[at]
    elif kind == "noise":
        x[rows] += rng.standard_normal(x[rows].shape) * mag * s
    elif kind == "dropout":
        lo, hi = x.min(axis=0), x.max(axis=0)
        inside = (lo <= 0) & (hi >= 0)
        x[rows] = np.where(inside, lo - mag * s, 0.0)
    return x, (at, at + length - 1)


def plan_injections(n: int, kinds: Sequence[str], start: int, count_per_kind: int, length: int,
                    rng: np.random.Generator, gap: int) -> list[tuple[str, int, int]]:
    """Place ``count_per_kind`` anomalies of each kind in rows ``[start, n)``, disjoint and spread at random.

    Consecutive anomalies have at least ``gap`` clean rows between them, so a detector's alarm for one cannot land on
    the next, and the order of kinds is shuffled. Spikes take 1 row, every other kind ``length`` rows. The free rows
    are split at random before, between and after the anomalies.

    Args:
        n: series length.
        kinds: kinds to plant (each in ``KINDS``).
        start: first row an anomaly may occupy (e.g. after a detector's warm-up).
        count_per_kind: anomalies of each kind.
        length: rows per anomaly (spikes: 1).
        rng: the source of the order and positions.
        gap: least number of clean rows between two anomalies.

    Returns:
        ``(kind, at, length)`` per anomaly, sorted by ``at``.
    """
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"expected kinds in {KINDS}, received {k!r}")
    if count_per_kind < 0 or length < 1 or gap < 0 or not 0 <= start <= n:
        raise ValueError(f"expected count_per_kind >= 0, length >= 1, gap >= 0, 0 <= start <= n={n}; received "
                         f"count_per_kind={count_per_kind}, length={length}, gap={gap}, start={start}")
    plan = [k for k in kinds for _ in range(count_per_kind)]
    if not plan:
        return []
    plan = [plan[i] for i in rng.permutation(len(plan))]
    lengths = [1 if k == "spike" else length for k in plan]
    needed = sum(lengths) + gap * (len(plan) - 1)
    slack = (n - start) - needed
    if slack < 0:
        raise ValueError(f"{len(plan)} anomalies need {needed} rows after start={start}, the series has "
                         f"{n - start}")
    # Stars and bars: len(plan) sorted cut points in [0, slack] split the slack into len(plan) + 1 parts.
    cuts = np.sort(rng.integers(0, slack + 1, size=len(plan)))
    extra = np.diff(np.concatenate(([0], cuts)))  # free rows before each anomaly, beyond the gap
    out, pos = [], start
    for i, (kind, m) in enumerate(zip(plan, lengths)):
        pos += int(extra[i]) + (gap if i else 0)
        out.append((kind, pos, m))
        pos += m
    return out


def rolling_zscore(values: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """``|x_t - mean(h)| / std(h)`` where ``h`` is the ``window`` rows before ``t`` (not ``t`` itself).

    The history is ``x[max(0, t - window) : t]``; rows whose history has fewer than ``min_periods`` rows are NaN. The
    standard deviation is the population one (ddof=0), so a history of one row is defined. It is floored at
    ``max(1e-8 * |mean(h)|, 1e-12)``: a flat history then gives a finite, very large z for any change (which is what
    a change after a flatline deserves) and 0 for no change. Flat histories are recognised exactly (no change
    between consecutive rows, counted with integer prefix sums), so their mean is exact and an unchanged next value
    scores exactly 0. Other histories use float prefix sums of the values centred on their median, O(n) in all.

    Args:
        values: ``(n,)`` finite values.
        window: history length, >= 1.
        min_periods: fewest history rows needed for a score, 1 <= min_periods <= window.

    Returns:
        ``(n,)`` float64 z-scores, NaN where the history is too short.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected values of shape (n,), received shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("expected finite values, received NaN or inf")
    if window < 1 or not 1 <= min_periods <= window:
        raise ValueError(f"expected window >= 1 and 1 <= min_periods <= window, received window={window}, "
                         f"min_periods={min_periods}")
    n = len(x)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    t = np.arange(n)
    lo = np.maximum(t - window, 0)  # history is rows [lo, t)
    count = t - lo
    # Centring on the median keeps the prefix sums small, which keeps var = E[y^2] - E[y]^2 accurate.
    y = x - np.median(x)
    c1 = np.concatenate(([0.0], np.cumsum(y)))
    c2 = np.concatenate(([0.0], np.cumsum(y * y)))
    ok = count >= min_periods
    cnt = np.where(ok, count, 1)
    mean_y = (c1[t] - c1[lo]) / cnt
    var = np.maximum((c2[t] - c2[lo]) / cnt - mean_y**2, 0.0)
    mean = mean_y + np.median(x)

    # A history is flat when no row in it differs from the row before: rows lo+1..t-1 have no change.
    changes = np.concatenate(([0], np.cumsum(np.diff(x) != 0)))  # changes[i] = changes among rows 0..i
    prev = np.maximum(t - 1, 0)
    flat = ok & (changes[prev] - changes[lo] == 0)
    mean = np.where(flat, x[prev], mean)
    var = np.where(flat, 0.0, var)

    std = np.maximum(np.sqrt(var), np.maximum(1e-8 * np.abs(mean), 1e-12))
    out[ok] = np.abs(x[ok] - mean[ok]) / std[ok]
    return out
