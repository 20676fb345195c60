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
from statelite.integrity import seal
from statelite.metadata import METADATA_NAME, InputRange, metadata_from_file, read_model_file
from statelite.ranges import RangeGuard, RangeKind, RangeReport
from statelite.stream import StreamConfig, run_stream

MODELS = Path(__file__).resolve().parents[1] / "models"


def _t(i: int) -> str:
    """A readable time for row ``i`` (a minute apart: never a gap against the models' weekly sampling)."""
    return f"2020-01-01T{i // 60:02d}:{i % 60:02d}:00"

def with_input_range(src: Path, dst: Path, input_range: InputRange | None, golden: bool = True) -> Path:
    """A copy of model ``src`` with ``input_range`` in its metadata (and its golden trace re-tagged for the copy)."""
    if not src.exists():
        pytest.skip(f"reference model {src.name} missing; regenerate with: python models/regenerate.py")
    data, info = read_model_file(src)
    raw = info.metadata[METADATA_NAME]
    md = dataclasses.replace(metadata_from_file(info), input_range=input_range)
    new = json.dumps(md.to_dict(), separators=(",", ":")).encode()
    assert len(new) <= len(raw) and data.count(raw) == 1, "no room for the input range in the metadata entry"
    out = seal(data.replace(raw, new + b" " * (len(raw) - len(new))))  # a deliberate edit: digest recomputed
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


def test_vector_path_counts_every_lane(tmp_path):
    model = with_input_range(MODELS / "gru_float32_b8.tflite", tmp_path / "b8.tflite", NARROW)
    xs = golden_x("gru_float32.tflite", 60)
    d = diffs(xs)
    n, first = expected_counts(d, -1.0, 1.2)
    batch = np.repeat(xs[:, None], 8, axis=1)
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


def test_old_model_has_no_guard(tmp_path):
    # A float model converted before statelite recorded ranges: the reference model with input_range removed.
    old = with_input_range(MODELS / "gru_float32.tflite", tmp_path / "old.tflite", None)
    runner = StatefulRunner(old)
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
    assert events == [
        ("a", RangeKind.OUTSIDE_TRAINING, 1, 2.0, 0.0, 1.0), ("b", RangeKind.OUTSIDE_TRAINING, 1, 25.0, 10.0, 20.0)
    ]
    combined = RangeReport.combine([rep, rep])
    assert (combined.rows, combined.outside_training, combined.columns[1].first_outside_step) == (8, 6, 1)


def test_integer_input_without_recorded_range_still_counts_clipping():
    # An int8 x that the host quantizes clips where its quantization ends, recorded range or not.
    from statelite.metadata import Quantization

    md = read_metadata(MODELS / "gru_int8.tflite")
    md = dataclasses.replace(md, x=dataclasses.replace(md.x, dtype="int8", quantization=Quantization(0.05, -3)),
                             input_range=None)
    guard = RangeGuard.for_model(md)
    lo = md.scaler.feature_offset[0] + md.scaler.feature_scale[0] * ((-128 + 3) * 0.05)
    hi = md.scaler.feature_offset[0] + md.scaler.feature_scale[0] * ((127 + 3) * 0.05)
    guard.check(np.array([[lo], [hi], [hi + 0.01]]), steps=3)
    rep = guard.report()
    assert (rep.clipped, rep.outside_training, rep.columns[0].first_clipped_step) == (1, 0, 2)
    assert rep.columns[0].train_min is None and rep.columns[0].clip_max == pytest.approx(hi)
    assert rep.basis == "difference"


# -- statelite run ---------------------------------------------------------------------------------------------------


def co2_csv(xs: np.ndarray) -> str:
    return "date,co2\n" + "".join(f"{_t(i)},{float(x[0])!r}\n" for i, x in enumerate(xs))


