"""The option enums are importable without TensorFlow and are the CLI's choices (written once)."""

from __future__ import annotations

import subprocess
import sys

import click

from statelite.cli import main
from statelite.options import IO, Cell, Fill, Quant, ScalerKind, Target, choices


def _choices(command: str, option: str) -> tuple[str, ...]:
    param = next(p for p in main.commands[command].params if p.name == option)
    assert isinstance(param.type, click.Choice)
    return tuple(param.type.choices)


def test_cli_choices_come_from_the_enums():
    assert _choices("convert", "quant") == choices(Quant) and "auto" in choices(Quant)
    assert _choices("convert", "io") == choices(IO)
    assert _choices("convert", "target") == choices(Target)
    assert _choices("train", "cell") == choices(Cell)
    assert _choices("train", "scaler") == choices(ScalerKind)
    assert _choices("train", "fill") == ("interpolate", "ffill")  # "none" is the default: no flag
    assert Fill.NONE.value == "none"


def test_options_import_without_tensorflow():
    code = "import sys, statelite.options, statelite.cli; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
