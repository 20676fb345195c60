"""What a device install (no TensorFlow) sees: the workstation parts say how to get them; help is instant."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

no_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed here")


@no_tf
@pytest.mark.parametrize("module", ["statelite.train", "statelite.convert"])
def test_workstation_parts_say_which_pip_line_fixes_them(module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "pip install 'statelite[train]'" in proc.stderr and "ImportError" in proc.stderr


@no_tf
def test_workstation_commands_fail_in_one_line():
    from click.testing import CliRunner

    from statelite.cli import main

    result = CliRunner().invoke(main, ["convert", "models/gru.run.json", "--out", "x.tflite"])
    assert result.exit_code == 2 and "pip install 'statelite[train]'" in result.output
    assert "Traceback" not in result.output


def test_help_does_not_import_tensorflow():
    code = (
        "import sys; from click.testing import CliRunner; from statelite.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
        "assert 'tensorflow' not in sys.modules; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
