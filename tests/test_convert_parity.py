"""Parity of the one-step graph against the full-sequence Keras model, every cell x depth x quant mode."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from statelite import StatefulRunner  # noqa: E402
from statelite.convert import ConvertConfig, Quant, convert  # noqa: E402
from statelite.convert import parity as parity_mod  # noqa: E402
from statelite.convert.source import load_source  # noqa: E402
from statelite.tflite_file import read_tflite  # noqa: E402
from statelite.transform import Transform  # noqa: E402

pytestmark = pytest.mark.tf

CELLS = ("GRU", "LSTM", "SimpleRNN")
MODES = [q.value for q in Quant if q is not Quant.AUTO]  # auto has its own tests (test_convert_accuracy.py)


def _keras_reference(model_path):
    source = load_source(model_path)
    transform = Transform(source.scaler, source.difference, source.features, source.targets, source.horizon)
    rows = source.parity_rows.astype(np.float64)
    ref = transform.outputs(parity_mod.keras_sequence_outputs(source.keras_model, transform.sequence_inputs(rows)), rows)
    return rows, ref, parity_mod.normalising_scale(transform, ref, scaled=source.scaler.kind != "none")


def _parity_of(runner: StatefulRunner, model_path, quant: Quant) -> list[str]:
    rows, ref, scale = _keras_reference(model_path)
    metrics = parity_mod.parity_metrics(runner.run(rows), ref, scale, None, 1)
    return parity_mod.violations(quant, metrics, check_forecast=False)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("quant", MODES)
def test_step_graph_matches_keras(trained_runs, tmp_path, cell, layers, quant):
    path = trained_runs(cell, layers)
    result = convert(path, tmp_path / "m.tflite", ConvertConfig(quant=quant), log=None)
    assert result.passed, result.violations
    assert result.parity["steps"] == 105  # the whole test split, never reset
    # Re-run independently of the converter's own check: the file on disk, a fresh runner.
    assert _parity_of(StatefulRunner(result.path), path, Quant(quant)) == []
    ops = {op.name for op in read_tflite(result.path.read_bytes()).used_operators}
    assert not ops & {"WHILE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
    assert not any(name.startswith("CUSTOM") for name in ops)
    names = [s.name for s in result.metadata.states]
    expected = [f"{k}_{i}" for i in range(layers) for k in (("h", "c") if cell == "LSTM" else ("h",))]
    assert names == expected
    assert all(s.output.name == s.name + "_out" for s in result.metadata.states)


def _swap_outputs(runner: StatefulRunner, a: str, b: str) -> None:
    """Feed state ``a``'s output into ``b``'s input and vice versa: what pairing by position would risk."""
    pairs = {p.spec.name: p for p in runner._pairs}
    pairs[a].out_index, pairs[b].out_index = pairs[b].out_index, pairs[a].out_index
    runner._bind()


@pytest.mark.parametrize("quant", ["float32", "int8"])
@pytest.mark.parametrize("swap", [("h_0", "c_0"), ("h_0", "h_1"), ("c_0", "c_1")])
def test_swapped_state_fails_parity(trained_runs, tmp_path, quant, swap):
    path = trained_runs("LSTM", 2)
    result = convert(path, tmp_path / "m.tflite", ConvertConfig(quant=quant), log=None)
    runner = StatefulRunner(result.path)
    assert _parity_of(runner, path, Quant(quant)) == []
    swapped = StatefulRunner(result.path)
    _swap_outputs(swapped, *swap)
    problems = _parity_of(swapped, path, Quant(quant))
    assert problems, f"swapping {swap} went unnoticed by the {quant} tolerance"


def test_gru_swapped_layers_fail_parity(trained_runs, tmp_path):
    path = trained_runs("GRU", 2)
    result = convert(path, tmp_path / "m.tflite", ConvertConfig(quant="float32"), log=None)
    swapped = StatefulRunner(result.path)
    _swap_outputs(swapped, "h_0", "h_1")
    assert _parity_of(swapped, path, Quant.FLOAT32)


def test_int8_io_requantizes_state(trained_runs, tmp_path):
    path = trained_runs("LSTM", 2)
    result = convert(path, tmp_path / "m.tflite", ConvertConfig(quant="int8", io="int8"), log=None)
    md = result.metadata
    assert md.x.dtype == "int8" and md.y.dtype == "int8"
    assert all(s.input.dtype == "int8" and s.input.quantization is not None for s in md.states)
    assert result.passed, result.violations


def test_batch_streams_are_independent(trained_runs, tmp_path):
    path = trained_runs("GRU", 2)
    batched = StatefulRunner(convert(path, tmp_path / "b.tflite", ConvertConfig(batch=4), log=None).path)
    single_path = convert(path, tmp_path / "s.tflite", ConvertConfig(), log=None).path
    singles = [StatefulRunner(single_path) for _ in range(4)]
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(60, 4, 2)).astype(np.float32)
    ys = batched.run(xs)
    assert ys.shape == (60, 4, 2, 1)
    for lane, runner in enumerate(singles):
        np.testing.assert_allclose(ys[:, lane], runner.run(xs[:, lane]), atol=1e-5)
    # Streams really differ, so equality above is not an accident of identical inputs.
    assert np.abs(ys[:, 0] - ys[:, 1]).max() > 1e-3
