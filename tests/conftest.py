"""Shared fixtures: tiny seeded Keras models, the reference models in models/, the tflite-runtime 2.14 env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def has_tensorflow() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def make_keras_model(path: Path, cell: str, layers: int, units: int = 8, features: int = 2, outputs: int = 3,
                     seed: int = 0) -> Path:
    """A small seeded stack of recurrent layers with a Dense head, saved as .keras."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, features))
    h = inp
    for _ in range(layers):
        h = getattr(keras.layers, cell)(units, return_sequences=True)(h)
        h = keras.layers.Dropout(0.1)(h)
    model = keras.Model(inp, keras.layers.Dense(outputs)(h))
    model.save(path)
    return path


@pytest.fixture(scope="session")
def keras_models(tmp_path_factory):
    """``(cell, layers) -> path`` of tiny seeded .keras models, made once per session."""
    if not has_tensorflow():
        pytest.skip("needs TensorFlow (pip install 'statelite[train]')")
    folder = tmp_path_factory.mktemp("keras")
    cache = {}

    def get(cell: str, layers: int, units: int = 8) -> Path:
        key = (cell, layers, units)
        if key not in cache:
            cache[key] = make_keras_model(folder / f"{cell}{layers}_{units}.keras", cell, layers, units)
        return cache[key]

    return get


def tflite214_python() -> str | None:
    return os.environ.get("STATELITE_TFLITE214_PYTHON")


@pytest.fixture(scope="session")
def tfl214(tmp_path_factory):
    """Run code under tflite-runtime 2.14 + numpy<2 with this checkout's runtime importable as ``statelite``."""
    python = tflite214_python()
    if not python or not Path(python).exists():
        pytest.skip("no tflite-runtime 2.14 environment: set STATELITE_TFLITE214_PYTHON (.ci/run creates one)")
    site = tmp_path_factory.mktemp("site214")
    (site / "statelite").symlink_to(ROOT / "runtime", target_is_directory=True)

    def run(code: str, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(site)}
        return subprocess.run([python, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)

    return run


@pytest.fixture
def reference_model():
    def get(name: str) -> Path:
        path = MODELS / name
        if not path.exists():
            pytest.skip(f"reference model {name} missing; regenerate with: python models/regenerate.py")
        return path

    return get


PYTHON = sys.executable


def write_synthetic_csv(path: Path, rows: int = 700, seed: int = 0) -> Path:
    """Two seasonal features with noise; ``a`` is also the target."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    a = np.sin(2 * np.pi * t / 25) + 0.3 * np.sin(2 * np.pi * t / 7) + 0.1 * rng.normal(size=rows)
    b = np.cos(2 * np.pi * t / 40) + 0.1 * rng.normal(size=rows)
    lines = ["step,a,b"] + [f"{i},{x:.6f},{y:.6f}" for i, x, y in zip(t, a, b)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    """``(cell, layers) -> run folder`` of tiny models trained briefly on a synthetic series, once per session."""
    if not has_tensorflow():
        pytest.skip("needs TensorFlow (pip install 'statelite[train]')")
    from statelite.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("runs")
    csv = write_synthetic_csv(folder / "series.csv")
    cache = {}

    def get(cell: str, layers: int) -> Path:
        key = (cell.lower(), layers)
        if key not in cache:
            out = folder / f"{key[0]}{layers}"
            config = TrainConfig(
                out=str(out), data=str(csv), targets=("a",), features=("a", "b"), time_column="step",
                cell=key[0], units=8, layers=layers, window=24, horizon=2, epochs=4, patience=10, seed=0,
            )
            train(config, log=None)
            cache[key] = out
        return cache[key]

    return get
