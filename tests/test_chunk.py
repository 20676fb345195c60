"""Chunked stepping: a ``--chunk K`` model's step_chunk signature equals K single steps; run() uses it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from statelite import BadInputError, StatefulRunner  # noqa: E402
from statelite.convert import ConvertConfig, convert  # noqa: E402
from statelite.tflite_file import read_tflite  # noqa: E402

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_float_chunk_equals_single_steps(trained_runs, tmp_path, cell):
    result = convert(trained_runs(cell, 2), tmp_path / "c.tflite", ConvertConfig(chunk=8), log=None)
    assert result.passed and result.parity["chunk"]["passed"]
    runner = StatefulRunner(result.path)
    xs = np.load(result.golden_path)["x"][:53]  # 6 chunks of 8 and a remainder of 5 single steps
    chunked = runner.run(xs)
    state_after_chunks = runner.state
    runner.reset()
    single = runner.run(xs, chunked=False)
    np.testing.assert_allclose(chunked, single, rtol=0, atol=1e-5)
    for name, value in runner.state.items():
        np.testing.assert_allclose(state_after_chunks[name], value, rtol=0, atol=1e-5)
    sig = {s.key: s for s in read_tflite(result.path.read_bytes()).signatures}
    assert sig["step"].subgraph_index == 0 and sig["step_chunk"].subgraph_index == 1
    assert result.metadata.chunk == 8 and result.metadata.chunk_x.shape == (1, 8, 2)


def test_int8_chunk_within_tolerance_and_continues_the_stream(trained_runs, tmp_path):
    result = convert(trained_runs("gru", 1), tmp_path / "c.tflite", ConvertConfig(quant="int8", chunk=4), log=None)
    assert result.parity["chunk"]["passed"], result.parity["chunk"]
    runner = StatefulRunner(result.path)
    xs = np.load(result.golden_path)["x"][:40]
    whole = runner.run(xs)
    runner.reset()
    first = runner.run(xs[:16])
    rest = runner.run(xs[16:])
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)


def test_batched_chunk(trained_runs, tmp_path):
    result = convert(trained_runs("gru", 1), tmp_path / "c.tflite", ConvertConfig(batch=3, chunk=4), log=None)
    runner = StatefulRunner(result.path)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(12, 3, 2))
    chunked = runner.run(xs)
    runner.reset()
    np.testing.assert_allclose(chunked, runner.run(xs, chunked=False), rtol=0, atol=1e-5)


def test_nan_in_a_chunk_steps_nothing(trained_runs, tmp_path):
    result = convert(trained_runs("gru", 1), tmp_path / "c.tflite", ConvertConfig(chunk=4), log=None)
    runner = StatefulRunner(result.path)
    xs = np.load(result.golden_path)["x"][:8].copy()
    runner.run(xs[:4])
    before = runner.state
    xs[6, 0] = np.nan
    with pytest.raises(BadInputError, match="first at step 6"):
        runner.run(xs)
    for name, value in runner.state.items():
        np.testing.assert_array_equal(value, before[name])


def test_chunk_needs_float_io():
    with pytest.raises(BadInputError, match="--chunk needs --io float"):
        ConvertConfig(quant="int8", io="int8", chunk=4)


@pytest.fixture(scope="module")
def co2_run(tmp_path_factory):
    from statelite.train import TrainConfig, train

    out = tmp_path_factory.mktemp("co2") / "run"
    train(TrainConfig.co2(out=str(out), units=8, epochs=2), log=None)
    return out


@pytest.mark.parametrize("quant", ["float32", "int8"])
def test_single_sensor_path_and_chunks_share_the_state(co2_run, tmp_path, quant):
    """One feature, one target: step() takes its Python-float path; chunks and steps must hand the state over."""
    result = convert(co2_run, tmp_path / "c.tflite", ConvertConfig(quant=quant, chunk=4), log=None)
    runner = StatefulRunner(result.path)
    assert runner._scalar
    xs = np.load(result.golden_path)["x"][:30]
    mixed = np.concatenate([runner.run(xs[:10]), np.stack([runner.step(x) for x in xs[10:20]]), runner.run(xs[20:])])
    state = runner.state
    runner.reset()
    single = runner.run(xs, chunked=False)
    tol = 1e-5 if quant == "float32" else 0.5  # int8: the chunk signature is calibrated on its own
    np.testing.assert_allclose(mixed, single, rtol=0, atol=tol)
    assert state["x_prev"][0, 0] == xs[-1, 0]
