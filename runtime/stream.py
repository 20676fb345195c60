"""``statelite run`` as a library: forecast a CSV stream row by row, carrying (and saving) the recurrent state.

Rows are read one line at a time as they arrive, so a sensor logger piped into ``statelite run`` gets each forecast as
soon as its row is written. Each output line is flushed. A bad row is reported with its line number and skipped
without touching the state; a saved state survives restarts, Ctrl-C, SIGTERM and a closed output pipe.

Output columns: ``[<time column>,]row,<target>_t+1,...,<target>_t+H`` for each target in turn, in raw units; ``row``
is the input line number (the header is line 1), the same number bad-row messages give. The output is written with
``csv``, so a time value holding a comma or a quote is quoted. The input's delimiter (comma, semicolon or tab) is
taken from its first line unless given.

Inputs outside the range the model was trained on (or beyond where an integer input clips) are counted by the
runner's range guard; each column and kind is reported once on stderr with its row, and a summary follows at the end
(``strict_range``: the first such row stops the run instead).

Many streams in one input (``stream_key``, ``--stream-key``): a column names the stream each row belongs to (a sensor
id), rows of different streams interleave, and each row steps only its own stream's state. With a batched model the
streams share one ``StreamPool`` (one lane each, taken on first sight); with a batch-1 model each stream gets its own
``StatefulRunner``. The key column follows ``row`` in the output. Each row is stepped (one ``invoke()``) and written as
it arrives, so per-row flushing is the same as for one stream.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import os
import sys
from collections.abc import Callable
from typing import TextIO

import numpy as np

from .errors import BadInputError
from .pool import StreamPool
from .ranges import RangeKind, RangeReport, describe, integer_input_type, summary_lines
from .runner import PREV_KEY, StatefulRunner

_REPORT_ALL = 100
_REPORT_EVERY = 1000
DELIMITERS = (",", ";", "\t")  # what the first line is searched for, in order of preference on a tie


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
        strict: raise ``BadInputError`` on the first bad row, or on the first stream that does not fit a full pool,
            instead of skipping it.
        stream_key: the header column that names each row's stream (many streams in one input; needs ``header``).
            Keys are the column's text, stripped: ``"7"`` and ``"07"`` are two streams.
        strict_range: raise ``BadInputError`` at the first row outside the training range (or clipped by an integer
            input), before it is stepped, instead of warning once and counting.
        delimiter: the input's field delimiter, one character (None: the most frequent of comma, semicolon and tab
            on the first line, comma on a tie or when there is none).
    """

    state_path: str | None = None
    save_every: int = 100
    reset_every: int | None = None
    header: bool = True
    strict: bool = False
    stream_key: str | None = None
    strict_range: bool = False
    delimiter: str | None = None

    def __post_init__(self):
        if self.save_every < 1:
            raise BadInputError(f"save_every must be at least 1; received save_every={self.save_every}.")
        if self.reset_every is not None and self.reset_every < 1:
            raise BadInputError(f"reset_every must be at least 1 (or None); received reset_every={self.reset_every}.")
        if self.stream_key is not None and not self.stream_key.strip():
            raise BadInputError(f"stream_key must name a column; received stream_key={self.stream_key!r}.")
        if self.stream_key is not None and not self.header:
            raise BadInputError(
                f"stream_key names a header column, so the input needs a header row; received "
                f"stream_key={self.stream_key!r} with header=False (--no-header)."
            )
        if self.delimiter is not None and (len(self.delimiter) != 1 or self.delimiter in "\"\r\n"):
            raise BadInputError(
                f"delimiter must be one character other than a quote or a line break (a tab: '\\t' or 'tab'); "
                f"received delimiter={self.delimiter!r}."
            )


@dataclasses.dataclass(frozen=True)
class StreamResult:
    """What one ``run_stream`` call did."""

    rows: int  # rows forecast
    skipped: int  # bad rows skipped
    saves: int  # state files written
    resumed: bool  # the state was loaded from state_path at start
    interrupted: bool  # stopped by KeyboardInterrupt (Ctrl-C, or SIGTERM turned into it by the CLI)
    output_closed: bool  # the reader of the output went away (e.g. ``| head``); stopped quietly
    streams: int = 1  # streams known at the end (loaded or seen); 1 without stream_key
    refused: int = 0  # rows skipped because their stream did not fit the full pool
    refused_streams: int = 0  # streams that did not fit
    # Rows outside the training range or clipped, every stream together (None: the model records no ranges).
    range_report: RangeReport | None = None


