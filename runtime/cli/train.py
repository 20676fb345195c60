"""``statelite train``: parse the options, build a ``TrainConfig``, call ``statelite.train.train``, print a summary.

TensorFlow is imported inside the command, so ``statelite --help`` stays fast and works without the extra.
"""

from __future__ import annotations

import click

from ..options import CalendarFeature, Cell, Fill, ScalerKind, Strategy, choices
from ..progress import TerminalProgress
from ._common import quiet_tensorflow


def _split_columns(ctx, param, values):
    names = [name.strip() for value in values for name in value.split(",")]
    return tuple(name for name in names if name) or None


_TRAIN_OPTIONS = [
    click.argument("data", required=False),
    click.option("--target", "targets", multiple=True, metavar="COL", help="Column to forecast; repeat for several."),
    click.option(
        "--features", multiple=True, callback=_split_columns, metavar="COL,...",
        help="Model input columns (comma-separated or repeated). Default: the targets.",
    ),
    click.option("--time-column", metavar="COL", help="Timestamps, kept for plots and series.npz; not a model input."),
    click.option(
        "--series-column", metavar="COL",
        help="Column naming the series of each row: one model learns from every series (a panel).",
    ),
    click.option(
        "--calendar", metavar="FEATURE,...",
        help=f"Calendar inputs from the time column, as sin/cos pairs: {', '.join(choices(CalendarFeature))}.",
    ),
    click.option(
        "--strategy", type=click.Choice(choices(Strategy)),
        help="tf.distribute strategy: mirrored (this machine's devices), multi-worker (TF_CONFIG).  [default: none]",
    ),
    click.option("--cell", type=click.Choice(choices(Cell)), help="Recurrent cell.  [default: gru]"),
    click.option("--units", type=int, help="Units per recurrent layer.  [default: 32]"),
    click.option("--layers", type=int, help="Stacked recurrent layers, 1-4.  [default: 1]"),
    click.option("--dropout", type=float, help="Dropout after each recurrent layer.  [default: 0]"),
    click.option("--window", type=int, help="Training chunk and windowed-evaluation length, in rows.  [default: 52]"),
    click.option("--horizon", type=int, help="Steps ahead forecast at every step.  [default: 4]"),
    click.option("--burn-in", type=int, help="Unsupervised warm-up steps at the start of each chunk.  [default: window/4]"),
    click.option("--scaler", type=click.Choice(choices(ScalerKind)), help="Scaling to model units.  [default: standard]"),
    click.option("--fill", type=click.Choice(choices(Fill, exclude=(Fill.NONE,))), help="Fill missing cells.  [default: error on them]"),
    click.option("--difference/--no-difference", default=None, help="Model steps (X_t - X_{t-1}) instead of levels."),
    click.option("--season", type=int, metavar="P", help="Season length in rows, for the seasonal-naive baseline."),
    click.option("--epochs", type=int, help="Most epochs; early stopping may end sooner.  [default: 40]"),
    click.option("--batch-size", type=int, help="Chunks per batch.  [default: 32]"),
    click.option("--learning-rate", type=float, help="Adam learning rate.  [default: 0.003]"),
    click.option("--patience", type=int, help="Epochs without a better val loss before stopping.  [default: 6]"),
    click.option("--val-fraction", type=float, help="Validation share of the rows (after train).  [default: 0.15]"),
    click.option("--test-fraction", type=float, help="Test share of the rows (the last ones).  [default: 0.15]"),
    click.option("--seed", type=int, help="Seed for weights, chunk order and dropout.  [default: 0]"),
    click.option("--out", required=True, type=click.Path(file_okay=False), metavar="RUN_DIR", help="Run folder to write."),
    click.option("--quiet", "-q", is_flag=True, help="No progress: no per-epoch lines, no progress line on a terminal."),
]


