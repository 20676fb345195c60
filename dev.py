#!/usr/bin/env python3
"""The README's two commands, on a fresh machine with only Python 3.10-3.13.

    python3 dev.py quickstart   # .venv, statelite[train,dev,bench]: train, convert, verify and bench the bundled data
    python3 dev.py test         # three environments (workstation, device-only, tflite-runtime 2.14): every test,
                                # and verify on every reference model in the last two

Each creates the virtual environments it needs (under the repository) and installs into them; a second run reuses
them. Extra arguments after ``test`` go to pytest in the workstation environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
WORKSTATION = ROOT / ".venv"
DEVICE = ROOT / ".venv-device"
TFL214 = ROOT / ".venv-tfl214"
BIN = "Scripts" if os.name == "nt" else "bin"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def sh(*cmd, cwd=ROOT, env=None) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), cwd=cwd, env=env or ENV, check=True)


def venv(path: Path, *requirements: str, stamp: str) -> Path:
    """Create ``path`` with ``requirements`` installed, unless a stamp says it already has exactly those."""
    python = path / BIN / "python"
    marker = path / ".statelite-stamp"
    want = stamp + "\n" + "\n".join(requirements) + "\n" + (ROOT / "pyproject.toml").read_text()
    if python.exists() and marker.exists() and marker.read_text() == want:
        return python
    if path.exists():
        shutil.rmtree(path)
    sh(sys.executable, "-m", "venv", path)
    sh(python, "-m", "pip", "install", "-q", "--upgrade", "pip")
    sh(python, "-m", "pip", "install", "-q", *requirements)
    marker.write_text(want)
    return python


def workstation() -> Path:
    # bench: the accuracy benchmark's series (statsmodels, pmdarima) and bench_grid's ONNX column, so their quick runs
    # are tested; it installs beside TensorFlow 2.21 without moving numpy or protobuf.
    python = venv(WORKSTATION, "-e", ".[train,dev,bench,micro]", stamp="workstation")
    return python


def quickstart(args: list[str]) -> int:
    python = workstation()
    sh(python, "-m", "statelite.cli", "quickstart", *(args or ["--out", "quickstart"]))
    return 0


def test(args: list[str]) -> int:
    started = time.time()
    python = workstation()
    device = venv(DEVICE, ".", "pytest>=8", "hypothesis>=6.100", stamp="device")
    tfl214 = venv(TFL214, "numpy<2", "tflite-runtime==2.14.0", "flatbuffers", "click", "pytest>=8", stamp="tfl214")
    sh(tfl214, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", ".")
    env = {**ENV, "STATELITE_TFLITE214_PYTHON": str(tfl214)}
    print("\n== workstation: every test (TensorFlow, ai-edge-litert, tflite-runtime 2.14 via a subprocess)", flush=True)
    sh(python, "-m", "pytest", "-q", *args, env=env)
    print("\n== device-only install (pip install ., no TensorFlow): the runtime tests", flush=True)
    sh(device, "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)")
    sh(device, "-m", "pytest", "-q", "-m", "not tf and not slow and not emulated", "-p", "no:cacheprovider", cwd=ROOT)
    models = sorted((ROOT / "models").glob("*.tflite"))
    for model in models:
        sh(device, "-m", "statelite.cli", "verify", model)
    print("\n== tflite-runtime 2.14 + numpy<2 (no ai-edge-litert): verify every reference model", flush=True)
    for model in models:
        sh(tfl214, "-m", "statelite.cli", "verify", model)
    print("\n== TFLite Micro's reference kernels (tflite-micro): verify every reference model", flush=True)
    for model in models:
        sh(python, "-m", "statelite.cli", "verify", model, "--backend", "tflm")
    print(f"\nall test stages passed in {time.time() - started:.0f}s")
    return 0


def main() -> int:
    commands = {"quickstart": quickstart, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
