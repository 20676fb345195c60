"""Finding and creating a TFLite interpreter, and turning its load errors into statelite errors.

Backends in order of preference: ``ai_edge_litert`` (LiteRT), ``tflite_runtime`` (the legacy package, the only one
with 32-bit Raspberry Pi OS wheels), ``tensorflow.lite`` (a workstation with TensorFlow). All are imported lazily.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import tempfile

from . import quiet
from .errors import IncompatibleModelError, InterpreterNotFoundError, ModelFormatError, StateliteError

BACKENDS = {
    "litert": ("ai_edge_litert.interpreter", "ai_edge_litert", "pip install ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite_runtime", "pip install tflite-runtime"),
    "tensorflow": ("tensorflow.lite", "tensorflow", "pip install tensorflow"),
    # TFLite Micro's reference kernels (statelite.tflm adapts its interpreter): for verify, never chosen by auto
    "tflm": ("statelite.tflm", "tflite_micro", "pip install 'statelite[micro]'"),
}
AUTO_BACKENDS = ("litert", "tflite-runtime", "tensorflow")

def backend_version(backend: str) -> str:
    _, package, _ = BACKENDS[backend]
    try:
        from importlib.metadata import version

        dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
                "tflite_micro": "tflite-micro"}.get(package, package)
        return version(dist)
    except Exception:
        module = importlib.import_module(package)
        return getattr(module, "__version__", "unknown")


def load_backend(backend: str = "auto"):
    """Import an interpreter backend and return ``(name, Interpreter class)``.

    Raises:
        InterpreterNotFoundError: the named backend (or, with ``auto``, every backend) is not installed.
    """
    names = list(AUTO_BACKENDS) if backend == "auto" else [backend]
    if backend != "auto" and backend not in BACKENDS:
        raise InterpreterNotFoundError(f"unknown backend {backend!r}; expected one of: auto, {', '.join(BACKENDS)}.")
    for name in names:
        module_name, package, _ = BACKENDS[name]
        try:
            module = importlib.import_module(module_name)
            if name == "tflm":
                importlib.import_module(package)
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


# What the interpreters print on fd 2 while loading a healthy model (once per process), and the prefix of the lines
# they print before raising a load error that ``create_interpreter`` re-raises with more context.
_LOAD_NOISE = re.compile(rb"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\s*$")
_LOAD_ERROR_LINE = re.compile(rb"^ERROR: ")


@contextlib.contextmanager
def _native_stderr_filtered(failed: list):
    """Hold back what the interpreter's C++ writes to file descriptor 2 while it loads, and write it back after,
    minus the XNNPACK ``INFO`` line (and, when ``failed`` is non-empty at the end, its ``ERROR:`` lines, which the
    raised statelite error replaces), so ``statelite run`` keeps stderr for the user's bad-row reports.

    fd 2 is process-wide: this holds ``statelite.quiet``'s lock for the whole switch, so two threads never
    interleave their switches (which once left the process's stderr on /dev/null), and text other threads write
    meanwhile is delayed, never lost. If another thread holds the lock for over 2 s (a TensorFlow conversion inside
    ``quiet.filtered_stderr``), the load runs unfiltered rather than waiting longer.
    """
    if os.environ.get(quiet.SHOW_ALL_ENV, "").strip() not in ("", "0") or not quiet._lock.acquire(timeout=2.0):
        yield
        return
    try:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to protect
            yield
            return
        try:
            capture = tempfile.TemporaryFile()
        except OSError:  # no writable temporary directory: better noisy than broken
            os.close(saved)
            yield
            return
        with capture:
            quiet._flush_python_stderr()
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                quiet._flush_python_stderr()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                kept = [
                    line for line in capture.read().splitlines(keepends=True)
                    if not _LOAD_NOISE.match(line) and not (failed and _LOAD_ERROR_LINE.match(line))
                ]
                quiet._write_all(2, b"".join(kept))
    finally:
        quiet._lock.release()


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
    failed: list = []
    try:
        with _native_stderr_filtered(failed):
            try:
                it = interpreter_cls(model_content=model, num_threads=num_threads)
                it.allocate_tensors()
            except Exception:
                failed.append(True)
                raise
        return it
    except (ValueError, RuntimeError, TypeError, MemoryError, SystemError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
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
        raise ModelFormatError(
            f"{source}: the interpreter ({backend}) could not load the model: {text[:300]}. Copy the file again from "
            f"the machine that converted it, or convert it again."
        ) from None


def invoke_error(exc: BaseException, source: str, backend: str = "interpreter") -> StateliteError:
    """The statelite error to raise for an exception from the interpreter's ``Invoke`` (or ``AllocateTensors``) on a
    model that loaded: one line naming the file, the interpreter and its message.

    Use as ``except (RuntimeError, ValueError) as exc: raise invoke_error(exc, self.path, self.backend) from None``.
    """
    if isinstance(exc, StateliteError):
        return exc
    text = " ".join(str(exc).split()) or type(exc).__name__
    return ModelFormatError(
        f"{source}: the interpreter ({backend}) failed to run the model: {text[:300]}. The graph loaded but does "
        f"not run; convert the model again (and check it with 'statelite verify')."
    )
