"""``statelite run`` as a library: forecast a CSV stream row by row, carrying (and saving) the recurrent state.

Rows are read one line at a time as they arrive, so a sensor logger piped into ``statelite run`` gets each forecast as
soon as its row is written. Each output line is flushed. A bad row is reported with its line number and skipped
without touching the state; a saved state survives restarts, Ctrl-C, SIGTERM and a closed output pipe.

Output columns: ``[<time column>,]row,<target>_t+1,...,<target>_t+H`` for each target in turn, in raw units; ``row``
is the input line number (the header is line 1), the same number bad-row messages give.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
from typing import TextIO

import numpy as np

from .errors import BadInputError
from .runner import StatefulRunner

_REPORT_ALL = 100
_REPORT_EVERY = 1000


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """How ``run_stream`` reads its input and keeps its state.

    Attributes:
        state_path: load the state from this file at start when it exists; save it every ``save_every`` steps and
            at the end.
        save_every: steps between saves (with ``state_path``).
        reset_every: reset the state to zero after every this many steps (None: never).
        header: the input's first line names its columns; features are picked by name. Without it every row holds
            exactly the model's features, in the metadata's order.
        strict: raise ``BadInputError`` on the first bad row instead of skipping it.
    """

    state_path: str | None = None
    save_every: int = 100
    reset_every: int | None = None
    header: bool = True
    strict: bool = False

    def __post_init__(self):
        if self.save_every < 1:
            raise BadInputError(f"save_every must be at least 1; received save_every={self.save_every}.")
        if self.reset_every is not None and self.reset_every < 1:
            raise BadInputError(f"reset_every must be at least 1 (or None); received reset_every={self.reset_every}.")


@dataclasses.dataclass(frozen=True)
class StreamResult:
    """What one ``run_stream`` call did."""

    rows: int  # rows forecast
    skipped: int  # bad rows skipped
    saves: int  # state files written
    resumed: bool  # the state was loaded from state_path at start
    interrupted: bool  # stopped by KeyboardInterrupt (Ctrl-C, or SIGTERM turned into it by the CLI)
    output_closed: bool  # the reader of the output went away (e.g. ``| head``); stopped quietly


class _Columns:
    """Where the features (and the optional time column) sit in each input row."""

    def __init__(self, features, time_column, header: list[str] | None, source: str):
        self.time_index = None
        if header is None:
            self.width = len(features)
            self.feature_index = list(range(len(features)))
            self.feature_names = list(features)
            return
        names = [h.strip().lstrip("\ufeff") for h in header]  # a byte-order mark from spreadsheet exports
        missing = [f for f in features if f not in names]
        if missing:
            raise BadInputError(
                f"{source}: the header lacks the model's feature columns {missing}; expected columns "
                f"{list(features)}; received header {names}. Pass --no-header if the input has no header row."
            )
        self.width = len(names)
        self.feature_index = [names.index(f) for f in features]
        self.feature_names = list(features)
        if time_column is not None and time_column in names:
            self.time_index = names.index(time_column)

    def parse(self, fields: list[str]) -> tuple[np.ndarray, str | None]:
        """The feature row and time value of one input row, or ``ValueError`` saying what is wrong with it."""
        if len(fields) != self.width:
            raise ValueError(f"expected {self.width} columns, received {len(fields)}")
        values = []
        for name, i in zip(self.feature_names, self.feature_index):
            text = fields[i].strip()
            if not text:
                raise ValueError(f"column {name!r} is empty")
            try:
                v = float(text)
            except ValueError:
                raise ValueError(f"column {name!r} is {text[:40]!r}, not a number") from None
            if not math.isfinite(v):
                raise ValueError(f"column {name!r} is {text!r}; every value must be finite")
            values.append(v)
        time = fields[self.time_index] if self.time_index is not None else None
        return np.asarray(values, dtype=np.float64), time


def _lines(source: TextIO):
    # readline, not iteration over a file: each row is handled as soon as its line arrives.
    while True:
        line = source.readline()
        if not line:
            return
        yield line


def _format(v: float) -> str:
    return format(float(v), ".10g")


def run_stream(
    runner: StatefulRunner,
    source: TextIO,
    sink: TextIO,
    config: StreamConfig = StreamConfig(),
    errors: TextIO | None = None,
    source_name: str = "input",
) -> StreamResult:
    """Forecast every row of a CSV stream and write one CSV line per row, flushing each.

    Args:
        runner: the model; its state is loaded from, and saved to, ``config.state_path``.
        source: a text stream of CSV lines (a file, or ``sys.stdin``).
        sink: where the output CSV goes.
        config: the stream options.
        errors: where bad-row messages go (default ``sys.stderr``).
        source_name: the input's name in messages.

    Returns:
        A ``StreamResult``. Ctrl-C and a closed output end the stream normally (state saved) and are reported there.

    Raises:
        BadInputError: the header lacks a feature column, a batched model, or (with ``strict``) a bad row.
        StateFileError: the state file is corrupt or belongs to another model (it is never overwritten then).
    """
    errors = errors if errors is not None else sys.stderr
    md = runner.metadata
    if runner.batch != 1:
        raise BadInputError(
            f"statelite run streams one series; this model was converted with batch {runner.batch}. Convert it with "
            f"--batch 1, or step the batch from Python with StatefulRunner."
        )
    resumed = False
    if config.state_path is not None and os.path.exists(config.state_path):
        runner.load_state(config.state_path)
        resumed = True

    rows = skipped = saves = since_reset = unsaved = 0
    interrupted = output_closed = False
    reader = csv.reader(_lines(source))
    horizon_names = [f"{t}_t+{h}" for t in md.targets for h in range(1, md.horizon + 1)]
    columns: _Columns | None = None

    def write_header(time_head: list[str]) -> None:
        sink.write(",".join(time_head + ["row"] + horizon_names) + "\n")
        sink.flush()

    def save() -> None:
        nonlocal saves, unsaved
        if config.state_path is not None and unsaved:
            runner.save_state(config.state_path)
            saves += 1
            unsaved = 0

    try:
        if not config.header:
            columns = _Columns(md.features, None, None, source_name)
            write_header([])
        seen = False
        try:
            for fields in reader:
                line = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line
                seen = True
                if columns is None:
                    columns = _Columns(md.features, md.time_column, fields, source_name)
                    write_header([md.time_column] if columns.time_index is not None else [])
                    continue
                try:
                    x, time = columns.parse(fields)
                except ValueError as exc:
                    message = f"{source_name} line {line}: {exc}"
                    if config.strict:
                        raise BadInputError(message + " (--strict stops at the first bad row).") from None
                    skipped += 1
                    # A broken sensor must not flood the log: every bad row up to 100, then every 1000th.
                    if skipped <= _REPORT_ALL or skipped % _REPORT_EVERY == 0:
                        errors.write(f"{message}; row skipped, state unchanged ({skipped} so far).\n")
                        if skipped == _REPORT_ALL:
                            errors.write(f"{source_name}: from now on only every {_REPORT_EVERY}th bad row is reported.\n")
                        errors.flush()
                    continue
                if config.reset_every is not None and since_reset == config.reset_every:
                    runner.reset()
                    since_reset = 0
                y = runner.step(x)
                rows += 1
                since_reset += 1
                unsaved += 1
                # Transposed so each target's horizon is contiguous, as the header names them.
                out = [_format(v) for v in np.asarray(y).T.reshape(-1)]
                sink.write(",".join(([time] if time is not None else []) + [str(line)] + out) + "\n")
                sink.flush()
                if rows % config.save_every == 0:
                    save()
        except csv.Error as exc:
            raise BadInputError(f"{source_name} line {reader.line_num}: not readable as CSV ({exc}).") from None
        if not seen:
            if columns is None:
                write_header([])  # still a valid, empty output table
            errors.write(f"{source_name} is empty: no rows to forecast.\n")
            errors.flush()
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        output_closed = True
    finally:
        save()
    return StreamResult(rows, skipped, saves, resumed, interrupted, output_closed)
