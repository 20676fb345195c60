"""``statelite run`` as a library: forecast a CSV stream row by row, carrying (and saving) the recurrent state.

Rows are read one line at a time as they arrive, so a sensor logger piped into ``statelite run`` gets each forecast as
soon as its row is written. Each output line is flushed. The input is bytes, and each line is one CSV record on its
own (``read_lines``): a line that is too long, binary or not UTF-8, a broken quote, a value that is not a plain
decimal number (``parse_number``) or a row the runner refuses is a bad row, reported with its line number and skipped
without touching the state. A saved state survives restarts, Ctrl-C, SIGTERM and a closed output pipe, and is never
saved when it is not finite.

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

A panel model (metadata ``panel``) under ``stream_key`` scales each stream's rows with its key's scaler; a key that
was not in the training panel gets the global scaler, and one line on the errors stream says so. A model with
calendar inputs computes them from each row's time cell (the time column must be in the header): a row whose time
cannot be read is a bad row.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import os
import re
import sys
from collections.abc import Callable
from typing import BinaryIO, TextIO

import numpy as np

from .errors import BadInputError, StateliteError
from .monitor import DEFAULT_THRESHOLD, MonitorOptions
from .options import GapPolicy
from .pool import StreamPool
from .ranges import RangeKind, RangeReport, describe, integer_input_type, summary_lines
from .calendar import wall_seconds
from .runner import PREV_KEY, StatefulRunner
from .stream_watch import DEFAULT_MAX_FILL, StreamWatch

_REPORT_ALL = 100
_REPORT_EVERY = 1000
DELIMITERS = (",", ";", "\t")  # what the first line is searched for, in order of preference on a tie

# A row of a few sensor readings is well under 1 KiB; a line longer than this is a broken writer or binary data. It is a
# bad row, read in chunks up to its newline and dropped, never held whole: one such line costs at most this much
# memory, whatever its length.
MAX_LINE_BYTES = 64 * 1024
_DRAIN_CHUNK = 64 * 1024
# Stream keys are sensor ids. A longer key is a bad row: every key is held for the whole run (and in the state file).
MAX_KEY_CHARS = 256
# A batch-1 model under stream_key runs one StatefulRunner per stream, about 180 KiB each (measured on
# models/gru_float32.tflite with ai-edge-litert 2.3: 178 KiB, of which the XNNPACK delegate is about 145 KiB).
# 256 streams are about 45 MiB: room on a 512 MB Raspberry Pi Zero 2. More sensors: a model converted with --batch N
# holds N streams in one interpreter, or raise max_streams (--max-streams).
DEFAULT_MAX_STREAMS = 256
# Streams refused once the cap is reached are remembered (to report each once) up to this many keys; beyond it
# their rows are still skipped and counted, and reported at the usual rate.
_MAX_REFUSED_KEYS = 10_000

# A value is a plain decimal number: optional sign, ASCII digits, optional fraction, optional exponent. Python's
# float() also takes '1_000', non-ASCII digits ('١٢٣') and surrounding Unicode spaces; a reading like that is a
# garbled line, not a number.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_plain = _NUMBER.fullmatch
_NONFINITE_WORD = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
# Control characters other than tab: NUL and the rest mean binary data; a carriage return is only allowed as the
# second-last byte of a line (a CRLF line end), so a bare CR inside a line makes it a bad row.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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
        max_streams: with ``stream_key``, the most streams held at once; a new stream beyond it is refused like one
            that does not fit a full pool. None: ``DEFAULT_MAX_STREAMS`` for a batch-1 model (one runner, about 180
            KiB, per stream), the pool's lanes for a batched one (the smaller of the two when given).
    """

    state_path: str | None = None
    save_every: int = 100
    reset_every: int | None = None
    header: bool = True
    strict: bool = False
    stream_key: str | None = None
    strict_range: bool = False
    delimiter: str | None = None
    max_streams: int | None = None
    intervals: tuple[float, ...] = ()
    anomaly: bool = False
    threshold: float = DEFAULT_THRESHOLD
    substitute: bool = False
    gaps: GapPolicy = GapPolicy.FILL
    max_fill: int = DEFAULT_MAX_FILL

    @property
    def monitor_options(self) -> MonitorOptions | None:
        """The monitor's options, or None when no interval, score or substitution is asked for."""
        if not (self.intervals or self.anomaly or self.substitute):
            return None
        return MonitorOptions(levels=self.intervals, threshold=self.threshold, substitute=self.substitute)

    def __post_init__(self):
        try:
            object.__setattr__(self, "gaps", GapPolicy(self.gaps))
            self.monitor_options  # noqa: B018 (checks the levels and the threshold)
        except ValueError as exc:
            raise BadInputError(str(exc).rstrip(".") + ".") from None
        if self.max_fill < 0:
            raise BadInputError(f"max_fill must be at least 0; received max_fill={self.max_fill}.")
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
        if self.max_streams is not None and self.max_streams < 1:
            raise BadInputError(f"max_streams must be at least 1 (or None); received max_streams={self.max_streams}.")


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
    capacity: int | None = None  # the most streams held at once with stream_key (pool lanes or max_streams)
    not_saved: bool = False  # a state was not finite at a save, so it was not written (the file keeps the last one)
    # anomalies, events, gaps, filled, disorder, substituted: what the StreamWatch counted
    watch: dict = dataclasses.field(default_factory=dict)


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
            if len(key) > MAX_KEY_CHARS:
                raise ValueError(
                    f"column {self.key_name!r} (the stream key) is {len(key)} characters long; at most "
                    f"{MAX_KEY_CHARS}"
                )
        values = []
        for name, i in zip(self.feature_names, self.feature_index):
            cell = fields[i]
            if _plain(cell):  # the usual case, without parse_number's call and strip
                v = float(cell)
                if v - v == 0.0:
                    values.append(v)
                    continue
            values.append(parse_number(cell, name))
        time = fields[self.time_index] if self.time_index is not None else None
        return np.asarray(values, dtype=np.float64), time, key


