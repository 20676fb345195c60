"""``convert()``: a trained model in, a parity-proven one-step ``.tflite`` with embedded metadata out."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np

import statelite
from statelite.errors import BadInputError, CheckFailed, IncompatibleModelError
from statelite.golden import GOLDEN_FORMAT_VERSION, golden_path_for, monitor_trace, write_golden
from statelite.metadata import InputRange, ModelMetadata, Quantization, Scaler, StateSpec, TensorSpec
from statelite.progress import no_progress, prefixed
from statelite.tflite_file import read_tflite
from statelite.transform import Transform

from . import parity as parity_mod
from .checks import check_graph, check_target
from .config import AUTO_CANDIDATES, ConvertConfig, Quant
from .embed import finalize
from .quantize import calibration_samples, chunk_samples, to_tflite
from .source import Source, load_source
from .step_graph import (
    CHUNK_SIGNATURE_KEY,
    SIGNATURE_KEY,
    X_NAME,
    Y_NAME,
    build_step_function,
    output_name,
    state_names,
)

__all__ = ["GOLDEN_FORMAT_VERSION", "ConvertResult", "convert", "golden_path_for"]


@dataclasses.dataclass(frozen=True)
class ConvertResult:
    """What ``convert`` wrote and measured."""

    path: Path
    golden_path: Path
    metadata: ModelMetadata
    parity: dict
    violations: tuple[str, ...]
    table: str
    written: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return not self.violations

    def rewrite(self, out, auto: dict, config: ConvertConfig, log) -> ConvertResult:
        """Write this conversion to ``out`` again with ``auto``'s record of what it tried in the parity metadata."""
        written = dataclasses.replace(self.written, config=config)
        return written.write(Path(out), log, auto=auto)


def _tensor_spec(name: str, detail: dict) -> TensorSpec:
    scale, zero = detail.get("quantization", (0.0, 0))
    q = Quantization(float(scale), int(zero)) if scale else None
    return TensorSpec(name, tuple(int(s) for s in detail["shape"]), np.dtype(detail["dtype"]).name, q)


def _signature_details(model: bytes, key: str = SIGNATURE_KEY) -> tuple[dict, dict]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model).get_signature_runner(key)
    return runner.get_input_details(), runner.get_output_details()