def test_run_warns_once_per_column_and_kind_with_the_row_and_summarises(clipping):
    xs = golden_x("gru_int8.tflite")
    d = diffs(xs)
    n_out, first_out = expected_counts(d, -1.0, 1.2)
    n_clip, first_clip = expected_counts(d, -1.5, 1.5)
    result = CliRunner().invoke(main, ["run", str(clipping)], input=co2_csv(xs))
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    row_out, row_clip = first_out + 2, first_clip + 2  # the header is line 1
    assert err[0] == (
        f"statelite: row {row_out}: column 'co2' first difference {d[first_out]:.6g} is outside the training range "
        f"[-1, 1.2]; forecasts may be unreliable (counted; summary at exit)"
    )
    assert err[1] == (
        f"statelite: row {row_clip}: column 'co2' first difference {d[first_clip]:.6g} is beyond the int8 input range "
        f"[-1.5, 1.5] and is clipped to it; forecasts may be unreliable (counted; summary at exit)"
    )
    assert err[2] == (
        f"statelite: column 'co2': {n_out} of {len(xs)} first differences outside the training range [-1, 1.2] "
        f"(first at row {row_out}); {n_clip} clipped to the int8 input range [-1.5, 1.5] (first at row {row_clip})"
    )
    assert err[3].startswith(f"statelite run: {len(xs)} rows forecast, {n_out} rows outside the training range, "
                             f"{n_clip} clipped")
    assert len(err) == 4
    assert len(result.stdout.splitlines()) == len(xs) + 1, "every row is still forecast"


def test_run_old_model_says_nothing_about_ranges(tmp_path):
    xs = golden_x("gru_float32.tflite") * 1.5  # far outside anything: no ranges recorded, nothing said
    old = with_input_range(MODELS / "gru_float32.tflite", tmp_path / "old.tflite", None)
    result = CliRunner().invoke(main, ["run", str(old)], input=co2_csv(xs))
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [f"statelite run: {len(xs)} rows forecast"]


def test_strict_range_exits_2_with_one_line_and_keeps_the_state_before(tmp_path, narrow):
    xs = golden_x("gru_float32.tflite")
    d = diffs(xs)
    first = expected_counts(d, -1.0, 1.2)[1]
    state = tmp_path / "s.npz"
    result = CliRunner().invoke(main, ["run", str(narrow), "--strict-range", "--state", str(state)], input=co2_csv(xs))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: stdin line {first + 2}: column 'co2' first difference {d[first]:.6g} is outside the training range "
        f"[-1, 1.2] (--strict-range stops at the first out-of-range row; the state is kept from before it)."
    ]
    assert len(result.stdout.splitlines()) == first + 1
    runner = StatefulRunner(narrow)
    runner.run(xs[:first])
    saved = StatefulRunner(narrow)
    saved.load_state(state)
    for name, value in runner.state.items():
        np.testing.assert_array_equal(saved.state[name], value)


def keyed_csv(xs: np.ndarray) -> str:
    lines = ["date,sensor,co2"]
    for i, x in enumerate(xs):
        lines += [f"{_t(i)},a,{float(x[0])!r}", f"{_t(i)},b,{float(x[0])!r}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("source", ["gru_float32_b8.tflite", "gru_float32.tflite"])  # pool lanes, per-key runners
def test_stream_key_warns_once_and_strict_range(tmp_path, source):
    model = with_input_range(MODELS / source, tmp_path / "m.tflite", NARROW, golden=False)
    xs = golden_x("gru_float32.tflite", 60)
    d = diffs(xs)
    n, first = expected_counts(d, -1.0, 1.2)
    out, err = io.StringIO(), io.StringIO()
    runner = StreamPool(model) if "b8" in source else StatefulRunner(model)
    result = run_stream(runner, io.StringIO(keyed_csv(xs)), out, StreamConfig(stream_key="sensor"), errors=err)
    assert result.range_report.outside_training == 2 * n and result.range_report.rows == 2 * len(xs)
    lines = err.getvalue().splitlines()
    row = 2 + 2 * first  # stream a's row comes first
    assert lines[0].startswith(f"statelite: row {row} (stream 'a'): column 'co2' first difference")
    assert lines[1] == (
        f"statelite: column 'co2': {2 * n} of {2 * len(xs)} first differences outside the training range [-1, 1.2] "
        f"(first at row {row} (stream 'a'))"
    )
    assert len(lines) == 2
    assert runner.on_out_of_range is None, "the caller's callback is restored"
    runner = StreamPool(model) if "b8" in source else StatefulRunner(model)
    with pytest.raises(Exception, match=rf"input line {row}: .*--strict-range"):
        config = StreamConfig(stream_key="sensor", strict_range=True)
        run_stream(runner, io.StringIO(keyed_csv(xs)), io.StringIO(), config, errors=io.StringIO())


# -- verify and bench ------------------------------------------------------------------------------------------------


def test_verify_reports_golden_rows_out_of_range_without_failing(tmp_path, clipping):
    with np.load(clipping.with_name("clip.golden.npz")) as g:
        d = diffs(np.asarray(g["x"], dtype=np.float64))
    n_out, n_clip = expected_counts(d, -1.0, 1.2)[0], expected_counts(d, -1.5, 1.5)[0]
    result = CliRunner().invoke(main, ["verify", str(clipping), "--junit", str(tmp_path / "j.xml")])
    assert result.exit_code == 0, result.output
    assert (f"input range  {n_out} of {len(d)} golden first differences outside the training range, {n_clip} "
            f"clipped (co2 {n_out} ({n_clip} clipped))") in result.output.splitlines()
    result = CliRunner().invoke(main, ["verify", str(clipping), "--json"])
    r = json.loads(result.stdout)["input_range"]
    assert (r["rows"], r["outside_training"], r["clipped"]) == (len(d), n_out, n_clip)
    from xml.etree import ElementTree as ET

    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "j.xml").getroot().iter("property")}
    assert (props["input_range_outside_training"], props["input_range_clipped"]) == (str(n_out), str(n_clip))


