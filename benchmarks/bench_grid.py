"""Side-by-side speed, size and memory of statelite's runtime against its floor and its peers, in one run.

For every model of the grid (cells x units x layers x quant, trained briefly on the bundled CO2 series and converted
with the real pipeline) the contenders step the same model in the same process, interleaved per repetition so that
they share the machine's noise:

- ``step``: ``StatefulRunner.step`` on raw rows of the series (everything a device does per row);
- ``bare``: the same interpreter class stepped by hand (``set_tensor`` x and every state, ``invoke``, ``get_tensor``
  y and every state, state fed back by name) on pre-made float32 inputs: the floor;
- ``onnx``: ONNX Runtime on the same step graph exported with tf2onnx (state as explicit inputs, ``sess.run`` per
  step with the state fed back by name; int8 rows use ONNX Runtime's static QDQ int8 quantization);
- ``keras``: each recurrent layer's Keras cell called eagerly, then the Dense head: the workstation baseline.

Then ``StreamPool`` of 64 streams against 64 ``StatefulRunner``s, the chunk signature (K=16) against single steps,
int8 against float32 file size, and the import time and peak memory of a fresh device process against one that
imports TensorFlow. Each time is the median over repetitions of the median per-step time within a repetition.

    python benchmarks/bench_grid.py                      # the full grid (several minutes), into benchmarks/results
    python benchmarks/bench_grid.py --quick --out /tmp/b # one model, few steps (the test's configuration)

Needs ``statelite[train]``; the ONNX column needs ``pip install onnxruntime tf2onnx`` and is skipped with a note
without them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `benchmarks` is then not importable as a package
    sys.path.insert(0, str(ROOT))

from benchmarks.environment import machine_info, source_state, versions  # noqa: E402

REFERENCE_MODEL = ROOT / "models" / "gru_int8.tflite"
POOL_STREAMS = 64
CHUNK = 16

# The targets, as (key, text); each row of the report says whether it met its target.
TARGETS = {
    "step_vs_bare": "StatefulRunner.step / bare interpreter loop <= 1.3 (median), every model",
    "step_vs_onnx": "StatefulRunner.step faster per step than ONNX Runtime, every model",
    "pool": f"StreamPool of {POOL_STREAMS} >= 10x the steps/s of {POOL_STREAMS} separate runners",
    "chunk": f"chunked (K={CHUNK}) >= 4x the steps/s of single steps",
    "size": "int8 file <= 0.35x the float32 file, for >= 64 units",
    "process": "device process: import statelite <= 0.2 s and peak RSS <= 60 MB",
}
STEP_BARE_MAX, POOL_MIN, CHUNK_MIN, SIZE_MAX, IMPORT_MAX_S, RSS_MAX_MB = 1.3, 10.0, 4.0, 0.35, 0.2, 60.0


def log(msg: str) -> None:
    print(msg, flush=True)


def median_of_medians(blocks: list[np.ndarray]) -> float:
    """Median over repetitions of each repetition's median (both in the blocks' unit)."""
    return float(np.median([np.median(b) for b in blocks]))


# -- environment -----------------------------------------------------------------------------------------------------


def onnx_missing() -> list[str]:
    """The ONNX packages that cannot be imported (not installed, or broken against this TensorFlow)."""
    missing = []
    for name in ("onnxruntime", "tf2onnx"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def chunk_missing() -> str | None:
    """Why the chunk comparison cannot run with this statelite, or None when it can."""
    from statelite import StatefulRunner
    from statelite.convert import ConvertConfig

    if "chunk" not in {f.name for f in dataclasses.fields(ConvertConfig)}:
        return "ConvertConfig has no chunk option in this statelite"
    if "chunked" not in inspect.signature(StatefulRunner.run).parameters:
        return "StatefulRunner.run has no chunk path (no chunked= parameter) in this statelite"
    return None


# -- building the models ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Arch:
    cell: str
    units: int
    layers: int

    @property
    def name(self) -> str:
        return f"{self.cell}{self.units}x{self.layers}"


@dataclasses.dataclass
class Built:
    arch: Arch
    quant: str
    run: Path
    path: Path
    parity_passed: bool | None
    onnx: bytes | None = None
    onnx_kind: str | None = None  # "float32" or "int8 (QDQ static)"
    onnx_note: str | None = None


def train_run(arch: Arch, work: Path, epochs: int) -> Path:
    from statelite.train import TrainConfig, train

    out = work / f"run_{arch.name}"
    if not (out / "run.json").exists():
        train(TrainConfig.co2(out=str(out), cell=arch.cell, units=arch.units, layers=arch.layers, epochs=epochs), log=None)
    return out


def convert_model(run: Path, out: Path, quant: str, calibration_steps: int, **options) -> bool | None:
    """Convert with the real pipeline; parity is recorded, not enforced (one epoch of training: the weights are not
    the point, and int8's forecast check against the truth can fail on an undertrained model)."""
    from statelite.convert import ConvertConfig, convert

    config = ConvertConfig(quant=quant, calibration_steps=calibration_steps, check_parity=False, **options)
    result = convert(run, out, config, log=None)
    return result.passed


def export_onnx(run: Path, quant: str, calibration_steps: int, threads: int) -> tuple[bytes, str]:
    """The same one-step graph the converter builds for ``quant``, as ONNX: the float graph (scaler folded, as the
    float32 .tflite) or, for int8, the unfolded graph (as the int8 .tflite) quantized by ONNX Runtime's static QDQ
    int8 quantizer, calibrated on the training split rolled through the float graph with the state fed back."""
    import tf2onnx
    from statelite.convert.api import graph_transform
    from statelite.convert.config import Quant
    from statelite.convert.source import load_source
    from statelite.convert.step_graph import build_step_function

    source = load_source(run)
    transform = graph_transform(source, Quant(quant))
    fn, names = build_step_function(source.layers, source.head, source.n_features, 1, transform)
    model, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17)
    data = model.SerializeToString()
    if quant == "float32":
        return data, "float32"
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    sess = _ort_session(data, threads)
    xs = transform.sequence_inputs(source.calibration_rows.astype(np.float64), scaled=False)[:calibration_steps]
    shapes = {n: (1, source.layers[int(n.split("_")[1])].units) for n in names}
    feeds, states = [], {n: np.zeros(s, np.float32) for n, s in shapes.items()}
    outputs = [o.name for o in sess.get_outputs()]
    for x in xs:
        feed = {"x": x[None].astype(np.float32), **states}
        feeds.append(feed)
        got = dict(zip(outputs, sess.run(outputs, feed)))
        states = {n: got[f"{n}_out"] for n in shapes}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "consider pre-processing": about image models' shape inference, not this graph
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        src.write_bytes(data)
        quantize_static(
            str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        )
        quiet.setLevel(level)
        return dst.read_bytes(), "int8 (QDQ static)"