def _tf_versions() -> dict:
    import keras
    import tensorflow as tf

    return {"statelite": statelite.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def graph_transform(source: Source, quant: Quant) -> Transform:
    """The transform with the folding choice for ``quant``: float32 graphs fold the scaler into their weights on both
    sides; float16 and quantized graphs keep it on the host. float16 cannot hold a folded scaler: a column of scale
    1e7 divides its input weights below float16's smallest subnormal (they become zero), and raw outputs above
    65,504 overflow (electricity demand in kW: RMSE 3.03e7 against Keras's 1.09e6 when folded, 0.0002-0.0006
    normalised when kept on the host, over 15 runs on three public series). Measured on the bundled data (int8, normalised RMSE vs Keras):
    the LSTM 0.089 unfolded against 0.155 with the input side folded, the GRU's max error 0.29 unfolded against 0.68
    with the output side folded. Folding would also put raw columns of different ranges under one activation scale
    (or one weight scale per channel), which several features of different units cannot share.

    Panel models (one scaler per series, chosen on the device by the stream's key) and models with calendar inputs
    (appended after scaling) keep the scaler on the host in every mode."""
    floating = quant is Quant.FLOAT32 and source.panel is None and not source.calendar
    return Transform(
        source.scaler,
        source.difference,
        source.features,
        source.targets,
        source.horizon,
        graph_scales_inputs=floating,
        graph_scales_outputs=floating,
    )


def key_scaler(source: Source, key: str | None) -> Scaler:
    """The scaler of panel series ``key`` (the global one for None, or for a single-series model)."""
    if source.panel is None or key is None:
        return source.scaler
    return source.panel.scalers[key]


def key_transform(source: Source, transform: Transform, key: str | None) -> Transform:
    """``transform`` with the scaler of panel series ``key`` (``transform`` itself for a single-series model)."""
    if source.panel is None:
        return transform
    return Transform(key_scaler(source, key), source.difference, source.features, source.targets, source.horizon,
                     transform.graph_scales_inputs, transform.graph_scales_outputs)


def graph_inputs(source: Source, transform: Transform, rows: np.ndarray, times, scaled: bool) -> np.ndarray:
    """A stream's inputs from a fresh state: the features (scaled for Keras, or as the step graph takes them) and,
    for a calendar model, the calendar columns of the rows' time cells."""
    x = transform.sequence_inputs(rows.astype(np.float64), scaled=scaled)
    if not source.calendar:
        return x
    from statelite.calendar import cell_values

    if times is None:
        raise BadInputError("expected the time column in the run's series.npz for the calendar inputs, Received: none")
    cal = cell_values([str(t) for t in times], source.calendar, source.time_column or "time").astype(np.float32)
    return np.concatenate([x, cal], axis=1)


def _quantize_op_range(model: bytes, input_name: str) -> tuple[float, float, float] | None:
    """``(lowest, highest, step)`` of the grid the graph's QUANTIZE of the ``step`` signature's input ``input_name``
    rounds to, in model units, or None (no such op)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    input_index = it.get_signature_runner(SIGNATURE_KEY).get_input_details()[input_name]["index"]
    details = {d["index"]: d for d in it.get_tensor_details()}
    for op in it._get_ops_details():
        if op["op_name"] == "QUANTIZE" and list(op["inputs"]) == [input_index]:
            out = details[int(op["outputs"][0])]
            scale, zero = out["quantization"]
            if scale:
                info = np.iinfo(out["dtype"])
                return (info.min - zero) * scale, (info.max - zero) * scale, scale
    return None


def input_range(source: Source, transform: Transform, model: bytes, x_spec: TensorSpec) -> InputRange:
    """The training range of each graph input column in raw units (first differences when differencing), and for an
    integer input the range beyond which its quantization clips, mapped back to raw units per column."""
    streams = [source.calibration_rows] + [rows for _, rows, _ in source.more_calibration]
    streams = [r.astype(np.float64) for r in streams if len(r)]
    rows = np.concatenate(streams) if streams else source.calibration_rows.astype(np.float64)
    values = np.concatenate([np.diff(r, axis=0) for r in streams]) if source.difference and streams else rows
    if not len(values):
        values = np.zeros((1, rows.shape[1]))
    clip = None
    if x_spec.quantization is not None:  # integer inputs (--io int8): the tensor itself clips
        info = np.iinfo(np.dtype(x_spec.dtype))
        q = x_spec.quantization
        clip = ((info.min - q.zero_point) * q.scale, (info.max - q.zero_point) * q.scale, q.scale)
    elif x_spec.dtype == "float32":
        clip = _quantize_op_range(model, X_NAME)
    clip_min = clip_max = None
    if source.panel is not None:
        clip = None  # each series has its own scaler: the grid's ends are at different raw values for each key
    if clip is not None:
        # Every value is rounded to the grid with an error up to half a step; beyond the grid's ends by more than
        # that, the value is clipped. (The grid's top is a fraction of a step below the calibrated maximum.)
        clip = (clip[0] - clip[2] / 2, clip[1] + clip[2] / 2)
        # The graph sees (raw - offset) / scale; a float graph with the scaler folded sees the raw value itself.
        scale = 1.0 / transform.f_inv_scale if not transform.graph_scales_inputs else np.ones_like(transform.f_offset)
        offset = transform.f_offset if not transform.graph_scales_inputs else np.zeros_like(transform.f_offset)
        clip_min = tuple(float(v) for v in clip[0] * scale + offset)
        clip_max = tuple(float(v) for v in clip[1] * scale + offset)
    level = (tuple(float(v) for v in rows.min(axis=0)), tuple(float(v) for v in rows.max(axis=0))) if (
        source.difference and len(rows)) else (None, None)
    return InputRange(
        basis="difference" if source.difference else "value",
        train_min=tuple(float(v) for v in values.min(axis=0)),
        train_max=tuple(float(v) for v in values.max(axis=0)),
        clip_min=clip_min,
        clip_max=clip_max,
        level_min=level[0],
        level_max=level[1],
    )


def calibration_summary(samples: list[dict], steps: int, headroom: float = 1.0) -> dict:
    """The range of every calibrated input tensor (model units), for the metadata and ``inspect``."""
    tensors = {}
    for name in samples[0]:
        values = np.stack([s[name] for s in samples])
        if name == X_NAME:
            flat = values.reshape(-1, values.shape[-1])
            tensors[name] = {"min": flat.min(axis=0).tolist(), "max": flat.max(axis=0).tolist()}
        else:
            tensors[name] = {"min": float(values.min()), "max": float(values.max())}
    return {"steps": int(steps), "source": "training split, rolled through the float step", "headroom": headroom,
            "tensors": tensors}


def _residuals(source: Source):
    """The run's residual calibration, checked as the device will read it (None for a bare Keras file)."""
    if source.residuals is None:
        return None
    from statelite.monitor import ResidualCalibration

    try:
        return ResidualCalibration.from_dict(source.residuals, source.horizon, len(source.targets))
    except ValueError as exc:
        raise BadInputError(f"expected a valid residual calibration in the run's run.json, Received: {exc}") from None


def build_metadata(
    source: Source,
    config: ConvertConfig,
    transform: Transform,
    model: bytes,
    parity: dict | None,
    calibration: dict | None = None,
) -> ModelMetadata:
    ins, outs = _signature_details(model)
    states = tuple(
        StateSpec(name, layer, kind, _tensor_spec(name, ins[name]), _tensor_spec(output_name(name), outs[output_name(name)]))
        for name, layer, kind in state_names(source.layers)
    )
    x_spec = _tensor_spec(X_NAME, ins[X_NAME])
    chunk_x = chunk_y = None
    if config.chunk > 1:
        chunk_ins, chunk_outs = _signature_details(model, CHUNK_SIGNATURE_KEY)
        chunk_x, chunk_y = _tensor_spec(X_NAME, chunk_ins[X_NAME]), _tensor_spec(Y_NAME, chunk_outs[Y_NAME])
    return ModelMetadata(
        signature_key=SIGNATURE_KEY,
        x=x_spec,
        y=_tensor_spec(Y_NAME, outs[Y_NAME]),
        states=states,
        features=source.features,
        targets=source.targets,
        time_column=source.time_column,
        horizon=source.horizon,
        scaler=source.scaler,
        graph_scales_inputs=transform.graph_scales_inputs,
        graph_scales_outputs=transform.graph_scales_outputs,
        difference=source.difference,
        layers=tuple({"cell": l.cell, "units": l.units} for l in source.layers),
        quant=config.quant.value,
        io=config.io.value,
        batch=config.batch,
        chunk=config.chunk,
        chunk_x=chunk_x,
        chunk_y=chunk_y,
        target=config.target.value,
        warmup_steps=source.warmup_steps,
        parity=parity,
        calibration=calibration,
        input_range=input_range(source, transform, model, x_spec),
        residuals=_residuals(source),
        sampling=source.sampling,
        versions=_tf_versions(),
        calendar=source.calendar,
        panel=source.panel,
    )


def convert(model_path, out, config: ConvertConfig = ConvertConfig(), log=print, progress=None) -> ConvertResult:
    """Convert a run folder or ``.keras`` model to a one-step ``.tflite`` and prove parity.

    Args:
        model_path: a ``statelite train`` run folder, or a ``.keras`` model of stacked SimpleRNN/GRU/LSTM layers with
            Dropout and a Dense head.
        out: where to write the ``.tflite``; the golden trace goes next to it as ``<stem>.golden.npz``.
        config: the conversion options. ``quant="auto"`` converts int8 and keeps it when it holds its tolerance;
            otherwise it tries int16x8 and dynamic-range and keeps the smallest file that does (see ``_convert_auto``).
        log: where the steps taken and the parity table go, a line at a time (``None`` for silence).
        progress: ``progress(what, done=None, total=None)``, told how far the long work is (calibration, the
            converter, parity) as it goes; ``statelite.progress.TerminalProgress`` draws it on a terminal. None: not
            told.

    Returns:
        A ``ConvertResult`` (the file is written even when parity fails, so it can be inspected).

    Raises:
        BadInputError: unsupported model or bad options.
        IncompatibleModelError: the graph has forbidden ops, or cannot run on ``config.target``.
        CheckFailed: parity outside the mode's tolerance (with ``config.check_parity``).
    """
    log = log or (lambda *a, **k: None)
    progress = progress or no_progress
    progress("loading the model")
    source = load_source(model_path)
    if config.quant is Quant.AUTO:
        return _convert_auto(source, Path(out), config, log, progress)
    return _convert_one(source, Path(out), config, log, progress)


def _forecast_ratio(parity: dict) -> float | None:
    if "forecast_rmse_keras" not in parity:
        return None
    return parity["forecast_rmse_tflite"] / max(parity["forecast_rmse_keras"], 1e-12)


def _convert_auto(source: Source, out: Path, config: ConvertConfig, log, progress=no_progress) -> ConvertResult:
    """``--quant auto``: int8 when it holds its tolerance (integer-only, the fastest on integer hardware), else the
    smallest file among int16x8 and dynamic-range that does.

    "Holds" means the mode's own parity tolerances and a forecast RMSE (against the truth) within 3% of the float
    model's, the int8 rule, applied to every candidate. Modes the target cannot load are skipped with the reason.
    When none holds, the int8 file is kept and the conversion fails as int8 would.
    """
    tried: list[dict] = []
    results: dict[Quant, ConvertResult] = {}
    work = out.with_name(out.name + ".auto")
    work.mkdir(parents=True, exist_ok=True)
    try:
        for quant in AUTO_CANDIDATES:
            try:
                candidate = dataclasses.replace(config, quant=quant, check_parity=False)
                result = _convert_one(source, work / f"{quant.value}.tflite", candidate, log=None,
                                      progress=prefixed(progress, f"auto, {quant.value}: "))
            except (BadInputError, IncompatibleModelError) as exc:  # an option or target that mode cannot serve
                tried.append({"quant": quant.value, "skipped": str(exc)})
                log(f"auto: {quant.value} skipped: {exc}")
                continue
            ratio = _forecast_ratio(result.parity)
            problems = list(result.violations)
            if ratio is not None and ratio > parity_mod.INT8_FORECAST_RATIO and quant is not Quant.INT8:
                problems.append(
                    f"forecast RMSE {100 * (ratio - 1):.1f}% worse than the float model's "
                    f"(allowed {100 * (parity_mod.INT8_FORECAST_RATIO - 1):.0f}%)"
                )
            size = result.path.stat().st_size
            tried.append({
                "quant": quant.value, "bytes": size, "holds": not problems, "forecast_ratio": ratio,
                "rmse_norm": result.parity["rmse_norm"], "max_abs_norm": result.parity["max_abs_norm"],
                "problems": problems,
            })
            log(f"auto: {quant.value}: {size:,} bytes, " + ("holds its tolerance" if not problems else "; ".join(problems)))
            results[quant] = result
            if quant is Quant.INT8 and not problems:
                break
        holding = [t for t in tried if t.get("holds")]
        if holding:
            chosen = holding[0] if holding[0]["quant"] == Quant.INT8.value else min(holding, key=lambda t: t["bytes"])
            quant = Quant(chosen["quant"])
            why = ("int8 holds its tolerance" if quant is Quant.INT8
                   else f"int8 does not hold its tolerance; {quant.value} is the smallest file that does")
        else:
            quant = Quant.INT8 if Quant.INT8 in results else next(iter(results))
            why = "no candidate holds its tolerance; kept " + quant.value
        log(f"auto: chose {quant.value}: {why}")
        auto = {"chose": quant.value, "why": why, "tried": tried}
        final = dataclasses.replace(config, quant=quant)
        return results[quant].rewrite(out, auto, final, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _output_headroom(config: ConvertConfig) -> float:
    """How much to widen the forecast tensor's calibrated range: the calibration headroom, for int16 activations
    only (int8 would pay for it in resolution everywhere, int16 does not measurably)."""
    return config.headroom if config.quant is Quant.INT16X8 else 1.0


def _convert_one(source: Source, out: Path, config: ConvertConfig, log, progress=no_progress) -> ConvertResult:
    log = log or (lambda *a, **k: None)
    transform = graph_transform(source, config.quant)
    step_fn, names = build_step_function(source.layers, source.head, source.n_features, config.batch, transform)
    functions = {SIGNATURE_KEY: step_fn}
    if config.chunk > 1:
        functions[CHUNK_SIGNATURE_KEY], _ = build_step_function(
            source.layers, source.head, source.n_features, config.batch, transform, chunk=config.chunk
        )
    shapes = {n: (config.batch, source.layers[int(n.split("_")[1])].units) for n in names}
    samples = calibration = None
    if config.quant in (Quant.INT8, Quant.INT16X8):
        streams = [(source.parity_key, source.calibration_rows, source.calibration_times)]
        streams += list(source.more_calibration)
        cals = [graph_inputs(source, key_transform(source, transform, key), rows, times, scaled=False)
                for key, rows, times in streams if len(rows)]
        total = sum(len(c) for c in cals)
        steps = total if config.calibration_steps is None else min(config.calibration_steps, total)
        where = "the training split" if len(cals) == 1 else f"the training splits of {len(cals)} series"
        log(f"calibrating on {steps} steps of {where} (headroom {config.headroom:g}x)")
        samples = []
        shares = [max(1, round(steps * len(cal) / total)) for cal in cals]
        rolled = sum(min(s, len(c)) for s, c in zip(shares, cals)) * (2 if config.headroom > 1 else 1)
        for cal, share in zip(cals, shares):  # each series rolled from a zero state, its share of the steps
            samples += calibration_samples(
                step_fn, shapes, cal, config.batch, share, config.headroom,
                progress=lambda done, base=len(samples): progress("calibration: rolling the float model", base + done,
                                                                  rolled),
            )
        calibration = calibration_summary(samples, steps, config.headroom)
        if config.chunk > 1:
            # Several signatures: the calibrator wants (signature key, inputs by name) for every sample.
            samples = [(SIGNATURE_KEY, s) for s in samples] + [
                (CHUNK_SIGNATURE_KEY, s) for s in chunk_samples(samples, config.chunk)
            ]
    log(
        f"converting {source.origin} -> {out} (quant={config.quant.value}, io={config.io.value}, "
        f"batch={config.batch}, chunk={config.chunk})"
    )
    model = to_tflite(functions, config, samples, progress)
    info = read_tflite(model, source=str(out))
    check_graph(info)
    check_target(info, config.target, config.quant)

    out.parent.mkdir(parents=True, exist_ok=True)
    rows = source.parity_rows.astype(np.float64)
    parity_transform = key_transform(source, transform, source.parity_key)
    progress("parity: the Keras model's outputs")
    keras_y = parity_transform.outputs(
        parity_mod.keras_sequence_outputs(
            source.keras_model, graph_inputs(source, parity_transform, rows, source.parity_times, scaled=True)
        ),
        rows,
    )
    # First pass: metadata without parity, so the runtime can run the file exactly as a device would.
    metadata = build_metadata(source, config, transform, model, None, calibration)
    _write_atomic(out, finalize(model, metadata.to_json(), _output_headroom(config)))
    runner = statelite.StatefulRunner(out, backend="litert", allow_nonfinite=True, **_key_arg(source))
    xs = rows if config.batch == 1 else np.repeat(rows[:, None], config.batch, axis=1)
    times = _times_arg(source)
    where = f" of series {source.parity_key!r}" if source.parity_key is not None else ""
    log(f"proving parity over {len(rows)} test steps{where}")
    tflite_y = _run_with_progress(runner, xs, times, progress)  # the device's path: one step per call
    scale = parity_mod.normalising_scale(parity_transform, keras_y, scaled=source.scaler.kind != "none")
    metrics = parity_mod.parity_metrics(tflite_y, keras_y, scale, source.parity_truth, source.horizon)
    check_forecast = source.parity_truth is not None
    problems = parity_mod.violations(config.quant, metrics, check_forecast=check_forecast)
    tol = parity_mod.TOLERANCES[config.quant]
    parity = {"tolerance": tol, "passed": not problems, **metrics}
    if config.chunk > 1:
        runner.reset()
        chunk_metrics = parity_mod.parity_metrics(runner.run(xs, **times), keras_y, scale, source.parity_truth,
                                                  source.horizon)
        chunk_problems = parity_mod.violations(config.quant, chunk_metrics, check_forecast=check_forecast)
        problems += [f"chunk signature: {p}" for p in chunk_problems]
        parity["chunk"] = {"passed": not chunk_problems, **chunk_metrics}
        parity["passed"] = not problems
    written = _Written(model, metadata, parity, problems, rows, keras_y, scale, tol, config, source.parity_key,
                       source.parity_times if source.calendar else None)
    return written.write(out, log)


def _run_with_progress(runner, xs: np.ndarray, times: dict, progress, block: int = 256) -> np.ndarray:
    """``runner.run(xs, chunked=False)`` in blocks of rows, telling ``progress`` (the runner carries its state
    across calls, so the outputs are those of one call)."""
    outs = []
    for start in range(0, len(xs), block):
        progress("parity: stepping the .tflite", start, len(xs))
        part = {k: v[start:start + block] for k, v in times.items()}
        outs.append(runner.run(xs[start:start + block], chunked=False, **part))
    progress("parity: stepping the .tflite", len(xs), len(xs))
    return np.concatenate(outs, axis=0)


@dataclasses.dataclass(frozen=True)
class _Written:
    """A converted graph with its measured parity: written (and rewritten by ``auto``) with metadata and golden."""

    model: bytes
    metadata: ModelMetadata
    parity: dict
    problems: list
    rows: np.ndarray
    keras_y: np.ndarray
    scale: np.ndarray
    tol: dict
    config: ConvertConfig
    key: str | None = None  # the panel series the golden trace comes from
    times: np.ndarray | None = None  # its time cells (calendar models)

    def write(self, out: Path, log, auto: dict | None = None) -> ConvertResult:
        parity = dict(self.parity, auto=auto) if auto else self.parity
        metadata = dataclasses.replace(self.metadata, parity=parity)
        final = finalize(self.model, metadata.to_json(), _output_headroom(self.config))
        _write_atomic(out, final)
        golden = golden_path_for(out)
        n = min(self.config.golden_steps, len(self.rows))
        extra = {}
        if self.key is not None:
            extra["key"] = self.key
        if self.times is not None:
            extra["times"] = self.times[:n]
        write_golden(golden, final, metadata, self.rows[:n], self.keras_y[:n], self.scale, self.tol,
                     monitor_trace(metadata, self.rows[:n], self.keras_y[:n], **({"key": self.key} if self.key else {})),
                     **extra)
        quant = self.config.quant
        table = parity_mod.format_table(self.parity, quant)
        log(f"parity over the test split ({'PASS' if not self.problems else 'FAIL'}):\n{table}")
        log(f"wrote {out} ({len(final)} bytes) and {golden}")
        if self.problems and self.config.check_parity:
            raise CheckFailed(f"parity check failed for {out} (written for inspection): " + "; ".join(self.problems) + ".")
        return ConvertResult(out, golden, metadata, parity, tuple(self.problems), table, self)


def _key_arg(source: Source) -> dict:
    return {"key": source.parity_key} if source.parity_key is not None else {}


def _times_arg(source: Source) -> dict:
    return {"times": [str(t) for t in source.parity_times]} if source.calendar else {}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
