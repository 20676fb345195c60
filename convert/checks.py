"""Checks on every converted graph: builtin ops only, no variables, no loops, and interpreter compatibility."""

from __future__ import annotations

from statelite.errors import IncompatibleModelError
from statelite.tflite_file import TFLiteFile

from .config import Quant, Target

FORBIDDEN = {
    "WHILE": "a While loop (a recurrent layer that was not unrolled)",
    "VAR_HANDLE": "a resource variable",
    "READ_VARIABLE": "a resource variable read",
    "ASSIGN_VARIABLE": "a resource variable write",
    "CALL_ONCE": "variable initialisation",
}

# The highest version of each operator that tflite-runtime 2.14 was seen to load, measured by loading statelite's
# graphs in every quantization mode in a tflite-runtime 2.14 environment (tests/test_tflite214.py re-checks it).
# FULLY_CONNECTED version 12 (what TF 2.21 writes for dynamic-range weights) fails there with "Didn't find op for
# builtin opcode 'FULLY_CONNECTED' version '12'".
TFLITE_RUNTIME_2_14 = {
    "ADD": 2,
    "DEQUANTIZE": 3,
    "FULLY_CONNECTED": 4,
    "LOGISTIC": 2,
    "MUL": 2,
    "PACK": 2,
    "QUANTIZE": 1,
    "SPLIT": 2,
    "SUB": 2,
    "TANH": 2,
    "UNPACK": 2,
}
COMPATIBLE_2_14 = (Quant.FLOAT32, Quant.FLOAT16, Quant.INT8, Quant.INT16X8)


def check_graph(info: TFLiteFile) -> None:
    """Refuse a graph with Flex/custom ops, variables or control flow: the device runtime cannot step it."""
    bad = []
    for op in info.used_operators:
        if op.name.startswith("CUSTOM:"):
            bad.append(f"{op.name} (a custom/Flex op needing SELECT_TF_OPS)")
        elif op.name in FORBIDDEN:
            bad.append(f"{op.name} ({FORBIDDEN[op.name]})")
    if bad:
        raise IncompatibleModelError(
            "the converted step graph contains operators statelite refuses: " + "; ".join(bad)
            + ". Expected only TFLite builtin ops without variables or loops. Please report this with your model."
        )


def check_target(info: TFLiteFile, target: Target, quant: Quant) -> None:
    """For ``tflite-runtime-2.14``, refuse an operator version that interpreter cannot load, naming a mode that works."""
    if target is not Target.TFLITE_RUNTIME_2_14:
        return
    for op in info.used_operators:
        limit = TFLITE_RUNTIME_2_14.get(op.name)
        if limit is None or op.version > limit:
            seen = f"loads up to version {limit}" if limit else "was not seen to load it"
            works = ", ".join(m.value for m in COMPATIBLE_2_14 if m is not quant)
            raise IncompatibleModelError(
                f"--target tflite-runtime-2.14: operator {op.name} version {op.version} (quant={quant.value}) "
                f"cannot run there (tflite-runtime 2.14 {seen}). Modes that work for that target: {works}."
            )
