"""``statelite export-c``: a converted model as C++ source for TensorFlow Lite for Microcontrollers.

Writes three files into a folder, named after the model (``NAME``: the file's stem, made a C identifier):

* ``NAME_model.h`` / ``NAME_model.cc``: the ``.tflite`` bytes as a 16-byte aligned ``const unsigned char`` array
  and its length (what ``tflite::GetModel`` takes).
* ``NAME_statelite.h``: what a step loop needs, from the model's statelite metadata: the input, output and state
  tensor indices as TFLM numbers them (the subgraph's input and output positions, paired with the state names as
  everywhere in statelite), each tensor's shape and quantization, the scaler, horizon, differencing, the calendar
  and the tensor arena size (measured by TFLM's recording allocator, plus a margin), so the host-side transform of
  ``statelite.transform`` can be repeated on the device.

Numpy and the standard library only; the arena is measured in a subprocess through the ``tflite-micro`` package
(``pip install 'statelite[micro]'``) unless ``arena_bytes`` is given.
"""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path

from .errors import BadInputError, InterpreterNotFoundError
from .metadata import ModelMetadata, metadata_from_file, read_model_file

ARENA_MARGIN = 1.25  # the measured arena times this, rounded up to 16 bytes: room for a 32-bit target's alignment
_BYTES_PER_LINE = 12


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """The files written and what the header declares."""

    header: Path
    source: Path
    info: Path
    name: str
    model_bytes: int
    arena_bytes: int
    measured_arena_bytes: int | None


