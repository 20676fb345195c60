"""statelite: recurrent time-series models from the workstation to the edge.

\b
Workstation (pip install 'statelite[train]'):
  statelite train --out runs/co2            train a forecaster on a CSV (default: bundled Mauna Loa CO2)
  statelite convert runs/co2 --quant int8 --out co2.tflite
                                            one-step TFLite with named state, parity-checked
  statelite backtest data.csv --folds 4 --out bt
                                            rolling-origin backtest: K folds against the baselines
  statelite quickstart                      the whole path on the bundled data

\b
Device (pip install statelite: numpy and an interpreter, no TensorFlow):
  statelite run co2.tflite --input sensor.csv --state state.npz
  statelite verify co2.tflite               on-device accuracy test against the golden trace
  statelite bench co2.tflite                microseconds per step
  statelite inspect co2.tflite              signature, state pairs, operators, metadata

\b
Microcontrollers (TFLite Micro):
  statelite convert runs/co2 --quant int8 --target tflm --out co2.tflite
  statelite verify co2.tflite --backend tflm
                                            on TFLM's kernels (pip install 'statelite[micro]')
  statelite export-c co2.tflite --out src   the model as a C array and a header for a step loop

Exit codes: 0 success, 1 a check ran and failed (parity, verify), 2 bad usage or bad input.
"""

from __future__ import annotations

import click

from .. import __version__
from ._common import StateliteGroup

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group(cls=StateliteGroup, context_settings=CONTEXT_SETTINGS, help=__doc__)
@click.version_option(__version__, "--version", prog_name="statelite")
def main() -> None:
    pass


def _register() -> None:
    # Command modules are light: each imports its library (and TensorFlow, where needed) inside the command.
    from . import backtest, convert, device, export, train

    for module in (train, backtest, convert, device, export):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
