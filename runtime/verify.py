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
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from .errors import BadInputError, IncompatibleModelError, ModelFormatError
from .runner import StatefulRunner

GOLDEN_FORMAT_VERSION = 1
_GOLDEN_KEYS = ("format_version", "model_sha256", "x", "y_keras", "target_scale", "tol_max_abs", "tol_rmse")


def golden_path_for(model_path) -> Path:
    """Where the converter writes a model's golden trace: ``<stem>.golden.npz`` beside it."""
    p = Path(model_path)
    return p.with_name(p.stem + ".golden.npz")


@dataclasses.dataclass(frozen=True)
class Golden:
    """A golden trace: raw inputs ``x`` (steps, features), Keras forecasts ``y`` (steps, horizon, targets)."""

    path: str
    model_sha256: str
    quant: str
    x: np.ndarray
    y: np.ndarray
    target_scale: np.ndarray
    tol_max_abs: float
    tol_rmse: float


def load_golden(path) -> Golden:
    """Read and check a golden trace file.

    Raises:
        BadInputError: the file does not exist.
        ModelFormatError: not a readable golden trace, or keys missing or of the wrong shape.
        IncompatibleModelError: a golden format newer than this statelite reads.
    """
    path = str(path)
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            present = set(npz.files)
            missing = [k for k in _GOLDEN_KEYS if k not in present]
            if missing:
                raise ModelFormatError(
                    f"{path} is not a statelite golden trace: keys {missing} are missing (present: {sorted(present)}). "
                    f"Expected the <model>.golden.npz that 'statelite convert' wrote beside the model."
                )
            d = {k: npz[k] for k in _GOLDEN_KEYS + (("quant",) if "quant" in present else ())}
    except FileNotFoundError:
        raise BadInputError(
            f"golden trace not found: {path}. 'statelite convert' writes it beside the model as <stem>.golden.npz; "
            f"copy it along with the model, or pass --golden FILE."
        ) from None
    except IsADirectoryError:
        raise BadInputError(f"expected a golden trace file, received a directory: {path}.") from None
    except ModelFormatError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelFormatError(
            f"{path} is not a readable golden trace (truncated or corrupt: {type(exc).__name__}: {exc}). "
            f"Copy it again from the machine that converted the model."
        ) from None
    try:
        version = int(d["format_version"])
        # float64: raw values (CO2 near 400 ppm) have a float32 step as large as the float32 tolerance.
        x = np.asarray(d["x"], dtype=np.float64)
        y = np.asarray(d["y_keras"], dtype=np.float64)
        scale = np.asarray(d["target_scale"], dtype=np.float64).reshape(-1)
        golden = Golden(
            path, str(d["model_sha256"]), str(d.get("quant", "")), x, y, scale, float(d["tol_max_abs"]), float(d["tol_rmse"])
        )
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: a golden trace value is unreadable ({exc}).") from None
    if version > GOLDEN_FORMAT_VERSION:
        raise IncompatibleModelError(
            f"{path} is golden format version {version}; this statelite reads up to {GOLDEN_FORMAT_VERSION}. "
            f"Upgrade statelite on this device."
        )
    if x.ndim != 2 or y.ndim != 3 or len(x) != len(y) or y.shape[2] != len(scale) or len(x) == 0:
        raise ModelFormatError(
            f"{path}: expected x (steps, features) and y_keras (steps, horizon, targets) with the same steps and "
            f"target_scale (targets,); received x {x.shape}, y_keras {y.shape}, target_scale {scale.shape}."
        )
    return golden


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

    @property
    def problems(self) -> tuple[str, ...]:
        """Which tolerances were exceeded, by how much; empty when passed."""
        out = []
        if not self.max_abs_norm <= self.tol_max_abs:
            out.append(f"max abs error (normalised) {self.max_abs_norm:.3g} > tolerance {self.tol_max_abs:.3g}")
        if not self.rmse_norm <= self.tol_rmse:
            out.append(f"RMSE (normalised) {self.rmse_norm:.3g} > tolerance {self.tol_rmse:.3g}")
        return tuple(out)

    def format(self) -> str:
        """The report as printed by ``statelite verify``."""
        lines = [
            f"model        {self.model} (quant {self.quant})",
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
            f"time         {self.seconds * 1000:.1f} ms for {self.steps} steps",
            "result       PASS" if self.passed else "result       FAIL: " + "; ".join(self.problems),
        ]
        return "\n".join(lines)


def _rmse(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def verify(model_path, golden_path=None, backend: str = "auto") -> VerifyReport:
    """Replay a model's golden trace through a fresh ``StatefulRunner`` and compare with the Keras forecasts.

    Args:
        model_path: the ``.tflite`` file.
        golden_path: the golden trace (default ``<stem>.golden.npz`` beside the model).
        backend: the interpreter backend, as for ``StatefulRunner``.

    Returns:
        A ``VerifyReport``; ``passed`` says whether both tolerances hold. A failing report is returned, not raised.

    Raises:
        ModelFormatError, IncompatibleModelError: the model or the golden file cannot be used.
        BadInputError: the golden file is missing, or belongs to another model.
    """
    # The model first: when both files are wrong, the model's error is the one to fix first.
    runner = StatefulRunner(model_path, backend=backend, allow_nonfinite=True)
    golden_path = golden_path_for(model_path) if golden_path is None else Path(golden_path)
    golden = load_golden(golden_path)
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
        raise ModelFormatError(
            f"{golden_path}: expected x (steps, {len(md.features)}) and y_keras (steps, {md.horizon}, "
            f"{len(md.targets)}) for this model; received x {golden.x.shape}, y_keras {golden.y.shape}."
        )
    # One lane's rows: the range counts are the golden trace's, whatever the batch.
    xs = golden.x if runner.batch == 1 else np.repeat(golden.x[:, None], runner.batch, axis=1)
    start = time.perf_counter()
    y = runner.run(xs)
    seconds = time.perf_counter() - start
    ranges = _one_lane(runner.range_report, runner.batch)
    keras_y = golden.y if runner.batch == 1 else np.broadcast_to(golden.y[:, None], y.shape)
    err = np.asarray(y, dtype=np.float64) - keras_y
    norm = err / golden.target_scale
    per_step = np.abs(norm).reshape(steps, -1).mean(axis=1)
    tenth = max(steps // 10, 1)
    max_abs_norm, rmse_norm = float(np.abs(norm).max()), _rmse(norm)
    return VerifyReport(
        model=str(model_path),
        golden=str(golden_path),
        quant=md.quant,
        steps=int(steps),
        max_abs=float(np.abs(err).max()),
        rmse=_rmse(err),
        max_abs_norm=max_abs_norm,
        rmse_norm=rmse_norm,
        worst_step=int(np.argmax(per_step)),
        drift_first_tenth=float(per_step[:tenth].mean()),
        drift_last_tenth=float(per_step[-tenth:].mean()),
        tol_max_abs=golden.tol_max_abs,
        tol_rmse=golden.tol_rmse,
        backend=runner.backend,
        backend_version=runner.backend_version,
        machine=platform.machine(),
        seconds=seconds,
        passed=bool(max_abs_norm <= golden.tol_max_abs and rmse_norm <= golden.tol_rmse),
        input_range=None if ranges is None else ranges.to_dict(),
    )


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
