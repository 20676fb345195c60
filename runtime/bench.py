"""``statelite bench``: how long one ``StatefulRunner.step`` takes on this device, and how much memory the process used.

Each step is timed on its own (``time.perf_counter_ns``), so the report has a median and tail latencies rather than
only an average: a forecaster on a sensor loop cares about its slowest steps. The time includes everything a step
does in Python (scaling, quantizing, state feedback), not only the interpreter's ``invoke``.

Many streams (``streams``): a *tick* steps every stream once, and each tick is timed. With a batched model the
streams share one ``StreamPool`` (one ``invoke`` per tick; by default as many streams as the batch); with a batch-1
model they are that many ``StatefulRunner`` objects stepped round-robin (one ``invoke`` each), so the two can be
compared. Throughput counts stream steps: streams × ticks per second.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time

import numpy as np

from .errors import BadInputError
from .metadata import read_metadata
from .monitor import target_columns
from .pool import StreamPool
from .ranges import RangeReport
from .runner import StatefulRunner

_QEMU_NAMES = {"aarch64": "aarch64", "arm64": "aarch64", "armv7l": "arm", "armv6l": "arm", "armv8l": "arm"}


def is_emulated() -> bool:
    """Whether this process probably runs under qemu user-mode emulation (so timings say little about the device).

    Signs: ``STATELITE_EMULATED=1`` (set by tests/emulated/envs.py), ``QEMU_LD_PREFIX`` (qemu-user's sysroot), or a
    qemu binfmt handler registered for this very architecture, which a native ARM board has no reason to do.
    """
    if os.environ.get("STATELITE_EMULATED") == "1" or os.environ.get("QEMU_LD_PREFIX"):
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
    """The process's peak resident set size in KiB (None where unknown).

    Linux's ``VmHWM`` first: ``ru_maxrss`` survives ``execve``, so a bench started by a large process (a Python
    that imported TensorFlow, say) would report its parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)  # bytes on macOS, KiB on Linux


MODE_RUNNER = "runner"  # one StatefulRunner, one stream (or a whole batch per step)
MODE_POOL = "pool"  # one StreamPool, `streams` lanes stepped per tick
MODE_RUNNERS = "runners"  # `streams` StatefulRunners of a batch-1 model, stepped round-robin per tick


@dataclasses.dataclass(frozen=True)
class BenchReport:
    """Per-step (per-tick, with streams) latency of one model on this device. Times in microseconds.

    ``steps`` counts timed calls (ticks with several streams); ``steps_per_s`` counts stream steps, that is
    ``streams`` × ticks per second.
    """

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
    streams: int = 1
    mode: str = MODE_RUNNER
    capacity: int = 1  # the model's batch
    # RangeReport.to_dict() of the timed steps' inputs (every stream): rows outside the training range or clipped.
    # None when the model records no ranges.
    input_range: dict | None = None
    # One stream with a model that carries a residual calibration: the same rows through ``StatefulRunner.monitor()``
    # (a 90% interval and the anomaly score on every step), timed on a second runner after the plain steps. None
    # otherwise.
    monitored_median_us: float | None = None
    monitored_p99_us: float | None = None
    # TensorFlow was imported in the measuring process (the Python API called from a training script or notebook):
    # the peak RSS is then mostly TensorFlow's, not what the device process needs.
    tensorflow_loaded: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BenchReport:
        """The report from ``to_dict()`` (``statelite bench --json``)."""
        return cls(**d)

    def format(self) -> str:
        """The report as printed by ``statelite bench``."""
        rss = f"{self.peak_rss_kib / 1024:.1f} MiB" if self.peak_rss_kib is not None else "unknown"
        if self.tensorflow_loaded:
            rss += " (TensorFlow is loaded in this process: not a device figure; run statelite bench for one)"
        threads = "interpreter default" if self.threads is None else str(self.threads)
        lines = [f"model        {self.model} ({self.model_size:,} bytes, quant {self.quant})"]
        if self.mode == MODE_RUNNER:
            lines += [
                f"steps        {self.steps} timed after {self.warmup} warm-up, threads {threads}",
                (
                    f"per step     median {self.median_us:.1f} us, p90 {self.p90_us:.1f} us, "
                    f"p99 {self.p99_us:.1f} us (min {self.min_us:.1f}, max {self.max_us:.1f})"
                ),
                f"throughput   {self.steps_per_s:,.0f} steps/s",
            ]
            if self.monitored_median_us is not None:
                lines.append(
                    f"monitored    median {self.monitored_median_us:.1f} us, p99 {self.monitored_p99_us:.1f} us per "
                    f"step with a 90% interval and an anomaly score "
                    f"({self.monitored_median_us / self.median_us:.1f}x the plain step)"
                )
        else:
            how = (
                f"in one StreamPool of {self.capacity} lanes, one invoke per tick"
                if self.mode == MODE_POOL
                else f"separate StatefulRunners stepped round-robin, {self.streams} invokes per tick"
            )
            lines += [
                f"streams      {self.streams} {how}",
                f"ticks        {self.steps} timed after {self.warmup} warm-up, threads {threads}",
                (
                    f"per tick     median {self.median_us:.1f} us, p90 {self.p90_us:.1f} us, "
                    f"p99 {self.p99_us:.1f} us (min {self.min_us:.1f}, max {self.max_us:.1f})"
                ),
                (
                    f"throughput   {self.steps_per_s:,.0f} steps/s "
                    f"({self.streams} streams x {self.steps_per_s / self.streams:,.0f} ticks/s)"
                ),
            ]
        lines += [
            f"peak RSS     {rss}",
            f"interpreter  {self.backend} {self.backend_version}",
            f"machine      {self.machine}, Python {self.python}" + (" (EMULATED: timings are not the device's)" if self.emulated else ""),
        ]
        if self.input_range is not None:
            r = self.input_range
            lines.append(
                f"input range  {r['outside_training']} of {r['rows']} timed inputs outside the training range, "
                f"{r['clipped']} clipped (the bench's synthetic rows)"
            )
        return "\n".join(lines)


