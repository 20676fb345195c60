"""Running the TFLite converter on the step function in each quantization mode, with calibration by name."""

from __future__ import annotations

import tempfile

import numpy as np

from .config import IO, ConvertConfig, Quant
from .step_graph import SIGNATURE_KEY, X_NAME


def calibration_samples(step_fn, state_shapes: dict[str, tuple], xs: np.ndarray, batch: int, steps: int) -> list[dict]:
    """Representative inputs keyed by input name: model-unit rows rolled through the float step function.

    The state inputs must see the values they take in a real stream, so the rows are fed in order and each step's
    state outputs become the next step's inputs. With ``batch > 1`` the batch rows start at different offsets.
    """
    import tensorflow as tf

    n = min(steps, len(xs))
    starts = np.linspace(0, max(len(xs) - n, 0), batch).astype(int)
    states = {name: np.zeros(shape, np.float32) for name, shape in state_shapes.items()}
    samples = []
    for t in range(n):
        x = np.stack([xs[s + t] for s in starts]).astype(np.float32)
        sample = {X_NAME: x, **{k: v.copy() for k, v in states.items()}}
        samples.append(sample)
        out = step_fn(tf.constant(x), *[tf.constant(states[k]) for k in state_shapes])
        states = {k: out[f"{k}_out"].numpy() for k in state_shapes}
    return samples


def to_tflite(step_fn, config: ConvertConfig, samples: list[dict] | None) -> bytes:
    """Convert ``step_fn`` to a TFLite flatbuffer in ``config.quant`` mode."""
    import tensorflow as tf

    module = tf.Module()
    module.step = step_fn
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(module, saved, signatures={SIGNATURE_KEY: step_fn.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[SIGNATURE_KEY])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        q = config.quant
        if q is not Quant.FLOAT32:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if q is Quant.FLOAT16:
            converter.target_spec.supported_types = [tf.float16]
        if q in (Quant.INT8, Quant.INT16X8):
            # The calibrator looks inputs up by signature name: a dict per sample, never a positional list.
            converter.representative_dataset = lambda: iter(samples)
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8
                if q is Quant.INT8
                else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        if config.io is IO.INT8:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()
