"""Finding and creating a TFLite interpreter, and turning its load errors into statelite errors.

Backends in order of preference: ``ai_edge_litert`` (LiteRT), ``tflite_runtime`` (the legacy package, the only one
with 32-bit Raspberry Pi OS wheels), ``tensorflow.lite`` (a workstation with TensorFlow). All are imported lazily.
"""

from __future__ import annotations

import importlib
import re

from .errors import IncompatibleModelError, InterpreterNotFoundError, ModelFormatError

BACKENDS = {
    "litert": ("ai_edge_litert.interpreter", "ai_edge_litert", "pip install ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite_runtime", "pip install tflite-runtime"),
    "tensorflow": ("tensorflow.lite", "tensorflow", "pip install tensorflow"),
}

def backend_version(backend: str) -> str:
    _, package, _ = BACKENDS[backend]
    try:
        from importlib.metadata import version

        dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(package, package)
        return version(dist)
    except Exception:
        module = importlib.import_module(package)
        return getattr(module, "__version__", "unknown")


def load_backend(backend: str = "auto"):
    """Import an interpreter backend and return ``(name, Interpreter class)``.

    Raises:
        InterpreterNotFoundError: the named backend (or, with ``auto``, every backend) is not installed.
    """
    names = list(BACKENDS) if backend == "auto" else [backend]
    if backend != "auto" and backend not in BACKENDS:
        raise InterpreterNotFoundError(f"unknown backend {backend!r}; expected one of: auto, {', '.join(BACKENDS)}.")
    for name in names:
        module_name, _, _ = BACKENDS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return name, module.Interpreter
    wanted = " or ".join(f"'{BACKENDS[n][2]}'" for n in names)
    raise InterpreterNotFoundError(
        f"no TFLite interpreter found (tried {', '.join(names)}). Install one: {wanted} "
        f"(on 32-bit Raspberry Pi OS: pip install tflite-runtime==2.14.0 'numpy<2')."
    )


_OP_ERROR = re.compile(r"builtin opcode '(\w+)' version '(\d+)'")


def min_runtime_version(info) -> str | None:
    """The converter's own record of the oldest TFLite runtime that loads the model (``min_runtime_version``)."""
    raw = info.metadata.get("min_runtime_version")
    return raw.split(b"\0", 1)[0].decode("ascii", "replace") or None if raw else None


def create_interpreter(
    interpreter_cls, backend: str, model: bytes, source: str, num_threads: int | None, needs: str | None = None
):
    """Create and allocate an interpreter for ``model``, translating load failures into statelite errors.

    ``needs`` is the model's ``min_runtime_version`` (written by the TFLite converter), so an error can say which
    interpreter version would load it.
    """
    try:
        it = interpreter_cls(model_content=model, num_threads=num_threads)
        it.allocate_tensors()
        return it
    except (ValueError, RuntimeError) as exc:
        text = str(exc)
        match = _OP_ERROR.search(text)
        if match:
            op, version = match.group(1), int(match.group(2))
            newer = f"TFLite runtime {needs} or newer (the model's min_runtime_version)" if needs else "a newer interpreter"
            raise IncompatibleModelError(
                f"{source} uses operator {op} version {version}, which this interpreter ({backend} "
                f"{backend_version(backend)}) cannot run; {newer} would load it (pip install -U ai-edge-litert). "
                f"For tflite-runtime 2.14 devices, convert with --target tflite-runtime-2.14."
            ) from None
        raise ModelFormatError(f"{source}: the interpreter ({backend}) could not load the model: {text.strip()}") from None
