"""Many series for one model: where a panel's series come from, and each series' split, scalers and model streams.

A *panel* is a set of series that share their columns, each named by a key:

* one CSV (or Parquet file) with a key column (``--series-column``): the rows of each key, in file order, are one
  series. The file is read whole.
* a folder, or a glob (``data/*.parquet``), of CSV or Parquet files with one series each, named by the file's stem.
  These *shards* are read lazily: one series at a time, when it is needed (``PanelSource.load``), so a panel larger
  than memory can be trained as long as each series fits.
* one CSV or Parquet file without a key column: a panel of one series (key None), what ``statelite train`` has
  always done.

Each series is split chronologically on its own (train, validation, test), and its scalers are fitted on its own
training rows. A *global* scaler is fitted on the training rows of all series together, for keys the model never
saw. Calendar inputs (``statelite.calendar``) are appended to each row's scaled features, from the time column.
"""

from __future__ import annotations

import dataclasses
import glob as globbing
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from statelite.calendar import cell_values
from statelite.errors import BadInputError

from . import data as D
from .config import ScalerKind, TrainConfig

SHARD_SUFFIXES = (".csv", ".parquet")


@dataclasses.dataclass(frozen=True)
class PanelSource:
    """The series of a run, loaded on demand. ``keys`` in a fixed order; ``load(key)`` reads and cleans one."""

    keys: tuple
    load: Callable[[object], D.Series]
    key_column: str | None  # the CSV column that names the series, None for shards or a single series
    source: str
    lazy: bool  # series are read from their own files when needed (shards), not held in memory

    @property
    def is_panel(self) -> bool:
        return self.keys != (None,)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def shard_paths(data: str) -> list[Path]:
    """The CSV and Parquet files of a folder or a glob, sorted by name.

    Raises:
        BadInputError: no such file, or two files with the same stem (the stem is the series key).
    """
    if _is_glob(data):
        paths = [Path(p) for p in globbing.glob(data)]
    else:
        paths = [p for p in Path(data).iterdir()]
    paths = sorted(p for p in paths if p.is_file() and p.suffix.lower() in SHARD_SUFFIXES)
    if not paths:
        raise BadInputError(
            f"expected CSV or Parquet files (one series each) in {data!r}, Received: none; a folder or a glob such "
            f"as 'data/*.csv' names them"
        )
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise BadInputError(
                f"expected one file per series (its name is the key), Received: {str(stems[p.stem])!r} and "
                f"{str(p)!r} share the key {p.stem!r}"
            )
        stems[p.stem] = p
    return paths


def read_parquet_columns(path: Path, names: list[str], time_column: str | None) -> tuple[dict, np.ndarray | None]:
    """The numeric columns (float64, NaN where null) and the time column (as text) of a Parquet file.

    Raises:
        BadInputError: pyarrow missing, the file unreadable, or a named column absent or not numeric.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BadInputError(
            "reading Parquet needs pyarrow, which is not installed: pip install 'statelite[train]'"
        ) from None
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"expected a Parquet file, Received: {str(path)!r} ({exc})") from None
    wanted = names + ([time_column] if time_column else [])
    unknown = [n for n in wanted if n not in schema.names]
    if unknown:
        raise BadInputError(
            f"expected columns of {str(path)!r}, Received: unknown column(s) {', '.join(map(repr, unknown))}; "
            "available columns: " + ", ".join(schema.names)
        )
    table = pq.read_table(path, columns=list(dict.fromkeys(wanted)))
    columns = {}
    for name in names:
        column = table.column(name)
        try:
            columns[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
        except (TypeError, ValueError):
            raise BadInputError(
                f"expected a numeric column {name!r} in {str(path)!r}, Received: type {column.type}"
            ) from None
    time = None
    if time_column:
        time = np.asarray([str(v) for v in table.column(time_column).to_pylist()], dtype=str)
    return columns, time


def _series_from_columns(columns: dict, time, config: TrainConfig, source: str, where: str) -> D.Series:
    names = list(dict.fromkeys(config.features + config.targets))
    filled = {name: D.check_and_fill(columns[name], name, config.fill, where) for name in names}
    return D.Series(
        features=np.stack([filled[n] for n in config.features], axis=1),
        targets=np.stack([filled[n] for n in config.targets], axis=1),
        time=time,
        feature_names=config.features,
        target_names=config.targets,
        time_column=config.time_column,
        source=source,
    )


def _load_file(path: Path, config: TrainConfig) -> D.Series:
    if path.suffix.lower() == ".parquet":
        names = list(dict.fromkeys(config.features + config.targets))
        columns, time = read_parquet_columns(path, names, config.time_column)
        return _series_from_columns(columns, time, config, str(path), str(path))
    return D.load_series(str(path), config.features, config.targets, config.time_column, config.fill)


def _load_shard(path: Path, config: TrainConfig) -> D.Series:
    """One shard's series; an error names the file (a panel may have thousands)."""
    try:
        return _load_file(path, config)
    except BadInputError as exc:
        if str(path) in str(exc):
            raise
        raise BadInputError(f"{path}: {exc}") from None


