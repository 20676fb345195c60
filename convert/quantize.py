"""Running the TFLite converter on the step function in each quantization mode, with calibration by name."""

from __future__ import annotations

import tempfile
import warnings

import numpy as np

from statelite.progress import no_progress
from statelite.quiet import filtered_stderr

from .config import IO, ConvertConfig, Quant
from .step_graph import X_NAME


def calibration_samples(
    step_fn, state_shapes: dict[str, tuple], xs: np.ndarray, batch: int, steps: int, headroom: float = 1.0,
    progress=None,
) -> list[dict]:
    """Representative inputs keyed by input name: model-unit rows rolled through the float step function.

    The state inputs must see the values they take in a real stream, so the rows are fed in order and each step's
    state outputs become the next step's inputs. With ``batch > 1`` the batch rows start at different offsets.

    With ``headroom > 1`` the same rows are rolled a second time stretched about each column's mid-range by that
    factor, so that every tensor's calibrated range (input, states, activations, output) also covers a stream that
    swings ``headroom`` times as wide as the training split: test data outside the training range is then not
    clipped (airline passengers, a growing seasonal swing: test differences reach 1.9x the training range).

    ``progress(done)`` is told the number of steps rolled so far (both rolls together).
    """
    samples = _rolled_samples(step_fn, state_shapes, xs, batch, steps, progress)
    if headroom > 1.0:
        mid = (xs.min(axis=0) + xs.max(axis=0)) / 2
        first = len(samples)
        samples += _rolled_samples(step_fn, state_shapes, mid + headroom * (xs - mid), batch, steps,
                                   progress and (lambda done: progress(first + done)))
    return samples


def _rolled_samples(step_fn, state_shapes: dict[str, tuple], xs: np.ndarray, batch: int, steps: int,
                    progress=None) -> list[dict]:
    import tensorflow as tf

    n = min(steps, len(xs))
    starts = np.linspace(0, max(len(xs) - n, 0), batch).astype(int)
    states = {name: np.zeros(shape, np.float32) for name, shape in state_shapes.items()}
    samples = []
    for t in range(n):
        if progress is not None and t % 25 == 0:
            progress(t)
        x = np.stack([xs[s + t] for s in starts]).astype(np.float32)
        sample = {X_NAME: x, **{k: v.copy() for k, v in states.items()}}
        samples.append(sample)
        out = step_fn(tf.constant(x), *[tf.constant(states[k]) for k in state_shapes])
        states = {k: out[f"{k}_out"].numpy() for k in state_shapes}
    if progress is not None:
        progress(n)
    return samples


def chunk_samples(samples: list[dict], chunk: int) -> list[dict]:
    """Calibration samples for the chunk signature: ``chunk`` consecutive step samples, with the state at the start."""
    out = []
    for t in range(0, len(samples) - chunk + 1, chunk):
        window = samples[t : t + chunk]
        out.append({**window[0], X_NAME: np.stack([s[X_NAME] for s in window], axis=1)})
    return out


def to_tflite(functions: dict, config: ConvertConfig, samples: list | None, progress=None) -> bytes:
    """Convert the signatures ``{key: tf.function}`` (``step`` first) to a TFLite flatbuffer in ``config.quant`` mode.

    ``samples`` are the representative dataset: dicts keyed by input name for one signature, or
    ``(signature key, dict)`` tuples for several. ``progress(what, done, total)`` is told the stage and, while the
    converter calibrates, how many samples it has taken.
    """
    import tensorflow as tf

    progress = progress or no_progress
    progress("converting: tracing the step function")

    module = tf.Module()
    for key, fn in functions.items():
        setattr(module, key, fn)
    with tempfile.TemporaryDirectory() as saved:
        signatures = {key: fn.get_concrete_function() for key, fn in functions.items()}
        tf.saved_model.save(module, saved, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=list(functions))
        progress("converting: the TFLite converter")
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        q = config.quant
        if q is not Quant.FLOAT32:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if q is Quant.FLOAT16:
            converter.target_spec.supported_types = [tf.float16]
        if q in (Quant.INT8, Quant.INT16X8):
            # The calibrator looks inputs up by signature name: a dict per sample, never a positional list.
            converter.representative_dataset = lambda: _counted(samples, progress)
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8
                if q is Quant.INT8
                else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        if config.io is IO.INT8:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        with warnings.catch_warnings(), filtered_stderr():
            # Calibration creates a tf.lite.Interpreter, which warns about its own deprecation on every conversion;
            # the converter prints its option dump (fully_quantize: ...) from C++ to fd 2, filtered out here.
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return converter.convert()


def _counted(samples: list, progress):
    """The samples one by one, telling ``progress`` how many the converter's calibrator has taken."""
    for i, sample in enumerate(samples):
        if i % 25 == 0:
            progress("converting: calibrating quantization ranges", i, len(samples))
        yield sample
    progress("converting: calibrating quantization ranges", len(samples), len(samples))
    progress("converting: quantizing")
