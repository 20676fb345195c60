"""The run-time range guard: count graph inputs outside the range the model was trained on, or clipped by its input.

An int8 model clips every input beyond the range it was calibrated on, silently, and a recurrent model fed values it
never saw in training forecasts with no warning. ``RangeGuard`` watches every row fed to the graph (the raw row, or
its raw first difference when the model differences: the metadata's ``input_range.basis``) and counts, per column,
rows outside the training range and rows beyond the clip range of an integer input. It remembers the first step of
each and calls ``on_out_of_range`` the first time each column goes out of range per kind, so a caller can warn once.

The check is cheap when everything is in range: one pair of float comparisons per step on the single-sensor path,
one vectorised comparison otherwise; the counting runs only on a miss. ``StatefulRunner`` and ``StreamPool`` own one
guard each (``range_report``, ``reset_range_counts``, ``on_out_of_range``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable

import numpy as np

from .metadata import InputRange, ModelMetadata

_count_nonzero = np.count_nonzero


class RangeKind(str, enum.Enum):
    OUTSIDE_TRAINING = "outside_training"  # beyond train_min/train_max: forecasts may be unreliable
    CLIPPED = "clipped"  # beyond clip_min/clip_max: an integer input reaches the model as the bound itself


# fn(column, kind, step, value, lo, hi): the first time ``column`` goes out of range per kind (``lo``/``hi`` that
# kind's range). It runs before the row reaches the interpreter: an exception it raises propagates from the step call
# and leaves the state as it was before that row.
RangeCallback = Callable[[str, RangeKind, int, float, float, float], None]


@dataclasses.dataclass(frozen=True)
class ColumnRange:
    """One input column's counts. Steps count from the guard's start (or its last ``reset_range_counts``), from 0."""

    column: str
    outside_training: int
    clipped: int
    first_outside_step: int | None
    first_clipped_step: int | None
    train_min: float | None
    train_max: float | None
    clip_min: float | None
    clip_max: float | None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        del d["column"]
        return d


@dataclasses.dataclass(frozen=True)
class RangeReport:
    """What a ``RangeGuard`` counted: per column, and in total. JSON-ready through ``to_dict``.

    ``basis`` is ``value`` or ``difference`` (what the ranges describe); ``steps`` counts step calls checked and
    ``rows`` the rows in them (more than ``steps`` for a batch or a pool).
    """

    basis: str
    steps: int
    rows: int
    columns: tuple[ColumnRange, ...]

    @property
    def outside_training(self) -> int:
        return sum(c.outside_training for c in self.columns)

    @property
    def clipped(self) -> int:
        return sum(c.clipped for c in self.columns)

    @property
    def any(self) -> bool:
        """Whether any row was outside the training range or clipped."""
        return bool(self.outside_training or self.clipped)

    def to_dict(self) -> dict:
        return {
            "basis": self.basis,
            "steps": self.steps,
            "rows": self.rows,
            "outside_training": self.outside_training,
            "clipped": self.clipped,
            "columns": {c.column: c.to_dict() for c in self.columns},
        }

    @classmethod
    def combine(cls, reports: Iterable[RangeReport]) -> RangeReport | None:
        """Several guards' reports of one model (one runner per stream) as one: counts summed, first steps the
        earliest of any (each counted in its own guard's steps). None when there are none."""
        reports = [r for r in reports if r is not None]
        if not reports:
            return None
        columns = []
        for cols in zip(*(r.columns for r in reports)):

            def first(values):
                values = [v for v in values if v is not None]
                return min(values) if values else None

            columns.append(
                dataclasses.replace(
                    cols[0],
                    outside_training=sum(c.outside_training for c in cols),
                    clipped=sum(c.clipped for c in cols),
                    first_outside_step=first(c.first_outside_step for c in cols),
                    first_clipped_step=first(c.first_clipped_step for c in cols),
                )
            )
        return cls(reports[0].basis, sum(r.steps for r in reports), sum(r.rows for r in reports), tuple(columns))


def _num(v: float) -> str:
    return format(float(v), ".6g")


def describe(basis: str, column: str, kind: RangeKind, value: float, lo: float, hi: float, input_type: str) -> str:
    """One sentence saying what an out-of-range value is and what it means (for warnings and errors)."""
    what = "first difference" if basis == "difference" else "value"
    where = f"column {column!r} {what} {_num(value)}"
    if kind is RangeKind.CLIPPED:
        return f"{where} is beyond the {input_type} input range [{_num(lo)}, {_num(hi)}] and is clipped to it"
    return f"{where} is outside the training range [{_num(lo)}, {_num(hi)}]"


def integer_input_type(md: ModelMetadata) -> str:
    """The integer type that clips the model's input, for messages: ``int8``, ``int16`` or ``integer``."""
    if np.dtype(md.x.dtype).kind == "i":
        return str(np.dtype(md.x.dtype))
    return {"int8": "int8", "int16x8": "int16"}.get(md.quant, "integer")


def _quantization_clip(md: ModelMetadata) -> tuple[np.ndarray, np.ndarray] | None:
    """Where the host's own quantization of an integer ``x`` clips, in raw units (None for a float ``x``)."""
    q = md.x.quantization
    if q is None or np.dtype(md.x.dtype).kind != "i":
        return None
    info = np.iinfo(np.dtype(md.x.dtype))
    lo, hi = (info.min - q.zero_point) * q.scale, (info.max - q.zero_point) * q.scale
    n = len(md.features)
    if md.graph_scales_inputs:
        return np.full(n, lo), np.full(n, hi)
    offset, scale = np.asarray(md.scaler.feature_offset), np.asarray(md.scaler.feature_scale)
    return offset + scale * lo, offset + scale * hi


class RangeGuard:
    """Counts graph-input rows outside the training range and beyond the clip range, per column.

    Args:
        input_range: the metadata's ``InputRange`` (None: no training range, only ``clip``).
        features: the column names, in model order.
        clip: ``(clip_min, clip_max)`` arrays used when ``input_range`` has none (an integer ``x`` the host
            quantizes).
        input_type: the integer type that clips, for messages.
        basis: what the rows are when ``input_range`` is None: ``value`` or ``difference``.
    """

    def __init__(self, input_range: InputRange | None, features, clip=None, input_type: str = "int8",
                 basis: str = "value"):
        self.features = tuple(features)
        n = len(self.features)
        self.basis = input_range.basis if input_range is not None else basis
        self.input_type = input_type
        inf = np.full(n, np.inf)
        if input_range is not None:
            for name in ("train_min", "train_max", "clip_min", "clip_max"):
                v = getattr(input_range, name)
                if v is not None and len(v) != n:
                    raise ValueError(f"input_range.{name} must have {n} values (features {list(features)}); "
                                     f"received {len(v)}.")
            self.train_lo = np.asarray(input_range.train_min, float)
            self.train_hi = np.asarray(input_range.train_max, float)
            self.has_train = True
            if input_range.clip_min is not None and input_range.clip_max is not None:
                clip = (input_range.clip_min, input_range.clip_max)
        else:
            self.train_lo, self.train_hi, self.has_train = -inf, inf.copy(), False
        self.has_clip = clip is not None
        self.clip_lo = np.asarray(clip[0], float) if clip is not None else -inf
        self.clip_hi = np.asarray(clip[1], float) if clip is not None else inf.copy()
        # Inside both ranges: nothing to count. The fast checks compare with these only.
        self.lo = np.maximum(self.train_lo, self.clip_lo)
        self.hi = np.minimum(self.train_hi, self.clip_hi)
        self.lo0, self.hi0 = float(self.lo[0]), float(self.hi[0])  # the single-sensor path's Python floats
        self.on_out_of_range: RangeCallback | None = None
        self.reset_counts()

    @classmethod
    def for_model(cls, md: ModelMetadata) -> RangeGuard | None:
        """The guard of a model: from its ``input_range``, else only the clip range of an integer ``x``; None when
        the model records neither (older files: no guard, no cost beyond one comparison)."""
        clip = _quantization_clip(md)
        if md.input_range is None and clip is None:
            return None
        basis = "difference" if md.difference else "value"
        return cls(md.input_range, md.features, clip, integer_input_type(md), basis)

    def reset_counts(self) -> None:
        """Zero every count and first step, so the callback fires again on the next out-of-range row."""
        n = len(self.features)
        self.steps = 0
        self.extra_rows = 0  # rows beyond one per step (batches, pools): rows = steps + extra_rows
        self.outside = [0] * n
        self.clipped = [0] * n
        self.first_outside: list[int | None] = [None] * n
        self.first_clipped: list[int | None] = [None] * n

    def check(self, rows: np.ndarray, steps: int = 1) -> None:
        """Count one step's rows (``steps`` consecutive steps of equally many rows each, in step order).

        Args:
            rows: raw graph inputs, ``(..., features)``, already differenced when the basis is ``difference``.
            steps: how many steps the rows make up.
        """
        if rows.ndim != 2:
            rows = rows.reshape(-1, len(self.features))
        self.steps += steps
        self.extra_rows += len(rows) - steps
        # count_nonzero: about half the cost of ndarray.any() on a few rows.
        if _count_nonzero(rows < self.lo) or _count_nonzero(rows > self.hi):
            self._count(rows, self.steps - steps, max(len(rows) // steps, 1))

    def miss(self, value: float) -> None:
        """The single-sensor path's detailed work, after its comparison failed (``steps`` already counted)."""
        self._count(np.array([[value]]), self.steps - 1, 1)

    def _count(self, rows: np.ndarray, base: int, per_step: int) -> None:
        events = []
        kinds = [(RangeKind.OUTSIDE_TRAINING, self.train_lo, self.train_hi, self.outside, self.first_outside)]
        if self.has_clip:
            kinds.append((RangeKind.CLIPPED, self.clip_lo, self.clip_hi, self.clipped, self.first_clipped))
        for kind, lo, hi, counts, firsts in kinds:
            hit = (rows < lo) | (rows > hi)  # NaN compares false: a non-finite value is another problem
            for j in np.flatnonzero(hit.any(axis=0)):
                column = hit[:, j]
                counts[j] += int(column.sum())
                if firsts[j] is None:
                    i = int(column.argmax())
                    firsts[j] = base + i // per_step
                    events.append((self.features[j], kind, firsts[j], float(rows[i, j]), float(lo[j]), float(hi[j])))
        # Counted first, then told: a callback that raises (to refuse the row) finds every count already made.
        if self.on_out_of_range is not None:
            for event in events:
                self.on_out_of_range(*event)

    def report(self) -> RangeReport:
        def opt(a, j, present):
            return float(a[j]) if present else None

        columns = tuple(
            ColumnRange(
                column=name,
                outside_training=self.outside[j],
                clipped=self.clipped[j],
                first_outside_step=self.first_outside[j],
                first_clipped_step=self.first_clipped[j],
                train_min=opt(self.train_lo, j, self.has_train),
                train_max=opt(self.train_hi, j, self.has_train),
                clip_min=opt(self.clip_lo, j, self.has_clip),
                clip_max=opt(self.clip_hi, j, self.has_clip),
            )
            for j, name in enumerate(self.features)
        )
        return RangeReport(self.basis, self.steps, self.steps + self.extra_rows, columns)


def summary_lines(report: RangeReport | None, input_type: str = "int8", where=None) -> list[str]:
    """One line per column that went out of range, for a summary at the end of a run (empty when none did).

    Args:
        report: the counts.
        input_type: the integer type that clips, for the clip phrase.
        where: ``{(column, kind): text}`` naming where each kind was first seen (say ``row 57``); default the step.
    """
    if report is None:
        return []
    what = "first differences" if report.basis == "difference" else "values"
    lines = []
    for c in report.columns:
        if not (c.outside_training or c.clipped):
            continue

        def first(kind, step):
            text = (where or {}).get((c.column, kind)) or f"step {step}"
            return f"first at {text}"

        parts = []
        if c.outside_training:
            parts.append(
                f"{c.outside_training} of {report.rows} {what} outside the training range [{_num(c.train_min)}, "
                f"{_num(c.train_max)}] ({first(RangeKind.OUTSIDE_TRAINING, c.first_outside_step)})"
            )
        if c.clipped:
            parts.append(
                f"{c.clipped} clipped to the {input_type} input range [{_num(c.clip_min)}, {_num(c.clip_max)}] "
                f"({first(RangeKind.CLIPPED, c.first_clipped_step)})"
            )
        lines.append(f"column {c.column!r}: " + "; ".join(parts))
    return lines
