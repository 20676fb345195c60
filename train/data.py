"""From a CSV to model arrays, with numpy only (no TensorFlow, no pandas).

The converter and the device runtime repeat these transforms step by step, so they are small pure functions with
one meaning each:

* A *stream* is a run of consecutive rows fed to the model from zero state: each split (train, val, test) is one.
  With differencing, ``dX_t = X_t - X_{t-1}`` inside the stream and the first row differences to zero (its
  previous row is itself). Nothing crosses a split boundary: windows and chunks are cut from one split's stream.
* Model input ``(v - feature_offset) / feature_scale`` where ``v`` is ``X_t`` or ``dX_t``.
* Model target at step ``t``, index ``k*T + j`` (``k < H``): ``(w_{t+k+1, j} - target_offset_j) / target_scale_j``
  where ``w`` is ``Y`` or ``dY``. With differencing the raw forecast is ``Y_t + cumsum_k(unscaled dY)``.
* The scaler is fitted on the training split only (its differenced rows, where differencing is on).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np

from statelite.errors import BadInputError

from .config import BUNDLED_CO2, Fill, ScalerKind

BUNDLED_CO2_PATH = Path(__file__).parent / "data" / "co2.csv"
_MISSING = {"", "na", "nan", "n/a", "null", "none"}
_SHOW = 5  # bad line numbers quoted in an error


@dataclasses.dataclass(frozen=True)
class Series:
    """The cleaned raw series (after fill): what ``series.npz`` stores and what every split is cut from."""

    features: np.ndarray  # (n, F) float64
    targets: np.ndarray  # (n, T) float64
    time: np.ndarray | None  # (n,) str, or None without a time column
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    time_column: str | None
    source: str

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


@dataclasses.dataclass(frozen=True)
class Table:
    """A CSV read as text: header names, cell strings, and the 1-based CSV line number of each row."""

    columns: tuple[str, ...]
    cells: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        if name not in self.columns:
            raise BadInputError(
                f"expected a column of the CSV, Received: column={name!r}; available columns: "
                + ", ".join(self.columns)
            )
        i = self.columns.index(name)
        return [row[i] for row in self.cells]


def read_csv(path: str | Path) -> Table:
    """Read a CSV with a header row; blank lines are skipped.

    Raises:
        BadInputError: the file is missing or unreadable, has no header or no rows, or a row has the wrong width.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise BadInputError(f"expected a header row, Received: an empty file {str(path)!r}")
            columns = tuple(name.strip() for name in header)
            cells, lines = [], []
            for row in reader:
                if not row:  # a blank line (in a one-column file, that is also how an empty cell looks)
                    continue
                if len(row) != len(columns):
                    raise BadInputError(
                        f"expected {len(columns)} cells per row (as in the header) in {str(path)!r}, "
                        f"Received: {len(row)} cells at CSV line {reader.line_num}"
                    )
                cells.append([c.strip() for c in row])
                lines.append(reader.line_num)
    except OSError as exc:
        raise BadInputError(f"cannot read the data file {str(path)!r}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise BadInputError(f"expected a UTF-8 CSV file, Received: {str(path)!r} ({exc})") from None
    if len(set(columns)) != len(columns):
        raise BadInputError(f"expected unique column names, Received: {list(columns)}")
    if not cells:
        raise BadInputError(f"expected data rows after the header, Received: none in {str(path)!r}")
    return Table(columns, cells, lines)


def parse_numbers(table: Table, name: str) -> np.ndarray:
    """One column as float64, NaN where the cell is empty or NA.

    Raises:
        BadInputError: unknown column, or a cell that is not a finite number (naming the line and the value).
    """
    out = np.empty(len(table.cells), dtype=np.float64)
    for i, text in enumerate(table.column(name)):
        if text.lower() in _MISSING:
            out[i] = np.nan
            continue
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise BadInputError(
                f"expected a number in column {name!r}, Received: {text!r} at CSV line {table.lines[i]}"
            )
        out[i] = value
    return out


def fill_missing(values: np.ndarray, fill: Fill | str) -> np.ndarray:
    """Fill NaNs of a 1-D array: ``interpolate`` linearly in row order, ``ffill`` with the previous value.

    Missing values before the first valid one take the first valid value (there is nothing to carry forward);
    after the last one, ``interpolate`` holds the last value.
    """
    fill = Fill(fill)
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    if fill is Fill.NONE or not missing.any():
        return values.copy()
    index = np.arange(values.size)
    valid = index[~missing]
    if fill is Fill.INTERPOLATE:
        return np.interp(index, valid, values[valid])
    last = np.maximum.accumulate(np.where(missing, -1, index))
    last = np.where(last < 0, valid[0], last)
    return values[last]


def load_series(
    data: str | Path | None,
    features: tuple[str, ...],
    targets: tuple[str, ...],
    time_column: str | None = None,
    fill: Fill | str = Fill.NONE,
) -> Series:
    """Read, check and fill the columns a run needs.

    Args:
        data: a CSV path, or None for the bundled weekly CO2 series.
        features, targets: column names (a column may be both).
        time_column: kept as text for plots and ``series.npz``; never a model input.
        fill: what to do with missing cells; ``none`` makes them an error.

    Raises:
        BadInputError: unknown columns (listing the available ones), text in a numeric column, missing values
            without a fill (naming the first CSV lines), a column with no values at all.
    """
    table = read_csv(BUNDLED_CO2_PATH if data is None else data)
    names = list(dict.fromkeys(features + targets))
    unknown = [n for n in names + ([time_column] if time_column else []) if n not in table.columns]
    if unknown:
        raise BadInputError(
            f"expected columns of the CSV, Received: unknown column(s) {', '.join(map(repr, unknown))}; "
            "available columns: " + ", ".join(table.columns)
        )
    columns = {name: check_and_fill(parse_numbers(table, name), name, fill, lines=table.lines) for name in names}
    time = np.asarray(table.column(time_column), dtype=str) if time_column else None
    return Series(
        features=np.stack([columns[n] for n in features], axis=1),
        targets=np.stack([columns[n] for n in targets], axis=1),
        time=time,
        feature_names=tuple(features),
        target_names=tuple(targets),
        time_column=time_column,
        source=BUNDLED_CO2 if data is None else str(data),
    )


def check_and_fill(raw: np.ndarray, name: str, fill: Fill | str, where: str = "", lines=None) -> np.ndarray:
    """A numeric column with its missing values (NaN) filled, or an error naming them.

    Args:
        where: what holds the column, for the message (a file, a series key); ``lines``: each row's CSV line.

    Raises:
        BadInputError: every value is missing, or some are and ``fill`` is ``none``.
    """
    fill = Fill(fill)
    missing = np.flatnonzero(np.isnan(raw))
    at = f" of {where}" if where else ""
    if missing.size == raw.size:
        raise BadInputError(f"expected numbers in column {name!r}{at}, Received: every cell is empty")
    if missing.size and fill is Fill.NONE:
        rows = [lines[i] for i in missing[:_SHOW]] if lines is not None else [int(i) + 1 for i in missing[:_SHOW]]
        shown = ", ".join(map(str, rows))
        more = ", ..." if missing.size > _SHOW else ""
        place = "CSV line(s)" if lines is not None else "row(s)"
        raise BadInputError(
            f"expected no missing values in column {name!r}{at}, Received: {missing.size} empty cell(s) at "
            f"{place} {shown}{more}; pass --fill interpolate or --fill ffill"
        )
    return fill_missing(raw, fill)


def difference(values: np.ndarray) -> np.ndarray:
    """``d_t = v_t - v_{t-1}`` along axis 0 with ``d_0 = 0``: one stream's first row is its own previous row."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros_like(values)
    out[1:] = values[1:] - values[:-1]
    return out


def undifference(first: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Inverse of ``difference``: rebuild a stream from its first row and its differences."""
    deltas = np.asarray(deltas, dtype=np.float64)
    return np.asarray(first, dtype=np.float64) + np.cumsum(deltas, axis=0) - deltas[:1]


def stream_values(values: np.ndarray, differenced: bool) -> np.ndarray:
    """What the scaler sees for one stream: the raw rows, or their differences."""
    return difference(values) if differenced else np.asarray(values, dtype=np.float64)


def split_bounds(n: int, val_fraction: float, test_fraction: float, min_rows: int = 1,
                 window: int | None = None) -> tuple[int, int]:
    """Chronological split of ``n`` rows into train ``[0, a)``, val ``[a, b)``, test ``[b, n)``.

    Args:
        window: the training window, when ``min_rows`` is window + horizon: the error then names the largest window
            that would fit.

    Raises:
        BadInputError: a split would have fewer than ``min_rows`` rows (the message gives all the numbers).
    """
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    b = n - n_test
    a = b - n_val
    if min(a, n_val, n_test) < min_rows:
        # the largest window that fits this split, with the horizon as it is (min_rows = window + horizon)
        fits = min(a, n_val, n_test) - (min_rows - window) if window is not None else None
        hint = f"--window {fits} or less fits these rows; " if fits is not None and fits >= 2 else ""
        raise BadInputError(
            f"expected every split to have at least window + horizon = {min_rows} rows, Received: rows={n} "
            f"split into train {a}, val {n_val}, test {n_test}; the series is too short for this window. "
            f"{hint}or use more data, a smaller horizon, or other --val-fraction/--test-fraction"
        )
    return a, b


@dataclasses.dataclass(frozen=True)
class Scaler:
    """Per-column affine map to model units: ``model = (raw - offset) / scale``."""

    kind: ScalerKind
    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, kind: ScalerKind | str, values: np.ndarray) -> Scaler:
        """Fit on ``values`` (rows x columns); a constant column gets scale 1."""
        kind = ScalerKind(kind)
        values = np.asarray(values, dtype=np.float64)
        if kind is ScalerKind.STANDARD:
            offset, scale = values.mean(axis=0), values.std(axis=0)
        else:
            offset, scale = values.min(axis=0), values.max(axis=0) - values.min(axis=0)
        return cls(kind, offset, np.where(scale == 0, 1.0, scale))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.offset) / self.scale

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * self.scale + self.offset


