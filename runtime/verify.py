"""``statelite verify``: on the device, replay the golden trace written by the converter and compare with Keras.

The golden trace (``<stem>.golden.npz`` beside the model) holds raw input rows and the Keras model's raw forecasts
for them. ``verify`` steps a fresh ``StatefulRunner`` through every row without resetting, as a device would, and
checks the error against the tolerances the converter stored (normalised by each target's scale). It catches a wrong
interpreter build, a CPU whose kernels differ, or a corrupted copy of the model, on the device itself.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from .errors import BadInputError, GoldenFileError
from .golden import GOLDEN_FORMAT_VERSION, Golden, error_metrics, golden_path_for, monitor_trace, read_golden
from .metadata import read_model_file
from .runner import StatefulRunner

__all__ = [
    "GOLDEN_FORMAT_VERSION", "Golden", "VerifyReport", "golden_path_for", "load_golden", "read_golden", "verify",
    "write_junit",
]

# ``load_golden`` is the name this module used before the golden trace had its own module.
load_golden = read_golden


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """The result of replaying a golden trace on this device. Errors are TFLite minus Keras forecasts.

    ``*_norm`` figures are divided by each target's scale, the units of the tolerances.
    """

    model: str
    golden: str
    quant: str
    steps: int
    max_abs: float
    rmse: float
    max_abs_norm: float
    rmse_norm: float
    worst_step: int
    drift_first_tenth: float
    drift_last_tenth: float
    tol_max_abs: float
    tol_rmse: float
    backend: str
    backend_version: str
    machine: str
    seconds: float
    passed: bool
    # RangeReport.to_dict() of the golden rows: how many were outside the training range or clipped. Information,
    # never a failure. None when the model records no ranges.
    input_range: dict | None = None
    # "verified": the file's content digest matched before the interpreter loaded it; "not recorded": a model
    # converted before digests were recorded.
    integrity: str = "not recorded"
    # The monitor's intervals and scores on the device's forecasts against those on Keras's (``compare_monitor``),
    # or None when the golden trace has none (version 1, or a model without a residual calibration).
    monitor: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def input_range_line(self) -> str:
        """The ``input range`` line's text: golden rows outside the training range and clipped, per column."""
        r = self.input_range
        if r is None:
            return "not recorded in the model"
        what = "first differences" if r["basis"] == "difference" else "values"
        per = ", ".join(
            f"{name} {c['outside_training']}" + (f" ({c['clipped']} clipped)" if c["clipped"] else "")
            for name, c in r["columns"].items()
        )
        return (
            f"{r['outside_training']} of {r['rows']} golden {what} outside the training range, {r['clipped']} "
            f"clipped ({per})"
        )

    def _integrity_text(self) -> str:
        if self.integrity == "verified":
            return "verified (content digest recorded at conversion)"
        return f"{self.integrity} (a model converted before content digests)"

    @property
    def problems(self) -> tuple[str, ...]:
        """Which tolerances were exceeded, by how much; empty when passed."""
        out = []
        if not self.max_abs_norm <= self.tol_max_abs:
            out.append(f"max abs error (normalised) {self.max_abs_norm:.3g} > tolerance {self.tol_max_abs:.3g}")
        if not self.rmse_norm <= self.tol_rmse:
            out.append(f"RMSE (normalised) {self.rmse_norm:.3g} > tolerance {self.tol_rmse:.3g}")
        m = self.monitor
        if m is not None and not m["bounds_within"]:
            out.append(
                f"interval bounds differ by up to {m['bound_excess']:.3g}x their tolerance (worst at step "
                f"{m['worst_step']})"
            )
        if m is not None and m["flag_disagreements"]:
            out.append(f"{m['flag_disagreements']} rows flagged anomalous on one side only, away from the threshold")
        return tuple(out)

    def monitor_line(self) -> str:
        m = self.monitor
        if m is None:
            return "not in the golden trace"
        return (
            f"{m['levels']} interval bounds within tolerance: {'yes' if m['bounds_within'] else 'NO'} (worst "
            f"{m['bound_excess']:.2f}x the tolerance); scores max diff {m['score_max_diff']:.3g} over "
            f"{m['scored']} rows; flags disagreeing {m['flag_disagreements']}"
        )

    def format(self) -> str:
        """The report as printed by ``statelite verify``."""
        lines = [
            f"model        {self.model} (quant {self.quant})",
            f"integrity    {self._integrity_text()}",
            f"golden       {self.golden}",
            f"steps        {self.steps} (one stream, never reset)",
            f"max abs err  {self.max_abs:.4g} raw, {self.max_abs_norm:.4g} normalised (tolerance {self.tol_max_abs:.3g})",
            f"RMSE         {self.rmse:.4g} raw, {self.rmse_norm:.4g} normalised (tolerance {self.tol_rmse:.3g})",
            f"worst step   {self.worst_step}",
            f"drift        mean abs error (normalised) first tenth {self.drift_first_tenth:.3g}, "
            f"last tenth {self.drift_last_tenth:.3g}",
            f"interpreter  {self.backend} {self.backend_version}",
            f"machine      {self.machine}",
            f"input range  {self.input_range_line()}",
            f"monitor      {self.monitor_line()}",
            f"time         {self.seconds * 1000:.1f} ms for {self.steps} steps",
            "result       PASS" if self.passed else "result       FAIL: " + "; ".join(self.problems),
        ]
        return "\n".join(lines)


