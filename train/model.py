"""The Keras forecaster: stacked recurrent layers over time and one Dense head applied at every step.

Input ``(batch, time, F)`` in model units; output ``(batch, time, H*T)``, index ``k*T + j`` the scaled forecast of
target ``j`` at ``t + k + 1``. Layers keep Keras defaults (activations, GRU ``reset_after=True``) and are never
``stateful``: the converter turns each layer's state into named one-step inputs and outputs.
"""

from __future__ import annotations

import keras

from .config import Cell

_LAYERS = {Cell.GRU: keras.layers.GRU, Cell.LSTM: keras.layers.LSTM, Cell.SIMPLERNN: keras.layers.SimpleRNN}


def build_model(
    features: int, outputs: int, cell: Cell | str, units: int, layers: int, dropout: float = 0.0
) -> keras.Model:
    """Build (not compile) the forecaster.

    Args:
        features: F, model inputs per step.
        outputs: H*T, model outputs per step.
        cell, units, layers, dropout: as in ``TrainConfig``; dropout follows each recurrent layer when > 0.

    Returns:
        A functional ``keras.Model`` with layers named ``rnn_0``, ``dropout_0``, ..., ``head``.
    """
    layer = _LAYERS[Cell(cell)]
    inputs = keras.Input((None, features), name="x")
    x = inputs
    for i in range(layers):
        x = layer(units, return_sequences=True, name=f"rnn_{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    y = keras.layers.Dense(outputs, name="head")(x)
    return keras.Model(inputs, y, name=f"statelite_{Cell(cell).value}")