def test_verify_batched_model_counts_the_golden_rows_once(tmp_path):
    model = with_input_range(MODELS / "gru_float32_b8.tflite", tmp_path / "b8.tflite", NARROW)
    with np.load(model.with_name("b8.golden.npz")) as g:
        d = diffs(np.asarray(g["x"], dtype=np.float64))
    result = CliRunner().invoke(main, ["verify", str(model), "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)["input_range"]
    assert (r["rows"], r["outside_training"]) == (len(d), expected_counts(d, -1.0, 1.2)[0])


def test_verify_old_model_says_not_recorded(tmp_path):
    old = with_input_range(MODELS / "gru_float32.tflite", tmp_path / "old.tflite", None)
    result = CliRunner().invoke(main, ["verify", str(old), "--json"])
    assert json.loads(result.stdout)["input_range"] is None


def test_reference_models_carry_their_ranges():
    md = read_metadata(MODELS / "gru_int8.tflite")
    r = md.input_range
    assert r.basis == "difference" and r.clip_min is not None
    assert r.clip_min[0] <= r.train_min[0] < r.train_max[0] <= r.clip_max[0]
    assert read_metadata(MODELS / "gru_float32.tflite").input_range.clip_min is None


@pytest.mark.parametrize("source, streams", [("gru_int8.tflite", None), ("gru_int8.tflite", 2),
                                             ("gru_float32_b8.tflite", None)])
def test_bench_json_carries_the_timed_range_report(tmp_path, source, streams):
    tight = InputRange("difference", (-0.1,), (0.1,), (-0.5,), (0.5,))
    model = with_input_range(MODELS / source, tmp_path / "m.tflite", tight, golden=False)
    args = ["bench", str(model), "--steps", "30", "--warmup", "5", "--json"]
    result = CliRunner().invoke(main, args + (["--streams", str(streams)] if streams else []))
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    r = d["input_range"]
    assert r["steps"] == 30 * (streams or 1) and r["rows"] == 30 * d["streams"], "the timed steps only"
    assert 0 < r["outside_training"] <= r["rows"] and 0 < r["clipped"] <= r["outside_training"]
    old = with_input_range(MODELS / source, tmp_path / "old.tflite", None, golden=False)
    result = CliRunner().invoke(main, ["bench", str(old), "--steps", "5", "--warmup", "0", "--json"])
    assert json.loads(result.stdout)["input_range"] is None


@pytest.mark.tf
def test_chunked_run_counts_as_single_steps(trained_runs, tmp_path):
    pytest.importorskip("tensorflow")
    from statelite.convert import ConvertConfig, convert

    result = convert(trained_runs("gru", 1), tmp_path / "c.tflite", ConvertConfig(chunk=4), log=None)
    xs = np.load(result.golden_path)["x"][:42]  # 10 chunks and 2 single steps
    difference = result.metadata.difference
    d = np.diff(xs, axis=0, prepend=xs[:1]) if difference else xs
    lo, hi = np.quantile(d, 0.2, axis=0), np.quantile(d, 0.8, axis=0)
    basis = "difference" if difference else "value"
    model = with_input_range(result.path, tmp_path / "r.tflite", InputRange(basis, tuple(lo), tuple(hi)), False)
    chunked, single = StatefulRunner(model), StatefulRunner(model)
    chunked.run(xs)
    single.run(xs, chunked=False)
    assert chunked.range_report == single.range_report
    outside = (d < lo) | (d > hi)
    assert [c.outside_training for c in single.range_report.columns] == outside.sum(axis=0).tolist()
    assert [c.first_outside_step for c in single.range_report.columns] == outside.argmax(axis=0).tolist()