def verify(model_path, golden_path=None, backend: str = "auto") -> VerifyReport:
    """Replay a model's golden trace through a fresh ``StatefulRunner`` and compare with the Keras forecasts.

    Args:
        model_path: the ``.tflite`` file.
        golden_path: the golden trace (default ``<stem>.golden.npz`` beside the model).
        backend: the interpreter backend, as for ``StatefulRunner``.

    Returns:
        A ``VerifyReport``; ``passed`` says whether both tolerances hold. A failing report is returned, not raised.

    Raises:
        ModelFormatError, IncompatibleModelError: the model or the golden file cannot be used (a corrupt golden
            file is a ``GoldenFileError``, a ``ModelFormatError``).
        BadInputError: the golden file is missing, or belongs to another model.
    """
    # The model first: when both files are wrong, the model's error is the one to fix first.
    runner = StatefulRunner(model_path, backend=backend, allow_nonfinite=True)
    integrity = getattr(runner, "integrity", None) or read_model_file(model_path)[1].integrity
    golden_path = golden_path_for(model_path) if golden_path is None else Path(golden_path)
    golden = read_golden(golden_path)
    sha = runner.model_sha256
    if golden.model_sha256 != sha:
        raise BadInputError(
            f"{golden_path} was written for another model: golden model sha256 {golden.model_sha256[:12]}…, "
            f"{model_path} is sha256 {sha[:12]}…. Expected the golden trace converted together with this model "
            f"(pass --golden FILE, or copy both files again)."
        )
    md = runner.metadata
    steps, n_features = golden.x.shape
    if n_features != len(md.features) or golden.y.shape[1:] != (md.horizon, len(md.targets)):
        raise GoldenFileError(
            f"{golden_path}: expected x (steps, {len(md.features)}) and y_keras (steps, {md.horizon}, "
            f"{len(md.targets)}) for this model; received x {golden.x.shape}, y_keras {golden.y.shape}."
        )
    if md.panel is not None:
        runner._set_key(golden.key)  # the trace's series (None, or a key not in the panel: the global scaler)
    if md.calendar and golden.times is None:
        raise GoldenFileError(
            f"{golden_path}: expected the rows' times for a model with calendar inputs ({', '.join(md.calendar)}); "
            f"received a golden trace without them. Convert the model again to write one."
        )
    # One lane's rows: the range counts are the golden trace's, whatever the batch.
    xs = golden.x if runner.batch == 1 else np.repeat(golden.x[:, None], runner.batch, axis=1)
    start = time.perf_counter()
    y = runner.run(xs, times=golden.times)
    seconds = time.perf_counter() - start
    ranges = _one_lane(runner.range_report, runner.batch)
    m = error_metrics(y, golden.y, golden.target_scale)
    monitor = None
    if golden.monitor is not None and md.residuals is not None:
        lane = y if runner.batch == 1 else y[:, 0]
        monitor = compare_monitor(golden, monitor_trace(md, golden.x, lane, golden.monitor["levels"], golden.key),
                                  md)
    return VerifyReport(
        model=str(model_path),
        golden=str(golden_path),
        quant=md.quant,
        steps=int(steps),
        max_abs=m["max_abs"],
        rmse=m["rmse"],
        max_abs_norm=m["max_abs_norm"],
        rmse_norm=m["rmse_norm"],
        worst_step=m["worst_step"],
        drift_first_tenth=m["drift_first_tenth"],
        drift_last_tenth=m["drift_last_tenth"],
        tol_max_abs=golden.tol_max_abs,
        tol_rmse=golden.tol_rmse,
        backend=runner.backend,
        backend_version=runner.backend_version,
        machine=platform.machine(),
        seconds=seconds,
        passed=bool(
            m["max_abs_norm"] <= golden.tol_max_abs and m["rmse_norm"] <= golden.tol_rmse
            and (monitor is None or (monitor["bounds_within"] and not monitor["flag_disagreements"]))
        ),
        input_range=None if ranges is None else ranges.to_dict(),
        integrity=integrity,
        monitor=monitor,
    )


