"""Finding and creating a TFLite interpreter, and turning its load errors into statelite errors.

Backends in order of preference: ``ai_edge_litert`` (LiteRT), ``tflite_runtime`` (the legacy package, the only one
with 32-bit Raspberry Pi OS wheels), ``tensorflow.lite`` (a workstation with TensorFlow). All are imported lazily.
"""

from __future__ import annotations

import contextlib
import importlib
import os
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


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence what the interpreter's C++ prints on file descriptor 2 while it loads (``INFO: Created TensorFlow
    Lite XNNPACK delegate`` on every load, and load errors that statelite re-raises with more context), so that
    ``statelite run`` keeps stderr for the user's bad-row reports."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
        with _native_stderr_silenced():
            it = interpreter_cls(model_content=model, num_threads=num_threads)
            it.allocate_tensors()
        return it
    except (ValueError, RuntimeError) as exc:
        text = str(exc)
        match = _OP_ERROR.search(text)
        if match:
            op, version = match.group(1), int(match.group(2))
            newer = "a newer interpreter"
            if needs and not (backend != "litert" and _version_tuple(needs) <= _version_tuple(backend_version(backend))):
                # min_runtime_version is in TensorFlow's numbering; only trust it when it is above this interpreter.
                newer = f"a TFLite runtime of TensorFlow {needs} or newer (the model's min_runtime_version)"
            raise IncompatibleModelError(
                f"{source} uses operator {op} version {version}, which this interpreter ({backend} "
                f"{backend_version(backend)}) cannot run; {newer} would load it (pip install -U ai-edge-litert). "
                f"For tflite-runtime 2.14 devices, convert with --target tflite-runtime-2.14."
            ) from None
        raise ModelFormatError(f"{source}: the interpreter ({backend}) could not load the model: {text.strip()}") from None
