"""``statelite inspect``: what a converted model contains, read from the file alone (no interpreter, no TensorFlow).

Shows the signature with each input and output's shape, dtype and quantization, the state pairs (which output feeds
which input), the operators with their versions (what decides whether an older interpreter can load the file), the
metadata and the parity results measured at conversion.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .metadata import TensorSpec, metadata_from_file, read_model_file


def _tensor(spec: TensorSpec, index: int | None) -> dict:
    d = spec.to_dict()
    d["index"] = index
    return d


def inspect_model(path) -> dict:
    """Describe a statelite ``.tflite`` file as a JSON-ready dict.

    Args:
        path: the model file.

    Returns:
        ``{"path", "size", "sha256", "integrity", "schema_version", "signature", "inputs", "outputs", "states",
        "operators", "metadata", "parity"}``; ``integrity`` is ``"verified"`` (the content digest recorded at
        conversion matches) or ``"not recorded"`` (a model converted before digests).

    Raises:
        ModelFormatError: not a TFLite model, truncated or corrupt (its content digest does not match), without
            statelite metadata, or metadata that does not match the graph.
        IncompatibleModelError: metadata of a newer format than this statelite reads.
    """
    data, info = read_model_file(path)
    md = metadata_from_file(info, source=str(path))
    sig = next((s for s in info.signatures if s.key == md.signature_key), None)
    ins = sig.inputs if sig else {}
    outs = sig.outputs if sig else {}
    inputs = [_tensor(md.x, ins.get(md.x.name))] + [_tensor(s.input, ins.get(s.input.name)) for s in md.states]
    outputs = [_tensor(md.y, outs.get(md.y.name))] + [_tensor(s.output, outs.get(s.output.name)) for s in md.states]
    summary = md.to_dict()
    for key in ("format", "x", "y", "states", "parity"):
        summary.pop(key, None)
    return {
        "path": str(path),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "integrity": info.integrity,
        "schema_version": info.schema_version,
        "signature": {"key": md.signature_key, "present": sig is not None, "signatures": [s.key for s in info.signatures]},
        "inputs": inputs,
        "outputs": outputs,
        "states": [
            {"name": s.name, "layer": s.layer, "kind": s.kind, "input": s.input.name, "output": s.output.name,
             "shape": list(s.input.shape), "dtype": s.input.dtype}
            for s in md.states
        ],
        "operators": [{"name": op.name, "version": op.version} for op in info.used_operators],
        "metadata": summary,
        "parity": md.parity,
    }


def _describe(t: dict) -> str:
    q = t.get("quantization")
    quant = f"  scale {q['scale']:.6g} zero point {q['zero_point']}" if q else ""
    return f"{t['name']:<10} {str(tuple(t['shape'])):<10} {t['dtype']}{quant}"


def _span(lo, hi) -> str:
    return f"[{lo:.4g}, {hi:.4g}]"


def _range_lines(md: dict) -> list[str]:
    """The input's training and clip range per column, and the calibrated range of every tensor."""
    lines = []
    r = md.get("input_range")
    if r:
        basis = "first difference" if r.get("basis") == "difference" else "value"
        lines.append(f"input range  per column ({basis}, raw units): training split; where an integer input clips")
        for i, name in enumerate(md.get("features", [])):
            clip = (_span(r["clip_min"][i], r["clip_max"][i]) if r.get("clip_min") else "float input, no clip")
            lines.append(f"  {name:<10} trained {_span(r['train_min'][i], r['train_max'][i])}; clips {clip}")
    cal = md.get("calibration")
    if cal:
        lines.append(f"calibration  {cal.get('steps')} steps ({cal.get('source')}); tensor ranges in model units:")
        for name, t in cal.get("tensors", {}).items():
            lo, hi = t["min"], t["max"]
            span = (", ".join(_span(a, b) for a, b in zip(lo, hi)) if isinstance(lo, list) else _span(lo, hi))
            lines.append(f"  {name:<10} {span}")
    return lines