def parse_number(cell: str, column: str = "value") -> float:
    """One input value: a plain decimal number (optional sign, ASCII digits, optional fraction and exponent), with
    spaces and tabs around it ignored.

    Raises:
        ValueError: anything else, saying what was received: empty, not a number ('1_000', '0x10', non-ASCII
            digits), or not finite ('nan', 'inf', or beyond float64 like '1e400'). Whether a finite value fits the
            model is the runner's decision.
    """
    text = cell.strip(" \t")
    if _NUMBER.fullmatch(text):
        v = float(text)
        if v - v == 0.0:  # finite; inf - inf is NaN
            return v
        raise ValueError(f"column {column!r} is {text[:40]!r}, beyond the float64 range; every value must be finite")
    if not text:
        raise ValueError(f"column {column!r} is empty")
    if _NONFINITE_WORD.fullmatch(text):
        raise ValueError(f"column {column!r} is {text!r}; every value must be finite")
    # Digits in a form float() may take but a reading should not have: say what is expected.
    hint = " (only plain decimal digits: 361.5, -2, 1.2e-3)" if any(c.isdigit() for c in text) else ""
    raise ValueError(f"column {column!r} is {text[:40]!r}, not a number{hint}")


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


def _control(found, position: int) -> str:
    code = found if isinstance(found, int) else ord(found)
    if code == 0x0D:
        return (
            f"the line holds a carriage return (\\r) at byte {position} before the line's end (lines end with \\n "
            f"or \\r\\n)"
        )
    return f"the line holds the control byte 0x{code:02x} at byte {position} (binary data?)"


