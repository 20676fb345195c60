"""Rolling-origin backtests: train and score K chronological folds of the same data, expanding window.

One test split says how a model did on one stretch of time; a backtest says how steady that is. Fold ``k`` of ``K``
trains on each series cut to its first ``n_k`` rows and scores the test split at the end of that cut, exactly as
``statelite train`` would on a file that ended there. The cuts are chosen from the end backwards, so that the folds'
test splits follow each other without a gap or an overlap and the last fold is a plain ``train`` run on the whole
data: ``n_K = rows``, and ``n_{k-1}`` is where fold ``k``'s test split starts. Fold ``k`` uses the test fraction
``f_k = test_fraction / (1 - (K - k) * test_fraction)``, so every test split holds ``round(rows * test_fraction)``
rows to within one (the trainer rounds each cut on its own); the validation split keeps ``val_fraction`` of the cut.

Each fold is an ordinary run folder (``DIR/fold-k``, convertible); ``DIR/backtest.json``, ``backtest.md`` and
``backtest.png`` compare the model's streaming RMSE with persistence's and seasonal naive's, fold by fold and as a
mean with its spread. A panel's figures are its pooled ones, and its ratio the mean of the per-series ratios.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from statelite.errors import BadInputError
from statelite.progress import prefixed

from . import data as D
from . import panel as P
from .config import TrainConfig

BACKTEST_FORMAT = "statelite-backtest"
BACKTEST_FORMAT_VERSION = 1
JSON_FILE = "backtest.json"
TABLE_FILE = "backtest.md"
PLOT_FILE = "backtest.png"
MIN_FOLDS = 2
# The figures summarised across folds: (name in the fold dict, baseline or None for a ratio).
_SUMMARISED = ("model", "persistence", "seasonal_naive")
_RATIOS = ("ratio_to_persistence", "ratio_to_seasonal_naive")


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold: its cut of every series, its run folder and its test figures (raw units, streaming model).

    ``series`` maps each key (``"None"`` for a single series) to ``{"rows": n_k, "split": {"train": [0, a], "val":
    [a, b], "test": [b, n_k]}}``. ``ratio_to_*`` is the model's RMSE over the baseline's (for a panel, the mean of
    the per-series ratios); ``seasonal_naive`` and its ratio are None without ``season``.
    """

    index: int
    run_dir: Path
    test_fraction: float
    rows: int
    test_rows: int
    positions: int
    series: dict[str, dict[str, Any]]
    model: dict[str, float]
    windowed: dict[str, float]
    persistence: dict[str, float]
    seasonal_naive: dict[str, float] | None
    ratio_to_persistence: float | None
    ratio_to_seasonal_naive: float | None
    epochs_run: int
    diagnostics: tuple[str, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["fold"] = d.pop("index")
        d["run_dir"] = self.run_dir.name
        d["diagnostics"] = list(self.diagnostics)
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclasses.dataclass(frozen=True)
class BacktestResult:
    """What ``backtest`` did: the folds, their mean and spread, and where it wrote them.

    ``mean`` and ``spread`` have the keys ``model``, ``persistence``, ``seasonal_naive`` (each ``{rmse, mae}`` or
    None) and ``ratio_to_persistence``, ``ratio_to_seasonal_naive``; the spread is the sample standard deviation
    across folds (ddof 1).
    """

    out: Path
    config: TrainConfig
    folds: tuple[Fold, ...]
    mean: dict[str, Any]
    spread: dict[str, Any]
    panel: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON written to ``backtest.json``."""
        return {
            "format": BACKTEST_FORMAT,
            "format_version": BACKTEST_FORMAT_VERSION,
            "folds": len(self.folds),
            "panel": self.panel,
            "series": len(self.folds[0].series) if self.folds else 0,
            "figures": "test split, raw units, averaged over horizons and targets; model = streaming (never reset)"
                       + ("; pooled over the series, ratios the mean of the per-series ratios" if self.panel else ""),
            "spread": "sample standard deviation across folds (ddof 1)",
            "mean": self.mean,
            "std": self.spread,
            "per_fold": [fold.to_dict() for fold in self.folds],
            "config": self.config.to_dict(),
            "seconds": round(self.seconds, 3),
        }

    def table(self) -> str:
        """The folds, their mean and spread as a Markdown table (what ``statelite backtest`` prints)."""
        seasonal = self.config.season is not None
        head = ["fold", "rows", "test rows", "model RMSE", "persistence", "ratio"]
        if seasonal:
            head += ["seasonal naive", "ratio"]
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]

        def row(label, rows, test_rows, figures) -> None:
            cells = [label, rows, test_rows, _rmse(figures["model"]), _rmse(figures["persistence"]),
                     _number(figures["ratio_to_persistence"])]
            if seasonal:
                cells += [_rmse(figures["seasonal_naive"]), _number(figures["ratio_to_seasonal_naive"])]
            lines.append("| " + " | ".join(cells) + " |")

        for fold in self.folds:
            row(str(fold.index), str(fold.rows), str(fold.test_rows), dataclasses.asdict(fold))
        row("mean", "", "", self.mean)
        row("spread (sd)", "", "", self.spread)
        return "\n".join(lines) + "\n"

    def save(self, out: str | Path | None = None) -> None:
        """Write ``backtest.json``, ``backtest.md`` and ``backtest.png`` into ``out`` (default: ``self.out``)."""
        out = Path(out) if out is not None else self.out
        out.mkdir(parents=True, exist_ok=True)
        (out / JSON_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        what = "pooled over the series; ratio: mean of the per-series ratios" if self.panel else "raw units"
        (out / TABLE_FILE).write_text(
            f"# Backtest: {len(self.folds)} folds, rolling origin, expanding window\n\n"
            f"Streaming test RMSE ({what}); ratio = model / baseline, below 1 is better.\n\n" + self.table()
        )
        backtest_plot(out / PLOT_FILE, self)


def _rmse(figures: dict[str, float] | None) -> str:
    return "" if figures is None else _number(figures["rmse"])


def _number(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.4g}"


def fold_cuts(rows: int, folds: int, config: TrainConfig) -> list[tuple[int, float]]:
    """Each fold's cut of a series of ``rows`` rows and its test fraction, fold 1 first: ``[(n_k, f_k), ...]``.

    ``n_K = rows`` and ``f_K = test_fraction``; going back, ``n_{k-1}`` is where fold ``k``'s test split starts (the
    trainer's own rounding), so the test splits are consecutive. A cut may come out too short: ``check_cuts`` says so.
    """
    tf = config.test_fraction
    cuts: list[tuple[int, float]] = []
    n = rows
    for k in range(folds, 0, -1):
        share = 1.0 - (folds - k) * tf
        f = tf if k == folds else (tf / share if share > 0 else math.inf)
        cuts.append((n, f))
        if k > 1:
            n = n - int(round(n * f)) if math.isfinite(f) else 0
    return cuts[::-1]


def _fold_split(n: int, f: float, config: TrainConfig) -> tuple[int, int]:
    """The trainer's split of a cut (``panel.plan`` does the same), or BadInputError naming what is short."""
    if not (0 < f and f + config.val_fraction < 1) or n <= 0:
        raise BadInputError(f"no rows left to train on (test fraction {f:.3g} of {n} rows)")
    return D.split_bounds(n, config.val_fraction, f, min_rows=config.window + config.horizon, window=config.window)


def _split_text(n: int, f: float, config: TrainConfig) -> str:
    if n <= 0 or not math.isfinite(f):
        return "no rows"
    test, val = int(round(n * f)), int(round(n * config.val_fraction))
    return f"{n} rows (train {n - test - val}, val {val}, test {test})"


def _fits(rows: dict, folds: int, config: TrainConfig) -> bool:
    try:
        for n_rows in rows.values():
            for n, f in fold_cuts(n_rows, folds, config):
                _fold_split(n, f, config)
    except BadInputError:
        return False
    return True


def check_cuts(rows: dict, folds: int, config: TrainConfig) -> dict[object, list[tuple[int, float, int, int]]]:
    """Every series' folds as ``(n_k, f_k, a, b)``: cut, test fraction, and the split ``[0, a) [a, b) [b, n_k)``.

    Args:
        rows: each series' row count, by key (``{None: rows}`` for one series).

    Raises:
        BadInputError: fewer than 2 folds, or a fold's cut too short for the window and split (naming the series,
            the fold and the largest number of folds that fits).
    """
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < MIN_FOLDS:
        raise BadInputError(
            f"expected folds to be an integer >= {MIN_FOLDS} (one fold is a plain 'statelite train'), "
            f"Received: folds={folds!r}"
        )
    plan: dict[object, list[tuple[int, float, int, int]]] = {}
    for key, n_rows in rows.items():
        where = "" if key is None else f" (series {key!r})"
        plan[key] = []
        # the last fold (the whole series) first: when it does not fit, no number of folds does
        for k, (n, f) in reversed(list(enumerate(fold_cuts(n_rows, folds, config), start=1))):
            try:
                a, b = _fold_split(n, f, config)
            except BadInputError as exc:
                if k == folds:  # the whole series is too short for one run: the trainer's own message says why
                    raise BadInputError(f"series {key!r}: {exc}" if key is not None else str(exc)) from None
                fitting = next((j for j in range(folds - 1, MIN_FOLDS - 1, -1) if _fits(rows, j, config)), None)
                hint = (f"--folds {fitting} or fewer fits, or use" if fitting is not None
                        else f"not even {MIN_FOLDS} folds fit: use")
                raise BadInputError(
                    f"expected each fold to leave train, validation and test splits of at least window + horizon = "
                    f"{config.window + config.horizon} rows, Received: rows={n_rows}{where} and folds={folds} of "
                    f"about {int(round(n_rows * config.test_fraction))} test rows each, whose fold {k} would keep "
                    f"{_split_text(n, f, config)}; {hint} more data, a smaller --window or a smaller --test-fraction"
                ) from None
            plan[key].insert(0, (n, f, a, b))
    return plan


def _cut(series: D.Series, n: int) -> D.Series:
    if n == series.rows:
        return series
    return dataclasses.replace(
        series,
        features=series.features[:n],
        targets=series.targets[:n],
        time=None if series.time is None else series.time[:n],
    )


def fold_source(source: P.PanelSource, cuts: dict[object, int]) -> P.PanelSource:
    """``source`` with every series cut to its first ``cuts[key]`` rows (read lazily as ``source`` is)."""
    return dataclasses.replace(source, load=lambda key: _cut(source.load(key), cuts[key]))


def backtest(config: TrainConfig, folds: int, *, log: Callable[[str], None] | None = None,
             progress: Callable[..., None] | None = None) -> BacktestResult:
    """Train and score ``folds`` chronological folds of the data ``config`` names (rolling origin, expanding window).

    Fold ``k`` is ``train(config, source=...)`` on every series cut to its first ``n_k`` rows, written to
    ``config.out/fold-k``; the last fold is the whole data. ``backtest.json``, ``backtest.md`` and ``backtest.png``
    go to ``config.out``. See the module docstring for the cuts.

    Args:
        config: what to train and on what; ``config.out`` is the backtest's folder.
        folds: how many folds, at least 2.
        log: called with a line per fold (and the trainer's epoch lines and warnings). None: silent.
        progress: passed to each fold's ``train``, its work named with the fold (see ``train``).

    Returns:
        A ``BacktestResult`` (the same figures are in ``backtest.json``). On a multi-worker worker other than the
        chief, which writes nothing, its ``folds`` are empty.

    Raises:
        BadInputError: fewer than 2 folds, a series too short for them (before anything is trained), the output
            folder is a file, or a fold's training rejects the data (the message names the fold).
    """
    from .trainer import train

    started = time.perf_counter()
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"expected a folder for the backtest, Received: out={str(out)!r} is a file")
    source = P.open_source(config)
    rows = {key: source.load(key).rows for key in source.keys}
    plan = check_cuts(rows, folds, config)
    say = log if log is not None else (lambda line: None)
    fold_results: list[Fold] = []
    chief = True
    for k in range(1, folds + 1):
        cuts = {key: plan[key][k - 1][0] for key in source.keys}
        # every series' test fraction of fold k is the same formula; take it from the first series
        fraction = plan[source.keys[0]][k - 1][1]
        fold_config = dataclasses.replace(config, out=str(out / f"fold-{k}"), test_fraction=fraction)
        total = sum(cuts.values())
        if source.is_panel:
            say(f"fold {k}/{folds}: {len(cuts)} series cut to {total} rows in all")
        else:
            n, _, a, b = plan[None][k - 1]
            say(f"fold {k}/{folds}: the first {n} of {rows[None]} rows (train [0, {a}), val [{a}, {b}), "
                f"test [{b}, {n}))")
        tick = time.perf_counter()
        try:
            result = train(fold_config, log=log, source=fold_source(source, cuts),
                           progress=prefixed(progress, f"fold {k}/{folds}, "))
        except BadInputError as exc:
            raise BadInputError(f"fold {k} of {folds} (the first {total} rows): {exc}") from None
        if "test" not in result.metrics:  # a multi-worker worker other than the chief
            chief = False
            continue
        fold = _fold(k, result, plan, time.perf_counter() - tick)
        fold_results.append(fold)
        say(f"fold {k}/{folds}: streaming RMSE {fold.model['rmse']:.4g}, persistence {fold.persistence['rmse']:.4g} "
            f"(ratio {_number(fold.ratio_to_persistence)}) in {fold.seconds:.1f}s")
    mean, spread = _summary(fold_results)
    result = BacktestResult(out, config, tuple(fold_results), mean, spread, source.is_panel,
                            time.perf_counter() - started)
    if chief:
        result.save()
    return result


