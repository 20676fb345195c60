"""The one-step graph: cell arithmetic over constant weights, state in and out as named signature tensors.

Why rebuild the cells instead of converting the Keras layers: a Keras GRU/LSTM called on one step still lowers to a
``While`` loop unless unrolled (and full-int8 calibration of that loop can segfault in TF 2.21), and converting a
function that reads Keras variables can leave ``READ_VARIABLE`` ops. Constants avoid both. The signature is exported
through a SavedModel because ``from_concrete_functions`` writes no SignatureDef (and calibration then fails), and
the function returns a dict so the output names are ours rather than ``output_0``.
"""

from __future__ import annotations

import numpy as np

from .source import DenseWeights, LayerWeights

SIGNATURE_KEY = "step"
X_NAME = "x"
Y_NAME = "y"


def state_names(layers: tuple[LayerWeights, ...]) -> list[tuple[str, int, str]]:
    """``(name, layer, kind)`` of every state tensor, in a fixed order: ``h_0``, ``c_0`` (LSTM), ``h_1``, ..."""
    return [(f"{kind}_{i}", i, kind) for i, layer in enumerate(layers) for kind in layer.state_kinds]


def output_name(state: str) -> str:
    return f"{state}_out"


def _act(tf, name: str):
    return {"tanh": tf.tanh, "sigmoid": tf.sigmoid, "relu": tf.nn.relu, "linear": lambda v: v}[name]


def _cell(tf, layer: LayerWeights, x, states):
    """One time step of a Keras cell, with Keras's equations and gate order."""
    act = _act(tf, layer.activation)
    k = tf.constant(layer.kernel)
    r = tf.constant(layer.recurrent_kernel)
    if layer.cell == "simplernn":
        z = tf.matmul(x, k) + tf.matmul(states[0], r)
        if layer.bias is not None:
            z = z + layer.bias
        return [act(z)]
    rec = _act(tf, layer.recurrent_activation)
    if layer.cell == "lstm":
        h, c = states
        z = tf.matmul(x, k) + tf.matmul(h, r)
        if layer.bias is not None:
            z = z + layer.bias
        zi, zf, zc, zo = tf.split(z, 4, axis=1)
        c_new = rec(zf) * c + rec(zi) * act(zc)
        return [rec(zo) * act(c_new), c_new]
    # GRU
    h = states[0]
    u = layer.units
    if layer.reset_after:
        b_in, b_rec = (layer.bias[0], layer.bias[1]) if layer.bias is not None else (0.0, 0.0)
        mx = tf.matmul(x, k) + b_in
        mh = tf.matmul(h, r) + b_rec
        xz, xr, xh = tf.split(mx, 3, axis=1)
        hz, hr, hh = tf.split(mh, 3, axis=1)
        zg = rec(xz + hz)
        rg = rec(xr + hr)
        cand = act(xh + rg * hh)
    else:
        b = layer.bias if layer.bias is not None else np.zeros(3 * u, np.float32)
        mx = tf.matmul(x, k) + b
        xz, xr, xh = tf.split(mx, 3, axis=1)
        hz_hr = tf.matmul(h, tf.constant(layer.recurrent_kernel[:, : 2 * u]))
        hz, hr = tf.split(hz_hr, 2, axis=1)
        zg = rec(xz + hz)
        rg = rec(xr + hr)
        cand = act(xh + tf.matmul(rg * h, tf.constant(layer.recurrent_kernel[:, 2 * u :])))
    return [zg * h + (1.0 - zg) * cand]


def build_step_function(layers: tuple[LayerWeights, ...], head: tuple[DenseWeights, ...], n_features: int, batch: int):
    """A ``tf.function`` computing one step: ``(x, *states) -> {"y": ..., "<state>_out": ...}``."""
    import tensorflow as tf

    names = state_names(layers)
    specs = [tf.TensorSpec([batch, n_features], tf.float32, name=X_NAME)]
    specs += [tf.TensorSpec([batch, layers[i].units], tf.float32, name=n) for n, i, _ in names]

    def step(x, *states):
        out, pos, h = {}, 0, x
        for layer in layers:
            n = len(layer.state_kinds)
            new = _cell(tf, layer, h, list(states[pos : pos + n]))
            for (name, _, _), value in zip(names[pos : pos + n], new):
                out[output_name(name)] = tf.identity(value, name=output_name(name))
            h, pos = new[0], pos + n
        for dense in head:
            h = tf.matmul(h, tf.constant(dense.kernel))
            if dense.bias is not None:
                h = h + dense.bias
            h = _act(tf, dense.activation)(h)
        out[Y_NAME] = tf.identity(h, name=Y_NAME)
        return out

    return tf.function(step, input_signature=specs), [n for n, _, _ in names]
