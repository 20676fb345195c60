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

# The highest version of each operator TFLite Micro's kernels were seen to load and invoke (the tflite-micro package,
# 0.dev20261023): statelite's GRU, LSTM and SimpleRNN step graphs converted in every mode, batch 1 and 8, int8 with
# float and int8 I/O (tests/test_tflm.py re-checks the reference models). DEQUANTIZE version 3 (float16 weights)
# fails to prepare ("input->type == kTfLiteInt8 || ... was not true"), as does FULLY_CONNECTED version 12, a
# dynamic-range layer ("Input type: FLOAT32 with filter type: INT8 not supported").
TFLM = {
    "ADD": 2,
    "DEQUANTIZE": 2,
    "FULLY_CONNECTED": 4,
    "LOGISTIC": 2,
    "MUL": 2,
    "QUANTIZE": 1,
    "SPLIT": 2,
    "SUB": 2,
    "TANH": 2,
}
COMPATIBLE_TFLM = (Quant.FLOAT32, Quant.INT8, Quant.INT16X8)
_TABLES = {
    Target.TFLITE_RUNTIME_2_14: (TFLITE_RUNTIME_2_14, COMPATIBLE_2_14, "tflite-runtime 2.14"),
    Target.TFLM: (TFLM, COMPATIBLE_TFLM, "TFLite Micro"),
}


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
    """For ``tflite-runtime-2.14`` and ``tflm``, refuse an operator version that interpreter cannot load, naming the
    modes that work; ``tflm`` also needs a single subgraph."""
    if target not in _TABLES:
        return
    table, compatible, interpreter = _TABLES[target]
    if target is Target.TFLM and len(info.subgraph_io) != 1:
        raise IncompatibleModelError(
            f"--target tflm: the model has {len(info.subgraph_io)} subgraphs; TFLite Micro runs the first only. "
            f"Convert without --chunk."
        )
    for op in info.used_operators:
        limit = table.get(op.name)
        if limit is None or op.version > limit:
            seen = f"loads up to version {limit}" if limit else "was not seen to load it"
            works = ", ".join(m.value for m in compatible if m is not quant)
            raise IncompatibleModelError(
                f"--target {target.value}: operator {op.name} version {op.version} (quant={quant.value}) "
                f"cannot run there ({interpreter} {seen}). Modes that work for that target: {works}."
            )