def _fold(k: int, result, plan: dict, seconds: float) -> Fold:
    test = result.metrics["test"]
    panel = "series" in result.metrics
    series = {}
    for key, folds in plan.items():
        n, _, a, b = folds[k - 1]
        series[str(key)] = {"rows": n, "split": {"train": [0, a], "val": [a, b], "test": [b, n]}}
    model, persistence, seasonal = test["streaming"], test["persistence"], test["seasonal_naive"]
    if panel:
        relative = test["relative"]
        to_persistence = relative["mean_ratio_to_persistence"]
        to_seasonal = relative.get("mean_ratio_to_seasonal_naive")
    else:
        to_persistence = _ratio(model, persistence)
        to_seasonal = _ratio(model, seasonal)
    return Fold(
        index=k,
        run_dir=Path(result.run_dir),
        test_fraction=result.config.test_fraction,
        rows=sum(s["rows"] for s in series.values()),
        test_rows=sum(s["rows"] - s["split"]["test"][0] for s in series.values()),
        positions=int(test["positions"]),
        series=series,
        model=dict(model),
        windowed=dict(test["windowed"]),
        persistence=dict(persistence),
        seasonal_naive=None if seasonal is None else dict(seasonal),
        ratio_to_persistence=to_persistence,
        ratio_to_seasonal_naive=to_seasonal,
        epochs_run=int(result.metrics["epochs_run"]),
        diagnostics=tuple(d["code"] for d in result.diagnostics),
        seconds=seconds,
    )


