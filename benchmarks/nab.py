"""The Numenta Anomaly Benchmark (NAB) score, written from NAB's published scoring rules, for binary detections.

The corpus is the NAB subset in ``benchmarks/data/nab`` (see its README): 18 series, their labelled anomaly windows in
``windows.json`` (NAB's ``combined_windows.json`` format). ``load_corpus`` reads it, ``score_series`` scores one series'
detections, ``corpus_score`` turns a list of per-series results into NAB's normalised score (0 = the null detector,
100 = the perfect detector).

    from benchmarks.nab import load_corpus, score_series, corpus_score
    corpus = load_corpus()
    results = [score_series(my_detector(s.values) > threshold, s) for s in corpus]
    print(corpus_score(results))

How NAB scores (read from numenta/NAB: ``nab/sweeper.py`` (``scaledSigmoid``, ``Sweeper.calcSweepScore``,
``calcScoreByThreshold``, ``_getProbationaryLength``), ``nab/util.py`` (``getProbationPeriod``), ``nab/runner.py``
(``Runner.normalize``), ``nab/optimizer.py`` and ``config/profiles.json``; the older ``nab/scorer.py`` ``Scorer``
class for the single-row-window case):

* Scaled sigmoid: ``S(y) = 2 / (1 + exp(5 y)) - 1`` (= ``2 sigmoid(-5y) - 1``), and ``S(y) = -1`` when ``y > 3``.
* Probationary period: the first ``p = min(floor(0.15 n), 0.15 * 5000) = min(floor(0.15 n), 750)`` rows of a file of
  ``n`` rows are not scored: detections there count for nothing, and a window all of whose rows lie there is
  neither a true positive nor a false negative. The 750-row cap is NAB's own (``0.15 * 5000``), not ours.
* A window ``[a, b]`` (inclusive) has width ``W = b - a + 1``. A detection at row ``i`` inside it scores
  ``tp * S(-(b - i + 1) / W) / S(-1)``: exactly ``tp`` at the window's first row, falling to
  ``tp * S(-1/W) / S(-1)`` (just above 0) at its last. A window's contribution is the maximum of ``-fn`` and the
  scores of its (scorable) detections, i.e. the earliest detection counts and later ones add nothing; a window with
  no scorable detection costs ``-fn``.
* A detection at row ``i`` outside every window is a false positive. With no window ending before ``i`` it costs
  ``-fp`` (``S`` at "very far" = -1). Otherwise, with ``b, W`` the end and width of the closest preceding window, it
  scores ``fp * S((i - b) / (W - 1))``: close to 0 just after the window, tending to ``-fp`` from ``3 (W - 1)``
  rows after it. False positives add up; true negatives score nothing (``tn`` is carried for completeness only).
* Profiles (``config/profiles.json``): standard ``tp=1, fp=0.11, fn=1, tn=1``; ``reward_low_FP_rate`` ``fp=0.22``;
  ``reward_low_FN_rate`` ``fn=2``.
* Normalisation (``Runner.normalize``) is over the corpus total, not per file:
  ``100 * (sum raw - sum null) / (sum perfect - sum null)``, where the null total is the score of the detector that
  never fires (every scorable window a false negative; NAB's null detector outputs a constant 0.5 and its optimised
  threshold leaves it silent, since firing everywhere costs far more) and ``perfect = tp * number of labelled windows`` (every
  window in the label file, including any that lie in a probationary period, as NAB counts them).

Deviations from NAB's code, all deliberate:

* NAB scores anomaly scores against a threshold it optimises over the whole corpus (``nab/optimizer.py``); here the
  caller passes binary detections, so thresholding (and its optimisation) is the caller's job.
* NAB walks timestamps and finds a window's rows by timestamp equality (the first row with that timestamp, which
  matters for the two realTraffic files with one duplicated timestamp); here windows are inclusive row indices, and
  ``load_corpus`` maps each window timestamp to the first row carrying it, so the result is the same.
* NAB's sweeper divides by ``W - 1`` and so fails for a false positive after a one-row window; we use what NAB's
  earlier ``Scorer`` did for such windows: relative position 2.0 (a near-full ``-fp``). NAB's corpus has no such
  window.
* The counts in ``SeriesScore`` are per window (``tp``/``fn``) and per detection (``fp``); NAB's result files count
  rows (every detected row in a window is a "tp" row there).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = ROOT / "benchmarks" / "data" / "nab"
WINDOWS_FILE = "windows.json"

PROBATION_PERCENT = 0.15  # NAB's probationaryPercent
PROBATION_CAP = 750  # NAB's own cap: min(floor(0.15 n), 0.15 * 5000)
SINGLE_ROW_WINDOW_FP_POSITION = 2.0  # NAB's earlier Scorer: relative position for a FP after a one-row window


@dataclasses.dataclass(frozen=True)
class Profile:
    """A NAB application profile: the weights of each outcome.

    Attributes:
        tp: weight of a detected window (a detection at its first row scores exactly ``tp``).
        fp: weight of a false positive (at most ``fp`` is lost per false detection).
        fn: cost of a missed window.
        tn: NAB's true-negative weight; NAB never uses it in the score, nor do we.
    """

    tp: float
    fp: float
    fn: float
    tn: float


NAB_PROFILES: dict[str, Profile] = {
    "standard": Profile(tp=1.0, fp=0.11, fn=1.0, tn=1.0),
    "reward_low_FP_rate": Profile(tp=1.0, fp=0.22, fn=1.0, tn=1.0),
    "reward_low_FN_rate": Profile(tp=1.0, fp=0.11, fn=2.0, tn=1.0),
}
STANDARD = NAB_PROFILES["standard"]


@dataclasses.dataclass(frozen=True, eq=False)
class NabSeries:
    """One NAB data file with its labelled windows.

    Attributes:
        name: the path relative to the corpus root, as in ``windows.json`` (e.g. ``"realTraffic/speed_6005.csv"``).
        timestamps: the ``timestamp`` column as written in the CSV.
        values: the ``value`` column, float64, read-only.
        windows: labelled anomaly windows as inclusive row indices ``(start, end)``, sorted and disjoint.
        probation: number of leading rows that are not scored (``probationary_rows(len(values))`` for NAB files).
    """

    name: str
    timestamps: list[str]
    values: np.ndarray
    windows: list[tuple[int, int]]
    probation: int

    def __post_init__(self) -> None:
        n = len(self.values)
        if np.ndim(self.values) != 1:
            raise ValueError(f"{self.name}: values must be 1-D, received shape {np.shape(self.values)}")
        if len(self.timestamps) != n:
            raise ValueError(f"{self.name}: expected {n} timestamps (one per value), received {len(self.timestamps)}")
        if not 0 <= self.probation <= n:
            raise ValueError(f"{self.name}: probation must be in [0, {n}], received {self.probation}")
        _check_windows(self.windows, n, self.name)

    def __len__(self) -> int:
        return len(self.values)


@dataclasses.dataclass(frozen=True)
class SeriesScore:
    """The NAB score of one series' detections.

    Attributes:
        name: the series' name.
        raw: NAB raw score: window contributions plus false-positive contributions.
        tp: windows with at least one scorable detection.
        fp: scorable detections outside every window.
        fn: scorable windows with no scorable detection.
        null: raw score of the detector that never fires (``-fn`` per scorable window).
        perfect: raw score NAB's normaliser calls perfect (``tp`` per labelled window).
    """

    name: str
    raw: float
    tp: int
    fp: int
    fn: int
    null: float
    perfect: float


def _check_windows(windows: Sequence[tuple[int, int]], n: int, name: str) -> None:
    """Reject windows NAB could not score: out of range, reversed, unsorted or overlapping.

    NAB enters windows in file order and holds one open at a time, so windows must be sorted and disjoint.
    """
    prev_end = -1
    for w in windows:
        if len(w) != 2:
            raise ValueError(f"{name}: a window must be (start, end), received {w!r}")
        a, b = int(w[0]), int(w[1])
        if not 0 <= a <= b < n:
            raise ValueError(f"{name}: expected a window with 0 <= start <= end < {n}, received ({a}, {b})")
        if a <= prev_end:
            raise ValueError(f"{name}: expected sorted, disjoint windows; ({a}, {b}) starts at or before the previous "
                             f"window's end {prev_end}")
        prev_end = b


def probationary_rows(n: int, cap: int = PROBATION_CAP) -> int:
    """The number of leading rows NAB leaves unscored in a file of ``n`` rows.

    NAB computes ``min(floor(0.15 * n), 0.15 * 5000)``; the cap of 750 rows is NAB's. The float product is kept as
    NAB writes it so the rounding matches (``floor(0.15 * 20) == 3``).

    Args:
        n: rows in the file.
        cap: the most rows the period may have (NAB: 750).

    Returns:
        The probationary period length in rows.
    """
    if n < 0:
        raise ValueError(f"expected n >= 0 rows, received {n}")
    return int(min(math.floor(PROBATION_PERCENT * n), cap))


def scaled_sigmoid(position: float) -> float:
    """NAB's scaled sigmoid of a relative position: ``2 / (1 + exp(5 x)) - 1``, and -1 beyond 3.

    Args:
        position: relative position; -1 is a window's first row, 0 its right edge, > 0 past the window.

    Returns:
        A value in [-1, 1): about 0.987 at -1, 0 at 0, about -0.987 at 1.
    """
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)  # NAB divides by it so the first row of a window scores exactly tp


def _window_detection_score(i: int, start: int, end: int, profile: Profile) -> float:
    """NAB's score of a detection at row ``i`` inside the window ``[start, end]``."""
    width = end - start + 1
    return scaled_sigmoid(-(end - i + 1) / width) * profile.tp / MAX_TP


