"""The two pictures of a run: ``loss.png`` (training and validation loss per epoch) and ``forecast.png`` (the test
split against the streaming one-step-ahead forecast). Matplotlib with the Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from statelite.calendar import wall_seconds
from statelite.errors import BadInputError
from statelite.timecol import TimeKind, parse_time

_LABEL_CHARS = 16  # a time label longer than this is cut, so six of them fit under the axis


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def loss_plot(path: Path, history: list[dict[str, float]], best_epoch: int) -> None:
    """Loss and val_loss per epoch (log scale), the restored best epoch marked."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [h["loss"] for h in history], marker=".", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], marker=".", label="validation")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best (epoch {best_epoch})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted MSE (model units)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class TimeAxis(NamedTuple):
    """How a time column's cells are drawn on the x axis."""

    kind: str  # "datetime", "number", or "labels" (row positions with a few cells as tick labels)
    x: np.ndarray | None  # datetime64[ms] wall-clock times, float64 numbers, or None for "labels"
    label: str  # the axis label


def time_axis(cells, column: str | None = "time") -> TimeAxis:
    """The x values of a time column's cells: dates when every cell is a date-time, numbers when every cell is a
    plain number, else ``"labels"``.

    A date-time is placed at the wall-clock time written in its cell (``10:00+02:00`` at 10:00), so the plot reads
    as the file does; the label names the UTC offset when every cell writes the same one.

    Args:
        cells: the time column's cells (text).
        column: the column's name, for the label.

    Returns:
        A ``TimeAxis``.
    """
    column = column or "time"
    texts = [str(c) for c in cells]
    labels = TimeAxis("labels", None, column)
    try:
        parsed = [parse_time(t, column=column) for t in texts]
    except BadInputError:
        return labels
    kinds = {k for _, k in parsed}
    if kinds == {TimeKind.NUMBER}:
        return TimeAxis("number", np.array([v for v, _ in parsed], dtype=np.float64), column)
    if kinds != {TimeKind.DATETIME}:  # none, or dates and numbers mixed
        return labels
    wall = np.array([wall_seconds(t, column) for t in texts], dtype=np.float64)
    zones = {_zone(t, w - v) for t, w, (v, _) in zip(texts, wall, parsed)}
    if zones == {None}:
        label = column
    elif len(zones) == 1:
        label = f"{column} (wall-clock as written, {zones.pop()})"
    else:  # offsets differ (a daylight-saving change) or only some cells have one: each is drawn as written
        label = f"{column} (wall-clock as written)"
    return TimeAxis("datetime", np.round(wall * 1e3).astype(np.int64).astype("datetime64[ms]"), label)


def _zone(cell: str, offset: float) -> str | None:
    """``UTC+02:00`` for a cell that writes a UTC offset of ``offset`` seconds (``UTC`` for ``Z`` or +00:00), None for
    a cell that writes none (a date, or a naive time)."""
    text = cell.strip().strip("\"'").strip()
    for i, ch in enumerate(text):
        if ch in "Tt " and i >= 8:
            clock = text[i + 1:]
            break
    else:
        return None
    if clock[-1:] not in ("Z", "z") and "+" not in clock and "-" not in clock:
        return None
    minutes = round(offset / 60)
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def forecast_plot(path: Path, series, rows: np.ndarray, forecast: np.ndarray, first_scored: int, title: str) -> None:
    """Actual targets on the test split against the horizon-1 streaming forecast made at each row, saved to ``path``.

    ``forecast[i]`` is the forecast, made at ``rows[i]``, of the targets at ``rows[i] + 1``; it is drawn there. The x
    axis is the time column when it holds date-times or numbers (see ``time_axis``), else row positions.
    """
    plt = _pyplot()
    fig = _draw(series, rows, forecast, first_scored, title)
    fig.savefig(path)
    plt.close(fig)


def _draw(series, rows: np.ndarray, forecast: np.ndarray, first_scored: int, title: str):
    """The figure of ``forecast_plot``, not saved or closed."""
    plt = _pyplot()
    import matplotlib.dates as mdates

    width = series.targets.shape[1]
    fig, axes = plt.subplots(width, 1, figsize=(9, 3 * width), dpi=100, squeeze=False)
    shown = np.arange(rows[0], rows[-1] + 2)
    axis = TimeAxis("labels", None, "row") if series.time is None else time_axis(series.time[shown], series.time_column)
    x = shown if axis.x is None else axis.x  # x[r - shown[0]] is where row r is drawn
    scored = shown[0] <= first_scored <= shown[-1]
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(x, series.targets[shown, j], color="black", linewidth=1, label="actual")
        ax.plot(x[rows + 1 - shown[0]], forecast[:, j], color="tab:orange", linewidth=1,
                label="streaming forecast, horizon 1")
        if scored:
            ax.axvline(x[first_scored - shown[0]], color="grey", linestyle=":", label="first scored position")
        ax.set_ylabel(series.target_names[j])
        ax.legend(loc="best", fontsize="small")
        if axis.kind == "datetime":
            locator = mdates.AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    bottom = axes[-1, 0]
    if series.time is not None and axis.kind == "labels":
        ticks = np.linspace(shown[0], shown[-1], 6).astype(int)
        bottom.set_xticks(ticks, [_cut(str(series.time[i])) for i in ticks])
    bottom.set_xlabel(axis.label)
    axes[0, 0].set_title(f"test split: {title}")
    fig.tight_layout()
    return fig


def _cut(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[:_LABEL_CHARS - 1] + "\u2026"