class _Columns:
    """Where the features (and the optional time column) sit in each input row."""

    def __init__(self, features, time_column, header: list[str] | None, source: str, key_column: str | None = None,
                 delimiter: str = ","):
        self.time_index = None
        self.key_index = None
        self.key_name = key_column
        self.delimiter = delimiter
        if header is None:
            self.width = len(features)
            self.feature_index = list(range(len(features)))
            self.feature_names = list(features)
            return
        names = [h.strip().lstrip("\ufeff") for h in header]  # a byte-order mark from spreadsheet exports
        missing = [f for f in features if f not in names]
        if missing:
            other = _other_delimiter(names, delimiter, lambda cells: all(f in cells for f in features))
            if other:
                hint = f" The header looks delimited by {_show(other)}, not {_show(delimiter)}: pass --delimiter "
                hint += f"{_show(other)}."
            else:
                hint = " Pass --no-header if the input has no header row."
            raise BadInputError(
                f"{source}: the header lacks the model's feature columns {missing}; expected columns "
                f"{list(features)}; received header {names}.{hint}"
            )
        if key_column is not None:
            if key_column not in names:
                raise BadInputError(
                    f"{source}: the header lacks the stream key column {key_column!r} (--stream-key); received header "
                    f"{names}."
                )
            if key_column in features:
                raise BadInputError(
                    f"{source}: the stream key column must not be one of the model's features {list(features)}; "
                    f"received --stream-key {key_column!r}."
                )
            self.key_index = names.index(key_column)
        self.width = len(names)
        self.feature_index = [names.index(f) for f in features]
        self.feature_names = list(features)
        if time_column is not None and time_column in names:
            self.time_index = names.index(time_column)

    def parse(self, fields: list[str]) -> tuple[np.ndarray, str | None, str | None]:
        """The feature row, time value and stream key of one input row, or ``ValueError`` saying what is wrong."""
        if len(fields) != self.width:
            other = _other_delimiter(fields, self.delimiter, lambda cells: len(cells) == self.width)
            hint = f" (the row looks delimited by {_show(other)}: pass --delimiter {_show(other)})" if other else ""
            raise ValueError(f"expected {self.width} columns, received {len(fields)}{hint}")
        key = None
        if self.key_index is not None:
            key = fields[self.key_index].strip()
            if not key:
                raise ValueError(f"column {self.key_name!r} (the stream key) is empty")
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
        return np.asarray(values, dtype=np.float64), time, key


def _show(delimiter: str) -> str:
    return "'\\t'" if delimiter == "\t" else repr(delimiter)


def _other_delimiter(cells: list[str], delimiter: str, fits) -> str | None:
    """Another usual delimiter that splits these cells (rejoined) into cells that ``fits`` accepts, when one does: the
    line was probably written with it."""
    line = delimiter.join(cells)
    for d in DELIMITERS:
        if d != delimiter and d in line and fits([c.strip() for c in line.split(d)]):
            return d
    return None


def detect_delimiter(line: str) -> str:
    """The most frequent of comma, semicolon and tab outside double quotes in ``line`` (comma on a tie or none)."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=counts.__getitem__)  # the first of equals: comma before semicolon before tab
    return best if counts[best] else ","


def _lines(source: TextIO):
    # readline, not iteration over a file: each row is handled as soon as its line arrives.
    while True:
        line = source.readline()
        if not line:
            return
        yield line


def _format(v: float) -> str:
    return format(float(v), ".10g")


def _stream_shapes(md) -> dict[str, tuple[int, ...]]:
    """One stream's state shapes, as ``StatefulRunner.state`` of a batch-1 model and ``StreamPool.state`` give them."""
    shapes = {s.name: (1,) + tuple(s.input.shape[1:]) for s in md.states}
    if md.difference:
        shapes[PREV_KEY] = (1, len(md.features))
    return shapes


