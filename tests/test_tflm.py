"""TensorFlow Lite for Microcontrollers: ``verify --backend tflm`` runs the golden traces on TFLM's reference kernels
(the tflite-micro package), with inputs and outputs paired by name; ``convert --target tflm`` refuses what those
kernels cannot load."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from statelite import InterpreterNotFoundError, StatefulRunner
from statelite.interpreter import load_backend
from statelite.verify import verify

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.tflite"))


def _needs_micro():
    pytest.importorskip("tflite_micro", reason="tflite-micro is not installed (pip install 'statelite[micro]')")


@pytest.mark.parametrize("model", MODELS, ids=[m.stem for m in MODELS])
def test_every_reference_model_passes_verify_on_tflm_kernels(model):
    _needs_micro()
    report = verify(model, backend="tflm")
    assert report.passed, report.problems
    assert report.backend == "tflm"


def test_an_lstm_state_is_paired_by_name_not_by_tflm_position():
    # TFLM numbers the LSTM's inputs h_0, x, c_0 (the subgraph's order); the signature order is c_0, h_0, x
    _needs_micro()
    from statelite.tflite_file import read_tflite

    path = ROOT / "models" / "lstm_float32.tflite"
    info = read_tflite(path.read_bytes())
    signature = info.signatures[0]
    assert list(signature.inputs.values()) != list(info.subgraph_io[0][0])  # [2, 0, 1] against [0, 1, 2]
    xs = np.linspace(-0.2, 0.2, 60)[:, None] + 370.0
    micro = StatefulRunner(path, backend="tflm").run(xs)
    lite = StatefulRunner(path, backend="litert").run(xs)
    np.testing.assert_allclose(micro, lite, rtol=1e-5, atol=1e-4)


def test_a_chunk_model_steps_its_primary_subgraph_on_tflm():
    _needs_micro()
    path = ROOT / "models" / "gru_float32_c8.tflite"
    xs = np.linspace(370.0, 371.0, 20)[:, None]
    micro = StatefulRunner(path, backend="tflm").run(xs)  # chunked=True: no chunk subgraph there, one step at a time
    np.testing.assert_allclose(micro, StatefulRunner(path, backend="litert").run(xs, chunked=False), atol=1e-4)


def test_auto_never_picks_tflm():
    assert load_backend("auto")[0] != "tflm"


def test_a_missing_tflite_micro_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite_micro", None)
    with pytest.raises(InterpreterNotFoundError, match=r"statelite\[micro\]"):
        load_backend("tflm")


def test_the_tflm_target_refuses_modes_its_kernels_cannot_load():
    from statelite.errors import BadInputError

    pytest.importorskip("tensorflow")
    from statelite.convert import ConvertConfig

    with pytest.raises(BadInputError, match="refuse float16 weights"):
        ConvertConfig(quant="float16", target="tflm")
    with pytest.raises(BadInputError, match="dynamic-range layers"):
        ConvertConfig(quant="dynamic", target="tflm")
    with pytest.raises(BadInputError, match="first subgraph only"):
        ConvertConfig(quant="int8", target="tflm", chunk=8)


def test_the_tflm_operator_table_names_the_operator():
    pytest.importorskip("tensorflow")
    from statelite.convert.checks import check_target
    from statelite.convert.config import Quant, Target
    from statelite.errors import IncompatibleModelError
    from statelite.tflite_file import OperatorCode, read_tflite

    import dataclasses

    info = read_tflite((ROOT / "models" / "gru_int8.tflite").read_bytes())
    check_target(info, Target.TFLM, Quant.INT8)  # the reference int8 GRU is within the table
    hybrid = dataclasses.replace(info, used_operators=info.used_operators + (OperatorCode("FULLY_CONNECTED", 12),))
    with pytest.raises(IncompatibleModelError, match="operator FULLY_CONNECTED version 12"):
        check_target(hybrid, Target.TFLM, Quant.DYNAMIC)
    two = read_tflite((ROOT / "models" / "gru_float32_c8.tflite").read_bytes())
    with pytest.raises(IncompatibleModelError, match="2 subgraphs"):
        check_target(two, Target.TFLM, Quant.FLOAT32)


@pytest.mark.tf
@pytest.mark.parametrize("quant", ["int8", "float32"])
def test_convert_for_tflm_and_verify_on_its_kernels(trained_runs, tmp_path, quant):
    _needs_micro()
    from statelite.convert import ConvertConfig, convert

    result = convert(trained_runs("gru", 1), tmp_path / "m.tflite", ConvertConfig(quant=quant, target="tflm"), log=None)
    assert result.passed and result.metadata.target == "tflm"
    assert verify(result.path, backend="tflm").passed