# An interval bound may differ from Keras's by the forecast's tolerance plus this share of its half-width: the width
# adapts online on misses, and a forecast within tolerance can turn a near miss into a hit, shifting the widths after
# it by the monitor's rate (5% per flip).
BOUND_SLACK = 0.25
# A row flagged on one side only counts as a disagreement when both scores are this far from the threshold: a score
# next to it may land on either side from a forecast within tolerance.
SCORE_MARGIN = 1.0


def compare_monitor(golden: Golden, device: dict, md) -> dict:
    """The device's monitor trace (``monitor_trace`` of its forecasts) against the golden one (Keras's).

    Returns:
        ``{"levels", "bounds_within", "bound_excess" (worst |difference| / its tolerance), "worst_step",
        "score_max_diff", "scored", "flag_disagreements"}``.
    """
    from .monitor import DEFAULT_THRESHOLD

    g = golden.monitor
    scale = golden.target_scale
    half = (g["upper"] - g["lower"]) / 2.0  # (steps, levels, horizon, targets)
    allowed = golden.tol_max_abs * scale + BOUND_SLACK * half
    diff = np.maximum(np.abs(device["lower"] - g["lower"]), np.abs(device["upper"] - g["upper"]))
    excess = diff / np.maximum(allowed, 1e-300)
    per_step = excess.reshape(len(excess), -1).max(axis=1) if excess.size else np.zeros(0)
    a, b = g["score"], device["score"]
    both = np.isfinite(a) & np.isfinite(b)
    flag_a, flag_b = a >= DEFAULT_THRESHOLD, b >= DEFAULT_THRESHOLD
    far = (np.abs(np.where(np.isfinite(a), a, 0.0) - DEFAULT_THRESHOLD) > SCORE_MARGIN) & (
        np.abs(np.where(np.isfinite(b), b, 0.0) - DEFAULT_THRESHOLD) > SCORE_MARGIN)
    return {
        "levels": "/".join(f"{v:.0%}" for v in g["levels"]),
        "bounds_within": bool((per_step <= 1.0).all()),
        "bound_excess": float(per_step.max()) if per_step.size else 0.0,
        "worst_step": int(per_step.argmax()) if per_step.size else 0,
        "score_max_diff": float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0,
        "scored": int(both.sum()),
        "flag_disagreements": int(((flag_a != flag_b) & both & far).sum()),
    }


def _one_lane(report, batch: int):
    """A batched model ran the golden rows in every lane: count them once."""
    if report is None or batch == 1:
        return report
    columns = tuple(
        dataclasses.replace(c, outside_training=c.outside_training // batch, clipped=c.clipped // batch)
        for c in report.columns
    )
    return dataclasses.replace(report, rows=report.rows // batch, columns=columns)


def write_junit(report: VerifyReport, path) -> None:
    """Write ``report`` as JUnit XML (one test suite, one test case; a ``failure`` element when it failed).

    CI systems and device fleets that collect JUnit files then show on-device accuracy next to other tests.
    """
    failures = 0 if report.passed else 1
    suite = ET.Element(
        "testsuite",
        name="statelite.verify",
        tests="1",
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{report.seconds:.3f}",
        hostname=platform.node(),
    )
    props = ET.SubElement(suite, "properties")
    for key, value in report.to_dict().items():
        if key == "input_range":  # flat numbers a dashboard can plot, not a dict's repr
            if value is not None:
                for name in ("rows", "outside_training", "clipped"):
                    ET.SubElement(props, "property", name=f"input_range_{name}", value=str(value[name]))
        elif key not in ("passed",):
            ET.SubElement(props, "property", name=key, value=str(value))
    case = ET.SubElement(
        suite, "testcase", classname=f"statelite.verify.{report.machine}", name=Path(report.model).name, time=f"{report.seconds:.3f}"
    )
    if not report.passed:
        message = "; ".join(report.problems)
        failure = ET.SubElement(case, "failure", message=message, type="ToleranceExceeded")
        failure.text = report.format()
    out = ET.SubElement(case, "system-out")
    out.text = report.format()
    tree = ET.ElementTree(suite)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
