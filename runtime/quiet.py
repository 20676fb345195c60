"""Keep TensorFlow's C++ log lines off the terminal without losing genuine errors (standard library only).

TensorFlow writes its start-up lines (absl's "before InitializeLog" banner, oneDNN, CUDA driver probes) and the
TFLite converter writes its option dump (``fully_quantize: 0, inference_type: 6, ...``) from C++ straight to file
descriptor 2, below Python's ``sys.stderr`` and regardless of ``TF_CPP_MIN_LOG_LEVEL`` (the start-up lines come
before absl reads it). The only place to catch them is the descriptor itself: ``filtered_stderr`` points fd 2 at a
temporary file for the duration of a block, then restores it and writes back every line that is not known noise.

This module lives in the device runtime, which never imports TensorFlow, so that ``statelite.convert`` (around
``converter.convert()``) and the workstation commands share one implementation. Set ``STATELITE_TF_LOGS=1`` to turn
the filtering off and see everything, e.g. when TensorFlow aborts inside a filtered block (an abort kills the process
before the captured lines can be written back).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

SHOW_ALL_ENV = "STATELITE_TF_LOGS"

# Only lines we have seen TensorFlow 2.x print on a healthy run; anything else (an F line, a Python traceback, an
# MLIR error with its location) is written back.
_NOISE = tuple(
    re.compile(pattern)
    for pattern in (
        r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\s*$",
        # absl/glog format: severity, MMDD, time, thread id, file:line]. Info and warning lines only.
        r"^[IW]\d{4} \d+:\d+:\d+\.\d+\s+\d+ [^\]]+:\d+\] ",
        # Error-level lines that only say there is no GPU on this machine (statelite runs on the CPU).
        r"^E\d{4} \d+:\d+:\d+\.\d+\s+\d+ [^\]]+:\d+\] .*(cuInit|CUDA|cuda|cuDNN|cuFFT|cuBLAS|TensorRT|GPU)",
        # The second line of the CPU-instructions info line (shown when TF_CPP_MIN_LOG_LEVEL is below 1).
        r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.\s*$",
        # The TFLite converter's option dump, printed by every quantized conversion.
        r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+\s*$",
    )
)

# Environment TensorFlow reads when it loads: C++ logs at ERROR and above once absl is up, gRPC quiet. The GPU is
# left alone (CUDA_VISIBLE_DEVICES would take it from users who have one); its probe lines are filtered instead.
TENSORFLOW_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "2"}

_lock = threading.RLock()


def is_noise(line: str) -> bool:
    """Whether one stderr line is a known TensorFlow log line that users need not see."""
    return any(pattern.search(line) for pattern in _NOISE)


def quiet_environment() -> None:
    """Set ``TENSORFLOW_ENV`` where the user has not set those variables (takes effect if TensorFlow is not loaded)."""
    for name, value in TENSORFLOW_ENV.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Capture file descriptor 2 for the block; on exit restore it and write back the lines that are not noise.

    fd 2 is always restored, also when the block raises. Everything written to fd 2 meanwhile, by any thread and
    through ``sys.stderr`` too, is held back until the block ends and then written back in order, minus the noise
    lines, so it is delayed, never lost. Nested blocks work; a block entered while another thread is inside one
    runs unfiltered rather than waiting. Without a usable fd 2, or with ``STATELITE_TF_LOGS=1``, nothing is
    redirected.
    """
    if os.environ.get(SHOW_ALL_ENV, "").strip() not in ("", "0") or not _lock.acquire(blocking=False):
        yield
        return
    try:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a daemon with fd 2 closed): nothing to protect
            saved = None
        try:
            capture = tempfile.TemporaryFile() if saved is not None else None
        except OSError:  # no writable temporary directory: better noisy than broken
            capture = None
        if capture is None:
            if saved is not None:
                os.close(saved)
            yield
            return
        with capture:
            _flush_python_stderr()
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                _flush_python_stderr()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                kept = [
                    line for line in capture.read().splitlines(keepends=True)
                    if not is_noise(line.decode("utf-8", "replace"))
                ]
                _write_all(2, b"".join(kept))
    finally:
        _lock.release()


def _flush_python_stderr() -> None:
    # Text Python buffered before the switch belongs before it (and after it, after): flush at both edges.
    for stream in {id(s): s for s in (sys.stderr, sys.__stderr__) if s is not None}.values():
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:  # stderr went away: the lines were only going there
            return
        view = view[written:]