def _monitor_lines(md: dict) -> list[str]:
    """The residual calibration (intervals, anomaly scores) and the sampling, as ``inspect`` prints them."""
    lines = []
    r = md.get("residuals")
    if r:
        q = r["quantiles"]  # [horizon][targets][probs]
        nine = ", ".join(
            f"{t} t+1 {q[0][k][-1]:.4g}, t+{len(q)} {q[-1][k][-1]:.4g}" for k, t in enumerate(md.get("targets", []))
        )
        units = "in units of each series' target scale" if md.get("panel") else "raw units"
        lines.append(
            f"residuals    calibrated on {r['steps']} positions ({r['source']}); 90% abs residual: {nine} ({units})"
        )
    else:
        lines.append("residuals    not recorded (no intervals or anomaly scores: convert from a run folder)")
    sampling = md.get("sampling")
    if sampling:
        from .timecol import Sampling

        lines.append(f"sampling     {Sampling.from_dict(sampling).describe()} ({sampling['regular']:.0%} of training "
                     f"steps regular); gaps are judged against it")
    return lines


_SHOWN_KEYS = 5


def _panel_lines(md: dict) -> list[str]:
    """The calendar inputs and the panel of series, as ``inspect`` prints them (none for a plain model)."""
    lines = []
    calendar = md.get("calendar")
    if calendar:
        from .calendar import calendar_columns

        lines.append(f"calendar     {', '.join(calendar)} from time column {md.get('time_column')}: graph inputs "
                     f"{', '.join(calendar_columns(calendar))} after the features")
    panel = md.get("panel")
    if panel:
        keys = list(panel["scalers"])
        shown = ", ".join(keys[:_SHOWN_KEYS]) + (f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS
                                                  else "")
        lines.append(f"panel        {len(keys)} series by column {panel['key_column']!r}: {shown}; each scaled with "
                     f"its own scaler, any other key with the global one")
    return lines


def format_inspection(d: dict) -> str:
    """The text ``statelite inspect`` prints for ``inspect_model``'s dict."""
    md = d["metadata"]
    layers = md.get("layers") or []
    cells = " + ".join(f"{layer['cell']}({layer['units']})" for layer in layers) or "none"
    versions = ", ".join(f"{k} {v}" for k, v in md.get("versions", {}).items()) or "unknown"
    time_col = f", time column {md['time_column']}" if md.get("time_column") else ""
    lines = [
        f"model        {Path(d['path']).name}: {d['size']:,} bytes, sha256 {d['sha256'][:16]}…",
        "integrity    " + (
            "verified (content digest recorded at conversion)" if d.get("integrity") == "verified"
            else f"{d.get('integrity', 'not recorded')} (a model converted before content digests)"
        ),
        f"made by      {versions} (metadata format {md.get('format_version')})",
        f"network      {cells}, horizon {md.get('horizon')}, warm-up {md.get('warmup_steps')} steps",
        f"features     {', '.join(md.get('features', []))}{time_col}",
        f"targets      {', '.join(md.get('targets', []))}; scaler {md['scaler']['kind']}, "
        f"differencing {'on' if md.get('difference') else 'off'}",
        f"quantization {md.get('quant')} (io {md.get('io')}), batch {md.get('batch')}, target {md.get('target')}",
        f"signature    {d['signature']['key']!r}" + ("" if d["signature"]["present"] else "  (MISSING from the graph)"),
    ]
    lines[5:5] = _panel_lines(md)
    chunk = md.get("chunk_signature")
    if chunk:
        lines.insert(-1, (
            f"chunk        {md.get('chunk')} steps per call through {chunk['key']!r}: x {tuple(chunk['x']['shape'])}, "
            f"y {tuple(chunk['y']['shape'])}, the same state names"
        ))
    lines += [f"  input      {_describe(t)}" for t in d["inputs"]]
    lines += [f"  output     {_describe(t)}" for t in d["outputs"]]
    lines.append("state pairs  output fed back to input at the next step")
    lines += [
        f"  {s['name']:<10} layer {s['layer']} {s['kind']}: {s['output']} -> {s['input']}  {tuple(s['shape'])} {s['dtype']}"
        for s in d["states"]
    ] or ["  none"]
    lines.append("operators    " + ", ".join(f"{op['name']} v{op['version']}" for op in d["operators"]))
    lines += _range_lines(md)
    lines += _monitor_lines(md)
    p = d.get("parity")
    if p:
        tol = p.get("tolerance", {})
        verdict = "PASS" if p.get("passed") else "FAIL"
        lines.append(
            f"parity       {verdict} over {p.get('steps')} steps vs Keras: max abs {p.get('max_abs_norm', float('nan')):.3g} "
            f"normalised (tolerance {tol.get('max_abs', float('nan')):.3g}), RMSE {p.get('rmse_norm', float('nan')):.3g} "
            f"(tolerance {tol.get('rmse', float('nan')):.3g}), worst step {p.get('worst_step')}"
        )
    else:
        lines.append("parity       not recorded")
    return "\n".join(lines)