def read_lines(source: BinaryIO | TextIO, limit: int = MAX_LINE_BYTES):
    """The lines of ``source`` as they arrive: ``(line number, text, None)`` for a readable line (its line end
    removed), ``(line number, None, problem)`` for one that is not.

    A line ends at ``\\n``; a ``\\r`` before it is dropped (CRLF files), so line numbers are those of ``wc -l``,
    ``sed -n Np`` and ``grep -n``. A line is unreadable when it is longer than ``limit`` bytes (line end included;
    it is read in chunks and dropped, never held whole), holds a control character other than tab (NUL and binary
    data, or a ``\\r`` that does not end the line), or is not UTF-8. A UTF-8 byte-order mark before line 1 is
    dropped. A text stream is taken as it reads (Python's universal newlines may already have turned a bare
    ``\\r`` into a line end); the limit then counts characters.
    """
    # readline, not iteration over a file: each row is handled as soon as its line arrives.
    readline = source.readline
    raw = readline(limit + 1)
    binary = isinstance(raw, (bytes, bytearray))
    nl, cr, bom = (b"\n", b"\r", b"\xef\xbb\xbf") if binary else ("\n", "\r", "\ufeff")
    control = _CONTROL_BYTES if binary else _CONTROL_CHARS
    if raw.startswith(bom):
        raw = raw[len(bom):]
    number = 0
    while raw:
        number += 1
        if len(raw) > limit:
            size = len(raw)
            while not raw.endswith(nl):
                raw = readline(_DRAIN_CHUNK)
                if not raw:
                    break
                size += len(raw)
            yield number, None, f"the line is {size} bytes long, more than the {limit} a line may have; not read"
        else:
            if raw.endswith(nl):
                raw = raw[:-1]
            text = None
            if binary:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    utf8_error = f"the line is not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})"
            else:
                text = raw
            if text is not None and text.isprintable():  # the usual line: no control characters, no tab, no CR
                yield number, text, None
            else:  # a CRLF line end, a tab, or a line to refuse
                if raw.endswith(cr):
                    raw = raw[:-1]
                    text = text[:-1] if text is not None else None
                found = control.search(raw)
                if found is not None:
                    yield number, None, _control(found.group()[0], found.start() + 1)
                elif text is None:
                    yield number, None, utf8_error
                else:
                    yield number, text, None
        raw = readline(limit + 1)


def _splitter(delimiter: str) -> Callable[[str], list[str]]:
    """Split one line into cells. Each line is one record: a quote opened on a line must close on it, so a broken
    quote spoils its own line only, never the rows after it."""

    def split(text: str) -> list[str]:
        if '"' not in text:
            return text.split(delimiter)  # what csv gives for a line without quotes (no line breaks are left)
        try:
            return next(csv.reader((text,), delimiter=delimiter, strict=True))
        except csv.Error as exc:
            raise ValueError(
                f"not readable as CSV ({exc}; a quoted value must open and close on its own line)"
            ) from None

    return split


def _nonfinite(state: dict) -> str | None:
    """The name of the first state array that is not finite (None: all are). ``x_prev`` is NaN before a
    differencing model's first step, so only an infinity counts there."""
    for name, value in state.items():
        v = np.asarray(value)
        if not (np.isfinite(v).all() if name != PREV_KEY else not np.isinf(v).any()):
            return name
    return None


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
    limit = None

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

    def step(self, key, x, time=None):
        return self.runner.step(x) if time is None else self.runner.step(x, time)

    def known(self, key) -> bool:
        return self.runner.key_known

    def reset(self, key) -> None:
        self.runner.reset()

    def state_of(self, key) -> dict:
        return self.runner.state

    def set_state(self, key, state: dict) -> None:
        self.runner.state = state

    def load(self, path) -> None:
        self.runner.load_state(path)

    def save(self, path, extras: dict | None = None) -> None:
        from .state_file import save_state

        save_state(path, self.runner.state, self.runner.model_sha256, extras=None if not extras else extras.get(None))

    @property
    def keys(self) -> list:
        return [None]

    def nonfinite(self) -> str | None:
        return _nonfinite(self.runner.state)


