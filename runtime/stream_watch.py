"""What ``statelite run`` adds to each row beyond the forecast: intervals, anomaly scores and events, and gaps.

``run_stream`` owns reading and writing the CSV; this module owns, per stream key, the ``ForecastMonitor``
(``--intervals``, ``--anomaly``, ``--substitute``), the open anomaly event and the ``--alerts`` file it goes to, and
the ``GapTracker`` of the time column with its policy (``--gaps``). ``StreamWatch`` is called at four points of the
row loop: ``before`` (gaps, then the monitor's decision about what the model is fed), ``after`` (the forecast's
intervals and the row's score), ``reset`` and ``finish``.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import datetime, timezone
from collections.abc import Callable
from typing import TextIO

import numpy as np

from .errors import BadInputError
from .monitor import ForecastMonitor, MonitorOptions, Observation, fill_forward, monitor_for, target_columns
from .options import GapPolicy
from .state_file import MONITOR_PREFIX
from .timecol import GapKind, GapTracker, Sampling, TimeKind

# A gap longer than this many missing rows is not filled (stepping the model that long on its own forecasts says
# nothing about the next real row): the stream is reset instead, as with --gaps reset.
DEFAULT_MAX_FILL = 100


def interval_names(targets, horizon: int, levels) -> list[str]:
    """The interval columns: ``<target>_t+k_lo``/``_hi`` for one level, ``..._lo90``/``_hi90`` for several."""
    names = []
    for level in levels:
        tag = "" if len(levels) == 1 else f"{level * 100:g}".replace(".", "_")
        for side in ("lo", "hi"):
            names += [f"{t}_t+{h}_{side}{tag}" for t in targets for h in range(1, horizon + 1)]
    return names


class _Event:
    __slots__ = ("start_line", "start_time", "end_line", "end_time", "rows", "peak", "peak_line", "peak_time")

    def __init__(self, line, time, score):
        self.start_line = self.end_line = self.peak_line = line
        self.start_time = self.end_time = self.peak_time = time
        self.rows, self.peak = 1, score

    def extend(self, line, time, score) -> None:
        self.end_line, self.end_time, self.rows = line, time, self.rows + 1
        if score > self.peak:
            self.peak, self.peak_line, self.peak_time = score, line, time


class StreamWatch:
    """Per-key monitors, events and gap trackers of one ``run_stream`` call.

    Args:
        md: the model's metadata.
        options: the monitor's options, or None for no monitor (gaps only).
        anomaly: write the ``score`` and ``anomaly`` columns.
        gaps: the gap policy; gaps are tracked when the model records its sampling and the input has its time
            column (``uses_time``).
        max_fill: the longest gap ``fill`` fills; a longer one resets the stream.
        alerts: where one JSON line per anomaly event goes (None: nowhere).
        report: ``report(message, count)`` writes a rate-limited line on stderr.
        warn: ``warn(text)`` writes one ``statelite: text`` line on stderr.
        source_name: the input's name in messages.

    Raises:
        IncompatibleModelError: a monitor is asked of a model without a residual calibration.
        BadInputError: a monitor is asked of a model whose targets are not among its features (a row holds no value
            to score).
    """

    def __init__(self, md, options: MonitorOptions | None, anomaly: bool, gaps: GapPolicy, max_fill: int,
                 alerts: TextIO | None, report: Callable[[str, int], None], source_name: str,
                 warn: Callable[[str], None] | None = None):
        self.md = md
        self.options = options
        self.anomaly = anomaly
        self.policy = GapPolicy(gaps)
        self.max_fill = max_fill
        self.alerts = alerts
        self._report = report
        self._warn = warn or (lambda message: report(message, 1))
        self.source_name = source_name
        self.tidx = target_columns(md)
        if options is not None:
            monitor_for(md, options)  # refuse now, before any row, when the model has no calibration
            if self.tidx is None:
                raise BadInputError(
                    f"expected the model's targets {list(md.targets)} among its features {list(md.features)} to score rows "
                    f"and adapt intervals (each row must hold the value the forecasts are compared with); received a "
                    f"model whose targets are not inputs. Run it without --intervals/--anomaly/--substitute."
                )
        self.sampling = Sampling.from_dict(md.sampling) if md.sampling else None
        self.uses_time = False  # set by run_stream once the header shows the time column
        self.default_key = None  # the series of the stream without a key (a panel model's runner made with a key)
        self.monitors: dict = {}
        self.trackers: dict = {}
        self.last: dict = {}  # key -> (fed row, forecast) of the last step, the base of a gap fill
        self.last_time: dict = {}
        self.events: dict = {}
        self._undo = None  # what before() did to the current row's stream, until the model accepts the row
        self.counts = {"anomalies": 0, "events": 0, "gaps": 0, "filled": 0, "disorder": 0, "substituted": 0,
                       "bad_times": 0}

    # -- columns ---------------------------------------------------------------------------------------------------

    def columns(self) -> list[str]:
        names = []
        if self.options is not None and self.options.levels:
            names += interval_names(self.md.targets, self.md.horizon, self.options.levels)
        if self.anomaly:
            names += ["score", "anomaly"]
        return names

    def _monitor(self, key) -> ForecastMonitor | None:
        if self.options is None:
            return None
        mon = self.monitors.get(key)
        if mon is None:
            # A panel model's calibration is in each series' target scale: its monitor is in the key's own units.
            mon = self.monitors[key] = monitor_for(self.md, self.options,
                                                   key=self.default_key if key is None else key)
        return mon

    # -- the state file -------------------------------------------------------------------------------------------

    @property
    def saves_anything(self) -> bool:
        """Whether the state file carries this watch's state: a monitor, or a gap tracker (a model with sampling)."""
        return self.options is not None or self.sampling is not None

    def export(self, keys) -> dict | None:
        """Every stream's monitor and gap tracker for the state file (``{key: {name: array}}``), or None when there
        is neither. A stream loaded but not stepped yet gets its monitor now, so every key is saved with one."""
        if not self.saves_anything:
            return None
        out = {}
        for key in keys:
            arrays = {}
            if self.options is not None:
                arrays.update({MONITOR_PREFIX + n: a for n, a in self._monitor(key).export().items()})
            if self.sampling is not None:
                arrays.update(self._export_gaps(key))
            out[key] = arrays
        return out

    def _export_gaps(self, key) -> dict:
        """The gap tracker's last time and the last row and forecast a gap is filled from (zeros with a 0 flag
        when unknown: a state file holds no NaN)."""
        md = self.md
        tracker = self.trackers.get(key)
        last = None if tracker is None else tracker.last
        base = self.last.get(key)
        return {
            "gaps.time": np.array([0.0 if last is None else last, 0.0 if last is None else 1.0]),
            "gaps.row": np.zeros(len(md.features)) if base is None else np.asarray(base[0], np.float64).ravel(),
            "gaps.forecast": (np.zeros(md.horizon * len(md.targets)) if base is None
                              else np.asarray(base[1], np.float64).ravel()),
            "gaps.has_row": np.array([0.0 if base is None else 1.0]),
        }

    def restore(self, saved: dict) -> None:
        """Take back what a state file held (``load_extras``): each stream's monitor and gap tracker, so a restart
        goes on scoring, adapting and checking gaps where it stopped. A stream whose saved monitor does not fit
        (other levels, or none saved) starts from the calibration, and says so once."""
        if self.sampling is not None:
            for key, arrays in saved.items():
                self._restore_gaps(key, arrays)
        if self.options is None:
            return
        fitted = 0
        for key, arrays in saved.items():
            monitor = {n[len(MONITOR_PREFIX):]: a for n, a in arrays.items() if n.startswith(MONITOR_PREFIX)}
            if monitor and self._monitor(key).restore(monitor):
                fitted += 1
            else:
                self.monitors.pop(key, None)
        if fitted < len(saved) or not saved:
            self._warn(
                "the state file holds no monitor state for these options (saved without --intervals/--anomaly, or "
                "with other --intervals levels): intervals and scores start from the model's calibration"
                if fitted == 0 else f"{len(saved) - fitted} streams' monitor states do not fit these options: they "
                                    f"start from the model's calibration"
            )

    def _restore_gaps(self, key, arrays: dict) -> None:
        md = self.md
        shapes = {"gaps.time": (2,), "gaps.row": (len(md.features),),
                  "gaps.forecast": (md.horizon * len(md.targets),), "gaps.has_row": (1,)}
        if any(n not in arrays or np.shape(arrays[n]) != shape for n, shape in shapes.items()):
            return  # saved without a time column, or by another model layout: gaps are checked from the next row
        value, known = (float(v) for v in arrays["gaps.time"])
        if known > 0.5:
            tracker = self.trackers[key] = GapTracker(self.sampling, column=md.time_column or "time")
            tracker.restore(value)
            self.last_time[key] = self._show_time(value)
        if float(arrays["gaps.has_row"][0]) > 0.5:
            self.last[key] = (np.asarray(arrays["gaps.row"], np.float64),
                              np.asarray(arrays["gaps.forecast"], np.float64).reshape(md.horizon, len(md.targets)))

    def _show_time(self, value: float) -> str:
        """A restored time, for messages (the cell's text was not saved)."""
        if self.sampling.kind is TimeKind.DATETIME:
            try:
                return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            except (OverflowError, OSError, ValueError):
                pass
        return format(value, "g")

    # -- the row loop ----------------------------------------------------------------------------------------------

    def before(self, key, x: np.ndarray, time: str | None, line: int, step: Callable, reset: Callable,
               snapshot: Callable | None = None, restore: Callable | None = None):
        """Handle the time column, then score the row. Returns ``(row to feed the model, Observation or None)``.

        If the model then refuses the row, call ``undo``: the row is then missing, like a row that cannot be read,
        and the next row's gap check covers its time too.

        Args:
            step: ``step(x, time=None) -> forecast`` of this key's model (a gap fill steps it; a calendar model's
                filled rows get their times from the sampling, counted back from this row's).
            reset: zero this key's model state.
            snapshot, restore: get and set this key's model state (to undo a gap's fill or reset).

        A time cell that cannot be read is reported (rate-limited) and the row is forecast without a gap check.
        """
        if self.uses_time and self.sampling is not None and time is not None:
            tracker = self.trackers.get(key)
            if tracker is None:
                tracker = self.trackers[key] = GapTracker(self.sampling, column=self.md.time_column or "time")
            where = f"{self.source_name} line {line}" + (f" (stream {key!r})" if key is not None else "")
            self._undo = (key, tracker.state(), self.last_time.get(key), None)
            try:
                found = tracker.observe(time)
            except BadInputError as exc:  # the value may be fine: forecast the row, without a gap check
                self.counts["bad_times"] += 1
                if self.counts["bad_times"] == 1:  # once: a column of labels would repeat it on every row
                    self._warn(f"{where}: {str(exc).rstrip('.')}; rows whose time cannot be read are forecast "
                               f"without a gap check (counted; summary at exit)")
                found = None
            if found is None:
                pass
            elif found.kind is GapKind.GAP:
                if snapshot is not None and restore is not None:  # the gap changes the state: keep a way back
                    mon = self.monitors.get(key)
                    saved = (snapshot(), restore, None if mon is None else copy.deepcopy(mon), self.last.get(key))
                    self._undo = self._undo[:3] + (saved,)
                self._gap(key, found.missing, time, where, step, reset, line)
            elif found.kind in (GapKind.BACKWARDS, GapKind.REPEAT):
                self.counts["disorder"] += 1
                what = "goes backwards" if found.kind is GapKind.BACKWARDS else "repeats"
                self._report(
                    f"{where}: the time {what}: {time.strip()} after {self.last_time.get(key)}; the row is "
                    f"forecast as it comes ({self.counts['disorder']} such rows so far).", self.counts["disorder"]
                )
            if found is not None and found.kind is not GapKind.BACKWARDS and found.kind is not GapKind.REPEAT:
                self.last_time[key] = time.strip()
        mon = self._monitor(key)
        if mon is None:
            return x, None
        obs = mon.observe(x)
        return obs.fed, obs

    def undo(self) -> None:
        """Take back what ``before`` did for a row the model then refused: its time, and its gap's fill or reset."""
        record, self._undo = self._undo, None
        if record is None:
            return
        key, last, last_time, saved = record
        self.trackers[key].restore(last)
        if last_time is None:
            self.last_time.pop(key, None)
        else:
            self.last_time[key] = last_time
        if saved is not None:
            state, restore, mon, base = saved
            restore(state)
            if mon is not None:
                self.monitors[key] = mon
            if base is None:
                self.last.pop(key, None)
            else:
                self.last[key] = base

    def _gap(self, key, missing: int, time: str, where: str, step, reset, line: int) -> None:
        self.counts["gaps"] += 1
        previous = self.last_time.get(key)
        between = f"{missing} missing row{'s' * (missing != 1)} between {previous} and {time.strip()} " \
                  f"({self.sampling.describe()})"
        if self.policy is GapPolicy.IGNORE:
            action = "ignored (--gaps ignore)"
        elif self.policy is GapPolicy.FILL and missing <= self.max_fill and self._fill(key, missing, step, time):
            self.counts["filled"] += missing
            action = "filled with the model's own forecasts"
        else:
            why = "" if self.policy is GapPolicy.RESET else (
                f" (longer than --max-fill {self.max_fill})" if missing > self.max_fill else " (nothing to fill from)")
            self.reset(key, reset)
            action = f"state reset{why}; forecasts warm up again"
        self._report(f"{where}: gap: {between}; {action} (gap {self.counts['gaps']}).", self.counts["gaps"])

    def _fill(self, key, missing: int, step, time: str | None = None) -> bool:
        last = self.last.get(key)
        if last is None or self.tidx is None:
            return False
        if self.md.calendar:
            # The missing rows' times, one period apart before this row's: what their calendar inputs would have
            # been had they arrived.
            from .calendar import wall_seconds

            try:
                now = wall_seconds(time, self.md.time_column or "time")
            except BadInputError:
                return False
            period = self.sampling.period
            times = iter([now - (missing + 1 - k) * period for k in range(1, missing + 1)])
            step_model = step

            def step(row):
                return step_model(row, next(times))
        mon = self.monitors.get(key)
        try:
            self.last[key] = fill_forward(*last, self.tidx, missing, step, None if mon is None else mon.advance)
        except BadInputError:  # the model's own forecast left its input range: stop; the gap then resets
            return False
        return True

    def after(self, key, fed: np.ndarray, y: np.ndarray, obs: Observation | None, line: int,
              time: str | None) -> list[float | str]:
        """Record the step; returns the extra output cells (interval bounds, score, anomaly flag)."""
        self._undo = None
        self.last[key] = (fed, y)
        if obs is None:
            return []
        mon = self.monitors[key]
        mon.push(obs, y)
        cells: list = []
        if self.options.levels:
            # (levels, horizon, targets) -> per level: every target's horizon, lower bounds then upper bounds
            for lo, hi in zip(obs.lower, obs.upper):
                cells += lo.T.reshape(-1).tolist() + hi.T.reshape(-1).tolist()
        if obs.substituted:
            self.counts["substituted"] += 1
        if obs.anomaly:
            self.counts["anomalies"] += 1
            event = self.events.get(key)
            if event is None:
                self.events[key] = _Event(line, time, obs.score)
            else:
                event.extend(line, time, obs.score)
        elif not math.isnan(obs.score):
            self._close(key)
        if self.anomaly:
            cells += ["" if math.isnan(obs.score) else round(obs.score, 3), int(obs.anomaly)]
        return cells

    def reset(self, key, reset: Callable) -> None:
        """Zero the key's state and restart its monitor (warm-up again); an open event ends."""
        reset()
        self._close(key)
        mon = self.monitors.get(key)
        if mon is not None:
            mon.restart()
            mon.close_event()
        self.last.pop(key, None)

    def _close(self, key) -> None:
        event = self.events.pop(key, None)
        if event is None:
            return
        self.counts["events"] += 1
        if self.alerts is not None:
            record = {
                "stream": key,
                "start": event.start_time if event.start_time is not None else event.start_line,
                "end": event.end_time if event.end_time is not None else event.end_line,
                "start_row": event.start_line,
                "end_row": event.end_line,
                "rows": event.rows,
                "peak_score": round(event.peak, 3),
                "peak": event.peak_time if event.peak_time is not None else event.peak_line,
            }
            self.alerts.write(json.dumps(record) + "\n")
            self.alerts.flush()

    def finish(self) -> list[str]:
        """End the open events; the summary lines for stderr."""
        for key in list(self.events):
            self._close(key)
        c = self.counts
        lines = []
        if self.anomaly or (self.options is not None and self.options.substitute):
            lines.append(
                f"{c['anomalies']} anomalous row{'s' * (c['anomalies'] != 1)} in {c['events']} "
                f"event{'s' * (c['events'] != 1)}" + (f"; {c['substituted']} fed the model's forecast instead "
                                                      f"(--substitute)" if c["substituted"] else "")
            )
        if c["bad_times"]:
            lines.append(f"{c['bad_times']} row{'s' * (c['bad_times'] != 1)} with a time that cannot be read: "
                         f"forecast without a gap check")
        if c["gaps"] or c["disorder"]:
            lines.append(
                f"{c['gaps']} gap{'s' * (c['gaps'] != 1)} in the time column ({c['filled']} rows filled), "
                f"{c['disorder']} row{'s' * (c['disorder'] != 1)} out of order or repeated"
            )
        return lines