def _inputs(md, shape: tuple[int, ...]) -> np.ndarray:
    """Plausible raw rows (around the training distribution), made before timing starts; axis 0 is time."""
    rng = np.random.default_rng(0)
    offset = np.asarray(md.scaler.feature_offset, np.float64)
    scale = np.asarray(md.scaler.feature_scale, np.float64)
    xs = offset + scale * rng.standard_normal(shape)
    return np.cumsum(xs, axis=0) if md.difference else xs  # the scaler describes differences: integrate them


# A calendar model's synthetic rows are one sampling period apart from this wall-clock time (2024-01-01 00:00).
BENCH_START = 1704067200.0


def _times(md, n: int) -> np.ndarray | None:
    """Wall-clock times of ``n`` synthetic rows for a model with calendar inputs (None for another model): one
    training sampling period apart (an hour when the model records none)."""
    if not md.calendar:
        return None
    sampling = md.sampling or {}
    period = float(sampling.get("period", 3600.0)) if sampling.get("kind") == "datetime" else 3600.0
    return BENCH_START + period * np.arange(n)


def _with_times(fn, args, times):
    """``fn(x)`` and its arguments as ``fn(x, time)`` of a calendar model (unchanged for another model)."""
    if times is None:
        return fn, args
    return (lambda a: fn(a[0], a[1])), list(zip(args, times))


def _time(fn, args, warmup: int, after_warmup=None) -> np.ndarray:
    """Call ``fn`` on each of ``args``, timing each call after the first ``warmup``; nanoseconds."""
    for a in args[:warmup]:
        fn(a)
    if after_warmup is not None:
        after_warmup()
    timed = args[warmup:]
    ns = np.empty(len(timed), dtype=np.int64)
    clock = time.perf_counter_ns
    for i, a in enumerate(timed):
        t0 = clock()
        fn(a)
        ns[i] = clock() - t0
    return ns