class _RunnerStreams:
    """Many streams on a batch-1 model: one ``StatefulRunner`` (one interpreter) per key, at most ``capacity``."""

    limit = "max_streams"  # what caps the streams, for messages

    def __init__(self, runner: StatefulRunner, new_runner: Callable[[], StatefulRunner] | None, capacity: int):
        self.capacity = capacity
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
        if runner.metadata.panel is not None:
            runner._set_key(key)
        runner.reset()
        if runner.on_out_of_range is not self._callback:  # a new runner
            runner.reset_range_counts()
            runner.on_out_of_range = self._callback
        self.runners[key] = runner

    def step(self, key, x, time=None):
        return self.runners[key].step(x) if time is None else self.runners[key].step(x, time)

    def known(self, key) -> bool:
        return self.runners[key].key_known

    def reset(self, key) -> None:
        self.runners[key].reset()

    def state_of(self, key) -> dict:
        return self.runners[key].state

    def set_state(self, key, state: dict) -> None:
        self.runners[key].state = state

    def load(self, path) -> None:
        from .state_file import load_pool_state

        states = load_pool_state(path, self.sha256, self.shapes)
        _check_room(path, len(states), self.capacity, self.limit)
        for key, state in states.items():
            self.add(key)
            self.runners[key].state = state

    def save(self, path, extras: dict | None = None) -> None:
        from .state_file import save_pool_state

        save_pool_state(path, {k: r.state for k, r in self.runners.items()}, self.sha256, extras=extras)

    @property
    def keys(self) -> list:
        return list(self.runners)

    def nonfinite(self) -> str | None:
        for key, r in self.runners.items():
            name = _nonfinite(r.state)
            if name is not None:
                return f"{name} of stream {key!r}"
        return None


def _check_room(path, count: int, capacity: int, limit: str) -> None:
    if count > capacity:
        if limit == "max_streams":
            raise BadInputError(
                f"{path} holds {count} streams, more than max_streams allows ({capacity}); pass --max-streams "
                f"{count} or more (about 180 KiB each with a batch-1 model), or another --state file."
            )
        from .errors import StateFileError

        raise StateFileError(
            f"{path} holds {count} streams; this model's pool holds at most {capacity} (its batch). "
            f"Use the model it was saved with, or pass another --state file."
        )


class _PoolStreams:
    """Many streams on a batched model: one lane of a ``StreamPool`` each."""

    def __init__(self, pool: StreamPool, max_streams: int | None):
        self.pool = pool
        self.capacity = pool.capacity
        self.limit = "batch"  # what caps the streams, for messages
        if max_streams is not None and max_streams < pool.capacity:
            self.capacity, self.limit = max_streams, "max_streams"
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
        self.pool.add(key, warn=False)  # run_stream reports an unseen key on its errors stream

    def step(self, key, x, time=None):
        return self.pool.step({key: x}, None if time is None else {key: time})[key]

    def known(self, key) -> bool:
        return self.pool.key_known(key)

    def reset(self, key) -> None:
        self.pool.reset(key)

    def state_of(self, key) -> dict:
        return self.pool.state(key)

    def set_state(self, key, state: dict) -> None:
        self.pool.set_state(key, state)

    def load(self, path) -> None:
        from .state_file import load_pool_state

        states = load_pool_state(path, self.sha256, self.shapes)
        _check_room(path, len(states), self.capacity, self.limit)
        # Keys are added in the saved order, so each stream gets the lane it had.
        for key, state in states.items():
            self.pool.add(key, warn=False)
            self.pool.set_state(key, state)

    def save(self, path, extras: dict | None = None) -> None:
        from .state_file import save_pool_state

        save_pool_state(path, {k: self.pool.state(k) for k in self.pool.keys}, self.sha256, extras=extras)

    @property
    def keys(self) -> list:
        return self.pool.keys

    def nonfinite(self) -> str | None:
        for key in self.pool.keys:
            name = _nonfinite(self.pool.state(key))
            if name is not None:
                return f"{name} of stream {key!r}"
        return None


class _RangeStop(BadInputError):
    """``strict_range`` stopping the run from inside a step: not a bad row to skip."""