def _ratio(model: dict, baseline: dict | None) -> float | None:
    if baseline is None or not baseline["rmse"] > 0:
        return None
    return float(model["rmse"] / baseline["rmse"])


def _summary(folds: list[Fold]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and sample standard deviation across folds of every summarised figure (None where a fold lacks it)."""

    def stats(values: list) -> tuple[float | None, float | None]:
        if not values or any(v is None for v in values):
            return None, None
        array = np.asarray(values, dtype=np.float64)
        return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0

    mean: dict[str, Any] = {}
    spread: dict[str, Any] = {}
    for name in _SUMMARISED:
        figures = [getattr(f, name) for f in folds]
        if not figures or any(v is None for v in figures):
            mean[name] = spread[name] = None
            continue
        mean[name], spread[name] = {}, {}
        for measure in ("rmse", "mae"):
            mean[name][measure], spread[name][measure] = stats([v[measure] for v in figures])
    for name in _RATIOS:
        mean[name], spread[name] = stats([getattr(f, name) for f in folds])
    mean["beats_persistence"] = sum(1 for f in folds if f.ratio_to_persistence is not None
                                    and f.ratio_to_persistence < 1)
    spread["beats_persistence"] = None
    return mean, spread


def backtest_plot(path: Path, result: BacktestResult) -> None:
    """Per fold, the model's streaming test RMSE beside persistence's and seasonal naive's (bars), and their means
    across folds (dotted lines)."""
    from .plots import _pyplot

    plt = _pyplot()
    folds = result.folds
    names = [("model", "model (streaming)", "tab:orange"), ("persistence", "persistence", "tab:grey")]
    if result.config.season is not None:
        names.append(("seasonal_naive", "seasonal naive", "tab:blue"))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(folds) + 3), 4), dpi=100)
    x = np.arange(len(folds))
    width = 0.8 / len(names)
    for i, (name, label, color) in enumerate(names):
        values = [getattr(f, name)["rmse"] for f in folds]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=label, color=color)
        if result.mean.get(name) is not None:
            ax.axhline(result.mean[name]["rmse"], color=color, linestyle=":", linewidth=1)
    ax.set_xticks(x, [f"fold {f.index}\n{f.rows} rows" for f in folds])
    tallest = max(getattr(f, name)["rmse"] for f in folds for name, _, _ in names)
    ax.set_ylim(0, 1.25 * tallest if math.isfinite(tallest) and tallest > 0 else None)  # room for the legend
    ax.set_ylabel("test RMSE (raw units" + (", pooled)" if result.panel else ")"))
    ratio = result.mean["ratio_to_persistence"]
    title = f"rolling-origin backtest, {len(folds)} folds"
    ax.set_title(title if ratio is None else f"{title}: model RMSE {ratio:.3f}x persistence's on average")
    ax.legend(loc="upper center", ncol=len(names), fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
