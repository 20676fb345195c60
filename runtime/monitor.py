"""Prediction intervals and anomaly scores on a stream of forecasts: calibrated once, adapted online.

This module owns the residual calibration a model carries (``ResidualCalibration``, the metadata's ``residuals``
entry) and the per-stream monitor built on it (``ForecastMonitor``). numpy only: it runs on the device next to the
interpreter, and on the workstation over Keras forecasts (``statelite train`` reports test coverage with it).

How it works, per target ``k`` and horizon step ``h``:

- **Calibration.** Streaming the trained model over its validation split gives residuals ``r = actual - forecast``.
  Their absolute values are summarised by quantiles on a fixed probability grid up to the 90th percentile ``u``,
  and above ``u`` by an exponential tail (peaks over threshold: ``P(|r| > u + x) = 0.1 * exp(-x / beta)``, with
  ``beta`` the mean excess over ``u``). The tail lets a huge residual get a tiny p-value that the few hundred
  calibration residuals of a short series could not give directly (a plain conformal p-value stops at 1/(n+1)).
- **Intervals.** At level ``l`` the interval is ``forecast +- Q(l) * exp(theta_l)``: ``Q(l)`` the calibrated
  quantile of ``|r|``, ``theta_l`` an online correction in log space updated when the truth arrives,
  ``theta_l += rate * (miss - (1 - l))`` (quantile tracking, the adaptive-conformal update of Gibbs & Candes 2021 and
  Angelopoulos et al. 2023 applied to the log width). A miss widens every later interval, a hit narrows it a little,
  so the long-run miss rate tends to ``1 - l`` even when the errors drift. Each forecast keeps the width it was
  issued with; the update compares the truth against that width.
- **Scores.** A row's target values are compared with the forecasts made for its time 1 to H steps earlier. Each
  residual, divided by an online scale ``exp(theta_s)`` (a median tracker of the same kind), gets a p-value from the
  calibrated distribution; the row's p-value is the Bonferroni combination ``min(1, m * min p)`` over the ``m``
  horizons and targets that have a forecast (valid whatever the dependence between them). The score is
  ``-log10(p)``: 3 means a residual as large turns up once in a thousand rows. A row is anomalous when its score
  reaches the threshold. Anomalous rows do not update the scores' scale (an anomaly must not make the next one look
  less surprising), but they do update the intervals (leaving them out would take their misses out of the tracking,
  and coverage would fall short by the share of rows flagged). Consecutive anomalous rows form one ``Event``.

Nothing here touches the model's state: ``ForecastMonitor.observe`` decides what the model is fed (the row, or with
``substitute`` its own one-step forecast in place of an anomalous row's targets) and ``push`` takes the forecast the
model made from it. ``statelite.StatefulRunner.monitor`` and ``statelite.StreamPool.monitor`` wire the two together.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable

import numpy as np

# The probabilities where |residual| quantiles are stored; above the last one the tail is exponential.
PROBS = tuple(round(0.05 * i, 2) for i in range(19))  # 0.0, 0.05, ..., 0.9
TAIL_P = 1.0 - PROBS[-1]
DEFAULT_LEVELS = (0.9,)
# -log10 of the row's combined p-value: a false alarm once in 10^4 rows (a month of 5-minute readings has 8,640)
# if the calibrated error distribution held exactly. Real residuals have heavier tails than a fit on a few hundred
# rows shows, so the observed rate is higher; benchmarks/anomaly.py measures it.
DEFAULT_THRESHOLD = 4.0
DEFAULT_RATE = 0.05
MAX_SCORE = 300.0  # a p-value below 1e-300 is reported as 1e-300 (float64 underflows soon after)
THETA_LIMIT = 6.0  # the online correction stays within exp(+-6) = 403x of the calibrated width
MIN_CALIBRATION = 20  # residuals per horizon step below which a calibration means little (train says so)


class _Bad(ValueError):
    pass


def _floats(v, what: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise _Bad(f"{what} must be numbers of shape {shape}; received {str(v)[:60]!r}") from None
    if a.shape != shape or not np.isfinite(a).all():
        raise _Bad(f"{what} must be finite numbers of shape {shape}; received shape {a.shape}")
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class ResidualCalibration:
    """The validation split's streaming residuals, summarised per horizon step and target (raw target units).

    Attributes:
        steps: forecast positions the residuals come from (each gives one residual per horizon step and target).
        quantiles: ``(horizon, targets, len(PROBS))`` quantiles of ``|residual|`` at ``PROBS``.
        tail: ``(horizon, targets)`` mean excess over the 90th percentile: the exponential tail's scale.
        source: where the residuals come from (``"validation split"``).
    """

    steps: int
    quantiles: np.ndarray
    tail: np.ndarray
    source: str = "validation split"

    def __eq__(self, other) -> bool:
        if not isinstance(other, ResidualCalibration):
            return NotImplemented
        return (self.steps, self.source) == (other.steps, other.source) and np.array_equal(
            self.quantiles, other.quantiles) and np.array_equal(self.tail, other.tail)

    __hash__ = None

    @property
    def horizon(self) -> int:
        return self.quantiles.shape[0]

    @property
    def targets(self) -> int:
        return self.quantiles.shape[1]

    def quantile(self, level: float) -> np.ndarray:
        """``(horizon, targets)``: the calibrated ``level`` quantile of ``|residual|``."""
        if level <= PROBS[-1]:
            i = np.searchsorted(PROBS, level, side="right") - 1
            i = min(int(i), len(PROBS) - 2)
            w = (level - PROBS[i]) / (PROBS[i + 1] - PROBS[i])
            return self.quantiles[..., i] * (1 - w) + self.quantiles[..., i + 1] * w
        return self.quantiles[..., -1] + self.tail * math.log(TAIL_P / (1.0 - level))

    def scaled(self, factors) -> ResidualCalibration:
        """A copy in other units: every quantile and tail scale of target ``j`` multiplied by ``|factors[j]|``.

        A panel model's calibration is in units of each series' target scale (metadata ``panel.residual_units``);
        ``calibration.scaled(scaler.target_scale)`` gives one series' raw units.

        Raises:
            ValueError: not one finite, nonzero factor per target.
        """
        f = np.abs(np.asarray(factors, dtype=np.float64)).reshape(-1)
        if f.shape != (self.targets,) or not np.isfinite(f).all() or (f == 0).any():
            raise ValueError(
                f"expected {self.targets} finite nonzero factors (one per target); received {str(factors)[:60]}"
            )
        return ResidualCalibration(self.steps, self.quantiles * f[None, :, None], self.tail * f[None, :], self.source)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "steps": self.steps,
            "probs": list(PROBS),
            "quantiles": self.quantiles.tolist(),
            "tail": self.tail.tolist(),
        }

    @classmethod
    def from_dict(cls, d, horizon: int | None = None, targets: int | None = None) -> ResidualCalibration:
        """Read the metadata's ``residuals`` entry for a model of ``horizon`` steps and ``targets`` targets (None:
        whatever the entry holds; ``check_against_graph`` compares it with the model's).

        Raises:
            ValueError: a field missing, of the wrong shape, not finite, or quantiles not increasing.
        """
        if not isinstance(d, dict):
            raise _Bad(f"residuals must be an object; received {type(d).__name__}")
        probs = d.get("probs")
        if not isinstance(probs, list) or [round(float(p), 6) for p in probs] != [round(p, 6) for p in PROBS]:
            raise _Bad(f"residuals probs must be {list(PROBS)}; received {str(probs)[:60]}")
        steps = d.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise _Bad(f"residuals steps must be a positive integer; received {steps!r:.30}")
        if horizon is None or targets is None:
            shape = np.shape(d.get("quantiles")) if isinstance(d.get("quantiles"), list) else ()
            horizon, targets = (shape[0], shape[1]) if len(shape) == 3 else (0, 0)
        q = _floats(d.get("quantiles"), "residuals quantiles", (horizon, targets, len(PROBS)))
        tail = _floats(d.get("tail"), "residuals tail", (horizon, targets))
        if (q < 0).any() or (np.diff(q, axis=-1) < 0).any() or (tail <= 0).any():
            raise _Bad("residuals quantiles must be non-negative and increasing, and tail scales positive")
        source = d.get("source", "validation split")
        return cls(steps, q, tail, source if isinstance(source, str) else "validation split")


def calibrate(forecasts: np.ndarray, actual: np.ndarray, source: str = "validation split") -> ResidualCalibration:
    """Summarise streaming residuals into a ``ResidualCalibration``.

    Args:
        forecasts: ``(positions, horizon, targets)`` forecasts in raw units.
        actual: the same shape: what each forecast step turned out to be. NaN where unknown (past the data's end):
            those pairs are left out.
        source: recorded as the calibration's source.

    Returns:
        The calibration. A horizon step and target whose residuals are all zero (a flat series forecast exactly)
        get a floor of 1e-9 of the actual values' magnitude, so a later nonzero residual is surprising but finite.

    Raises:
        ValueError: shapes differ, or no position has a known residual.
    """
    forecasts = np.asarray(forecasts, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if forecasts.shape != actual.shape or forecasts.ndim != 3:
        raise ValueError(
            f"expected forecasts and actual values of one shape (positions, horizon, targets); received "
            f"{forecasts.shape} and {actual.shape}"
        )
    r = np.abs(actual - forecasts)
    known = np.isfinite(r)
    if not known.any():
        raise ValueError("expected at least one position with a known residual; received none")
    _, horizon, targets = r.shape
    q = np.zeros((horizon, targets, len(PROBS)))
    tail = np.zeros((horizon, targets))
    for h in range(horizon):
        for k in range(targets):
            v = r[known[:, h, k], h, k]
            level = np.abs(actual[known[:, h, k], h, k])
            floor = max(1e-9 * float(level.mean()) if level.size else 0.0, 1e-12)
            if v.size == 0:  # a horizon step never observed inside the split: borrow the previous step's
                q[h, k], tail[h, k] = (q[h - 1, k], tail[h - 1, k]) if h else (floor, floor)
                continue
            q[h, k] = np.maximum(np.quantile(v, PROBS), floor)
            over = v[v > q[h, k, -1]] - q[h, k, -1]
            # With few exceedances the mean excess is noisy; the spread of the body bounds it from below so one
            # calm validation split cannot make every later residual look extreme.
            body = q[h, k, -1] - q[h, k, 0]
            tail[h, k] = max(float(over.mean()) if over.size else 0.0, body / 4.0, floor)
    return ResidualCalibration(int(known.any(axis=(1, 2)).sum()), np.maximum.accumulate(q, axis=-1), tail, source)


@dataclasses.dataclass(frozen=True)
class MonitorOptions:
    """What a ``ForecastMonitor`` computes and how it adapts.

    Attributes:
        levels: interval levels in (0, 1), e.g. ``(0.8, 0.9, 0.95)``; empty for no intervals.
        threshold: the score (``-log10`` of the row's p-value) at which a row is anomalous.
        substitute: feed the model its own one-step forecast in place of an anomalous row's target values, so one
            spike does not spoil the state and the forecasts after it.
        max_substitute: substitute at most this many consecutive rows (None: the horizon); after that the values
            are taken as they are, so a real level shift becomes the new normal instead of being ignored forever.
        adapt: update the online corrections from the errors observed (False: the calibration as converted).
        rate: the step of the online corrections (log width per observed miss).

    Raises:
        ValueError: a level outside (0, 1), a negative threshold, or a rate outside (0, 1].
    """

    levels: tuple[float, ...] = DEFAULT_LEVELS
    threshold: float = DEFAULT_THRESHOLD
    substitute: bool = False
    max_substitute: int | None = None
    adapt: bool = True
    rate: float = DEFAULT_RATE

    def __post_init__(self):
        levels = tuple(float(v) for v in self.levels)
        object.__setattr__(self, "levels", levels)
        for v in levels:
            if not 0.0 < v < 1.0:
                raise ValueError(f"expected interval levels between 0 and 1 (e.g. 0.9); received {v!r}")
        if len(set(levels)) != len(levels):
            raise ValueError(f"expected each interval level once; received {list(levels)}")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"expected a threshold >= 0 (a score, -log10 of a p-value); received {self.threshold!r}")
        if not 0.0 < self.rate <= 1.0:
            raise ValueError(f"expected a rate in (0, 1]; received {self.rate!r}")
        if self.max_substitute is not None and self.max_substitute < 0:
            raise ValueError(f"expected max_substitute >= 0; received {self.max_substitute!r}")


@dataclasses.dataclass(frozen=True)
class Event:
    """Consecutive anomalous rows: ``start`` and ``end`` are the monitor's row numbers (0-based, inclusive)."""

    start: int
    end: int
    peak: float  # the highest score in the event
    peak_row: int

    @property
    def rows(self) -> int:
        return self.end - self.start + 1


class Observation:
    """What the monitor says about one row, and the forecast made from it.

    Attributes:
        row: the monitor's row number (0-based, counting every observed row).
        forecast: ``(horizon, targets)`` raw forecast made after this row (None until ``push``).
        lower, upper: ``(levels, horizon, targets)`` interval bounds around it (empty without levels).
        score: ``-log10`` of the row's p-value, NaN when no earlier forecast covers this row (warm-up, a reset).
        p_value: the row's combined p-value (NaN like ``score``).
        anomaly: the score reached the threshold.
        substituted: the model was fed its own forecast for this row's targets.
        event: the event this row closed (the row after an anomalous run), else None.
    """

    __slots__ = ("row", "forecast", "lower", "upper", "score", "p_value", "anomaly", "substituted", "event", "fed",
                 "_pending")

    def __init__(self, row, score, p_value, anomaly, substituted, event, fed):
        self.row, self.score, self.p_value, self.anomaly = row, score, p_value, anomaly
        self.substituted, self.event, self.fed = substituted, event, fed
        self.forecast = self.lower = self.upper = self._pending = None

    def __repr__(self) -> str:
        return (f"Observation(row={self.row}, score={self.score:.3g}, anomaly={self.anomaly}, "
                f"substituted={self.substituted})")


class ForecastMonitor:
    """Per-stream online state: the forecasts still waiting for their truth, the online corrections, the open event.

    The per-step work is plain Python floats over the ``horizon x targets`` cells: for the few cells of a sensor
    model (4 for one target and horizon 4) that is several times cheaper than the dozens of small numpy calls the
    same arithmetic takes, which would cost more than the model's own step.

    Args:
        calibration: the model's ``ResidualCalibration``.
        target_index: for each target, its column among the features (None when a target is not a feature: then
            ``observe`` needs ``actual``, and substitution leaves the row as it is).
        options: ``MonitorOptions``.
        warmup: rows after a (re)start whose forecasts are not scored (the state is still settling).
    """

    def __init__(self, calibration: ResidualCalibration, target_index, options: MonitorOptions = MonitorOptions(),
                 warmup: int = 0):
        self.calibration = calibration
        self.options = options
        self.warmup = int(warmup)
        H, T = calibration.horizon, calibration.targets
        self.horizon, self.targets = H, T
        self._tidx = None if target_index is None else [int(i) for i in target_index]
        self._levels = tuple(options.levels)
        cal = calibration
        # Per cell c = h * T + k (horizon step h, target k), as Python floats.
        self._q = cal.quantiles.reshape(H * T, -1).tolist()
        self._u = cal.quantiles[..., -1].ravel().tolist()
        self._beta = cal.tail.ravel().tolist()
        self._median = cal.quantile(0.5).ravel().tolist()
        self._q_levels = [cal.quantile(v).ravel().tolist() for v in self._levels]
        self._alpha = [1.0 - v for v in self._levels]
        self._rate = options.rate
        self._adapting = options.adapt
        self._threshold = options.threshold
        self._max_sub = H if options.max_substitute is None else options.max_substitute
        # the cells an arriving row is compared on: forecast issued h + 1 rows ago, its horizon step h
        self._cells = [[h * T + k for k in range(T)] for h in range(H)]
        self._theta = [[0.0] * (H * T) for _ in self._levels]  # log corrections of each level's width
        self._theta_scale = [0.0] * (H * T)  # log correction of the residual scale the scores use
        self.row = 0
        self.restart()
        self._event_start = -1
        self._event_peak = (-math.inf, -1)

    # -- state ---------------------------------------------------------------------------------------------------

    @property
    def theta(self) -> np.ndarray:
        """``(levels, horizon, targets)`` the online log corrections of the interval widths (0: as calibrated)."""
        return np.array(self._theta, dtype=np.float64).reshape(len(self._levels), self.horizon, self.targets)

    @property
    def theta_scale(self) -> np.ndarray:
        """``(horizon, targets)`` the online log correction of the residual scale the scores use."""
        return np.array(self._theta_scale, dtype=np.float64).reshape(self.horizon, self.targets)

    def restart(self) -> None:
        """Forget the forecasts waiting for their truth (after the model's state was reset or a gap). The online
        corrections are kept: they describe the model's errors, not the stream's position."""
        H = self.horizon
        self._ring = [None] * H  # [j]: flat forecast issued j + 1 rows ago (None: none, or made in warm-up)
        self._ring_w = [None] * H  # [j]: the half-widths per level it was issued with
        self._since = 0  # rows since the restart
        self._subs = 0  # consecutive substituted rows

    def export(self) -> dict[str, np.ndarray]:
        """The online state as finite float64 arrays, for a state file (``restore`` takes it back): the levels, the
        corrections, the forecasts waiting for their truth with the widths they were issued with, and the counters.
        An open event is not kept."""
        H, T, L = self.horizon, self.targets, len(self._levels)
        valid = [f is not None for f in self._ring]
        return {
            "levels": np.array(self._levels, dtype=np.float64),
            "theta": np.array(self._theta, dtype=np.float64).reshape(L, H * T),
            "theta_scale": np.array(self._theta_scale, dtype=np.float64),
            "ring": np.array([f if ok else [0.0] * (H * T) for f, ok in zip(self._ring, valid)]).reshape(H, H * T),
            "ring_widths": np.array(
                [w if ok else [[0.0] * (H * T)] * L for w, ok in zip(self._ring_w, valid)]
            ).reshape(H, L, H * T),
            "ring_valid": np.array(valid, dtype=np.float64),
            "counters": np.array([self.row, self._since, self._subs], dtype=np.float64),
        }

    def restore(self, saved: dict) -> bool:
        """Take back an ``export`` of a monitor of this model and these levels.

        Returns:
            True when restored; False (nothing changed) when ``saved`` does not fit: other levels, another horizon or
            targets, or values out of range (the monitor then starts again from the calibration).
        """
        H, T, L = self.horizon, self.targets, len(self._levels)
        shapes = {"levels": (L,), "theta": (L, H * T), "theta_scale": (H * T,), "ring": (H, H * T),
                  "ring_widths": (H, L, H * T), "ring_valid": (H,), "counters": (3,)}
        try:
            a = {name: np.asarray(saved[name], dtype=np.float64) for name in shapes}
        except (KeyError, TypeError, ValueError):
            return False
        if any(a[n].shape != shape or not np.isfinite(a[n]).all() for n, shape in shapes.items()):
            return False
        if not np.allclose(a["levels"], self._levels) or np.abs(a["theta"]).max(initial=0) > THETA_LIMIT or \
                np.abs(a["theta_scale"]).max(initial=0) > THETA_LIMIT or (a["counters"] < 0).any() or \
                (a["ring_widths"] < 0).any():
            return False
        self._theta = a["theta"].tolist()
        self._theta_scale = a["theta_scale"].tolist()
        valid = a["ring_valid"] > 0.5
        self._ring = [f.tolist() if ok else None for f, ok in zip(a["ring"], valid)]
        self._ring_w = [w.tolist() if ok else None for w, ok in zip(a["ring_widths"], valid)]
        self.row, self._since, self._subs = (int(v) for v in a["counters"])
        return True

    def one_step(self) -> np.ndarray | None:
        """``(targets,)`` the latest one-step-ahead forecast (what the next row should be), or None."""
        f = self._ring[0]
        return None if f is None else np.array(f[: self.targets])

    # -- scoring -------------------------------------------------------------------------------------------------

    def _p(self, c: int, r: float) -> float:
        """The p-value of residual ``r`` in cell ``c`` under the calibration and the current online scale."""
        z = abs(r) * math.exp(-self._theta_scale[c])
        u = self._u[c]
        if z > u:
            return TAIL_P * math.exp(-(z - u) / self._beta[c])
        q = self._q[c]
        if z <= q[0]:
            return 1.0
        i = min(max(bisect.bisect_right(q, z), 1), len(PROBS) - 1)
        lo, hi = q[i - 1], q[i]
        w = min(max((z - lo) / (hi - lo), 0.0), 1.0) if hi > lo else 1.0
        return 1.0 - (PROBS[i - 1] + w * (PROBS[i] - PROBS[i - 1]))

    def p_values(self, residuals) -> np.ndarray:
        """``(horizon, targets)`` p-values of ``|residuals|`` (NaN stays NaN) under the calibration and the current
        online scale."""
        flat = np.asarray(residuals, dtype=np.float64).reshape(-1).tolist()
        return np.array([math.nan if r != r else self._p(c, r) for c, r in enumerate(flat)]).reshape(
            self.horizon, self.targets)

    def observe(self, x, actual=None) -> Observation:
        """Score an arriving row and decide what the model is fed; call ``push`` with the forecast made from it.

        Nothing changes until ``push``: a row the model then refuses leaves the monitor as it was.

        Args:
            x: the raw row of features, ``(features,)``.
            actual: the targets' values, ``(targets,)``; by default read from ``x`` at the targets' columns.

        Returns:
            An ``Observation``; its ``fed`` is the row to step the model with (a copy with substituted targets, or
            ``x`` itself).
        """
        if actual is None:
            if self._tidx is None:
                raise ValueError("expected the targets' values (actual=...): a target is not among the features")
            row = x.tolist() if isinstance(x, np.ndarray) else list(x)
            actual = [float(row[i]) for i in self._tidx]
        else:
            actual = np.asarray(actual, dtype=np.float64).reshape(self.targets).tolist()
        seen = []  # (h, c, |residual|)
        p_min = 1.0
        ring = self._ring
        p = self._p
        for h, cells in enumerate(self._cells):
            f = ring[h]
            if f is None:
                continue
            for c, a in zip(cells, actual):
                r = a - f[c]
                if r != r:  # NaN: no truth for this target
                    continue
                pc = p(c, r)
                if pc < p_min:
                    p_min = pc
                seen.append((h, c, abs(r)))
        score = p_row = math.nan
        anomaly = False
        m = len(seen)
        if m:
            p_row = min(1.0, m * p_min)
            score = MAX_SCORE if p_row <= 10.0 ** -MAX_SCORE else min(MAX_SCORE, 0.0 - math.log10(p_row)) + 0.0
            anomaly = score >= self._threshold
        event = None
        if not anomaly and self._event_start >= 0:
            event = Event(self._event_start, self.row - 1, self._event_peak[0], self._event_peak[1])
        fed = x
        substituted = False
        if anomaly and self.options.substitute and self._tidx is not None and self._subs < self._max_sub:
            guess = ring[0]
            if guess is not None:
                fed = np.array(x, dtype=np.float64, copy=True)
                fed[self._tidx] = guess[: self.targets]
                substituted = True
        obs = Observation(self.row, score, p_row, anomaly, substituted, event, fed)
        if m and self._adapting:
            obs._pending = (seen, anomaly)
        return obs

    def _adapt(self, seen: list, anomaly: bool) -> None:
        """Quantile tracking in log space (see the module docstring), for each cell that had its truth.

        The intervals learn from every row: leaving the anomalous rows out would leave their misses out of the
        tracking, and the intervals would cover less than their level by about the share of rows flagged (a spike
        moves a 90% width by only 4.6%). The scores' scale learns from normal rows only: an anomaly must not make
        the next one look less surprising.
        """
        rate, ts, median = self._rate, self._theta_scale, self._median
        if not anomaly:
            for h, c, a in seen:
                t = ts[c] + (rate * 0.5 if a > median[c] * math.exp(ts[c]) else -rate * 0.5)
                ts[c] = THETA_LIMIT if t > THETA_LIMIT else (-THETA_LIMIT if t < -THETA_LIMIT else t)
        widths = self._ring_w
        for level, (theta, alpha) in enumerate(zip(self._theta, self._alpha)):
            for h, c, a in seen:
                w = widths[h]
                if w is None:
                    continue
                t = theta[c] + rate * ((1.0 if a > w[level][c] else 0.0) - alpha)
                theta[c] = THETA_LIMIT if t > THETA_LIMIT else (-THETA_LIMIT if t < -THETA_LIMIT else t)

    def push(self, obs: Observation, forecast) -> Observation:
        """Record the forecast the model made after ``obs``'s row and fill in its interval bounds.

        Args:
            obs: the ``Observation`` of the row just stepped.
            forecast: ``(horizon, targets)`` raw forecast.

        Returns:
            ``obs`` with ``forecast``, ``lower`` and ``upper`` set.

        Raises:
            ValueError: ``obs`` is not the observation of the monitor's current row.
        """
        f = np.asarray(forecast, dtype=np.float64).reshape(self.horizon, self.targets)
        if obs.row != self.row:
            raise ValueError(f"expected the observation of row {self.row}; received row {obs.row}")
        # What observe decided is committed only now, once the model has stepped: a step that failed (a refused
        # row) leaves the monitor as it was.
        if obs._pending is not None:
            self._adapt(*obs._pending)
            obs._pending = None
        if obs.anomaly:
            if self._event_start < 0:
                self._event_start = obs.row
            if obs.score > self._event_peak[0]:
                self._event_peak = (obs.score, obs.row)
        elif obs.event is not None:
            self._event_start, self._event_peak = -1, (-math.inf, -1)
        # Counted over the whole anomalous run: the cap's row and the rows after it are taken as they are until a
        # normal row ends the run (a level shift then becomes the new normal, not substituted in bursts).
        self._subs = self._subs + 1 if obs.substituted else (self._subs if obs.anomaly else 0)
        self.row += 1
        self._since += 1
        half = [[q * math.exp(t) for q, t in zip(ql, tl)] for ql, tl in zip(self._q_levels, self._theta)]
        self._ring.pop()
        self._ring_w.pop()
        if self._since > self.warmup:
            self._ring.insert(0, f.ravel().tolist())
            self._ring_w.insert(0, half)
        else:
            self._ring.insert(0, None)
            self._ring_w.insert(0, None)
        obs.forecast = f
        if half:
            width = np.array(half).reshape(len(half), self.horizon, self.targets)
            obs.lower, obs.upper = f - width, f + width
        else:
            obs.lower = obs.upper = np.zeros((0, self.horizon, self.targets))
        return obs

    def advance(self, forecast) -> None:
        """Record a forecast made from a row that is not observed (a gap filled with the model's own forecasts):
        it is kept for the rows to come, nothing is scored, and the row count does not move."""
        self.push(Observation(self.row, math.nan, math.nan, False, False, None, None), forecast)
        self.row -= 1

    def close_event(self) -> Event | None:
        """End an open event now (the stream ended, or a reset): the event, or None."""
        if self._event_start < 0:
            return None
        event = Event(self._event_start, self.row - 1, self._event_peak[0], self._event_peak[1])
        self._event_start, self._event_peak = -1, (-math.inf, -1)
        return event


def replay(calibration: ResidualCalibration, forecasts: np.ndarray, actual: np.ndarray,
           options: MonitorOptions = MonitorOptions(), warmup: int = 0) -> dict[str, np.ndarray]:
    """Run a monitor over forecasts made beforehand (a Keras model's, in ``statelite train``; a benchmark's).

    Args:
        calibration: the residual calibration.
        forecasts: ``(rows, horizon, targets)``: the forecast made after each row.
        actual: ``(rows, targets)``: each row's target values.
        options: monitor options (substitution does not apply: the forecasts are fixed).
        warmup: rows whose forecasts are not scored.

    Returns:
        ``{"score", "p_value", "anomaly"}`` of shape ``(rows,)`` and ``{"lower", "upper"}`` of shape
        ``(rows, levels, horizon, targets)``.
    """
    forecasts = np.asarray(forecasts, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    mon = ForecastMonitor(calibration, None, dataclasses.replace(options, substitute=False), warmup)
    n = len(forecasts)
    out = {
        "score": np.full(n, np.nan), "p_value": np.full(n, np.nan), "anomaly": np.zeros(n, bool),
        "lower": np.zeros((n, len(options.levels), mon.horizon, mon.targets)),
        "upper": np.zeros((n, len(options.levels), mon.horizon, mon.targets)),
    }
    for i in range(n):
        obs = mon.push(mon.observe(None, actual[i]), forecasts[i])
        out["score"][i], out["p_value"][i], out["anomaly"][i] = obs.score, obs.p_value, obs.anomaly
        out["lower"][i], out["upper"][i] = obs.lower, obs.upper
    return out


def coverage(lower: np.ndarray, upper: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """The share of forecast steps whose truth fell inside the interval, per level.

    Args:
        lower, upper: ``(rows, levels, horizon, targets)`` bounds issued after each row (``replay``'s output).
        actual: ``(rows, targets)`` the rows' target values.

    Returns:
        ``(levels,)`` coverage over every row and horizon step whose truth is known (NaN bounds are left out).
    """
    rows, L, H, T = lower.shape
    hits = np.zeros(L)
    count = np.zeros(L)
    for h in range(H):
        if rows <= h + 1:
            break
        truth = actual[h + 1:][:, None, :]  # the row h + 1 after the forecast's
        lo, hi = lower[: rows - h - 1, :, h, :], upper[: rows - h - 1, :, h, :]
        ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(truth)
        hits += ((truth >= lo) & (truth <= hi) & ok).sum(axis=(0, 2))
        count += ok.sum(axis=(0, 2))
    return np.where(count > 0, hits / np.maximum(count, 1), np.nan)


def target_columns(metadata) -> list[int] | None:
    """Each target's column among the model's features, or None when a target is not a feature: a row then holds
    no value to score its forecasts against, and nothing to substitute or fill."""
    features = list(metadata.features)
    return [features.index(t) for t in metadata.targets] if set(metadata.targets) <= set(features) else None


def fill_forward(row, forecast, target_index, steps: int, step: Callable, advance: Callable | None = None):
    """Step a model over ``steps`` missing rows on its own forecasts: each row is ``row`` with the targets' columns
    set to the latest one-step forecast (the other features keep their values).

    Args:
        row, forecast: the last row fed and the ``(horizon, targets)`` forecast made from it.
        step: ``step(row) -> forecast`` of the model (its errors propagate: the rows stepped so far stay stepped).
        advance: called with each forecast (a monitor keeps it for the rows to come).

    Returns:
        The last row stepped and its forecast.
    """
    for _ in range(steps):
        row = np.array(row, dtype=np.float64, copy=True)
        row[target_index] = np.asarray(forecast)[0]
        forecast = step(row)
        if advance is not None:
            advance(forecast)
    return row, forecast


class StreamMonitor:
    """One stream's model and its ``ForecastMonitor``, stepped together: score the row, step the model on what the
    monitor says to feed it, attach the intervals to the forecast.

    Made by ``StatefulRunner.monitor()`` or ``StreamPool.monitor(key)``; not constructed directly.

    Attributes:
        monitor: the ``ForecastMonitor`` (its online corrections, ``theta`` and ``theta_scale``, are public).
    """

    def __init__(self, step: Callable, reset: Callable, monitor: ForecastMonitor, calendar: bool = False):
        self._step_model, self._reset_model = step, reset
        self.monitor = monitor
        self._calendar = calendar  # the model takes each row's time: step(x, time)
        self._last = None  # the last row fed (the base row of a gap fill)

    @property
    def options(self) -> MonitorOptions:
        return self.monitor.options

    def step(self, x, actual=None, time=None) -> Observation:
        """Score one raw row, step the model, and return the ``Observation`` with the forecast and its intervals.

        Args:
            x: the raw row.
            actual: the targets' values to score against (default: the row's target columns).
            time: the row's time, for a model with calendar inputs (as the model's ``step``).

        Raises:
            BadInputError, NonFiniteStepError, ConcurrentUseError: as the model's ``step``; the model and the monitor
                are then as they were before the call.
        """
        obs = self.monitor.observe(x, actual)  # changes nothing until push
        y = self._step_model(obs.fed, time) if self._calendar else self._step_model(obs.fed)
        self._last = obs.fed
        return self.monitor.push(obs, y)

    def fill(self, steps: int, times=None) -> int:
        """Advance over ``steps`` missing rows on the model's own one-step forecasts (the targets' columns take the
        forecast, the other features keep the last row's values); nothing is scored.

        Args:
            steps: the rows missing.
            times: for a model with calendar inputs, the missing rows' times (``steps`` of them).

        Returns:
            The rows filled: 0 when there is no forecast to fill with yet (warm-up, a reset) or a target is not
            a feature.

        Raises:
            BadInputError: a calendar model without ``steps`` times.
        """
        guess = self.monitor.one_step()
        if steps <= 0 or self._last is None or self.monitor._tidx is None or guess is None:
            return 0
        step = self._step_model
        if self._calendar:
            from .errors import BadInputError

            if times is None or len(times) != steps:
                raise BadInputError(
                    f"expected the times of the {steps} missing rows for a model with calendar inputs; received "
                    f"{'none' if times is None else len(times)}"
                )
            pending = iter(times)

            def step(row):
                return self._step_model(row, next(pending))
        self._last, _ = fill_forward(self._last, guess[None], self.monitor._tidx, steps, step,
                                     self.monitor.advance)
        return steps

    def reset(self) -> Event | None:
        """Zero the model's state and restart the monitor (warm-up again); returns the event this closed, if any."""
        self._reset_model()
        self.monitor.restart()
        self._last = None
        return self.monitor.close_event()


def calibration_for(metadata, key: str | None = None) -> ResidualCalibration | None:
    """The residual calibration of one stream in raw units: the model's own, or for a panel model its calibration
    times the target scale of ``key``'s scaler (the global scaler's for a key not in the panel)."""
    cal = metadata.residuals
    if cal is None or getattr(metadata, "panel", None) is None:
        return cal
    return cal.scaled(metadata.scaler_for(key)[0].target_scale)


def monitor_for(metadata, options: MonitorOptions | None = None, key: str | None = None) -> ForecastMonitor:
    """A ``ForecastMonitor`` for one stream of a model, from its metadata.

    Args:
        metadata: the model's ``ModelMetadata``.
        options: ``MonitorOptions`` (default: a 90% interval).
        key: the stream's series key (a panel model scales its calibration by that series' target scale).

    Raises:
        IncompatibleModelError: the model carries no residual calibration.
    """
    from .errors import IncompatibleModelError

    if metadata.residuals is None:
        raise IncompatibleModelError(
            "expected a model with a residual calibration (metadata 'residuals') for intervals and anomaly scores; "
            f"received format version {metadata.format_version} without one. Convert the model from its run folder "
            "with this statelite ('statelite train' then 'statelite convert RUN_DIR')."
        )
    return ForecastMonitor(calibration_for(metadata, key), target_columns(metadata), options or MonitorOptions(),
                           metadata.warmup_steps)
