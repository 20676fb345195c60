"""statelite.train: train recurrent forecasters for streaming, on the workstation.

Needs the ``[train]`` extra (TensorFlow, matplotlib). TensorFlow itself is imported only when ``train`` runs, so
``TrainConfig`` and ``load_run`` stay quick to import.

    from statelite.train import TrainConfig, train
    result = train(TrainConfig.co2(out="runs/co2"))
    result.test["streaming"]["rmse"]
"""

from __future__ import annotations

import importlib.util

_missing = [name for name in ("tensorflow", "matplotlib") if importlib.util.find_spec(name) is None]
if _missing:
    raise ImportError(
        f"statelite.train needs {' and '.join(_missing)}, which is not installed. "
        "Install the training extra: pip install 'statelite[train]'"
    )

from .config import Cell, Fill, ScalerKind, TrainConfig  # noqa: E402
from .backtest import BacktestResult, backtest  # noqa: E402
from .trainer import RunInfo, TrainResult, load_run, train  # noqa: E402

__all__ = ["BacktestResult", "Cell", "Fill", "RunInfo", "ScalerKind", "TrainConfig", "TrainResult", "backtest",
           "load_run", "train"]