def bench(
    model_path,
    steps: int = 1000,
    warmup: int = 100,
    threads: int | None = None,
    backend: str = "auto",
    streams: int | None = None,
) -> BenchReport:
    """Time ``steps`` calls of ``StatefulRunner.step`` (or ticks of many streams) after ``warmup`` untimed ones.

    Args:
        model_path: the ``.tflite`` file.
        steps: timed steps (ticks, with streams).
        warmup: untimed steps first (caches, lazy kernel setup).
        threads: interpreter threads (None: the interpreter's default).
        backend: the interpreter backend, as for ``StatefulRunner``.
        streams: streams stepped each tick. A batched model: that many lanes of one ``StreamPool``, at most its
            batch (None: all of them). A batch-1 model: that many ``StatefulRunner`` objects stepped round-robin
            (None: one runner, per-step timing).

    A panel model's streams use a training series' scaler (the first ones; further pool lanes the global one); a
    calendar model's rows get times one sampling period apart, and each timed step computes their calendar inputs.

    Returns:
        A ``BenchReport``.

    Raises:
        BadInputError: steps < 1, warmup < 0, threads < 1, streams < 1 or more than a batched model's batch.
        ModelFormatError, IncompatibleModelError: the model cannot be loaded.
    """
    if steps < 1:
        raise BadInputError(f"steps must be at least 1; received steps={steps}.")
    if warmup < 0:
        raise BadInputError(f"warmup must be 0 or more; received warmup={warmup}.")
    if threads is not None and threads < 1:
        raise BadInputError(f"threads must be at least 1; received threads={threads}.")
    if streams is not None and streams < 1:
        raise BadInputError(f"streams must be at least 1; received streams={streams}.")
    md = read_metadata(model_path)
    n_features = len(md.features)
    times = _times(md, warmup + steps)
    panel_keys = list(md.panel.scalers) if md.panel is not None else []

    def key_of(i: int):
        return panel_keys[i % len(panel_keys)] if panel_keys else None
    if md.batch > 1:
        if streams is not None and streams > md.batch:
            raise BadInputError(
                f"streams must be at most the model's batch, {md.batch} (one StreamPool lane each); received "
                f"streams={streams}. Convert with a larger --batch to bench more streams."
            )
        mode, n = MODE_POOL, streams or md.batch
        pool = StreamPool(model_path, backend=backend, num_threads=threads)
        runner = pool  # model size and interpreter, for the report
        keys = [panel_keys[i] if i < len(panel_keys) else i for i in range(n)]
        for key in keys:
            pool.add(key, warn=False)
        # Every stream ticks at once: StreamPool.step_all, rows in pool.keys order (StreamPool.step with a dict
        # of rows costs a few microseconds more per tick for building and reading the dicts).
        fn, args = _with_times(pool.step_all, list(_inputs(md, (warmup + steps, n, n_features))), times)
        guarded = [pool]
    elif streams is not None:
        mode, n = MODE_RUNNERS, streams
        runners = [StatefulRunner(model_path, backend=backend, num_threads=threads, key=key_of(i)) for i in range(n)]
        runner = runners[0]
        guarded = runners
        pairs = [(r.step, i) for i, r in enumerate(runners)]
        if times is None:
            def fn(x):
                for step, i in pairs:
                    step(x[i])
        else:
            def fn(a):
                x, t = a
                for step, i in pairs:
                    step(x[i], t)

        args = _inputs(md, (warmup + steps, n, n_features))
        if times is not None:
            args = list(zip(args, times))
    else:
        mode, n = MODE_RUNNER, 1
        runner = StatefulRunner(model_path, backend=backend, num_threads=threads, key=key_of(0))
        guarded = [runner]
        fn, args = _with_times(runner.step, _inputs(md, (warmup + steps, n_features)), times)

    def reset_range_counts():  # the report counts the timed steps only
        for g in guarded:
            g.reset_range_counts()

    ns = _time(fn, args, warmup, reset_range_counts)
    ranges = RangeReport.combine(g.range_report for g in guarded)
    us = ns / 1000.0
    monitored = None
    if mode == MODE_RUNNER and md.residuals is not None and target_columns(md) is not None:
        watched = StatefulRunner(model_path, backend=backend, num_threads=threads, key=key_of(0)).monitor()
        if times is None:
            monitored = _time(watched.step, args, warmup) / 1000.0
        else:
            monitored = _time(lambda a: watched.step(a[0], time=a[1]), args, warmup) / 1000.0
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
        steps_per_s=float(n * steps / (ns.sum() / 1e9)) if ns.sum() else float("inf"),
        peak_rss_kib=peak_rss_kib(),
        model_size=runner.model_size,
        backend=runner.backend,
        backend_version=runner.backend_version,
        machine=platform.machine(),
        python=platform.python_version(),
        emulated=is_emulated(),
        streams=n,
        mode=mode,
        capacity=md.batch,
        input_range=None if ranges is None else ranges.to_dict(),
        tensorflow_loaded="tensorflow" in sys.modules,
        monitored_median_us=None if monitored is None else float(np.median(monitored)),
        monitored_p99_us=None if monitored is None else float(np.percentile(monitored, 99)),
    )