def scaler_rows(series: Series, train_end: int, differenced: bool) -> tuple[np.ndarray, np.ndarray]:
    """The feature and target rows a scaler is fitted on: the training rows ``[0, train_end)`` as the scaler sees
    them (``stream_values``). With differencing the stream's first row (a zero by construction, not data) is left
    out."""
    skip = 1 if differenced else 0
    fx = stream_values(series.features[:train_end], differenced)[skip:]
    fy = stream_values(series.targets[:train_end], differenced)[skip:]
    return fx, fy


def fit_scalers(series: Series, train_end: int, kind: ScalerKind | str, differenced: bool) -> tuple[Scaler, Scaler]:
    """Feature and target scalers from the training rows ``[0, train_end)`` only (``scaler_rows``)."""
    fx, fy = scaler_rows(series, train_end, differenced)
    return Scaler.fit(kind, fx), Scaler.fit(kind, fy)


def model_inputs(features: np.ndarray, scaler: Scaler, differenced: bool) -> np.ndarray:
    """One stream's raw feature rows (len, F) to model inputs (len, F)."""
    return scaler.transform(stream_values(features, differenced))


def model_targets(
    targets: np.ndarray, scaler: Scaler, horizon: int, differenced: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One stream's raw target rows (len, T) to model targets (len, H*T) and a mask of the steps that have them.

    Row ``t``, index ``k*T + j`` holds the scaled ``Y`` (or ``dY``) at ``t + k + 1``. Steps whose horizon runs past
    the stream end have ``valid=False`` and zeros (never NaN, which would poison a zero-weighted loss).
    """
    scaled = scaler.transform(stream_values(targets, differenced))
    length, width = scaled.shape
    out = np.zeros((length, horizon * width))
    for k in range(horizon):
        out[: max(length - k - 1, 0), k * width : (k + 1) * width] = scaled[k + 1 :]
    valid = np.arange(length) + horizon < length
    return out, valid


def decode_forecast(
    outputs: np.ndarray, last: np.ndarray, scaler: Scaler, horizon: int, differenced: bool
) -> np.ndarray:
    """Model outputs (..., H*T) to raw forecasts (..., H, T); ``last`` (..., T) is ``Y_t`` (used when differenced)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    width = outputs.shape[-1] // horizon
    raw = scaler.inverse(outputs.reshape(outputs.shape[:-1] + (horizon, width)))
    if differenced:
        raw = np.asarray(last, dtype=np.float64)[..., None, :] + np.cumsum(raw, axis=-2)
    return raw


def actual_future(targets: np.ndarray, positions: np.ndarray, horizon: int) -> np.ndarray:
    """``Y_{t+k+1}`` for each position ``t``: (P, H, T)."""
    return np.stack([targets[positions + k + 1] for k in range(horizon)], axis=1)


def eval_positions(length: int, window: int, horizon: int) -> np.ndarray:
    """Stream-local steps with a full window of history inside the stream and the whole horizon after it."""
    return np.arange(window - 1, length - horizon)


def windows(values: np.ndarray, positions: np.ndarray, window: int) -> np.ndarray:
    """Rows ``[t - window + 1, t]`` of one stream for each position ``t``: (P, window, columns)."""
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # (len - window + 1, C, window)
    return np.ascontiguousarray(view[positions - window + 1].transpose(0, 2, 1))


def chunk_batch(
    inputs: np.ndarray, targets: np.ndarray, valid: np.ndarray, starts: np.ndarray, window: int, burn_in: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training chunks of one stream: inputs (N, W, F), targets (N, W, H*T), per-step weights (N, W).

    A weight is 0 during the burn-in (the state is still warming up from zero) and where the horizon runs past the
    stream end, 1 elsewhere.
    """
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size and (starts.min() < 0 or starts.max() + window > len(inputs)):
        raise BadInputError(f"expected chunks inside the stream of {len(inputs)} rows, Received: starts={starts}")
    index = starts[:, None] + np.arange(window)[None, :]
    weights = valid[index] & (np.arange(window) >= burn_in)[None, :]
    return inputs[index], targets[index], weights.astype(np.float32)


def chunk_starts(length: int, window: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Every chunk start of a stream: shuffled with ``rng`` (training), in order without it (validation)."""
    starts = np.arange(length - window + 1)
    return rng.permutation(starts) if rng is not None else starts