def build_all(archs: list[Arch], quants: list[str], work: Path, args) -> tuple[list[Built], dict, dict]:
    """Train one run folder per architecture; convert every quant mode; export ONNX; pool and chunk variants."""
    built: list[Built] = []
    pool_models: dict = {}
    chunk_models: dict = {}
    missing = onnx_missing()
    chunk_why = chunk_missing()
    for arch in archs:
        t0 = time.perf_counter()
        run = train_run(arch, work, args.epochs)
        log(f"  trained {arch.name} ({time.perf_counter() - t0:.1f} s)")
        for quant in quants:
            t0 = time.perf_counter()
            path = work / f"{arch.name}_{quant}.tflite"
            passed = convert_model(run, path, quant, args.calibration_steps)
            b = Built(arch, quant, run, path, passed)
            if missing:
                b.onnx_note = f"skipped: {' and '.join(missing)} not installed (pip install onnxruntime tf2onnx)"
            else:
                try:
                    b.onnx, b.onnx_kind = export_onnx(run, quant, args.calibration_steps, args.threads)
                except Exception as exc:  # noqa: BLE001 (an exporter failure is a result to report, not a crash)
                    b.onnx_note = f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            built.append(b)
            extra = ""
            if arch.layers == 1:
                p = work / f"{arch.name}_{quant}_b{POOL_STREAMS}.tflite"
                convert_model(run, p, quant, args.calibration_steps, batch=POOL_STREAMS)
                pool_models[(arch.name, quant)] = p
                extra += f", batch {POOL_STREAMS}"
                if chunk_why is None:
                    c = work / f"{arch.name}_{quant}_k{CHUNK}.tflite"
                    try:
                        convert_model(run, c, quant, args.calibration_steps, chunk=CHUNK)
                        chunk_models[(arch.name, quant)] = c
                        extra += f", chunk {CHUNK}"
                    except Exception as exc:  # noqa: BLE001 (reported as "not available", with the reason)
                        chunk_models[(arch.name, quant)] = f"conversion failed: {type(exc).__name__}: {exc}"
            log(f"  converted {arch.name} {quant}{extra}{', onnx' if b.onnx else ''} ({time.perf_counter() - t0:.1f} s)")
    return built, pool_models, chunk_models


# -- the contenders --------------------------------------------------------------------------------------------------


class StepContender:
    """``StatefulRunner.step`` on raw rows."""

    name = "step"

    def __init__(self, path: Path, rows: np.ndarray, threads: int):
        import statelite

        self.runner = statelite.StatefulRunner(path, backend="litert", num_threads=threads)
        self.rows = [r for r in rows]  # (features,) float64 views: the runner's fast path
        self.i = 0

    def block(self, n: int) -> np.ndarray:
        step, rows, clock = self.runner.step, self.rows, time.perf_counter_ns
        ns = np.empty(n, np.int64)
        i, m = self.i, len(rows)
        for k in range(n):
            x = rows[i]
            t0 = clock()
            step(x)
            ns[k] = clock() - t0
            i = i + 1 if i + 1 < m else 0
        self.i = i
        return ns / 1000.0


