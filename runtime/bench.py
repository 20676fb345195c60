"""``statelite bench``: how long one ``StatefulRunner.step`` takes on this device, and how much memory the process used.

Each step is timed on its own (``time.perf_counter_ns``), so the report has a median and tail latencies rather than
only an average: a forecaster on a sensor loop cares about its slowest steps. The time includes everything a step
does in Python (scaling, quantizing, state feedback), not only the interpreter's ``invoke``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time

import numpy as np

from .errors import BadInputError
from .runner import StatefulRunner

_QEMU_NAMES = {"aarch64": "aarch64", "arm64": "aarch64", "armv7l": "arm", "armv6l": "arm", "armv8l": "arm"}


def is_emulated() -> bool:
    """Whether this process probably runs under qemu user-mode emulation (so timings say little about the device).

    Signs: ``QEMU_LD_PREFIX`` is set (qemu-user's sysroot), or a qemu binfmt handler is registered for this very
    architecture, which a native ARM board has no reason to do.
    """
    if os.environ.get("QEMU_LD_PREFIX"):
        return True
    name = _QEMU_NAMES.get(platform.machine())
    if name is None:
        return False
    try:
        with open(f"/proc/sys/fs/binfmt_misc/qemu-{name}") as f:
            return f.readline().strip() == "enabled"
    except OSError:
        return False


def peak_rss_kib() -> int | None:
    """The process's peak resident set size in KiB (None where ``resource`` is unavailable)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)  # bytes on macOS, KiB on Linux


@dataclasses.dataclass(frozen=True)
class BenchReport:
    """Per-step latency of one model on this device. Times in microseconds."""

    model: str
    quant: str
    steps: int
    warmup: int
    threads: int | None
    median_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    min_us: float
    max_us: float
    steps_per_s: float
    peak_rss_kib: int | None
    model_size: int
    backend: str
    backend_version: str
    machine: str
    python: str
    emulated: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self) -> str:
        """The report as printed by ``statelite bench``."""
        rss = f"{self.peak_rss_kib / 1024:.1f} MiB" if self.peak_rss_kib is not None else "unknown"
        threads = "interpreter default" if self.threads is None else str(self.threads)
        lines = [
            f"model        {self.model} ({self.model_size:,} bytes, quant {self.quant})",
            f"steps        {self.steps} timed after {self.warmup} warm-up, threads {threads}",
            f"per step     median {self.median_us:.1f} us, p90 {self.p90_us:.1f} us, p99 {self.p99_us:.1f} us "
            f"(min {self.min_us:.1f}, max {self.max_us:.1f})",
            f"throughput   {self.steps_per_s:,.0f} steps/s",
            f"peak RSS     {rss}",
            f"interpreter  {self.backend} {self.backend_version}",
            f"machine      {self.machine}, Python {self.python}" + (" (EMULATED: timings are not the device's)" if self.emulated else ""),
        ]
        return "\n".join(lines)


def bench(model_path, steps: int = 1000, warmup: int = 100, threads: int | None = None, backend: str = "auto") -> BenchReport:
    """Time ``steps`` calls of ``StatefulRunner.step`` after ``warmup`` untimed ones.

    Args:
        model_path: the ``.tflite`` file.
        steps: timed steps.
        warmup: untimed steps first (caches, lazy kernel setup).
        threads: interpreter threads (None: the interpreter's default).
        backend: the interpreter backend, as for ``StatefulRunner``.

    Returns:
        A ``BenchReport``.

    Raises:
        BadInputError: steps < 1, warmup < 0 or threads < 1.
        ModelFormatError, IncompatibleModelError: the model cannot be loaded.
    """
    if steps < 1:
        raise BadInputError(f"steps must be at least 1; received steps={steps}.")
    if warmup < 0:
        raise BadInputError(f"warmup must be 0 or more; received warmup={warmup}.")
    if threads is not None and threads < 1:
        raise BadInputError(f"threads must be at least 1; received threads={threads}.")
    runner = StatefulRunner(model_path, backend=backend, num_threads=threads)
    md = runner.metadata
    # Plausible inputs (around the training distribution), made before timing starts.
    rng = np.random.default_rng(0)
    shape = (warmup + steps,) + ((len(md.features),) if runner.batch == 1 else (runner.batch, len(md.features)))
    offset = np.asarray(md.scaler.feature_offset, np.float64)
    scale = np.asarray(md.scaler.feature_scale, np.float64)
    xs = offset + scale * rng.standard_normal(shape)
    if md.difference:
        xs = np.cumsum(xs, axis=0)  # the scaler describes differences: integrate them
    step = runner.step
    for x in xs[:warmup]:
        step(x)
    ns = np.empty(steps, dtype=np.int64)
    clock = time.perf_counter_ns
    for i, x in enumerate(xs[warmup:]):
        t0 = clock()
        step(x)
        ns[i] = clock() - t0
    us = ns / 1000.0
    return BenchReport(
        model=str(model_path),
        quant=md.quant,
        steps=steps,
        warmup=warmup,
        threads=threads,
        median_us=float(np.median(us)),
        p90_us=float(np.percentile(us, 90)),
        p99_us=float(np.percentile(us, 99)),
        mean_us=float(us.mean()),
        min_us=float(us.min()),
        max_us=float(us.max()),
        steps_per_s=float(steps / (ns.sum() / 1e9)) if ns.sum() else float("inf"),
        peak_rss_kib=peak_rss_kib(),
        model_size=runner.model_size,
        backend=runner.backend,
        backend_version=runner.backend_version,
        machine=platform.machine(),
        python=platform.python_version(),
        emulated=is_emulated(),
    )
