"""The option enums of ``statelite train`` and ``statelite convert``, importable without TensorFlow.

The CLI builds its choices from them and the workstation configs (``statelite.train.TrainConfig``,
``statelite.convert.ConvertConfig``) validate against them, so a choice is written down once. They live in the
device package because importing ``statelite.train`` or ``statelite.convert`` loads TensorFlow, which the CLI must not
do just to print its help or reject a bad option.
"""

from __future__ import annotations

import enum


class Cell(str, enum.Enum):
    """The recurrent cell of every layer."""

    GRU = "gru"
    LSTM = "lstm"
    SIMPLERNN = "simplernn"


class ScalerKind(str, enum.Enum):
    """``standard``: offset mean, scale std. ``minmax``: offset min, scale max - min (model units in [0, 1])."""

    STANDARD = "standard"
    MINMAX = "minmax"


class Fill(str, enum.Enum):
    """How missing cells are filled. ``none`` makes a missing cell an error."""

    NONE = "none"
    INTERPOLATE = "interpolate"
    FFILL = "ffill"


class Quant(str, enum.Enum):
    """Quantization of a converted graph."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT16X8 = "int16x8"
    AUTO = "auto"  # the smallest quantized file that holds its tolerance: int8 first, then int16x8, then dynamic


class IO(str, enum.Enum):
    """Dtype of a converted graph's inputs and outputs."""

    FLOAT = "float"
    INT8 = "int8"


class Target(str, enum.Enum):
    """The interpreter a converted file must load on."""

    LITERT = "litert"
    TFLITE_RUNTIME_2_14 = "tflite-runtime-2.14"
    TFLM = "tflm"  # TensorFlow Lite for Microcontrollers: one subgraph, the operator versions its kernels load


class GapPolicy(str, enum.Enum):
    """What ``statelite run`` does at a gap in the time column (rows missing against the training sampling)."""

    FILL = "fill"  # step the model over the missing rows on its own forecasts
    RESET = "reset"  # zero the state; forecasts warm up again
    IGNORE = "ignore"  # report it, change nothing


class CalendarFeature(str, enum.Enum):
    """A known calendar covariate derived from the time column (``statelite.calendar``): two model inputs each."""

    HOUR = "hour"  # the time of day
    DOW = "dow"  # the day of the week (Monday first)
    MONTH = "month"  # the position in the year by month and day of the month
    DOY = "doy"  # the day of the year


class Strategy(str, enum.Enum):
    """How ``statelite train`` spreads training (``tf.distribute``)."""

    NONE = "none"  # the default strategy: one process, one device
    MIRRORED = "mirrored"  # MirroredStrategy: every local device of this machine
    MULTI_WORKER = "multi-worker"  # MultiWorkerMirroredStrategy: one process per worker, the cluster from TF_CONFIG


def choices(kind: type[enum.Enum], *, exclude: tuple = ()) -> tuple[str, ...]:
    """The values of ``kind`` (less ``exclude``), in declaration order: a CLI's ``click.Choice``."""
    return tuple(m.value for m in kind if m not in exclude)