def open_source(config: TrainConfig) -> PanelSource:
    """The series ``config`` names: the bundled CO2, one file, one file split by ``series_column``, or shards.

    Raises:
        BadInputError: the data cannot be found or read, or the key column is missing.
    """
    data = config.data
    if data is None:
        series = D.load_series(None, config.features, config.targets, config.time_column, config.fill)
        return PanelSource((None,), lambda key: series, None, series.source, lazy=False)
    if _is_glob(data) or Path(data).is_dir():
        if config.series_column is not None:
            raise BadInputError(
                f"expected either files of one series each or --series-column, Received: a folder or glob "
                f"{data!r} and --series-column {config.series_column!r}"
            )
        paths = {p.stem: p for p in shard_paths(data)}
        return PanelSource(tuple(paths), lambda key: _load_shard(paths[key], config), None, data, lazy=True)
    path = Path(data)
    if config.series_column is None:
        series = _load_file(path, config)
        return PanelSource((None,), lambda key: series, None, series.source, lazy=False)
    return _keyed_source(path, config)


def _keyed_source(path: Path, config: TrainConfig) -> PanelSource:
    column = config.series_column
    names = list(dict.fromkeys(config.features + config.targets))
    if path.suffix.lower() == ".parquet":
        columns, time = read_parquet_columns(path, names + [column], config.time_column)
        import pyarrow.parquet as pq

        keys_raw = [str(v) for v in pq.read_table(path, columns=[column]).column(column).to_pylist()]
        lines = list(range(1, len(keys_raw) + 1))
    else:
        table = D.read_csv(path)
        keys_raw = table.column(column)
        columns = {name: D.parse_numbers(table, name) for name in names if name in table.columns}
        unknown = [n for n in names + ([config.time_column] if config.time_column else []) if n not in table.columns]
        if unknown:
            raise BadInputError(
                f"expected columns of the CSV, Received: unknown column(s) {', '.join(map(repr, unknown))}; "
                "available columns: " + ", ".join(table.columns)
            )
        time = np.asarray(table.column(config.time_column), dtype=str) if config.time_column else None
        lines = table.lines
    empty = [lines[i] for i, k in enumerate(keys_raw) if not k.strip()]
    if empty:
        raise BadInputError(
            f"expected a series key in every row of column {column!r}, Received: an empty one at line {empty[0]}"
        )
    order: dict[str, list[int]] = {}
    for i, key in enumerate(keys_raw):
        order.setdefault(key.strip(), []).append(i)
    index = {key: np.asarray(rows) for key, rows in order.items()}

    def load(key) -> D.Series:
        rows = index[key]
        part = {name: values[rows] for name, values in columns.items()}
        return _series_from_columns(
            part, None if time is None else time[rows], config, f"{path}[{column}={key}]", f"series {key!r}"
        )

    return PanelSource(tuple(index), load, column, str(path), lazy=False)


@dataclasses.dataclass(frozen=True)
class Member:
    """One series of a run: its key, rows, chronological split ``[0, a) [a, b) [b, rows)`` and scalers."""

    key: object
    rows: int
    a: int
    b: int
    fscaler: D.Scaler
    tscaler: D.Scaler


class ScalerStats:
    """A scaler fitted over many series' rows without holding them: running sums (standard) or extremes (minmax)."""

    def __init__(self, kind: ScalerKind):
        self.kind = ScalerKind(kind)
        self.count = 0
        self.total = self.squares = self.low = self.high = None

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return
        if self.total is None:
            width = values.shape[1]
            self.total, self.squares = np.zeros(width), np.zeros(width)
            self.low, self.high = np.full(width, np.inf), np.full(width, -np.inf)
        self.count += len(values)
        self.total += values.sum(axis=0)
        self.squares += (values**2).sum(axis=0)
        self.low = np.minimum(self.low, values.min(axis=0))
        self.high = np.maximum(self.high, values.max(axis=0))

    def scaler(self) -> D.Scaler:
        if self.kind is ScalerKind.STANDARD:
            offset = self.total / self.count
            scale = np.sqrt(np.maximum(self.squares / self.count - offset**2, 0.0))
        else:
            offset, scale = self.low, self.high - self.low
        return D.Scaler(self.kind, offset, np.where(scale == 0, 1.0, scale))


