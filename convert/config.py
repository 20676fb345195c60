"""Options of ``statelite convert``: str enums and a frozen dataclass that rejects impossible combinations."""

from __future__ import annotations

import dataclasses
import enum

from statelite.errors import BadInputError
from statelite.options import IO, Quant, Target  # noqa: F401 (re-exported: the options of convert)

# Calibrated range over training range, per mode. int8 has 256 levels: a 4x wider range would quadruple its step
# (its error) everywhere, so it calibrates on the training range and the runtime's range guard reports clipping.
# int16x8 has 65,536: 4x costs it nothing measurable and keeps test data up to 4x the training swing unclipped.
DEFAULT_HEADROOM = {Quant.INT16X8: 4.0}

# What ``--quant auto`` tries after int8, in order; the first mode is kept when it passes (integer-only, the fastest
# on integer hardware), otherwise the smallest file among the others that pass.
AUTO_CANDIDATES = (Quant.INT8, Quant.INT16X8, Quant.DYNAMIC)


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """How to convert a model.

    Attributes:
        quant: weight/activation quantization mode.
        io: ``int8`` gives integer inputs and outputs (only with ``quant=int8``).
        batch: fixed batch dimension: that many independent streams step in one call.
        chunk: also write a ``chunk`` signature that takes this many time steps per call (replaying recorded data);
            ``StatefulRunner.run`` uses it.
        target: the interpreter the file must load on; ``tflite-runtime-2.14`` checks operator versions.
        calibration_steps: cap on the time steps of the training split that calibrate the integer modes (None: the
            whole training split, rolled through the float step so the states see the values of a real stream).
        calibration_headroom: how much wider than the training split the integer modes' calibrated ranges are
            (the training stream is also rolled stretched by this factor about each column's mid-range). None: the
            mode's default, ``DEFAULT_HEADROOM`` (int16x8 has 256 times int8's resolution to spend on it).
        golden_steps: how many test-split steps the golden trace keeps.
        check_parity: raise ``CheckFailed`` when parity is outside the mode's tolerance.
    """

    quant: Quant = Quant.FLOAT32
    io: IO = IO.FLOAT
    batch: int = 1
    chunk: int = 1
    target: Target = Target.LITERT
    calibration_steps: int | None = None
    calibration_headroom: float | None = None
    golden_steps: int = 200
    check_parity: bool = True

    def __post_init__(self):
        object.__setattr__(self, "quant", Quant(self.quant))
        object.__setattr__(self, "io", IO(self.io))
        object.__setattr__(self, "target", Target(self.target))
        if self.quant is Quant.AUTO and self.io is IO.INT8:
            raise BadInputError("--io int8 needs --quant int8: auto may choose a mode with float inputs; "
                                "received quant=auto, io=int8.")
        if self.io is IO.INT8 and self.quant is not Quant.INT8:
            raise BadInputError(f"--io int8 needs --quant int8 (integer-only graph); received quant={self.quant.value}.")
        if not 1 <= self.batch <= 4096:
            raise BadInputError(f"batch must be between 1 and 4096; received batch={self.batch}.")
        if not 1 <= self.chunk <= 256:
            raise BadInputError(f"chunk must be between 1 and 256; received chunk={self.chunk}.")
        if self.chunk > 1 and self.io is IO.INT8:
            raise BadInputError(
                "--chunk needs --io float: the step and chunk signatures are quantized separately, so their integer "
                f"state tensors would not share scales; received chunk={self.chunk}, io=int8."
            )
        if self.chunk > 1 and self.quant is Quant.INT16X8:
            # Measured with TF 2.21 on the bundled GRU: with a step_chunk signature beside it, the int16x8 step
            # signature itself is off by 4.1 normalised (alone: 0.07), and an LSTM conversion aborts the process.
            raise BadInputError(
                f"--chunk needs --quant float32, float16, dynamic or int8: TensorFlow's int16x8 calibration of two "
                f"signatures gives wrong results (4x the tolerance in the step signature too); received "
                f"chunk={self.chunk}, quant=int16x8."
            )
        if self.target is Target.TFLM:
            if self.chunk > 1:
                raise BadInputError(
                    f"--target tflm needs --chunk 1: TFLite Micro runs a model's first subgraph only, and a chunk "
                    f"signature is a second one; received chunk={self.chunk}."
                )
            if self.quant in (Quant.FLOAT16, Quant.DYNAMIC):
                raise BadInputError(
                    f"--target tflm needs --quant int8, int16x8, float32 or auto: TFLite Micro's kernels refuse "
                    f"float16 weights (DEQUANTIZE version 3) and dynamic-range layers (FULLY_CONNECTED version 12); "
                    f"received quant={self.quant.value}."
                )
        if self.calibration_steps is not None and self.calibration_steps < 10:
            raise BadInputError(f"calibration_steps must be at least 10; received calibration_steps={self.calibration_steps}.")
        if self.calibration_headroom is not None and not 1.0 <= self.calibration_headroom <= 100.0:
            raise BadInputError(
                f"calibration_headroom must be between 1 and 100; received calibration_headroom={self.calibration_headroom}."
            )
        if self.golden_steps < 10:
            raise BadInputError(f"golden_steps must be at least 10; received golden_steps={self.golden_steps}.")

    @property
    def headroom(self) -> float:
        """The calibration headroom in effect for ``quant``."""
        if self.calibration_headroom is not None:
            return self.calibration_headroom
        return DEFAULT_HEADROOM.get(self.quant, 1.0)

    def to_dict(self) -> dict:
        return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ConvertConfig:
        return cls(**d)