class _OneStream:
    """The single-stream case: one runner, one state, the single-stream state file."""

    capacity = None

    def __init__(self, runner: StatefulRunner):
        self.runner = runner

    def __len__(self) -> int:
        return 1

    def guard(self, callback) -> None:
        """Count afresh, and call ``callback`` on the first out-of-range row of each column and kind."""
        self.runner.reset_range_counts()
        self.runner.on_out_of_range = callback

    def range_report(self) -> RangeReport | None:
        return self.runner.range_report

    def __contains__(self, key) -> bool:
        return True

    def step(self, key, x):
        return self.runner.step(x)

    def reset(self, key) -> None:
        self.runner.reset()

    def load(self, path) -> None:
        self.runner.load_state(path)

    def save(self, path) -> None:
        self.runner.save_state(path)


class _RunnerStreams:
    """Many streams on a batch-1 model: one ``StatefulRunner`` (one interpreter) per key. Fine for a few streams."""

    capacity = None

    def __init__(self, runner: StatefulRunner, new_runner: Callable[[], StatefulRunner] | None):
        self._spare: StatefulRunner | None = runner  # the caller's runner serves the first stream
        self._new = new_runner or (
            lambda: StatefulRunner(runner.path, backend=runner.backend, allow_nonfinite=runner.allow_nonfinite)
        )
        self.sha256 = runner.model_sha256
        self.shapes = _stream_shapes(runner.metadata)
        self.runners: dict[str, StatefulRunner] = {}
        self._callback = None

    def __len__(self) -> int:
        return len(self.runners)

    def guard(self, callback) -> None:
        self._callback = callback
        for r in [self._spare, *self.runners.values()]:
            if r is not None:
                r.reset_range_counts()
                r.on_out_of_range = callback

    def range_report(self) -> RangeReport | None:
        return RangeReport.combine(r.range_report for r in self.runners.values())

    def __contains__(self, key) -> bool:
        return key in self.runners

    def add(self, key) -> None:
        runner, self._spare = (self._spare, None) if self._spare is not None else (self._new(), None)
        runner.reset()
        if runner.on_out_of_range is not self._callback:  # a new runner
            runner.reset_range_counts()
            runner.on_out_of_range = self._callback
        self.runners[key] = runner

    def step(self, key, x):
        return self.runners[key].step(x)

    def reset(self, key) -> None:
        self.runners[key].reset()

    def load(self, path) -> None:
        from .state_file import load_pool_state

        for key, state in load_pool_state(path, self.sha256, self.shapes).items():
            self.add(key)
            self.runners[key].state = state

    def save(self, path) -> None:
        from .state_file import save_pool_state

        save_pool_state(path, {k: r.state for k, r in self.runners.items()}, self.sha256)


class _PoolStreams:
    """Many streams on a batched model: one lane of a ``StreamPool`` each."""

    def __init__(self, pool: StreamPool):
        self.pool = pool
        self.capacity = pool.capacity
        self.sha256 = pool.model_sha256
        self.shapes = _stream_shapes(pool.metadata)

    def __len__(self) -> int:
        return len(self.pool)

    def guard(self, callback) -> None:
        self.pool.reset_range_counts()
        self.pool.on_out_of_range = callback

    def range_report(self) -> RangeReport | None:
        return self.pool.range_report

    def __contains__(self, key) -> bool:
        return key in self.pool

    def add(self, key) -> None:
        self.pool.add(key)

    def step(self, key, x):
        return self.pool.step({key: x})[key]

    def reset(self, key) -> None:
        self.pool.reset(key)

    def load(self, path) -> None:
        from .errors import StateFileError
        from .state_file import load_pool_state

        states = load_pool_state(path, self.sha256, self.shapes)
        if len(states) > self.capacity:
            raise StateFileError(
                f"{path} holds {len(states)} streams; this model's pool holds at most {self.capacity} (its batch). "
                f"Use the model it was saved with, or pass another --state file."
            )
        # Keys are added in the saved order, so each stream gets the lane it had.
        for key, state in states.items():
            self.pool.add(key)
            self.pool.set_state(key, state)

    def save(self, path) -> None:
        from .state_file import save_pool_state

        save_pool_state(path, {k: self.pool.state(k) for k in self.pool.keys}, self.sha256)