def plan(source: PanelSource, config: TrainConfig, on_series: Callable[[object, D.Series, Member], None] | None = None
         ) -> tuple[list[Member], D.Scaler, D.Scaler]:
    """Read every series once: its split and scalers, and the global scalers over all training rows.

    ``on_series(key, series, member)`` sees each series while it is loaded (the caller keeps what it needs).

    Raises:
        BadInputError: a series too short for the window and horizon (naming its key), or no time column for
            calendar inputs.
    """
    members: list[Member] = []
    fstats, tstats = ScalerStats(config.scaler), ScalerStats(config.scaler)
    for key in source.keys:
        series = source.load(key)
        try:
            a, b = D.split_bounds(series.rows, config.val_fraction, config.test_fraction,
                                  min_rows=config.window + config.horizon, window=config.window)
        except BadInputError as exc:
            if key is None:
                raise
            raise BadInputError(f"series {key!r}: {exc}") from None
        fx, fy = D.scaler_rows(series, a, config.difference)  # once: this series' scalers and the global ones
        fscaler, tscaler = D.Scaler.fit(config.scaler, fx), D.Scaler.fit(config.scaler, fy)
        fstats.add(fx)
        tstats.add(fy)
        member = Member(key, series.rows, a, b, fscaler, tscaler)
        members.append(member)
        if on_series is not None:
            on_series(key, series, member)
    if len(members) == 1:
        return members, members[0].fscaler, members[0].tscaler
    return members, fstats.scaler(), tstats.scaler()


def calendar_inputs(series: D.Series, config: TrainConfig, start: int = 0, end: int | None = None) -> np.ndarray:
    """The calendar columns of rows ``[start, end)`` (``(rows, 2 * len(calendar))``)."""
    if not config.calendar:
        return np.zeros((len(series.features[start:end]), 0))
    return cell_values(series.time[start:end], config.calendar, series.time_column or "time")


def model_stream(series: D.Series, member: Member, config: TrainConfig, start: int, end: int):
    """One stream of a series in model units: inputs ``(len, F + 2C)`` float32, targets ``(len, H*T)`` float32 and
    the valid mask (see ``data.model_targets``)."""
    x = D.model_inputs(series.features[start:end], member.fscaler, config.difference)
    if config.calendar:
        x = np.concatenate([x, calendar_inputs(series, config, start, end)], axis=1)
    y, valid = D.model_targets(series.targets[start:end], member.tscaler, config.horizon, config.difference)
    return x.astype(np.float32), y.astype(np.float32), valid


def training_chunks(source: PanelSource, members: list[Member], config: TrainConfig, rng: np.random.Generator,
                    group: int = 8) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One epoch of training chunks ``(x (W, F'), y (W, H*T), w (W,))`` drawn across series.

    The series are visited in a random order, ``group`` at a time; each group's chunks are shuffled together, so a
    batch mixes series while at most ``group`` series are in memory.
    """
    order = rng.permutation(len(members))
    for first in range(0, len(order), group):
        parts = []
        for i in order[first:first + group]:
            m = members[i]
            x, y, valid = model_stream(source.load(m.key), m, config, 0, m.a)
            starts = D.chunk_starts(len(x), config.window, rng)
            parts.append(D.chunk_batch(x, y, valid, starts, config.window, config.burn_in))
        xs = np.concatenate([p[0] for p in parts])
        ys = np.concatenate([p[1] for p in parts])
        ws = np.concatenate([p[2] for p in parts])
        mix = rng.permutation(len(xs)) if len(parts) > 1 else np.arange(len(xs))
        for j in mix:
            yield xs[j], ys[j], ws[j]


def chunk_count(members: list[Member], window: int) -> int:
    """Training chunks in one epoch, over every series."""
    return sum(len(D.chunk_starts(m.a, window)) for m in members)


def validation_chunks(source: PanelSource, members: list[Member], config: TrainConfig):
    """Every series' validation chunks, in order, concatenated: ``(x, y, w)``."""
    parts = []
    for m in members:
        x, y, valid = model_stream(source.load(m.key), m, config, m.a, m.b)
        parts.append(D.chunk_batch(x, y, valid, D.chunk_starts(len(x), config.window), config.window, config.burn_in))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def shard(members: list[Member], index: int, count: int) -> list[Member]:
    """The series of worker ``index`` of ``count``: every ``count``-th, so each worker reads only its own."""
    return members[index::count]

