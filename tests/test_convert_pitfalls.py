"""Regression tests that name the converter pitfalls statelite works around (TF 2.21 / Keras 3).

Each test shows the pitfall is still there (so the workaround is still needed) or that our workaround holds. If a
future TensorFlow fixes one, its test fails and says which workaround can go.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from statelite.convert import ConvertConfig, convert  # noqa: E402
from statelite.convert.checks import check_graph  # noqa: E402
from statelite.errors import IncompatibleModelError  # noqa: E402
from statelite.tflite_file import read_tflite  # noqa: E402

pytestmark = pytest.mark.tf


def _one_step_keras_gru():
    import keras

    layer = keras.layers.GRU(4, return_state=True)
    layer(np.zeros((1, 1, 2), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 2], tf.float32, name="x"), tf.TensorSpec([1, 4], tf.float32, name="h_0")])
    def step(x, h_0):
        out, h = layer(x[:, None, :], initial_state=[h_0])
        return {"y": out, "h_0_out": h}

    return step, layer


def test_pitfall_keras_gru_one_step_becomes_while_loop_and_is_refused():
    step, layer = _one_step_keras_gru()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([step.get_concrete_function()], layer)
    info = read_tflite(converter.convert())
    assert "WHILE" in {op.name for op in info.used_operators}, "Keras GRU no longer lowers to WHILE"
    with pytest.raises(IncompatibleModelError, match="WHILE"):
        check_graph(info)


def test_pitfall_from_concrete_functions_writes_no_signature():
    @tf.function(input_signature=[tf.TensorSpec([1, 2], tf.float32, name="x")])
    def f(x):
        return {"y": x * 2.0}

    model = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()]).convert()
    assert read_tflite(model).signatures == (), "from_concrete_functions now writes a SignatureDef"


def test_pitfall_outputs_are_output_0_unless_a_dict_is_returned(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([1, 2], tf.float32, name="x")])
    def f(x):
        return x * 2.0

    module = tf.Module()
    module.f = f
    tf.saved_model.save(module, str(tmp_path), signatures={"step": f.get_concrete_function()})
    model = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path), signature_keys=["step"]).convert()
    assert list(read_tflite(model).signatures[0].outputs) == ["output_0"]


def test_our_signature_names_are_ours(keras_models, tmp_path):
    result = convert(keras_models("LSTM", 1), tmp_path / "m.tflite", ConvertConfig(), log=None)
    sig = read_tflite(result.path.read_bytes()).signatures[0]
    assert sig.key == "step"
    assert set(sig.inputs) == {"x", "h_0", "c_0"}
    assert set(sig.outputs) == {"y", "h_0_out", "c_0_out"}


def test_pitfall_tflite_reorders_signature_tensors(keras_models, tmp_path):
    """The interpreter's input order is not our declaration order: pairing by position would be wrong."""
    from ai_edge_litert.interpreter import Interpreter

    result = convert(keras_models("LSTM", 2), tmp_path / "m.tflite", ConvertConfig(), log=None)
    runner = Interpreter(model_path=str(result.path)).get_signature_runner("step")
    declared = ["x", "h_0", "c_0", "h_1", "c_1"]
    assert list(runner.get_input_details()) != declared


def test_pitfall_dynamic_range_uses_fully_connected_v12(tmp_path):
    import keras

    inp = keras.Input((None, 1))
    h = keras.layers.GRU(32, return_sequences=True)(inp)  # 32x96 recurrent weights: past the 1024-element threshold
    keras.Model(inp, keras.layers.Dense(1)(h)).save(tmp_path / "g.keras")
    result = convert(tmp_path / "g.keras", tmp_path / "d.tflite", ConvertConfig(quant="dynamic"), log=None)
    versions = {op.name: op.version for op in read_tflite(result.path.read_bytes()).used_operators}
    assert versions["FULLY_CONNECTED"] == 12
    with pytest.raises(IncompatibleModelError) as err:
        convert(tmp_path / "g.keras", tmp_path / "d214.tflite",
                ConvertConfig(quant="dynamic", target="tflite-runtime-2.14"), log=None)
    assert "operator FULLY_CONNECTED version 12 (quant=dynamic) cannot run there" in str(err.value)
    assert "Modes that work for that target: float32, float16, int8, int16x8" in str(err.value)


def _fully_connected_inputs(model: bytes) -> list[list[int]]:
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    fc = schema.BuiltinOperator.FULLY_CONNECTED
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    return [[int(i) for i in op.inputs] for sg in m.subgraphs for op in sg.operators if codes[op.opcodeIndex] == fc]


def test_pitfall_converter_drops_zero_biases_which_crash_tflite_runtime_214_on_arm(keras_models, tmp_path):
    """The converter leaves integer FULLY_CONNECTED ops without a bias when it is zero (and the recurrent matmul never
    has one); tflite-runtime 2.14's ARM kernel then segfaults (tests/emulated shows it on armv7l). We add zeros."""
    from statelite.convert.quantize import to_tflite

    path = keras_models("SimpleRNN", 1)
    result = convert(path, tmp_path / "m.tflite", ConvertConfig(quant="int8"), log=None)
    assert all(len(inputs) >= 3 and inputs[2] >= 0 for inputs in _fully_connected_inputs(result.path.read_bytes()))

    import numpy as np

    from statelite.convert.source import load_source
    from statelite.convert.step_graph import build_step_function

    source = load_source(path)
    fn, names = build_step_function(source.layers, source.head, source.n_features, 1)
    samples = [{"x": np.random.default_rng(i).normal(size=(1, 2)).astype(np.float32), "h_0": np.zeros((1, 8), np.float32)}
               for i in range(20)]
    raw = to_tflite({"step": fn}, ConvertConfig(quant="int8"), samples)
    assert any(len(i) < 3 or i[2] < 0 for i in _fully_connected_inputs(raw)), "the converter now keeps zero biases"


def test_weight_buffers_stay_16_byte_aligned(keras_models, tmp_path):
    """TensorFlow's flatbuffer object API packs buffers 1-byte aligned; ours keeps the schema's force_align 16."""
    from tensorflow.lite.python import schema_py_generated as schema

    result = convert(keras_models("LSTM", 2), tmp_path / "m.tflite", ConvertConfig(quant="int8", check_parity=False), log=None)
    data = result.path.read_bytes()
    m = schema.Model.GetRootAsModel(data, 0)
    starts = [m.Buffers(i)._tab.Vector(m.Buffers(i)._tab.Offset(4)) for i in range(m.BuffersLength())
              if m.Buffers(i).DataLength()]
    assert starts and all(s % 16 == 0 for s in starts)


def test_int16x8_with_chunk_is_refused():
    """TF 2.21: an int16x8 model with a step_chunk signature beside its step signature calibrates wrongly (the step
    signature of the bundled GRU was off by 4.1 normalised against 0.07 alone; an LSTM conversion aborted the
    process). statelite refuses the combination with the modes that work, and auto skips int16x8 when chunking."""
    from statelite.convert import ConvertConfig
    from statelite.errors import BadInputError

    with pytest.raises(BadInputError, match="--chunk needs --quant float32, float16, dynamic or int8"):
        ConvertConfig(quant="int16x8", chunk=4)
    ConvertConfig(quant="auto", chunk=4)  # auto itself is allowed: it skips int16x8