def train_config(data, options: dict):
    """The ``TrainConfig`` of DATA and the options of ``train_options`` (without DATA: the bundled CO2 preset, the
    options given overriding it)."""
    from statelite.train import TrainConfig

    given = {key: value for key, value in options.items() if value not in (None, ())}
    if "calendar" in given:
        given["calendar"] = tuple(part.strip() for part in given["calendar"].split(",") if part.strip())
    return TrainConfig.co2(**given) if data is None else TrainConfig(data=data, **given)


def train_options(command):
    """Decorate ``command`` with DATA and every option of ``statelite train`` (``statelite backtest`` shares them)."""
    for option in reversed(_TRAIN_OPTIONS):
        command = option(command)
    return command


@click.command()
@train_options
def train(data, quiet, **options):
    """Train a recurrent forecaster for streaming and write a run folder.

    DATA is a CSV or Parquet file with a header row; with --series-column, each of its series is one member of a
    panel. DATA may also be a folder or a glob ('data/*.parquet') of CSV or Parquet files, one series each, named
    by the file (read one at a time, so the panel need not fit in memory). Without DATA the bundled Mauna Loa weekly CO2 series is used with a preset
    (target co2, time column date, --fill interpolate, --difference, --season 52); any option given overrides it.

    The run folder holds model.keras, run.json (config, scaler, split, test metrics), series.npz, history.csv,
    loss.png and forecast.png; 'statelite convert RUN_DIR' reads it.
    """
    quiet_tensorflow()
    from statelite.train import train as run_training

    config = train_config(data, options)
    with TerminalProgress(enabled=not quiet) as progress:
        result = run_training(config, log=None if quiet else progress.wrap(click.echo),
                              progress=progress.reporter)
    if quiet:  # the epoch lines are progress; a warning about the result is not
        from statelite.train.trainer import diagnostics_text

        for paragraph in diagnostics_text(list(result.diagnostics)):
            click.echo(paragraph)

    m = result.metrics
    if "test" not in m:  # a worker of a multi-worker run other than the chief: the chief writes the run folder
        click.echo(f"worker done in {result.seconds:.1f}s; the chief (worker 0) writes the run folder")
        return
    test = m["test"]
    names = ", ".join(config.targets)
    click.echo(
        f"trained {config.cell.value} {config.layers}x{config.units} on {config.source} ({names}, horizon "
        f"{config.horizon}) in {result.seconds:.1f}s (fit {result.fit_seconds:.1f}s): {m['epochs_run']} epochs, "
        f"best val loss {m['best_val_loss']:.4f} at epoch {m['best_epoch']}"
    )
    rows = [("windowed", test["windowed"]), ("streaming", test["streaming"]), ("persistence", test["persistence"])]
    if test["seasonal_naive"] is not None:
        rows.append(("seasonal naive", test["seasonal_naive"]))
    if "series" in m:
        relative = test["relative"]
        click.echo(
            f"panel of {test['series']} series: streaming RMSE {relative['mean_ratio_to_persistence']:.3f}x "
            f"persistence's on average; better than persistence on {relative['beats_persistence']} of "
            f"{test['series']} series (each series' figures in run.json metrics.series)"
        )
        click.echo(f"test splits, {test['positions']} positions, raw units pooled over the series:")
    else:
        click.echo(f"test split, {test['positions']} positions, raw units:")
    for label, figures in rows:
        click.echo(f"  {label:<15} RMSE {figures['rmse']:.4f}  MAE {figures['mae']:.4f}")
    coverage = test.get("coverage")
    if coverage:
        shares = ", ".join(f"{float(level):.0%}: {v:.1%}" for level, v in coverage["adaptive"].items())
        click.echo(
            f"  intervals       coverage {shares} (calibrated on {m['calibration_steps']} validation positions, "
            f"adapting online); {test['anomaly_rate']:.2%} of rows flagged anomalous"
        )
    click.echo(f"run folder: {result.run_dir}")


COMMANDS = [train]
