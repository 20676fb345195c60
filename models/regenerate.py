"""Regenerate the reference models in models/ from the bundled data: ``python models/regenerate.py``.

A GRU and an LSTM trained with the bundled-data preset (seeded, so a rerun gives the same models), each converted to
float32 and int8 with golden traces, a GRU int8 built for the tflite-runtime-2.14 target, two batch-8 models for
``StreamPool``, a two-feature GRU int8 (CO2 and the season's phase), a GRU float32 with an 8-step chunk signature, a panel GRU
(three NAB traffic sensors, each with its own scaler, with hour and weekday inputs) in int8 and in a batch-4 float32
pool, and the run.json each came from. The runtime's tests use these files, so they run without TensorFlow. Needs
``statelite[train]``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
MODELS = [
    # (name, cell, quant, target, batch)
    ("gru_float32", "gru", "float32", "litert", 1),
    ("gru_int8", "gru", "int8", "litert", 1),
    ("gru_int8_tfl214", "gru", "int8", "tflite-runtime-2.14", 1),
    ("lstm_float32", "lstm", "float32", "litert", 1),
    ("lstm_int8", "lstm", "int8", "litert", 1),
    ("gru_float32_b8", "gru", "float32", "litert", 8),
    ("lstm_int8_b8", "lstm", "int8", "litert", 8),
    ("gru2_int8", "gru2", "int8", "litert", 1),  # two features: the runtime's vectorised path
    ("gru_float32_c8", "gru", "float32", "litert", 1, 8),  # a step_chunk signature of 8 steps
    ("gru_panel_int8", "panel", "int8", "litert", 1),  # three traffic sensors, per-sensor scalers, calendar inputs
    ("gru_panel_float32_b4", "panel", "float32", "litert", 4),  # the same in a StreamPool of 4 lanes
]
# The panel: three NAB traffic speed sensors (MIT licence, benchmarks/data/nab), one series each.
PANEL_SENSORS = ("speed_6005", "speed_7578", "speed_t4013")


def _two_feature_csv(path: Path) -> Path:
    """The bundled CO2 series with a second feature, the season's phase (sine of the day of the year)."""
    import numpy as np

    from statelite.train import data as train_data

    src = Path(train_data.__file__).with_name("data") / "co2.csv"
    lines = src.read_text().splitlines()
    out = ["date,co2,season"]
    for line in lines[1:]:
        date, value = line.split(",")
        day = (np.datetime64(f"{date[:4]}-{date[4:6]}-{date[6:8]}") - np.datetime64(f"{date[:4]}-01-01")).astype(int)
        out.append(f"{date},{value},{np.sin(2 * np.pi * day / 365.25):.6f}")
    path.write_text("\n".join(out) + "\n")
    return path


def _panel_csv(path: Path) -> Path:
    """The three sensors' rows in one CSV with a ``sensor`` key column."""
    nab = HERE.parent / "benchmarks" / "data" / "nab" / "realTraffic"
    out = ["sensor,timestamp,value"]
    for sensor in PANEL_SENSORS:
        out += [f"{sensor},{line}" for line in (nab / f"{sensor}.csv").read_text().splitlines()[1:] if line.strip()]
    path.write_text("\n".join(out) + "\n")
    return path


def main() -> int:
    from statelite.convert import ConvertConfig, convert
    from statelite.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        os.chdir(tmp)  # run.json records its folder; keep it the same on every machine
        for cell in sorted({m[1] for m in MODELS}):
            run_dir = Path(cell)
            if cell == "panel":
                csv = _panel_csv(Path("traffic.csv"))
                config = TrainConfig(out=str(run_dir), data=str(csv), targets=("value",), time_column="timestamp",
                                     series_column="sensor", calendar=("hour", "dow"), window=48, horizon=3,
                                     epochs=15)
            elif cell == "gru2":
                csv = _two_feature_csv(Path("co2_season.csv"))
                config = TrainConfig.co2(out=str(run_dir), cell="gru", data=str(csv), features=("co2", "season"))
            else:
                config = TrainConfig.co2(out=str(run_dir), cell=cell)
            result = train(config, log=None)
            test = result.metrics["test"]
            print(f"{cell}: windowed RMSE {test['windowed']['rmse']:.4f}, streaming {test['streaming']['rmse']:.4f}, "
                  f"persistence {test['persistence']['rmse']:.4f}")
            shutil.copy(run_dir / "run.json", HERE / f"{cell}.run.json")
            runs[cell] = run_dir
        for name, cell, quant, target, batch, *chunk in MODELS:
            out = HERE / f"{name}.tflite"
            config = ConvertConfig(quant=quant, target=target, batch=batch, chunk=chunk[0] if chunk else 1)
            convert(runs[cell], out, config, log=None)
            golden = out.with_name(out.stem + ".golden.npz")
            print(f"{out.name}: {out.stat().st_size} bytes, {golden.name}: {golden.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