class BareContender:
    """The interpreter by hand: the floor under ``step``."""

    name = "bare"

    def __init__(self, path: Path, xs: np.ndarray, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
        sig = it._get_full_signature_list()["step"]
        ins, outs = sig["inputs"], sig["outputs"]
        self.it = it
        self.x_index, self.y_index = ins["x"], outs["y"]
        # State pairs by NAME: h_0 <- h_0_out, never by position.
        self.pairs = [(ins[name], outs[f"{name}_out"]) for name in sorted(ins) if name != "x"]
        details = {d["index"]: d for d in it.get_input_details()}
        for in_index, _ in self.pairs:
            d = details[in_index]
            it.set_tensor(in_index, np.zeros(d["shape"], d["dtype"]))
        self.xs = [x[None].astype(np.float32) for x in xs]  # pre-made (1, features) float32 graph inputs
        self.i = 0

    def block(self, n: int) -> np.ndarray:
        it, xs, clock = self.it, self.xs, time.perf_counter_ns
        set_tensor, get_tensor, invoke = it.set_tensor, it.get_tensor, it.invoke
        x_index, y_index, pairs = self.x_index, self.y_index, self.pairs
        state = [get_tensor(i) for i, _ in pairs]
        ns = np.empty(n, np.int64)
        i, m = self.i, len(xs)
        for k in range(n):
            x = xs[i]
            t0 = clock()
            set_tensor(x_index, x)
            for (in_index, _), s in zip(pairs, state):
                set_tensor(in_index, s)
            invoke()
            get_tensor(y_index)
            state = [get_tensor(out_index) for _, out_index in pairs]
            ns[k] = clock() - t0
            i = i + 1 if i + 1 < m else 0
        for (in_index, _), s in zip(pairs, state):
            set_tensor(in_index, s)
        self.i = i
        return ns / 1000.0


def _ort_session(data: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxContender:
    """ONNX Runtime on the same step graph, ``sess.run`` per step, state fed back by name."""

    name = "onnx"

    def __init__(self, data: bytes, xs: np.ndarray, threads: int):
        self.sess = _ort_session(data, threads)
        self.out_names = [o.name for o in self.sess.get_outputs()]
        self.state_names = [i.name for i in self.sess.get_inputs() if i.name != "x"]
        self.feed = {i.name: np.zeros(i.shape, np.float32) for i in self.sess.get_inputs()}
        self.xs = [x[None].astype(np.float32) for x in xs]
        self.i = 0

    def block(self, n: int) -> np.ndarray:
        run, out_names, feed, xs, clock = self.sess.run, self.out_names, self.feed, self.xs, time.perf_counter_ns
        where = {name: out_names.index(f"{name}_out") for name in self.state_names}
        ns = np.empty(n, np.int64)
        i, m = self.i, len(xs)
        for k in range(n):
            x = xs[i]
            t0 = clock()
            feed["x"] = x
            outs = run(out_names, feed)
            for name, j in where.items():
                feed[name] = outs[j]
            ns[k] = clock() - t0
            i = i + 1 if i + 1 < m else 0
        self.i = i
        return ns / 1000.0


class KerasContender:
    """Each recurrent layer's Keras cell called eagerly on one step, then the Dense head: the workstation way."""

    name = "keras"

    def __init__(self, run: Path, xs: np.ndarray):
        import keras

        model = keras.models.load_model(run / "model.keras", compile=False)
        self.rnn, self.head = [], []
        for layer in model.layers:
            if isinstance(layer, (keras.layers.GRU, keras.layers.LSTM, keras.layers.SimpleRNN)):
                self.rnn.append(layer)
            elif isinstance(layer, keras.layers.Dense):
                self.head.append(layer)
        self.states = [
            [keras.ops.zeros((1, l.cell.units))] * (2 if isinstance(l, keras.layers.LSTM) else 1) for l in self.rnn
        ]
        self.xs = [x[None].astype(np.float32) for x in xs]  # (1, features) in model units
        self.i = 0
        self._model = model

    def one(self, x):
        h, states = x, self.states
        for j, layer in enumerate(self.rnn):
            h, states[j] = layer.cell(h, states[j], training=False)
        for dense in self.head:
            h = dense(h)
        return h

    def check(self, n: int = 20) -> float:
        """Max abs difference between this step loop and the full-sequence Keras model on the first ``n`` inputs."""
        keep = [list(s) for s in self.states]
        self.states = [[0 * v for v in s] for s in self.states]
        ys = np.stack([np.asarray(self.one(x))[0] for x in self.xs[:n]])
        full = np.asarray(self._model(np.concatenate(self.xs[:n])[None], training=False))[0]
        self.states = keep
        return float(np.abs(ys - full).max())

    def block(self, n: int) -> np.ndarray:
        one, xs, clock = self.one, self.xs, time.perf_counter_ns
        ns = np.empty(n, np.int64)
        i, m = self.i, len(xs)
        for k in range(n):
            x = xs[i]
            t0 = clock()
            np.asarray(one(x))
            ns[k] = clock() - t0
            i = i + 1 if i + 1 < m else 0
        self.i = i
        return ns / 1000.0


def interleaved(contenders: list, repeats: int, steps: dict, warmup: int) -> dict[str, list[np.ndarray]]:
    """Per repetition, one block of each contender, the order rotated each time so that none always goes first."""
    for c in contenders:
        c.block(warmup)
    blocks = {c.name: [] for c in contenders}
    for r in range(repeats):
        order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
        for c in order:
            blocks[c.name].append(c.block(steps[c.name]))
    return blocks


def load_rows(run: Path) -> np.ndarray:
    """Raw rows of the bundled CO2 series as the run folder keeps them (cleaned), float64 ``(steps, features)``."""
    with np.load(run / "series.npz", allow_pickle=False) as z:
        return np.asarray(z["features"], np.float64)


def measure_model(b: Built, args) -> dict:
    import statelite
    from statelite.transform import Transform

    rows = load_rows(b.run)
    md = statelite.read_metadata(b.path)
    transform = Transform.from_metadata(md)
    graph_xs = transform.sequence_inputs(rows, scaled=False)  # what the .tflite (and the ONNX graph) takes
    keras_xs = transform.sequence_inputs(rows, scaled=True)  # what the Keras model takes
    contenders = [StepContender(b.path, rows, args.threads), BareContender(b.path, graph_xs, args.threads)]
    if b.onnx is not None:
        contenders.append(OnnxContender(b.onnx, graph_xs, args.threads))
    keras_c = KerasContender(b.run, keras_xs)
    contenders.append(keras_c)
    steps = {"step": args.steps, "bare": args.steps, "onnx": args.steps, "keras": max(20, args.steps // 10)}
    blocks = interleaved(contenders, args.repeats, steps, args.warmup)
    us = {name: median_of_medians(v) for name, v in blocks.items()}
    step_us, bare_us = us["step"], us["bare"]
    onnx_us = us.get("onnx")
    return {
        "cell": b.arch.cell,
        "units": b.arch.units,
        "layers": b.arch.layers,
        "quant": b.quant,
        "file_bytes": b.path.stat().st_size,
        "parity_passed": b.parity_passed,
        "step_us": step_us,
        "bare_us": bare_us,
        "onnx_us": onnx_us,
        "keras_us": us["keras"],
        "step_over_bare": step_us / bare_us,
        "step_over_onnx": step_us / onnx_us if onnx_us else None,
        "keras_over_step": us["keras"] / step_us,
        "onnx_model": b.onnx_kind,
        "onnx_note": b.onnx_note,
        "keras_step_check_max_abs": keras_c.check(),
        "per_repeat_median_us": {name: [float(np.median(x)) for x in v] for name, v in blocks.items()},
        "pass_step_vs_bare": step_us / bare_us <= STEP_BARE_MAX,
        "pass_step_vs_onnx": (step_us < onnx_us) if onnx_us else None,
    }


class _Ticker:
    """One tick: every one of the 64 streams advances one step."""

    def __init__(self, name: str, fn, rows: list):
        self.name, self.fn, self.rows, self.i = name, fn, rows, 0

    def block(self, n: int) -> np.ndarray:
        fn, rows, clock = self.fn, self.rows, time.perf_counter_ns
        ns = np.empty(n, np.int64)
        i, m = self.i, len(rows)
        for k in range(n):
            r = rows[i]
            t0 = clock()
            fn(r)
            ns[k] = clock() - t0
            i = i + 1 if i + 1 < m else 0
        self.i = i
        return ns / 1000.0


def measure_pool(key, pool_path: Path, single_path: Path, run: Path, args) -> dict:
    import statelite

    rows = load_rows(run)
    n = len(rows)
    offsets = (np.arange(POOL_STREAMS) * (n // POOL_STREAMS)) % n
    # Tick t: stream s gets row (offset_s + t); as a dict for the pool, as a list of rows for the runners.
    ticks = [rows[(offsets + t) % n] for t in range(min(n, 512))]
    pool = statelite.StreamPool(pool_path, backend="litert", num_threads=args.threads)
    for s in range(POOL_STREAMS):
        pool.add(s)
    pool_ticks = [dict(enumerate(block)) for block in ticks]
    runners = [statelite.StatefulRunner(single_path, backend="litert", num_threads=args.threads) for _ in range(POOL_STREAMS)]
    steps = [r.step for r in runners]

    def separate(block):
        for step, row in zip(steps, block):
            step(row)

    runner_ticks = [[row for row in block] for block in ticks]
    array_ticks = [np.ascontiguousarray(block) for block in ticks]  # rows in pool.keys order
    contenders = [
        _Ticker("pool", pool.step_all, array_ticks),
        _Ticker("pool_dict", pool.step, pool_ticks),
        _Ticker("runners", separate, runner_ticks),
    ]
    n_ticks = max(5, args.steps // 20)
    counts = {"pool": n_ticks, "pool_dict": n_ticks, "runners": n_ticks}
    blocks = interleaved(contenders, args.repeats, counts, max(2, args.warmup // 20))
    pool_us, runners_us = median_of_medians(blocks["pool"]), median_of_medians(blocks["runners"])
    dict_us = median_of_medians(blocks["pool_dict"])
    ratio = runners_us / pool_us
    return {
        "model": key[0],
        "quant": key[1],
        "streams": POOL_STREAMS,
        "pool_us_per_tick": pool_us,
        "pool_dict_us_per_tick": dict_us,
        "dict_speedup": runners_us / dict_us,
        "runners_us_per_tick": runners_us,
        "pool_steps_per_s": POOL_STREAMS / pool_us * 1e6,
        "runners_steps_per_s": POOL_STREAMS / runners_us * 1e6,
        "speedup": ratio,
        "pass": ratio >= POOL_MIN,
    }


def measure_chunk(key, chunk_path: Path, run: Path, args) -> dict:
    import statelite

    runner = statelite.StatefulRunner(chunk_path, backend="litert", num_threads=args.threads)
    if runner.metadata.chunk != CHUNK:
        raise RuntimeError(f"the converted model has chunk={runner.metadata.chunk}, expected {CHUNK}")
    rows = load_rows(run)
    per_call = 4 * CHUNK  # a replay call of a few chunks: run() pays its per-call costs once for both sides
    calls = [rows[i : i + per_call] for i in range(0, len(rows) - per_call + 1, per_call)]
    # Check that both paths agree (from the same fresh state) before timing them.
    runner.reset()
    a = runner.run(calls[0])
    runner.reset()
    b = runner.run(calls[0], chunked=False)
    agree = float(np.abs(a - b).max())
    contenders = [
        _Ticker("chunked", runner.run, calls),
        _Ticker("single", lambda xs: runner.run(xs, chunked=False), calls),
    ]
    n_calls = max(5, args.steps // per_call)
    blocks = interleaved(contenders, args.repeats, {"chunked": n_calls, "single": n_calls}, 2)
    chunk_us, single_us = median_of_medians(blocks["chunked"]), median_of_medians(blocks["single"])
    ratio = single_us / chunk_us
    return {
        "model": key[0],
        "quant": key[1],
        "chunk": CHUNK,
        "rows_per_call": per_call,
        "chunked_steps_per_s": per_call / chunk_us * 1e6,
        "single_steps_per_s": per_call / single_us * 1e6,
        "speedup": ratio,
        "max_abs_diff_chunked_vs_single": agree,
        "chunk_parity_passed": ((runner.metadata.parity or {}).get("chunk") or {}).get("passed"),
        "pass": ratio >= CHUNK_MIN,
    }


# -- the device process ----------------------------------------------------------------------------------------------

_PROCESS_CODE = r"""
import json, os, resource, sys, time
t0 = time.perf_counter()
if sys.argv[1] == "tensorflow":
    import tensorflow
t1 = time.perf_counter()
import statelite
t2 = time.perf_counter()
runner = statelite.StatefulRunner(sys.argv[2])
t3 = time.perf_counter()
import numpy as np
x = np.array([370.0])
for i in range(1000):
    x[0] = 370.0 + 0.01 * i
    runner.step(x)
t4 = time.perf_counter()
hwm = None
try:
    with open("/proc/self/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(json.dumps({
    "import_tensorflow_s": t1 - t0, "import_statelite_s": t2 - t1, "load_model_s": t3 - t2, "steps_1000_s": t4 - t3,
    "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "vm_hwm_kib": hwm,
    "tensorflow_imported": "tensorflow" in sys.modules, "backend": runner.backend,
}))
"""


def measure_process(kind: str, repeats: int) -> dict:
    """Import time and peak memory of a fresh process, median of ``repeats``.

    Linux keeps ``ru_maxrss`` across ``execve`` (the high-water mark of the memory the process had before the exec),
    and Python starts children with vfork: a child of this 1 GB benchmark would report this process's peak. So the
    child is forked by a small ``sh`` instead, and also reports ``VmHWM`` (the high-water mark of its own memory
    map, fresh after the exec) as a cross-check.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = subprocess.run(
            ["sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", _PROCESS_CODE, kind, str(REFERENCE_MODEL)],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"the {kind} process failed: {p.stderr.strip()[-500:]}")
        d = json.loads(p.stdout.strip().splitlines()[-1])
        d["wall_s"] = wall
        runs.append(d)
    med = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if isinstance(runs[0][k], float)}
    med["peak_rss_mb"] = float(np.median([r["peak_rss_kib"] for r in runs])) * 1024 / 1e6
    if all(r["vm_hwm_kib"] for r in runs):
        med["vm_hwm_mb"] = float(np.median([r["vm_hwm_kib"] for r in runs])) * 1024 / 1e6
    med["tensorflow_imported"] = runs[0]["tensorflow_imported"]
    med["backend"] = runs[0]["backend"]
    med["kind"] = kind
    med["runs"] = repeats
    return med


# -- report ----------------------------------------------------------------------------------------------------------


def _f(v, fmt="{:.1f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _ok(v) -> str:
    return "n/a" if v is None else ("met" if v else "**NOT met**")


def summarize(results: dict) -> list[dict]:
    rows = []

    def add(key, values, flags, worst, detail):
        flags = [f for f in flags if f is not None]
        met = bool(flags) and all(flags)
        rows.append({
            "target": key, "text": TARGETS[key], "rows": len(flags), "rows_met": sum(flags),
            "met": met if flags else None, "worst": worst, "detail": detail,
        })

    models = results["models"]
    r = [m["step_over_bare"] for m in models]
    add("step_vs_bare", r, [m["pass_step_vs_bare"] for m in models], max(r) if r else None,
        f"step/bare from {min(r):.2f} to {max(r):.2f}" if r else "no models")
    o = [m["step_over_onnx"] for m in models if m["step_over_onnx"] is not None]
    add("step_vs_onnx", o, [m["pass_step_vs_onnx"] for m in models], max(o) if o else None,
        f"step/onnx from {min(o):.2f} to {max(o):.2f}" if o else (models[0]["onnx_note"] if models else "no models"))
    p = [x["speedup"] for x in results["pool"]]
    add("pool", p, [x["pass"] for x in results["pool"]], min(p) if p else None,
        f"pool speedup from {min(p):.1f}x to {max(p):.1f}x" if p else "no pool models")
    c = results["chunk"]
    cs = [x["speedup"] for x in c["rows"]]
    add("chunk", cs, [x["pass"] for x in c["rows"]], min(cs) if cs else None,
        f"chunk speedup from {min(cs):.2f}x to {max(cs):.2f}x" if cs else f"not available: {c['note']}")
    s = [x for x in results["sizes"] if x["target_applies"]]
    add("size", [x["ratio"] for x in s], [x["pass"] for x in s], max((x["ratio"] for x in s), default=None),
        f"int8/float32 from {min(x['ratio'] for x in s):.2f} to {max(x['ratio'] for x in s):.2f} (>= 64 units)"
        if s else "no model with >= 64 units in this run")
    d = results["process"].get("device")
    if d:
        add("process", None, [d["import_statelite_s"] <= IMPORT_MAX_S, d["peak_rss_mb"] <= RSS_MAX_MB], None,
            f"import {d['import_statelite_s']:.3f} s (limit {IMPORT_MAX_S}), peak {d['peak_rss_mb']:.1f} MB "
            f"(limit {RSS_MAX_MB:.0f})")
    else:
        add("process", None, [], None, results["process"].get("note", "not measured"))
    return rows


def write_markdown(results: dict, path: Path) -> None:
    m, v = results["machine"], results["versions"]
    L = ["# statelite benchmarks", ""]
    L += [f"Command: `{results['command']}`", ""]
    L += [
        (f"Machine: {m['platform']}, {m['cpu']}, {m['cores']} cores; load average at start "
        f"{m['load_average_at_start']}, at end {m.get('load_average_at_end')}. Interpreter threads: "
        f"{results['config']['threads']}."),
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
        f"statelite source: commit {results.get('source') or 'unknown'}.",
        "",
        f"Method: {results['method']}",
        "",
        "## Targets",
        "",
        "| target | rows met | result | detail |",
        "| --- | --- | --- | --- |",
    ]
    for t in results["targets"]:
        L.append(f"| {t['text']} | {t['rows_met']}/{t['rows']} | {_ok(t['met'])} | {t['detail']} |")
    L += [
        "",
        "## Per step, one stream (microseconds, median of medians)",
        "",
        ("`step`: `StatefulRunner.step` on raw rows; `bare`: the interpreter by hand on pre-made float32 inputs (the "
        "floor); `onnx`: ONNX Runtime `sess.run` on the same step graph; `keras`: eager Keras cells and head."),
        "",
        ("| model | quant | bytes | step | bare | step/bare | onnx | step/onnx | keras | keras/step | step<=1.3 bare | "
        "step<onnx |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["models"]:
        L.append(
            f"| {r['cell']} {r['units']}x{r['layers']} | {r['quant']} | {r['file_bytes']:,} | {r['step_us']:.1f} | "
            f"{r['bare_us']:.1f} | {r['step_over_bare']:.2f} | {_f(r['onnx_us'])} | {_f(r['step_over_onnx'], '{:.2f}')} | "
            f"{r['keras_us']:.0f} | {r['keras_over_step']:.0f} | {_ok(r['pass_step_vs_bare'])} | "
            f"{_ok(r['pass_step_vs_onnx'])} |"
        )
    parity = [r["parity_passed"] for r in results["models"]]
    L += [
        "",
        (f"The converter's own parity check against Keras (recorded, not enforced: one epoch of training) passed for "
        f"{sum(bool(p) for p in parity)} of {len(parity)} models."),
    ]
    notes = sorted({r["onnx_note"] for r in results["models"] if r["onnx_note"]})
    kinds = sorted({f"{r['quant']}: {r['onnx_model']}" for r in results["models"] if r["onnx_model"]})
    if kinds:
        L += ["", "ONNX models: " + "; ".join(kinds) + "."]
    for n in notes:
        L += ["", f"ONNX: {n}"]
    L += ["", "## StreamPool against separate runners", ""]
    L += [
        (f"One tick = each of {POOL_STREAMS} streams advances one step: `StreamPool.step_all` (rows as one array in "
        f"`pool.keys` order) of a `batch={POOL_STREAMS}` model against {POOL_STREAMS} `StatefulRunner.step` calls; "
        f"the target is judged on `step_all`. `StreamPool.step` with a dict of rows is shown beside it."),
        "",
        ("| model | quant | pool us/tick | runners us/tick | pool steps/s | runners steps/s | speedup | >= 10x | "
         "dict step us/tick | dict speedup |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["pool"]:
        L.append(
            f"| {r['model']} | {r['quant']} | {r['pool_us_per_tick']:.0f} | {r['runners_us_per_tick']:.0f} | "
            f"{r['pool_steps_per_s']:,.0f} | {r['runners_steps_per_s']:,.0f} | {r['speedup']:.1f}x | {_ok(r['pass'])} | "
            f"{r['pool_dict_us_per_tick']:.0f} | {r['dict_speedup']:.1f}x |"
        )
    c = results["chunk"]
    L += ["", f"## Chunked (K={CHUNK}) against single steps", ""]
    if not c["available"]:
        L += [f"Not available: {c['note']}."]
    else:
        L += [
            (f"`StatefulRunner.run` on {c['rows'][0]['rows_per_call'] if c['rows'] else 4 * CHUNK} rows per call, "
            f"with the chunk signature and with `chunked=False`, on the same model file."),
            "",
            ("| model | quant | chunked steps/s | single steps/s | speedup | max abs diff (raw units) | chunk parity "
            "| >= 4x |"),
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in c["rows"]:
            L.append(
                f"| {r['model']} | {r['quant']} | {r['chunked_steps_per_s']:,.0f} | {r['single_steps_per_s']:,.0f} | "
                f"{r['speedup']:.2f}x | {r['max_abs_diff_chunked_vs_single']:.2g} | "
                f"{ {True: 'passed', False: 'FAILED', None: 'n/a'}[r['chunk_parity_passed']]} | {_ok(r['pass'])} |"
            )
        for err in c.get("errors", []):
            L += ["", f"Failed: {err}"]
    L += [
        "",
        "## Model size",
        "",
        "| model | float32 bytes | int8 bytes | int8/float32 | <= 0.35 (>= 64 units) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results["sizes"]:
        L.append(
            f"| {r['model']} | {r['float32_bytes']:,} | {r['int8_bytes']:,} | {r['ratio']:.2f} | "
            f"{_ok(r['pass']) if r['target_applies'] else 'n/a (< 64 units)'} |"
        )
    p = results["process"]
    L += ["", "## Device process", ""]
    if "device" not in p:
        L += [p.get("note", "not measured")]
    else:
        L += [
            (f"Fresh processes (median of {p['device']['runs']}): `import statelite`, load `{p['model']}`, 1,000 steps; "
            f"the other imports TensorFlow first. Peak RSS is the child's `ru_maxrss`, the child forked by a small `sh` "
            f"(Linux keeps `ru_maxrss` across exec, so a direct child of this benchmark would report the benchmark's "
            f"own peak); VmHWM from `/proc/self/status` cross-checks it. MB = 10^6 bytes."),
            "",
            ("| process | import tensorflow s | import statelite s | load model s | 1,000 steps s | peak RSS MB | "
            "VmHWM MB | TensorFlow in sys.modules |"),
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for k in ("device", "tensorflow"):
            d = p[k]
            L.append(
                f"| {k} | {d['import_tensorflow_s']:.3f} | {d['import_statelite_s']:.3f} | {d['load_model_s']:.3f} | "
                f"{d['steps_1000_s']:.3f} | {d['peak_rss_mb']:.1f} | {_f(d.get('vm_hwm_mb'))} | "
                f"{d['tensorflow_imported']} |"
            )
    path.write_text("\n".join(L) + "\n")


# -- main ------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one small model, few steps (a smoke run; numbers mean little)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="where results.md and results.json go")
    ap.add_argument("--cells", default="gru,lstm", help="comma-separated: gru, lstm, simplernn")
    ap.add_argument("--units", default="16,64,256", help="comma-separated units per layer")
    ap.add_argument("--layers", default="1,2", help="comma-separated layer counts")
    ap.add_argument("--quants", default="float32,int8", help="comma-separated quant modes")
    ap.add_argument("--repeats", type=int, default=5, help="repetitions per contender (interleaved)")
    ap.add_argument("--steps", type=int, default=2000, help="timed steps per repetition (Keras gets a tenth)")
    ap.add_argument("--warmup", type=int, default=100, help="untimed steps per contender before the repetitions")
    ap.add_argument("--threads", type=int, default=1, help="interpreter / ONNX Runtime / TensorFlow threads")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs per run folder (speed does not care)")
    ap.add_argument("--calibration-steps", type=int, default=200, help="int8 calibration steps (converter and ONNX)")
    ap.add_argument("--process-runs", type=int, default=5, help="fresh processes per kind for import time and memory")
    ap.add_argument("--work", default=None, help="keep run folders and models here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.quick:
        args.cells, args.units, args.layers = "gru", "16", "1"
        args.repeats, args.steps, args.warmup, args.process_runs = 2, 100, 10, 1
        args.calibration_steps = 20
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    args.units = [int(u) for u in args.units.split(",")]
    args.layers = [int(n) for n in args.layers.split(",")]
    args.quants = [q.strip() for q in args.quants.split(",") if q.strip()]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(["bench_grid.py", *argv])
    started = time.time()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # Keras's retracing notes from training's predict calls
    # TensorFlow's own converter uses its deprecated interpreter while calibrating: not ours to fix, only noise here.
    warnings.filterwarnings("ignore", message=r"[\s\S]*tf.lite.Interpreter is deprecated")
    # Before any TensorFlow op runs: the Keras contender gets the same thread budget as the interpreters.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    keras.utils.set_random_seed(0)
    results = {
        "command": command,
        "machine": machine_info(),
        "versions": versions(("statelite", "numpy", "ai-edge-litert", "tensorflow", "keras", "onnxruntime", "tf2onnx", "onnx")),
        "source": source_state(),
        "config": {k: v for k, v in vars(args).items()},
        "method": (
            f"{args.repeats} interleaved repetitions per model (order rotated each repetition) of {args.steps} "
            f"individually timed steps ({max(20, args.steps // 10)} for Keras) after {args.warmup} untimed ones; each "
            "figure is the median over repetitions of the per-repetition median; ratios come from the same run."
        ),
    }
    archs = [Arch(c, u, n) for c in args.cells for u in args.units for n in args.layers]
    own_work = args.work is None
    work = Path(tempfile.mkdtemp(prefix="statelite_bench_")) if own_work else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        log(f"building {len(archs) * len(args.quants)} models in {work}")
        built, pool_models, chunk_models = build_all(archs, args.quants, work, args)

        log("measuring per-step latency")
        results["models"] = []
        for b in built:
            r = measure_model(b, args)
            results["models"].append(r)
            log(
                f"  {b.arch.name} {b.quant}: step {r['step_us']:.1f} us, bare {r['bare_us']:.1f} us "
                f"({r['step_over_bare']:.2f}), onnx {_f(r['onnx_us'])} us, keras {r['keras_us']:.0f} us"
            )

        log(f"measuring StreamPool of {POOL_STREAMS} against {POOL_STREAMS} runners")
        singles = {(b.arch.name, b.quant): b for b in built}
        results["pool"] = []
        for key, path in pool_models.items():
            r = measure_pool(key, path, singles[key].path, singles[key].run, args)
            results["pool"].append(r)
            log(f"  {key[0]} {key[1]}: {r['pool_steps_per_s']:,.0f} against {r['runners_steps_per_s']:,.0f} steps/s "
                f"({r['speedup']:.1f}x)")

        why = chunk_missing()
        chunk = {"available": why is None, "note": why, "rows": [], "errors": []}
        if why is None:
            log(f"measuring chunked (K={CHUNK}) against single steps")
            for key, path in chunk_models.items():
                if isinstance(path, str):
                    chunk["errors"].append(f"{key[0]} {key[1]}: {path}")
                    continue
                try:
                    r = measure_chunk(key, path, singles[key].run, args)
                except Exception as exc:  # noqa: BLE001 (reported as "not available", with the reason)
                    chunk["errors"].append(f"{key[0]} {key[1]}: {type(exc).__name__}: {exc}")
                    continue
                chunk["rows"].append(r)
                log(f"  {key[0]} {key[1]}: {r['chunked_steps_per_s']:,.0f} against {r['single_steps_per_s']:,.0f} "
                    f"steps/s ({r['speedup']:.2f}x)")
            if not chunk["rows"]:
                chunk["available"] = False
                chunk["note"] = "; ".join(chunk["errors"]) or "no chunk models"
        else:
            log(f"chunked: not available ({why})")
        results["chunk"] = chunk

        sizes = []
        for arch in archs:
            f32, i8 = singles.get((arch.name, "float32")), singles.get((arch.name, "int8"))
            if f32 and i8:
                a, b = f32.path.stat().st_size, i8.path.stat().st_size
                applies = arch.units >= 64
                sizes.append({
                    "model": f"{arch.cell} {arch.units}x{arch.layers}", "units": arch.units,
                    "float32_bytes": a, "int8_bytes": b, "ratio": b / a, "target_applies": applies,
                    "pass": (b / a <= SIZE_MAX) if applies else None,
                })
        results["sizes"] = sizes

        log("measuring fresh processes (import time, peak memory)")
        if REFERENCE_MODEL.exists():
            results["process"] = {
                "model": str(REFERENCE_MODEL.relative_to(ROOT)),
                "device": measure_process("device", args.process_runs),
                "tensorflow": measure_process("tensorflow", args.process_runs),
            }
            d, t = results["process"]["device"], results["process"]["tensorflow"]
            log(f"  device: import {d['import_statelite_s']:.3f} s, peak {d['peak_rss_mb']:.1f} MB; with TensorFlow: "
                f"import {t['import_tensorflow_s']:.2f} s, peak {t['peak_rss_mb']:.1f} MB")
        else:
            results["process"] = {"note": f"reference model {REFERENCE_MODEL} missing (python models/regenerate.py)"}
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)

    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["elapsed_s"] = round(time.time() - started, 1)
    results["targets"] = summarize(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(results, out / "results.md")
    log(f"wrote {out / 'results.md'} and {out / 'results.json'} ({results['elapsed_s']:.0f} s)")
    for t in results["targets"]:
        log(f"  {_ok(t['met']):>12}  {t['text']}: {t['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