def c_name(text: str) -> str:
    """``text`` as a C identifier: other characters become ``_``, and a leading digit gets a ``m_`` prefix."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", text)
    return f"m_{name}" if not name or name[0].isdigit() else name


def measure_arena(path: Path) -> int:
    """The tensor arena TFLM allocates for the model, in bytes (its recording allocator's total).

    Raises:
        InterpreterNotFoundError: the tflite-micro package is not installed.
        BadInputError: TFLM cannot load the model (the message names why).
    """
    code = (
        "import sys\n"
        "from tflite_micro.python.tflite_micro import runtime\n"
        "runtime.Interpreter.from_file(sys.argv[1]).print_allocations()\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    if "No module named 'tflite_micro'" in done.stderr:
        raise InterpreterNotFoundError(
            "measuring the tensor arena needs the tflite-micro package: pip install 'statelite[micro]' (or give "
            "--arena-bytes N)"
        )
    found = re.search(r"Arena allocation total (\d+) bytes", done.stdout + done.stderr)
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise BadInputError(f"expected TFLite Micro to load {path}, Received: {last}; convert with --target tflm")
    return int(found.group(1))


def _array(data: bytes) -> str:
    lines = []
    for i in range(0, len(data), _BYTES_PER_LINE):
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in data[i:i + _BYTES_PER_LINE]) + ",")
    return "\n".join(lines)


def _float(v) -> str:
    text = repr(float(v))
    if "e" not in text and "." not in text:
        text += ".0"
    return text + "f"


def _floats(values) -> str:
    return "{" + ", ".join(_float(v) for v in values) + "}"


def _strings(values) -> str:
    quoted = []
    for v in values:
        text = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        quoted.append(f'"{text}"')
    return "{" + ", ".join(quoted) + "}"


def _ints(values) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def export_c(model_path, out_dir, *, name: str | None = None, arena_bytes: int | None = None,
             key: str | None = None) -> ExportResult:
    """Write ``NAME_model.h``, ``NAME_model.cc`` and ``NAME_statelite.h`` for the model into ``out_dir``.

    ``key`` picks a panel model's series: the header gets that series' scaler (a device runs one series). Without it
    a panel model's header has the global scaler, the one for series not in training.

    Raises:
        BadInputError: the model cannot run on TFLM as it is (a chunk signature: TFLM runs one subgraph), a bad
            name or arena size, or a ``key`` the model's panel does not have (or a key for a model without one).
        ModelFormatError / IncompatibleModelError: not a statelite model (as for ``read_metadata``).
    """
    path = Path(model_path)
    data, info = read_model_file(path)
    md: ModelMetadata = metadata_from_file(info, source=str(path))
    if len(info.subgraph_io) != 1:
        raise BadInputError(
            f"expected a model with one subgraph for TFLite Micro, Received: {len(info.subgraph_io)} in {path} "
            f"(a --chunk signature); convert with --target tflm"
        )
    if key is not None:
        if md.panel is None:
            raise BadInputError(f"expected a panel model for --key, Received: {path.name}, trained on one series; "
                                "drop --key")
        if key not in md.panel.scalers:
            known = ", ".join(sorted(md.panel.scalers)[:10])
            raise BadInputError(f"expected a series of the model's panel for --key ({known}), Received: {key!r}; "
                                "drop --key for the global scaler")
    name = c_name(name or path.stem)
    if arena_bytes is not None and (not isinstance(arena_bytes, int) or arena_bytes < 1024):
        raise BadInputError(f"expected --arena-bytes of at least 1024, Received: {arena_bytes!r}")
    measured = None if arena_bytes is not None else measure_arena(path)
    arena = arena_bytes if arena_bytes is not None else -(-int(measured * ARENA_MARGIN) // 16) * 16

    inputs, outputs = info.subgraph_io[0]
    sig = next(s for s in info.signatures if s.key == md.signature_key)

    def position(side: tuple, tensor_index: int) -> int:
        return side.index(tensor_index)

    x_in = position(inputs, sig.inputs[md.x.name])
    y_out = position(outputs, sig.outputs[md.y.name])
    state_in = [position(inputs, sig.inputs[s.input.name]) for s in md.states]
    state_out = [position(outputs, sig.outputs[s.output.name]) for s in md.states]
    upper = name.upper()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    header = out / f"{name}_model.h"
    header.write_text(
        f"// {path.name} as a C array for TensorFlow Lite for Microcontrollers; written by statelite export-c.\n"
        f"#ifndef {upper}_MODEL_H_\n#define {upper}_MODEL_H_\n\n"
        f"extern const unsigned char {name}_model[];\nextern const unsigned int {name}_model_len;\n\n"
        f"#endif  // {upper}_MODEL_H_\n"
    )
    source = out / f"{name}_model.cc"
    source.write_text(
        f"// {path.name}: {len(data)} bytes; written by statelite export-c.\n"
        f'#include "{header.name}"\n\n'
        f"alignas(16) const unsigned char {name}_model[] = {{\n{_array(data)}\n}};\n"
        f"const unsigned int {name}_model_len = {len(data)};\n"
    )

    def quant(spec) -> tuple[float, int]:
        return (spec.quantization.scale, spec.quantization.zero_point) if spec.quantization else (0.0, 0)

    s, _ = md.scaler_for(key)
    if md.panel is None:
        whose = ""
    elif key is None:
        whose = "// A panel model: this is the global scaler (series not in training); --key KEY gives a series' own."
    else:
        whose = f"// A panel model: this is the scaler of series {_strings([key])[1:-1]}."
    lines = [
        f"// What a step loop needs for {path.name}, from its statelite metadata; written by statelite export-c.",
        "// Indices are TFLM's: interpreter.input(i) / interpreter.output(i). A scale of 0 means a float tensor.",
        f"#ifndef {upper}_STATELITE_H_", f"#define {upper}_STATELITE_H_", "",
        f"#define {upper}_ARENA_BYTES {arena}"
        + (f"  // measured {measured} bytes by TFLM's recording allocator, times {ARENA_MARGIN}" if measured else ""),
        f"#define {upper}_BATCH {md.batch}",
        f"#define {upper}_N_FEATURES {len(md.features)}",
        f"#define {upper}_N_CALENDAR {2 * len(md.calendar)}",
        f"#define {upper}_N_TARGETS {len(md.targets)}",
        f"#define {upper}_HORIZON {md.horizon}",
        f"#define {upper}_DIFFERENCE {int(md.difference)}  // 1: the model takes X_t - X_(t-1); add the level back",
        f"#define {upper}_SCALER_IN_GRAPH {int(md.graph_scales_inputs and md.graph_scales_outputs)}"
        "  // 1: raw values in and out",
        f"#define {upper}_INPUT_X {x_in}",
        f"#define {upper}_OUTPUT_Y {y_out}",
        f"#define {upper}_N_STATES {len(md.states)}", "",
        f"static const char* const {name}_feature_names[] = {_strings(md.features)};",
        f"static const char* const {name}_target_names[] = {_strings(md.targets)};",
        f"static const char* const {name}_state_names[] = {_strings(st.name for st in md.states)};",
        f"static const int {name}_state_inputs[] = {_ints(state_in)};  // TFLM input index of each state, by name",
        f"static const int {name}_state_outputs[] = {_ints(state_out)};  // TFLM output index of the same state",
        f"static const int {name}_state_sizes[] = {_ints(math.prod(st.input.shape) for st in md.states)};",
        f"static const float {name}_state_scales[] = {_floats(quant(st.input)[0] for st in md.states)};",
        f"static const int {name}_state_zero_points[] = {_ints(quant(st.input)[1] for st in md.states)};",
        f"static const float {name}_x_scale = {_float(quant(md.x)[0])};",
        f"static const int {name}_x_zero_point = {quant(md.x)[1]};",
        f"static const float {name}_y_scale = {_float(quant(md.y)[0])};",
        f"static const int {name}_y_zero_point = {quant(md.y)[1]};",
        "// model input = (value - offset) / scale, per feature (of X_t - X_(t-1) when differencing);",
        "// raw forecast = output * target_scale + target_offset, per target (then cumulated and added to the level",
        "// when differencing).",
        *([whose] if whose else []),
        f"static const float {name}_feature_offset[] = {_floats(s.feature_offset)};",
        f"static const float {name}_feature_scale[] = {_floats(s.feature_scale)};",
        f"static const float {name}_target_offset[] = {_floats(s.target_offset)};",
        f"static const float {name}_target_scale[] = {_floats(s.target_scale)};",
        "", f"#endif  // {upper}_STATELITE_H_", "",
    ]
    info_path = out / f"{name}_statelite.h"
    info_path.write_text("\n".join(lines))
    return ExportResult(header, source, info_path, name, len(data), arena, measured)

