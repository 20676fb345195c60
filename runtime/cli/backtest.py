"""``statelite backtest``: the options of ``statelite train`` and ``--folds``; calls ``statelite.train.backtest``
and prints the folds' table.

TensorFlow is imported inside the command, so ``statelite --help`` stays fast and works without the extra.
"""

from __future__ import annotations

import click

from ..progress import TerminalProgress
from ._common import quiet_tensorflow
from .train import train_config, train_options


@click.command()
@train_options
@click.option("--folds", type=int, default=4, show_default=True,
              help="Chronological folds; the last one is the whole data.")
def backtest(data, quiet, folds, **options):
    """Rolling-origin backtest: train and score K chronological folds, expanding window.

    Fold k of K trains on each series cut to its first rows and scores the test split at the end of the cut, as
    'statelite train' would on a file that ended there; the folds' test splits follow each other and the last
    fold is a plain 'statelite train' on the whole data. DATA and every option are those of 'statelite train'
    (without DATA: the bundled CO2 series and its preset); --out is the backtest's folder.

    It prints, per fold and as a mean with its spread (standard deviation across folds), the model's streaming
    test RMSE, persistence's and seasonal naive's (with --season) and the model's ratio to each. OUT holds
    backtest.json, backtest.md, backtest.png and each fold's run folder, fold-1 ... fold-K ('statelite convert
    OUT/fold-K' converts the model trained on all the data).
    """
    quiet_tensorflow()
    from statelite.train.backtest import backtest as run_backtest

    config = train_config(data, options)
    with TerminalProgress(enabled=not quiet) as progress:
        result = run_backtest(config, folds, log=None if quiet else progress.wrap(click.echo),
                              progress=progress.reporter)
    if not result.folds:
        click.echo(f"worker done in {result.seconds:.1f}s; the chief (worker 0) writes the backtest")
        return
    what = "pooled over the series; ratio: mean of the per-series ratios" if result.panel else "raw units"
    click.echo(
        f"backtest of {config.cell.value} {config.layers}x{config.units} on {config.source}, {len(result.folds)} "
        f"folds in {result.seconds:.1f}s; streaming test RMSE ({what}), ratio = model / baseline:"
    )
    click.echo(result.table(), nl=False)
    mean = result.mean
    click.echo(
        f"model better than persistence in {mean['beats_persistence']} of {len(result.folds)} folds; "
        f"written: {result.out}/backtest.json, backtest.md, backtest.png, fold-1 ... fold-{len(result.folds)}"
    )


COMMANDS = [backtest]
