"""The run-time range guard: inputs outside the training range, or clipped by an integer input, are counted (never
silently clipped), reported once per column, and shown by ``statelite run``, ``verify`` and ``bench``.

The reference models predate ``input_range``; copies with one injected are made here without TensorFlow: the
metadata entry is rewritten as compact JSON padded with spaces to its old length, so the flatbuffer is unchanged
around it.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from statelite import StatefulRunner, StreamPool, read_metadata
from statelite.cli import main
from statelite.metadata import METADATA_NAME, InputRange, metadata_from_file, read_model_file
from statelite.ranges import RangeGuard, RangeKind, RangeReport
from statelite.stream import StreamConfig, run_stream

MODELS = Path(__file__).resolve().parents[1] / "models"


def with_input_range(src: Path, dst: Path, input_range: InputRange | None, golden: bool = True) -> Path:
    """A copy of model ``src`` with ``input_range`` in its metadata (and its golden trace re-tagged for the copy)."""
    if not src.exists():
        pytest.skip(f"reference model {src.name} missing; regenerate with: python models/regenerate.py")
    data, info = read_model_file(src)
    raw = info.metadata[METADATA_NAME]
    md = dataclasses.replace(metadata_from_file(info), input_range=input_range)
    new = json.dumps(md.to_dict(), separators=(",", ":")).encode()
    assert len(new) <= len(raw) and data.count(raw) == 1, "no room for the input range in the metadata entry"
    out = data.replace(raw, new + b" " * (len(raw) - len(new)))
    dst.write_bytes(out)
    g = src.with_name(src.stem + ".golden.npz")
    if golden and g.exists():
        import hashlib

        with np.load(g) as d:
            arrays = {k: d[k] for k in d.files}
        arrays["model_sha256"] = np.array(hashlib.sha256(out).hexdigest())
        np.savez(dst.with_name(dst.stem + ".golden.npz"), **arrays)
    return dst


# co2 first differences of the golden trace lie within about [-2.5, 2.5]; these ranges put a few rows outside.
NARROW = InputRange("difference", (-1.0,), (1.2,))
CLIPPING = InputRange("difference", (-1.0,), (1.2,), (-1.5,), (1.5,))


def diffs(xs: np.ndarray) -> np.ndarray:
    return np.diff(xs[:, 0], prepend=xs[0, 0])


def golden_x(name: str, n: int = 120) -> np.ndarray:
    path = MODELS / name.replace(".tflite", ".golden.npz")
    if not path.exists():
        pytest.skip(f"golden trace {path.name} missing")
    with np.load(path) as d:
        return np.asarray(d["x"][:n], dtype=np.float64)


@pytest.fixture
def narrow(tmp_path):
    return with_input_range(MODELS / "gru_float32.tflite", tmp_path / "narrow.tflite", NARROW)


@pytest.fixture
def clipping(tmp_path):
    return with_input_range(MODELS / "gru_int8.tflite", tmp_path / "clip.tflite", CLIPPING)


def expected_counts(d: np.ndarray, lo: float, hi: float) -> tuple[int, int | None]:
    out = (d < lo) | (d > hi)
    return int(out.sum()), (int(np.argmax(out)) if out.any() else None)


def test_scalar_path_counts_in_and_out_of_range(narrow):
    xs = golden_x("gru_float32.tflite")
    d = diffs(xs)
    n, first = expected_counts(d, -1.0, 1.2)
    assert 0 < n < len(d) and first > 0, "the test range must leave some rows in and some out"
    runner = StatefulRunner(narrow)
    for x in xs:
        runner.step(x)
    rep = runner.range_report.to_dict()
    assert (rep["steps"], rep["rows"], rep["outside_training"], rep["clipped"]) == (len(xs), len(xs), n, 0)
    assert rep["basis"] == "difference"
    assert rep["columns"]["co2"] == {
        "outside_training": n, "clipped": 0, "first_outside_step": first, "first_clipped_step": None,
        "train_min": -1.0, "train_max": 1.2, "clip_min": None, "clip_max": None,
    }
    json.dumps(rep)  # JSON-ready
    # The guard only counts: forecasts are those of the model without it.
    np.testing.assert_array_equal(StatefulRunner(narrow).run(xs), StatefulRunner(MODELS / "gru_float32.tflite").run(xs))


def test_reset_keeps_counts_and_reset_range_counts_clears_them(narrow):
    xs = golden_x("gru_float32.tflite")
    runner = StatefulRunner(narrow)
    calls = []
    runner.on_out_of_range = lambda *a: calls.append(a)
    runner.run(xs)
    before = runner.range_report
    runner.reset()
    assert runner.range_report == before and before.outside_training > 0
    runner.reset_range_counts()
    assert runner.range_report.outside_training == 0 and runner.range_report.steps == 0
    runner.run(xs)
    assert runner.range_report == before
    assert len(calls) == 2, "the callback fires again after reset_range_counts"


def test_vector_path_and_chunks_count_the_same(tmp_path):
    model = with_input_range(MODELS / "gru_float32_b8.tflite", tmp_path / "b8.tflite", NARROW)
    xs = golden_x("gru_float32.tflite", 60)
    d = diffs(xs)
    n, first = expected_counts(d, -1.0, 1.2)
    batch = np.repeat(xs[:, None], 8, axis=1)
    batch[:, 3] += 0.0  # every lane the same series
    runner = StatefulRunner(model)
    for row in batch:
        runner.step(row)
    rep = runner.range_report
    assert (rep.steps, rep.rows, rep.outside_training) == (60, 480, 8 * n)
    assert rep.columns[0].first_outside_step == first


def test_pool_counts_only_stepping_streams(tmp_path):
    model = with_input_range(MODELS / "gru_float32_b8.tflite", tmp_path / "b8.tflite", NARROW)
    xs = golden_x("gru_float32.tflite", 60)
    d = diffs(xs)
    n, first = expected_counts(d, -1.0, 1.2)
    pool = StreamPool(model)
    events = []
    pool.on_out_of_range = lambda *a: events.append(a)
    pool.add("a"), pool.add("b"), pool.add("idle")
    for x in xs:
        pool.step({"a": x, "b": x})  # the idle lane's zero input never counts
    rep = pool.range_report
    assert (rep.steps, rep.rows, rep.outside_training, rep.columns[0].first_outside_step) == (60, 120, 2 * n, first)
    assert events == [("co2", RangeKind.OUTSIDE_TRAINING, first, pytest.approx(d[first]), -1.0, 1.2)]


def test_int8_model_counts_clipped_values(clipping):
    xs = golden_x("gru_int8.tflite")
    d = diffs(xs)
    n_out, first_out = expected_counts(d, -1.0, 1.2)
    n_clip, first_clip = expected_counts(d, -1.5, 1.5)
    assert n_clip > 0
    runner = StatefulRunner(clipping)
    events = []
    runner.on_out_of_range = lambda *a: events.append(a)
    for x in xs:
        runner.step(x)
    c = runner.range_report.columns[0]
    assert (c.outside_training, c.clipped, c.first_outside_step, c.first_clipped_step) == (
        n_out, n_clip, first_out, first_clip
    )
    assert [(e[1], e[2], e[4], e[5]) for e in events] == [
        (RangeKind.OUTSIDE_TRAINING, first_out, -1.0, 1.2), (RangeKind.CLIPPED, first_clip, -1.5, 1.5)
    ]


def test_old_model_has_no_guard():
    runner = StatefulRunner(MODELS / "gru_float32.tflite")
    assert read_metadata(runner.path).input_range is None
    runner.on_out_of_range = lambda *a: pytest.fail("no guard on a model without input_range")
    runner.run(golden_x("gru_float32.tflite") * 3)
    assert runner.range_report is None


def test_callback_may_refuse_a_row_and_the_state_stays(narrow):
    xs = golden_x("gru_float32.tflite")
    first = expected_counts(diffs(xs), -1.0, 1.2)[1]
    runner = StatefulRunner(narrow)

    def refuse(*event):
        raise RuntimeError("refused")

    runner.on_out_of_range = refuse
    for x in xs[:first]:
        runner.step(x)
    before = runner.state
    with pytest.raises(RuntimeError, match="refused"):
        runner.step(xs[first])
    after = runner.state
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_guard_unit_multi_column_and_integer_clip():
    guard = RangeGuard(InputRange("value", (0.0, 10.0), (1.0, 20.0)), ["a", "b"])
    events = []
    guard.on_out_of_range = lambda *a: events.append(a)
    guard.check(np.array([[0.5, 15.0]]))
    guard.check(np.array([[0.5, 25.0], [2.0, 25.0]]))  # one step of two lanes
    guard.check(np.array([[np.nan, 15.0]]))  # NaN is not a range problem
    rep = guard.report()
    assert (rep.steps, rep.rows, rep.outside_training) == (3, 4, 3)
    assert [(c.outside_training, c.first_outside_step) for c in rep.columns] == [(1, 1), (2, 1)]
    assert events == [("a", RangeKind.OUTSIDE_TRAINING, 1, 2.0, 0.0, 1.0), ("b", RangeKind.OUTSIDE_TRAINING, 1, 25.0, 10.0, 20.0)]
    combined = RangeReport.combine([rep, rep])
    assert (combined.rows, combined.outside_training, combined.columns[1].first_outside_step) == (8, 6, 1)


def test_integer_input_without_recorded_range_still_counts_clipping():
    # An int8 x that the host quantizes clips where its quantization ends, recorded range or not.
    from statelite.metadata import Quantization

    md = read_metadata(MODELS / "gru_int8.tflite")
    md = dataclasses.replace(md, x=dataclasses.replace(md.x, dtype="int8", quantization=Quantization(0.05, -3)))
    guard = RangeGuard.for_model(md)
    lo = md.scaler.feature_offset[0] + md.scaler.feature_scale[0] * ((-128 + 3) * 0.05)
    hi = md.scaler.feature_offset[0] + md.scaler.feature_scale[0] * ((127 + 3) * 0.05)
    guard.check(np.array([[lo], [hi], [hi + 0.01]]), steps=3)
    rep = guard.report()
    assert (rep.clipped, rep.outside_training, rep.columns[0].first_clipped_step) == (1, 0, 2)
    assert rep.columns[0].train_min is None and rep.columns[0].clip_max == pytest.approx(hi)