def run_stream(
    runner: StatefulRunner | StreamPool,
    source: TextIO,
    sink: TextIO,
    config: StreamConfig = StreamConfig(),
    errors: TextIO | None = None,
    source_name: str = "input",
    new_runner: Callable[[], StatefulRunner] | None = None,
) -> StreamResult:
    """Forecast every row of a CSV stream and write one CSV line per row, flushing each.

    Args:
        runner: the model. A ``StatefulRunner`` of a batch-1 model runs one stream, or with ``config.stream_key`` one
            stream per key (this runner serves the first key, ``new_runner`` makes the others). A ``StreamPool``
            runs one stream per key in its lanes (needs ``config.stream_key``). The state is loaded from, and saved
            to, ``config.state_path``: one stream's state, or with ``stream_key`` every stream's, with its key.
        source: a text stream of CSV lines (a file, or ``sys.stdin``).
        sink: where the output CSV goes.
        config: the stream options.
        errors: where bad-row messages go (default ``sys.stderr``).
        source_name: the input's name in messages.
        new_runner: makes the runner of each further stream with ``stream_key`` and a batch-1 model (default: one
            like ``runner``, with the interpreter's default threads).

    Returns:
        A ``StreamResult``. Ctrl-C and a closed output end the stream normally (state saved) and are reported there.
        When a pool is full, a new stream's rows are skipped and reported (counted in ``refused``). Its
        ``range_report`` counts this call's rows outside the training range or clipped (the runners' range counts
        are reset at the start, and their ``on_out_of_range`` is set during the call and restored after it).

    Raises:
        BadInputError: the header lacks a feature or key column, a batched runner or a pool without
            ``stream_key``, or (with ``strict``) a bad row or a stream that does not fit the full pool, or (with
            ``strict_range``) a row outside the training range or clipped; the state is saved as it was before it.
        StateFileError: the state file is corrupt, belongs to another model, or holds one stream where many are
            expected (or the reverse); it is never overwritten then.
    """
    errors = errors if errors is not None else sys.stderr
    keyed = config.stream_key is not None
    if isinstance(runner, StreamPool):
        if not keyed:
            raise BadInputError(
                "a StreamPool runs many streams: set stream_key (--stream-key COL) to the column that names each "
                "row's stream; received stream_key=None."
            )
        streams = _PoolStreams(runner)
    elif runner.batch != 1:
        raise BadInputError(
            f"statelite run streams one series per batch-1 model; this model was converted with batch "
            f"{runner.batch}. Pass --stream-key COL to run one stream per lane (stream_key with a StreamPool), or "
            f"convert it with --batch 1."
        )
    else:
        streams = _RunnerStreams(runner, new_runner) if keyed else _OneStream(runner)
    md = runner.metadata
    resumed = False
    if config.state_path is not None and os.path.exists(config.state_path):
        streams.load(config.state_path)
        resumed = True

    rows = skipped = saves = unsaved = refused = 0
    line, key = 0, None
    since_reset: dict = {}
    refused_keys: set = set()
    interrupted = output_closed = False
    horizon_names = [f"{t}_t+{h}" for t in md.targets for h in range(1, md.horizon + 1)]
    key_head = [config.stream_key] if keyed else []
    columns: _Columns | None = None
    writer = csv.writer(sink, lineterminator="\n")  # quotes a time value holding a comma or a quote

    def write_header(time_head: list[str]) -> None:
        writer.writerow(time_head + ["row"] + key_head + horizon_names)
        sink.flush()

    basis = md.input_range.basis if md.input_range is not None else ("difference" if md.difference else "value")
    input_type = integer_input_type(md)
    first_seen: dict = {}  # (column, kind) -> where it was first seen, for the summary

    def out_of_range(column: str, kind: RangeKind, step: int, value: float, lo: float, hi: float) -> None:
        # Called by the runner before the row reaches the interpreter: raising refuses the row, state untouched.
        text = describe(basis, column, kind, value, lo, hi, input_type)
        if config.strict_range:
            raise BadInputError(
                f"{source_name} line {line}: {text} (--strict-range stops at the first out-of-range row; the state "
                f"is kept from before it)."
            )
        if (column, kind) in first_seen:  # another stream's runner: warned already
            return
        where = f"row {line}" + (f" (stream {key!r})" if keyed else "")
        first_seen[(column, kind)] = where
        errors.write(f"statelite: {where}: {text}; forecasts may be unreliable (counted; summary at exit)\n")
        errors.flush()

    previous_callbacks = [(runner, runner.on_out_of_range)]  # the caller's; runners made here are dropped at the end
    streams.guard(out_of_range)

    def save() -> None:
        nonlocal saves, unsaved
        if config.state_path is not None and unsaved:
            streams.save(config.state_path)
            saves += 1
            unsaved = 0

    def report(message: str, count: int) -> None:
        # A broken sensor must not flood the log: every case up to 100, then every 1000th.
        if count <= _REPORT_ALL or count % _REPORT_EVERY == 0:
            errors.write(message + "\n")
            if count == _REPORT_ALL:
                errors.write(f"{source_name}: from now on only every {_REPORT_EVERY}th such case is reported.\n")
            errors.flush()

    try:
        lines = _lines(source)
        delimiter = config.delimiter
        if delimiter is None:
            head = []  # up to the first non-blank line, which names the delimiter; then read again from the start
            for text in lines:
                head.append(text)
                if text.strip():
                    break
            delimiter = detect_delimiter(head[-1]) if head else ","
            lines = itertools.chain(head, lines)
        reader = csv.reader(lines, delimiter=delimiter)
        if not config.header:
            columns = _Columns(md.features, None, None, source_name, delimiter=delimiter)
            write_header([])
        seen = False
        try:
            for fields in reader:
                line = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line
                seen = True
                if columns is None:
                    columns = _Columns(md.features, md.time_column, fields, source_name, config.stream_key, delimiter)
                    write_header([md.time_column] if columns.time_index is not None else [])
                    continue
                try:
                    x, time, key = columns.parse(fields)
                except ValueError as exc:
                    message = f"{source_name} line {line}: {exc}"
                    if config.strict:
                        raise BadInputError(message + " (--strict stops at the first bad row).") from None
                    skipped += 1
                    report(f"{message}; row skipped, state unchanged ({skipped} so far).", skipped)
                    continue
                if key not in streams:
                    if key in refused_keys:
                        refused += 1
                        continue
                    if streams.capacity is not None and len(streams) >= streams.capacity:
                        message = (
                            f"{source_name} line {line}: stream {key!r} does not fit: the pool is full with "
                            f"{streams.capacity} streams (the model's batch)"
                        )
                        if config.strict:
                            raise BadInputError(
                                message + ". Convert the model with a larger --batch, or split the input by stream "
                                "(--strict stops at the first stream that does not fit)."
                            )
                        refused += 1
                        refused_keys.add(key)
                        report(
                            message + "; its rows are skipped (convert with a larger --batch to run it).",
                            len(refused_keys),
                        )
                        continue
                    streams.add(key)
                if config.reset_every is not None and since_reset.get(key, 0) == config.reset_every:
                    streams.reset(key)
                    since_reset[key] = 0
                y = streams.step(key, x)
                rows += 1
                since_reset[key] = since_reset.get(key, 0) + 1
                unsaved += 1
                # Transposed so each target's horizon is contiguous, as the header names them.
                out = [_format(v) for v in np.asarray(y).T.reshape(-1)]
                lead = ([time] if time is not None else []) + [str(line)] + ([key] if keyed else [])
                writer.writerow(lead + out)
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
        for r, callback in previous_callbacks:
            r.on_out_of_range = callback
    range_report = streams.range_report()
    summary = summary_lines(range_report, input_type, first_seen)
    for text in summary:
        errors.write(f"statelite: {text}\n")
    if summary:
        errors.flush()
    return StreamResult(
        rows, skipped, saves, resumed, interrupted, output_closed, len(streams), refused, len(refused_keys),
        range_report,
    )
