"""The one-step graph: cell arithmetic over constant weights, state in and out as named signature tensors.

Why rebuild the cells instead of converting the Keras layers: a Keras GRU/LSTM called on one step still lowers to a
``While`` loop unless unrolled (and full-int8 calibration of that loop can segfault in TF 2.21), and converting a
function that reads Keras variables can leave ``READ_VARIABLE`` ops. Constants avoid both. The signature is exported
through a SavedModel because ``from_concrete_functions`` writes no SignatureDef (and calibration then fails), and
the function returns a dict so the output names are ours rather than ``output_0``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from statelite.metadata import CHUNK_SIGNATURE_KEY  # noqa: F401 (re-exported for the converter)
from statelite.transform import Transform

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


def fold_input_scaling(layer: LayerWeights, transform: Transform) -> LayerWeights:
    """The first layer with the feature scaler folded in, so the graph takes raw rows (raw differences).

    ``((x - off) * inv) @ K + b == x @ (inv[:, None] * K) + (b - (off * inv) @ K)``, computed in float64.
    """
    k = layer.kernel.astype(np.float64)
    inv, off = transform.f_inv_scale, transform.f_offset
    shift = (off * inv) @ k
    if layer.cell == "gru" and layer.reset_after:  # bias rows: input, recurrent
        bias = np.zeros((2, k.shape[1])) if layer.bias is None else layer.bias.astype(np.float64)
        bias = np.stack([bias[0] - shift, bias[1]])
    else:
        bias = (0.0 if layer.bias is None else layer.bias.astype(np.float64)) - shift
    return dataclasses.replace(layer, kernel=(inv[:, None] * k).astype(np.float32), bias=bias.astype(np.float32))


def fold_output_scaling(head: tuple[DenseWeights, ...], transform: Transform) -> tuple[DenseWeights, ...] | None:
    """The head with the output map folded into its last (linear) Dense layer; None when it cannot be folded."""
    if not head or head[-1].activation != "linear":
        return None
    m, c = transform.output_map()
    last = head[-1]
    bias = np.zeros(last.kernel.shape[1]) if last.bias is None else last.bias.astype(np.float64)
    kernel = (last.kernel.astype(np.float64) @ m).astype(np.float32)
    return head[:-1] + (DenseWeights(kernel, (bias @ m + c).astype(np.float32), "linear"),)


def build_step_function(
    layers: tuple[LayerWeights, ...],
    head: tuple[DenseWeights, ...],
    n_features: int,
    batch: int,
    transform: Transform | None = None,
    chunk: int = 1,
):
    """A ``tf.function`` computing one step: ``(x, *states) -> {"y": ..., "<state>_out": ...}``.

    Where ``transform.graph_scales_inputs`` the feature scaler is folded into the first layer (the graph takes raw
    rows, or raw first differences); where ``transform.graph_scales_outputs`` the target unscaling and cumulative sum
    of predicted differences are folded into the head (the graph returns raw forecasts, or raw cumulative
    differences), so the host does no arithmetic beyond differencing.

    With ``chunk > 1`` the function takes ``x`` of shape ``[batch, chunk, features]``, unrolls ``chunk`` steps
    (constant weights, no loop op) and returns ``y`` of shape ``[batch, chunk, outputs]`` and the final states.

    Returns:
        ``(function, state names)``.
    """
    import tensorflow as tf

    post = None
    if transform is not None and transform.graph_scales_inputs:
        layers = (fold_input_scaling(layers[0], transform),) + tuple(layers[1:])
    if transform is not None and transform.graph_scales_outputs:
        folded = fold_output_scaling(head, transform)
        if folded is None:
            post = transform.output_map()
        else:
            head = folded

    names = state_names(layers)
    x_shape = [batch, n_features] if chunk == 1 else [batch, chunk, n_features]
    specs = [tf.TensorSpec(x_shape, tf.float32, name=X_NAME)]
    specs += [tf.TensorSpec([batch, layers[i].units], tf.float32, name=n) for n, i, _ in names]

    def one_step(x, states):
        new_states, pos, h = [], 0, x
        for layer in layers:
            n = len(layer.state_kinds)
            new = _cell(tf, layer, h, list(states[pos : pos + n]))
            new_states += new
            h, pos = new[0], pos + n
        for dense in head:
            h = tf.matmul(h, tf.constant(dense.kernel))
            if dense.bias is not None:
                h = h + dense.bias
            h = _act(tf, dense.activation)(h)
        if post is not None:
            h = tf.matmul(h, tf.constant(post[0].astype(np.float32))) + post[1].astype(np.float32)
        return h, new_states

    def step(x, *states):
        if chunk == 1:
            y, states = one_step(x, list(states))
        else:
            ys = []
            for x_t in tf.unstack(x, num=chunk, axis=1):
                y_t, states = one_step(x_t, list(states))
                ys.append(y_t)
            y = tf.stack(ys, axis=1)
        out = {output_name(name): tf.identity(v, name=output_name(name)) for (name, _, _), v in zip(names, states)}
        out[Y_NAME] = tf.identity(y, name=Y_NAME)
        return out

    return tf.function(step, input_signature=specs), [n for n, _, _ in names]