def _false_positive_score(i: int, prev: tuple[int, int] | None, profile: Profile) -> float:
    """NAB's score of a detection at row ``i`` outside every window, given the closest window ending before it."""
    if prev is None:
        return -profile.fp
    start, end = prev
    width = end - start + 1
    position = SINGLE_ROW_WINDOW_FP_POSITION if width == 1 else (i - end) / (width - 1)
    return scaled_sigmoid(position) * profile.fp


def score_series(detections: np.ndarray, series: NabSeries, profile: Profile = STANDARD) -> SeriesScore:
    """Score one series' binary detections by NAB's rules (see the module docstring).

    Args:
        detections: bool array, one entry per row of ``series``; True where the detector fires.
        series: the series with its windows and probationary period.
        profile: the weights (default: NAB's standard profile).

    Returns:
        The raw score, window/detection counts, and the null and perfect raw scores for normalisation.
    """
    det = np.asarray(detections)
    if det.dtype != np.bool_:
        raise TypeError(f"{series.name}: expected a bool detections array, received dtype {det.dtype}")
    if det.shape != (len(series),):
        raise ValueError(f"{series.name}: expected detections of shape ({len(series)},), received {det.shape}")

    rows = np.flatnonzero(det)
    rows = rows[rows >= series.probation]  # NAB ignores the probationary period
    starts = np.array([a for a, _ in series.windows], dtype=np.int64)
    ends = np.array([b for _, b in series.windows], dtype=np.int64)

    # For each detection, the last window starting at or before it; it is inside that window when it is <= its end.
    k_in = np.searchsorted(starts, rows, side="right") - 1
    inside = (k_in >= 0) & (rows <= ends[np.maximum(k_in, 0)]) if len(starts) else np.zeros(len(rows), bool)

    # Windows with at least one row after the probationary period are scored; the others do not exist for NAB.
    scorable = ends >= series.probation
    best = np.where(scorable, -profile.fn, 0.0).astype(np.float64)
    hit = np.zeros(len(starts), dtype=bool)
    for i, k in zip(rows[inside], k_in[inside]):
        best[k] = max(best[k], _window_detection_score(int(i), int(starts[k]), int(ends[k]), profile))
        hit[k] = True

    fp_rows = rows[~inside]
    # The closest window ending before each false positive: the last one whose end is < the row.
    k_prev = np.searchsorted(ends, fp_rows, side="left") - 1
    fp_total = 0.0
    for i, k in zip(fp_rows, k_prev):
        prev = (int(starts[k]), int(ends[k])) if k >= 0 else None
        fp_total += _false_positive_score(int(i), prev, profile)

    n_scorable = int(scorable.sum())
    return SeriesScore(
        name=series.name,
        raw=float(best.sum() + fp_total),
        tp=int(hit.sum()),
        fp=len(fp_rows),
        fn=int((scorable & ~hit).sum()),
        null=-profile.fn * n_scorable,
        perfect=profile.tp * len(series.windows),
    )