def run_stream(
    runner: StatefulRunner | StreamPool,
    source: BinaryIO | TextIO,
    sink: TextIO,
    config: StreamConfig = StreamConfig(),
    errors: TextIO | None = None,
    source_name: str = "input",
    new_runner: Callable[[], StatefulRunner] | None = None,
    alerts: TextIO | None = None,
) -> StreamResult:
    """Forecast every row of a CSV stream and write one CSV line per row, flushing each.

    Each line is one record, read as it arrives (``read_lines``): a line that is too long, binary, not UTF-8, not
    readable as CSV on its own (an unclosed quote), or whose values are not plain decimal numbers is a bad row, as is
    a row the runner refuses (``BadInputError`` from its step, which leaves the state as it was). A bad row is
    reported with its line number and skipped, or with ``strict`` stops the run.

    Args:
        runner: the model. A ``StatefulRunner`` of a batch-1 model runs one stream, or with ``config.stream_key`` one
            stream per key (this runner serves the first key, ``new_runner`` makes the others). A ``StreamPool``
            runs one stream per key in its lanes (needs ``config.stream_key``). The state is loaded from, and saved
            to, ``config.state_path``: one stream's state, or with ``stream_key`` every stream's, with its key.
        source: the CSV lines: a binary stream (``sys.stdin.buffer``, a file opened ``"rb"``; decoded as UTF-8 line
            by line) or a text stream.
        sink: where the output CSV goes.
        config: the stream options.
        errors: where bad-row messages go (default ``sys.stderr``).
        source_name: the input's name in messages.
        new_runner: makes the runner of each further stream with ``stream_key`` and a batch-1 model (default: one
            like ``runner``, with the interpreter's default threads).
        alerts: with ``config.anomaly``, where one JSON line per anomaly event goes (``--alerts FILE``).

    Returns:
        A ``StreamResult``. Ctrl-C and a closed output end the stream normally (state saved) and are reported there.
        When the pool is full (or ``max_streams`` streams run), a new stream's rows are skipped and reported
        (counted in ``refused``). Its ``range_report`` counts this call's rows outside the training range or clipped
        (the runners' range counts are reset at the start, and their ``on_out_of_range`` is set during the call and
        restored after it). A state that is not finite is never saved (``not_saved``; reported on ``errors``).

    Raises:
        BadInputError: the header is unreadable or lacks a feature or key column, a batched runner or a pool without
            ``stream_key``, the state file holds more streams than fit, or (with ``strict``) a bad row or a stream
            that does not fit, or (with ``strict_range``) a row outside the training range or clipped; the state is
            saved as it was before it.
        StateFileError: the state file is corrupt, belongs to another model, or holds one stream where many are
            expected (or the reverse); it is never overwritten then. Or it cannot be written.
        StateliteError: anything else that stops the run (an output that cannot be written, an interpreter
            failure), naming the input line; the original exception is its ``__cause__``. The state is saved
            first when it is finite.
    """
    errors = errors if errors is not None else sys.stderr
    keyed = config.stream_key is not None
    if isinstance(runner, StreamPool):
        if not keyed:
            raise BadInputError(
                "a StreamPool runs many streams: set stream_key (--stream-key COL) to the column that names each "
                "row's stream; received stream_key=None."
            )
        streams = _PoolStreams(runner, config.max_streams)
    elif runner.batch != 1:
        raise BadInputError(
            f"statelite run streams one series per batch-1 model; this model was converted with batch "
            f"{runner.batch}. Pass --stream-key COL to run one stream per lane (stream_key with a StreamPool), or "
            f"convert it with --batch 1."
        )
    elif keyed:
        cap = config.max_streams if config.max_streams is not None else DEFAULT_MAX_STREAMS
        streams = _RunnerStreams(runner, new_runner, cap)
    else:
        streams = _OneStream(runner)
    md = runner.metadata
    calendar = bool(md.calendar)
    if calendar and not config.header:
        raise BadInputError(
            f"the model's calendar inputs ({', '.join(md.calendar)}) are computed from its time column "
            f"{md.time_column!r}, so the input needs a header naming it; received header=False (--no-header)."
        )
    panel = md.panel is not None
    resumed = False
    if config.state_path is not None and os.path.exists(config.state_path):
        streams.load(config.state_path)
        resumed = True

    rows = skipped = saves = unsaved = refused = 0
    line, key = 0, None
    since_reset: dict = {}
    refused_keys: set = set()
    refused_streams = 0
    interrupted = output_closed = not_saved = False
    horizon_names = [f"{t}_t+{h}" for t in md.targets for h in range(1, md.horizon + 1)]
    key_head = [config.stream_key] if keyed else []
    columns: _Columns | None = None
    writer = csv.writer(sink, lineterminator="\n")  # quotes a time value holding a comma or a quote

    def write_header(time_head: list[str]) -> None:
        writer.writerow(time_head + ["row"] + key_head + horizon_names + watch.columns())
        sink.flush()

    basis = md.input_range.basis if md.input_range is not None else ("difference" if md.difference else "value")
    input_type = integer_input_type(md)
    first_seen: dict = {}  # (column, kind) -> where it was first seen, for the summary

    def out_of_range(column: str, kind: RangeKind, step: int, value: float, lo: float, hi: float) -> None:
        # Called by the runner before the row reaches the interpreter: raising refuses the row, state untouched.
        text = describe(basis, column, kind, value, lo, hi, input_type)
        if config.strict_range:
            raise _RangeStop(
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
        nonlocal saves, unsaved, not_saved
        if config.state_path is None or not unsaved:
            return
        # The runner refuses a step that would leave a non-finite state; this guard keeps a poisoned state (should
        # one ever get through) out of the file, which then keeps the last finite state.
        poisoned = streams.nonfinite()
        if poisoned is not None:
            if not not_saved:
                errors.write(
                    f"statelite: after {source_name} line {line} the state {poisoned} is not finite (NaN or inf); "
                    f"it is not saved: {config.state_path} keeps the last finite state.\n"
                )
                errors.flush()
            not_saved = True
            return
        streams.save(config.state_path, watch.export(streams.keys))
        saves += 1
        unsaved = 0

    def report(message: str, count: int) -> None:
        # A broken sensor must not flood the log: every case up to 100, then every 1000th.
        if count <= _REPORT_ALL or count % _REPORT_EVERY == 0:
            errors.write(message + "\n")
            if count == _REPORT_ALL:
                errors.write(f"{source_name}: from now on only every {_REPORT_EVERY}th such case is reported.\n")
            errors.flush()

    def bad_row(problem: str) -> None:
        nonlocal skipped
        message = f"{source_name} line {line}: {problem.rstrip('.')}"
        if config.strict:
            raise BadInputError(message + " (--strict stops at the first bad row).")
        skipped += 1
        report(f"{message}; row skipped, state unchanged ({skipped} so far).", skipped)

    def refuse(key) -> None:
        nonlocal refused, refused_streams
        refused += 1
        if key in refused_keys:
            return
        if streams.limit == "batch":
            message = (
                f"{source_name} line {line}: stream {key!r} does not fit: the pool is full with {streams.capacity} "
                f"streams (the model's batch)"
            )
            fix, strict_fix = "convert with a larger --batch to run it", "Convert the model with a larger --batch"
        else:
            message = (
                f"{source_name} line {line}: stream {key!r} does not fit: {streams.capacity} streams are running, "
                f"as many as --max-streams allows"
            )
            fix = "raise --max-streams, or use a model converted with --batch, to run it"
            strict_fix = "Raise --max-streams (each stream of a batch-1 model holds its own interpreter)"
        if config.strict:
            raise BadInputError(
                f"{message}. {strict_fix}, or split the input by stream (--strict stops at the first stream that does "
                f"not fit)."
            )
        refused_streams += 1
        if len(refused_keys) < _MAX_REFUSED_KEYS:
            refused_keys.add(key)
        report(f"{message}; its rows are skipped ({fix}).", refused_streams)

    def warn(text: str) -> None:
        errors.write(f"statelite: {text}\n")
        errors.flush()

    watch = StreamWatch(md, config.monitor_options, config.anomaly, config.gaps, config.max_fill, alerts, report,
                        source_name, warn)
    checked: set = set()  # a panel model's streams checked against its training panel (an unseen one is reported)
    if panel and not keyed:
        watch.default_key = runner.key
        if not runner.key_known:
            warn(f"the model was trained on a panel of {len(md.panel.scalers)} series (key column "
                 f"{md.panel.key_column!r}); without --stream-key every row is one stream, scaled with the global "
                 f"scaler (pass --stream-key {md.panel.key_column} to scale each series with its own)")
    if resumed and watch.saves_anything:
        from .state_file import load_extras

        watch.restore(load_extras(config.state_path, runner.model_sha256))

    try:
        lines = read_lines(source)
        delimiter = config.delimiter
        if delimiter is None:
            head = []  # up to the first non-blank line, which names the delimiter; then read again from the start
            for item in lines:
                head.append(item)
                if item[1] is None or item[1].strip():
                    break
            text = head[-1][1] if head else None
            delimiter = detect_delimiter(text) if text else ","
            lines = itertools.chain(head, lines)
        split = _splitter(delimiter)
        if not config.header:
            columns = _Columns(md.features, None, None, source_name, delimiter=delimiter)
            write_header([])
        seen = False
        for line, text, problem in lines:
            if problem is None and not text.strip():
                continue  # blank line
            seen = True
            if columns is None:
                if problem is None:
                    try:
                        names = split(text)
                    except ValueError as exc:
                        problem = str(exc)
                if problem is not None:
                    raise BadInputError(f"{source_name} line {line} (the header): {problem}.")
                columns = _Columns(md.features, md.time_column, names, source_name, config.stream_key, delimiter)
                if calendar and columns.time_index is None:
                    raise BadInputError(
                        f"{source_name}: the header lacks the time column {md.time_column!r} the model's calendar "
                        f"inputs ({', '.join(md.calendar)}) are computed from; received header "
                        f"{[n.strip() for n in names]}."
                    )
                watch.uses_time = columns.time_index is not None
                write_header([md.time_column] if columns.time_index is not None else [])
                continue
            if problem is None:
                try:
                    # split() inlined for the usual line without quotes: this loop runs once per row
                    x, time, key = columns.parse(text.split(delimiter) if '"' not in text else split(text))
                except ValueError as exc:
                    problem = str(exc)
            when = None
            if calendar and problem is None:
                try:
                    when = wall_seconds(time, md.time_column)
                except BadInputError as exc:
                    problem = f"{str(exc).rstrip('.')} (the model's calendar inputs are computed from it)"
            if problem is not None:
                bad_row(problem)
                continue
            if key not in streams:
                if streams.capacity is not None and len(streams) >= streams.capacity:
                    refuse(key)
                    continue
                streams.add(key)
            if panel and keyed and key not in checked:  # each key once, also one loaded from the state file
                checked.add(key)
                if not streams.known(key):
                    warn(f"stream {key!r} was not in the training panel: using the global scaler")
            if config.reset_every is not None and since_reset.get(key, 0) == config.reset_every:
                watch.reset(key, lambda: streams.reset(key))
                since_reset[key] = 0
            try:
                fed, obs = watch.before(
                    key, x, time, line, lambda row, t=None: streams.step(key, row, t), lambda: streams.reset(key),
                    lambda: streams.state_of(key), lambda state: streams.set_state(key, state),
                )
                y = streams.step(key, fed, when)
            except _RangeStop:
                watch.undo()
                raise
            except BadInputError as exc:  # the runner refused the row (the state is as it was before it)
                watch.undo()  # and before its gap was filled: the row is missing, as a row that cannot be read
                bad_row(str(exc))
                continue
            extra = watch.after(key, fed, y, obs, line, time)
            rows += 1
            since_reset[key] = since_reset.get(key, 0) + 1
            unsaved += 1
            # Transposed so each target's horizon is contiguous, as the header names them.
            out = [_format(v) for v in np.asarray(y).T.reshape(-1)]
            lead = ([time] if time is not None else []) + [str(line)] + ([key] if keyed else [])
            writer.writerow(lead + out + [_format(v) if isinstance(v, float) else v for v in extra])
            sink.flush()
            if rows % config.save_every == 0:
                save()
        if not seen:
            if columns is None:
                write_header([])  # still a valid, empty output table
            errors.write(f"{source_name} is empty: no rows to forecast.\n")
            errors.flush()
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        output_closed = True
    except StateliteError:
        raise
    except Exception as exc:  # never a traceback on a device: one line naming where the run stopped
        raise StateliteError(
            f"{source_name} line {line}: the run stopped on an unexpected error: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        save()
        for r, callback in previous_callbacks:
            r.on_out_of_range = callback
    range_report = streams.range_report()
    summary = summary_lines(range_report, input_type, first_seen) + watch.finish()
    for text in summary:
        errors.write(f"statelite: {text}\n")
    if summary:
        errors.flush()
    return StreamResult(
        rows, skipped, saves, resumed, interrupted, output_closed, len(streams), refused, refused_streams,
        range_report, streams.capacity, not_saved, dict(watch.counts),
    )
