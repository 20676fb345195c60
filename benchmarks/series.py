"""The public real series the accuracy benchmark trains and converts on, and how to write each as a CSV.

Every series ships inside a package on PyPI (statelite itself, statsmodels, pmdarima): nothing is downloaded at run
time beyond ``pip install``. One extra series comes from the Numenta Anomaly Benchmark subset shipped in the
repository (``benchmarks/data/nab``, MIT licence); without it that entry is reported as unavailable, never an error.

Each entry records where the data comes from, its licence as the distributing package states it, and the
``statelite train`` options that suit it (window, horizon, differencing, seasonal baseline). ``Series.csv(cache)``
writes the columns the run needs to a CSV that ``statelite train`` reads; the CSVs are a cache (``.cache/`` or a
temporary folder), never committed.

    from benchmarks.series import CATALOGUE, by_name
    s = by_name("taylor")
    s.unavailable()          # None, or why not (a package missing)
    path = s.csv(".cache/accuracy-series")
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "accuracy-series"
NAB_DIR = ROOT / "benchmarks" / "data" / "nab"  # the NAB subset shipped in the repository (MIT, see its README)

Columns = dict[str, np.ndarray]  # column name -> values (a time column holds strings)


@dataclasses.dataclass(frozen=True)
class Series:
    """One catalogued series: its provenance, the columns the model uses and the training options that suit it.

    Attributes:
        name: the benchmark's key (``--series``); a variant of another series has its own name.
        title: one line saying what the values are, with units.
        package: the PyPI package that ships the data (``None`` for the optional NAB folder).
        loader: the call that returns it, as text, for the catalogue.
        source: where the data comes from (citation).
        licence: the data's terms as the distributing package states them.
        frequency: sampling interval.
        time_column, features, targets: the CSV's columns as the run uses them.
        window, horizon, difference, season: ``TrainConfig`` options that suit the series.
        tags: what the series stands for in the benchmark (``trending``, ``large magnitude``, ``multivariate``,
            ``long``, ``seasonal``, ``short``).
        note: why these options (the catalogue's last column).
    """

    name: str
    title: str
    package: str | None
    loader: str
    source: str
    licence: str
    frequency: str
    time_column: str | None
    features: tuple[str, ...]
    targets: tuple[str, ...]
    window: int
    horizon: int
    difference: bool
    season: int | None
    tags: tuple[str, ...]
    note: str
    load: Callable[[], Columns] = dataclasses.field(repr=False, compare=False)

    def unavailable(self) -> str | None:
        """Why this series cannot be loaded here (a package or folder missing), or None when it can."""
        if self.package is None:
            return None if NAB_DIR.is_dir() else f"NAB data not found at {NAB_DIR}"
        if importlib.util.find_spec(self.package) is None:
            return f"{self.package} is not installed (pip install -e '.[bench]')"
        return None

    def columns(self, max_rows: int | None = None) -> Columns:
        """The series' columns (time column first, when there is one), the first ``max_rows`` rows only if given."""
        data = self.load()
        names = ([self.time_column] if self.time_column else []) + list(dict.fromkeys(self.features + self.targets))
        out = {n: np.asarray(data[n]) for n in names}
        if max_rows is not None:
            out = {n: v[:max_rows] for n, v in out.items()}
        return out

    def csv(self, cache: str | Path = DEFAULT_CACHE, max_rows: int | None = None) -> Path:
        """Write the series to ``cache/<name>[_<max_rows>].csv`` (once: a file with the same header is reused).

        Raises:
            ImportError: the package that ships the data is not installed.
        """
        cache = Path(cache)
        path = cache / (f"{self.name}_{max_rows}.csv" if max_rows else f"{self.name}.csv")
        names = ([self.time_column] if self.time_column else []) + list(dict.fromkeys(self.features + self.targets))
        if path.exists() and path.open().readline().strip() == ",".join(names):
            return path  # written by an earlier run; another header means the catalogue changed: write it again
        why = self.unavailable()
        if why:
            raise ImportError(f"series {self.name!r}: {why}")
        cols = self.columns(max_rows)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(list(cols))
            for row in zip(*cols.values()):
                writer.writerow([_cell(v) for v in row])
        tmp.replace(path)  # a crash mid-write leaves no half file for the next run to trust
        return path

    def catalogue_row(self) -> dict:
        """The JSON-ready description (everything but the loader function)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "load"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else repr(float(v))
    return str(v)


# -- loaders ---------------------------------------------------------------------------------------------------------


def _co2() -> Columns:
    from statelite.train.data import BUNDLED_CO2_PATH, read_csv

    table = read_csv(BUNDLED_CO2_PATH)
    date, co2 = (np.array([row[table.columns.index(c)] for row in table.cells]) for c in ("date", "co2"))
    return {"date": date, "co2": np.array([float(v) if v else np.nan for v in co2])}


def _msft() -> Columns:
    from pmdarima.datasets import load_msft

    df = load_msft()
    out = {"date": df["Date"].astype(str).to_numpy()}
    for c in ("Open", "High", "Low", "Close", "Volume"):
        out[c.lower()] = df[c].to_numpy(dtype=np.float64)
    return out


def _months(first_year: int, n: int, first_month: int = 1) -> np.ndarray:
    months = first_month - 1 + np.arange(n)
    return np.array([f"{first_year + m // 12}-{m % 12 + 1:02d}" for m in months])


def _pmdarima(name: str, column: str, time: Callable[[int], np.ndarray]) -> Callable[[], Columns]:
    def load() -> Columns:
        import pmdarima.datasets as datasets

        values = np.asarray(getattr(datasets, f"load_{name}")(), dtype=np.float64)
        return {"time": time(len(values)), column: values}

    return load


def _half_hours(n: int) -> np.ndarray:
    # Taylor (2003): Monday 5 June 2000 to Sunday 27 August 2000, 48 readings a day.
    start = np.datetime64("2000-06-05T00:00")
    return np.array([str(start + np.timedelta64(30 * i, "m")) for i in range(n)])


def _macrodata() -> Columns:
    from statsmodels.datasets import macrodata

    df = macrodata.load_pandas().data
    out = {"quarter": np.array([f"{int(y)}Q{int(q)}" for y, q in zip(df["year"], df["quarter"])])}
    for c in ("realgdp", "realcons", "realinv", "cpi", "unemp", "tbilrate"):
        out[c] = df[c].to_numpy(dtype=np.float64)
    return out


def _elnino() -> Columns:
    from statsmodels.datasets import elnino

    df = elnino.load_pandas().data
    months = [c for c in df.columns if c != "YEAR"]
    values = df[months].to_numpy(dtype=np.float64).reshape(-1)  # year by year, January to December
    return {"month": _months(int(df["YEAR"].iloc[0]), values.size), "sst": values}


def _nab_speed() -> Columns:
    from statelite.train.data import read_csv

    table = read_csv(NAB_DIR / "realTraffic" / "speed_t4013.csv")
    ts, value = (table.columns.index(c) for c in ("timestamp", "value"))
    return {
        "timestamp": np.array([row[ts] for row in table.cells]),
        "speed": np.array([float(row[value]) for row in table.cells]),
    }


# -- the catalogue ---------------------------------------------------------------------------------------------------

_CO2_SOURCE = (
    "Keeling, C.D. and T.P. Whorf (2004), Atmospheric CO2 concentrations derived from flask air samples at sites in "
    "the SIO network, Trends: A Compendium of Data on Global Change, CDIAC, Oak Ridge National Laboratory"
)
_MSFT_SOURCE = (
    "MSFT daily prices and volume, 13 Mar 1986 - 10 Nov 2017, from Boris Marjanovic's Kaggle dataset 'Huge Stock "
    "Market Dataset' (kaggle.com/borismarjanovic/price-volume-data-for-all-us-stocks-etfs), as shipped in pmdarima"
)
_MSFT_LICENCE = "shipped in pmdarima (MIT); Kaggle dataset: CC0 1.0 per its Kaggle page (not re-checked offline)"

CATALOGUE: tuple[Series, ...] = (
    Series(
        name="co2",
        title="Mauna Loa weekly atmospheric CO2, ppm (59 missing weeks interpolated)",
        package="statelite",
        loader="statelite.train (train/data/co2.csv; statsmodels.datasets.co2 is the same data)",
        source=_CO2_SOURCE,
        licence="public domain",
        frequency="weekly",
        time_column="date",
        features=("co2",),
        targets=("co2",),
        window=52, horizon=4, difference=True, season=52,
        tags=("trending", "seasonal"),
        note="statelite's own preset: a yearly window, differenced (steady upward trend)",
        load=_co2,
    ),
    Series(
        name="msft_close",
        title="Microsoft daily closing price, USD (split-adjusted), differenced",
        package="pmdarima",
        loader="pmdarima.datasets.load_msft()['Close']",
        source=_MSFT_SOURCE,
        licence=_MSFT_LICENCE,
        frequency="trading days",
        time_column="date",
        features=("close",),
        targets=("close",),
        window=32, horizon=5, difference=True, season=None,
        tags=("trending", "long"),
        note="a price from $0.07 to $84: differencing keeps the test split inside the training range",
        load=_msft,
    ),
    Series(
        name="msft_close_level",
        title="Microsoft daily closing price, USD, NOT differenced",
        package="pmdarima",
        loader="pmdarima.datasets.load_msft()['Close']",
        source=_MSFT_SOURCE,
        licence=_MSFT_LICENCE,
        frequency="trading days",
        time_column="date",
        features=("close",),
        targets=("close",),
        window=32, horizon=5, difference=False, season=None,
        tags=("trending", "long"),
        note="the same series on levels: the test split lies far outside the training range (the case where "
        "quantized models used to break)",
        load=_msft,
    ),
    Series(
        name="msft_ohlcv",
        title="Microsoft daily open, high, low, close (USD) and volume (shares, ~8e7) -> close",
        package="pmdarima",
        loader="pmdarima.datasets.load_msft()",
        source=_MSFT_SOURCE,
        licence=_MSFT_LICENCE,
        frequency="trading days",
        time_column="date",
        features=("open", "high", "low", "close", "volume"),
        targets=("close",),
        window=32, horizon=5, difference=True, season=None,
        tags=("trending", "multivariate", "large magnitude", "long"),
        note="five features on scales 1e-1 to 1e9 in one input row",
        load=_msft,
    ),
    Series(
        name="taylor",
        title="Half-hourly electricity demand, England and Wales, MW (~2e4 - 4e4)",
        package="pmdarima",
        loader="pmdarima.datasets.load_taylor()",
        source="Taylor, J.W. (2003), Short-term electricity demand forecasting using double seasonal exponential "
        "smoothing, J. Operational Research Society 54, 799-805; 5 Jun - 27 Aug 2000 (R forecast::taylor)",
        licence="shipped in pmdarima (MIT); from the R forecast package (GPL-3), data provided by J.W. Taylor",
        frequency="30 minutes",
        time_column="time",
        features=("demand",),
        targets=("demand",),
        window=48, horizon=4, difference=False, season=336,
        tags=("large magnitude", "seasonal", "long"),
        note="a day per window, two hours ahead; seasonal-naive at one week (336 half-hours)",
        load=_pmdarima("taylor", "demand", _half_hours),
    ),
    Series(
        name="sunspots",
        title="Monthly mean relative sunspot numbers, 1749-1983",
        package="pmdarima",
        loader="pmdarima.datasets.load_sunspots()",
        source="Andrews, D.F. and Herzberg, A.M. (1985), Data, Springer; from the Swiss Federal Observatory and "
        "the Tokyo Astronomical Observatory (R datasets::sunspots)",
        licence="shipped in pmdarima (MIT); from R's datasets package (GPL-2 | GPL-3)",
        frequency="monthly",
        time_column="time",
        features=("sunspots",),
        targets=("sunspots",),
        window=48, horizon=6, difference=False, season=None,
        tags=("long",),
        note="noisy ~11-year cycle, no trend: levels; half a year ahead",
        load=_pmdarima("sunspots", "sunspots", lambda n: _months(1749, n)),
    ),
    Series(
        name="elnino",
        title="Monthly sea surface temperature, Nino 1+2 region, deg C, 1950-2010",
        package="statsmodels",
        loader="statsmodels.datasets.elnino.load_pandas().data (61 years x 12 months, flattened)",
        source="NOAA National Weather Service, ERSST.V3B, Nino 1+2 (cpc.ncep.noaa.gov/data/indices)",
        licence="public domain",
        frequency="monthly",
        time_column="month",
        features=("sst",),
        targets=("sst",),
        window=24, horizon=3, difference=False, season=12,
        tags=("seasonal",),
        note="strong yearly cycle with El Nino excursions; two years per window",
        load=_elnino,
    ),
    Series(
        name="macrodata",
        title="US quarterly macro data: real GDP, consumption, investment (bn 2005 USD), CPI, unemployment, T-bill "
        "rate -> real GDP",
        package="statsmodels",
        loader="statsmodels.datasets.macrodata.load_pandas().data",
        source="FRED, Federal Reserve Bank of St. Louis, and the Bureau of Labor Statistics, 1959Q1-2009Q3, compiled "
        "by Skipper Seabold",
        licence="public domain",
        frequency="quarterly",
        time_column="quarter",
        features=("realgdp", "realcons", "realinv", "cpi", "unemp", "tbilrate"),
        targets=("realgdp",),
        window=12, horizon=2, difference=True, season=None,
        tags=("trending", "multivariate", "short"),
        note="203 rows: a short window; differenced (GDP trends up)",
        load=_macrodata,
    ),
    Series(
        name="airpassengers",
        title="International airline passengers, monthly totals, thousands, 1949-1960",
        package="pmdarima",
        loader="pmdarima.datasets.load_airpassengers()",
        source="Box, G.E.P., Jenkins, G.M. and Reinsel, G.C. (1976), Time Series Analysis, Forecasting and Control, "
        "series G (R datasets::AirPassengers)",
        licence="shipped in pmdarima (MIT); from R's datasets package (GPL-2 | GPL-3)",
        frequency="monthly",
        time_column="time",
        features=("passengers",),
        targets=("passengers",),
        window=12, horizon=1, difference=True, season=12,
        tags=("trending", "seasonal", "short"),
        note="144 rows with a growing seasonal swing: differenced, a year per window",
        load=_pmdarima("airpassengers", "passengers", lambda n: _months(1949, n)),
    ),
    Series(
        name="wineind",
        title="Australian wine sales by winemakers in bottles <= 1 litre, monthly totals (~1.4e4 - 4e4)",
        package="pmdarima",
        loader="pmdarima.datasets.load_wineind()",
        source="Australian Bureau of Statistics, Jan 1980 - Aug 1994, bottles <= 1 litre (R forecast::wineind)",
        licence="shipped in pmdarima (MIT); from the R forecast package (GPL-3)",
        frequency="monthly",
        time_column="time",
        features=("sales",),
        targets=("sales",),
        window=12, horizon=1, difference=False, season=12,
        tags=("seasonal", "large magnitude", "short"),
        note="176 rows, strongly seasonal, flat: levels",
        load=_pmdarima("wineind", "sales", lambda n: _months(1980, n)),
    ),
    Series(
        name="nab_speed",
        title="Traffic speed, sensor t4013, Minnesota DOT, mph (NAB realTraffic/speed_t4013)",
        package=None,
        loader="benchmarks/data/nab/realTraffic/speed_t4013.csv",
        source="Numenta Anomaly Benchmark (Lavin and Ahmad, 2015), realTraffic, from the Minnesota Department of "
        "Transportation",
        licence="MIT (benchmarks/data/nab/LICENSE.txt)",
        frequency="~5 minutes, irregular",
        time_column="timestamp",
        features=("speed",),
        targets=("speed",),
        window=48, horizon=3, difference=False, season=None,
        tags=("optional",),
        note="irregular sensor readings with anomalies; not on PyPI, so never required",
        load=_nab_speed,
    ),
)

_BY_NAME = {s.name: s for s in CATALOGUE}


def by_name(name: str) -> Series:
    """The catalogue entry called ``name``.

    Raises:
        KeyError: no such series (the message lists the names).
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"expected a series name ({', '.join(_BY_NAME)}), Received: {name!r}") from None