def corpus_score(results: Sequence[SeriesScore]) -> float:
    """NAB's normalised score of a corpus: ``100 (raw - null) / (perfect - null)`` over the corpus totals.

    Args:
        results: one ``SeriesScore`` per series, all scored with the same profile.

    Returns:
        0 for the null detector, 100 for the perfect one; negative when worse than never firing.
    """
    if not results:
        raise ValueError("expected at least one SeriesScore, received none")
    raw = math.fsum(r.raw for r in results)
    null = math.fsum(r.null for r in results)
    perfect = math.fsum(r.perfect for r in results)
    if perfect == null:
        raise ValueError(f"cannot normalise: perfect ({perfect}) equals null ({null}); the corpus has no scorable "
                         f"window")
    return 100.0 * (raw - null) / (perfect - null)


def _parse_time(text: str, where: str) -> dt.datetime:
    """A NAB timestamp (``2014-04-10 07:15:00`` in CSVs, ``...:00.000000`` in windows.json) as a datetime."""
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{where}: expected a timestamp like '2014-04-10 07:15:00', received {text!r}") from None


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """The timestamp and value columns of a NAB CSV (header ``timestamp,value``)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected the header ['timestamp', 'value'], received {header}")
        timestamps, values = [], []
        for row in reader:
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}: expected 2 columns, received {len(row)} in {row!r}")
            timestamps.append(row[0])
            values.append(float(row[1]))
    return timestamps, np.array(values, dtype=np.float64)


def load_corpus(root: str | Path = DEFAULT_ROOT, cap: int = PROBATION_CAP) -> list[NabSeries]:
    """Load every series listed in ``windows.json``, with windows mapped to row indices.

    Args:
        root: the corpus folder (``windows.json`` plus the CSV folders).
        cap: the probationary period cap passed to ``probationary_rows`` (NAB: 750).

    Returns:
        The series sorted by name.
    """
    root = Path(root)
    with open(root / WINDOWS_FILE) as f:
        labels = json.load(f)
    if not isinstance(labels, dict):
        raise ValueError(f"{root / WINDOWS_FILE}: expected an object of file -> windows, received "
                         f"{type(labels).__name__}")
    corpus = []
    for name in sorted(labels):
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in {WINDOWS_FILE} but missing")
        timestamps, values = _read_csv(path)
        # NAB finds a window edge as the first row with that timestamp (two realTraffic files repeat one timestamp).
        first_row: dict[dt.datetime, int] = {}
        for i, t in enumerate(timestamps):
            first_row.setdefault(_parse_time(t, f"{path} row {i + 1}"), i)
        windows = []
        for limits in labels[name]:
            if len(limits) != 2:
                raise ValueError(f"{name}: expected a window [start, end], received {limits!r}")
            edges = []
            for t in limits:
                row = first_row.get(_parse_time(t, f"{WINDOWS_FILE} {name}"))
                if row is None:
                    raise ValueError(f"{name}: window timestamp {t!r} is not a row of the file")
                edges.append(row)
            windows.append((edges[0], edges[1]))
        values.flags.writeable = False  # the corpus is shared between callers; nobody edits it in place
        corpus.append(NabSeries(name=name, timestamps=timestamps, values=values, windows=windows,
                                probation=probationary_rows(len(values), cap)))
    return corpus
