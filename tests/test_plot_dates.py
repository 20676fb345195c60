"""forecast.png's x axis: a date-time time column as dates (wall-clock as written), a numeric one as numbers, anything
else as row positions with a few cells as tick labels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("statelite.train", exc_type=ImportError)

import matplotlib.dates as mdates  # noqa: E402

from statelite.train import data as D  # noqa: E402
from statelite.train import plots  # noqa: E402

pytestmark = pytest.mark.tf


def test_yyyymmdd_cells_are_dates():
    axis = plots.time_axis(np.array(["19580329", "19580405", "19580412"]), "date")
    assert axis.kind == "datetime"
    np.testing.assert_array_equal(axis.x, np.array(["1958-03-29", "1958-04-05", "1958-04-12"], dtype="datetime64[D]"))
    assert axis.label == "date"


def test_one_offset_is_drawn_as_written_and_named():
    axis = plots.time_axis(["2015-08-31 10:00:00+02:00", "2015-08-31T11:30+0200"], "timestamp")
    assert axis.kind == "datetime"
    np.testing.assert_array_equal(axis.x, np.array(["2015-08-31T10:00", "2015-08-31T11:30"], dtype="datetime64[m]"))
    assert axis.label == "timestamp (wall-clock as written, UTC+02:00)"


@pytest.mark.parametrize("cells, zone", [
    (["2015-08-31T10:00Z", "2015-08-31T11:00:00+00:00"], ", UTC)"),
    (["2015-08-31T10:00-05:30", "2015-08-31T11:00-05:30"], ", UTC-05:30)"),
    (["2015-10-25T01:00+02:00", "2015-10-25T02:00+01:00"], ")"),  # a daylight-saving change: offsets differ
    (["2015-10-25T01:00", "2015-10-25T02:00+01:00"], ")"),  # only some cells write one
])
def test_the_label_names_one_shared_offset_only(cells, zone):
    axis = plots.time_axis(cells, "t")
    assert axis.kind == "datetime"
    assert axis.label == "t (wall-clock as written" + zone
    assert axis.x[0] == np.datetime64(cells[0][:16])


def test_year_fractions_are_numbers():
    axis = plots.time_axis(["1958.25", "1958.5", "1958.75"], "year")
    assert axis.kind == "number"
    np.testing.assert_array_equal(axis.x, [1958.25, 1958.5, 1958.75])
    assert axis.label == "year"


@pytest.mark.parametrize("cells", [["a", "b"], ["19580329", "1958.5"], ["2015-08-31", "n/a"]])
def test_labels_and_mixed_cells_keep_row_positions(cells):
    assert plots.time_axis(cells, "t") == ("labels", None, "t")


def _series(time, n=40):
    targets = np.sin(np.arange(n, dtype=np.float64) / 3.0).reshape(n, 1)
    return D.Series(targets, targets, time, ("co2",), ("co2",), None if time is None else "date", "test")


WEEKS = np.datetime64("1958-03-29") + 7 * np.arange(40)  # co2.csv's weekly YYYYMMDD cells


@pytest.mark.parametrize("time, x", [
    (np.array([str(d).replace("-", "") for d in WEEKS]), WEEKS.astype("datetime64[ms]")),
    (np.array([f"{1958 + i / 12:.4f}" for i in range(40)]), np.round(1958 + np.arange(40) / 12, 4)),
    (np.array([f"week {i}" for i in range(40)]), np.arange(40)),
    (None, np.arange(40)),
])
def test_forecast_plot_draws_the_time_axis(tmp_path, time, x):
    series = _series(time)
    rows = np.arange(20, 38)  # the forecast made at row 37 is of row 38, the last one shown
    forecast = series.targets[rows + 1] + 0.1
    fig = plots._draw(series, rows, forecast, first_scored=24, title="test")
    try:
        ax = fig.axes[-1]
        actual, predicted, scored = ax.lines[:3]
        np.testing.assert_array_equal(actual.get_xdata(), x[20:39])
        np.testing.assert_array_equal(predicted.get_xdata(), x[21:39])
        assert scored.get_xdata()[0] == x[24]
        dated = isinstance(ax.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
        assert dated == (x.dtype.kind == "M")
        assert ax.get_xlabel() == ("row" if time is None else "date")
        if time is not None and x.dtype.kind == "i":  # labels: six cells under the axis, as before
            assert [t.get_text() for t in ax.get_xticklabels()][0] == "week 20"
    finally:
        plots._pyplot().close(fig)
    plots.forecast_plot(tmp_path / "forecast.png", series, rows, forecast, first_scored=24, title="test")
    assert (tmp_path / "forecast.png").stat().st_size > 1000
