"""The training input pipeline: ``tf.data`` datasets of training chunks drawn across a panel's series.

The chunks come from ``panel.training_chunks``, which reads a few series at a time (lazily, for shards), so the
pipeline's memory does not grow with the number of series. Batches are assembled in numpy and handed to
``tf.data.Dataset.from_generator``, which prefetches the next batch while the current one trains.
"""

from __future__ import annotations

import numpy as np

from . import panel as P


def batches(source: P.PanelSource, members: list[P.Member], config, rng: np.random.Generator, batch: int,
            steps: int | None = None):
    """One epoch of ``(x, y, w)`` batches of ``batch`` chunks (the last one may be smaller).

    With ``steps``, exactly that many batches: the worker's series are passed over again when they run out (every
    worker of a multi-worker run must take the same number of steps, whatever its share of the series).
    """
    made = 0
    while True:
        xs, ys, ws = [], [], []
        for x, y, w in P.training_chunks(source, members, config, rng):
            xs.append(x)
            ys.append(y)
            ws.append(w)
            if len(xs) == batch:
                yield np.stack(xs), np.stack(ys), np.stack(ws)
                made += 1
                xs, ys, ws = [], [], []
                if steps is not None and made == steps:
                    return
        if xs:
            yield np.stack(xs), np.stack(ys), np.stack(ws)
            made += 1
            if steps is not None and made == steps:
                return
        if steps is None or made == 0:
            return


def training_dataset(source: P.PanelSource, members: list[P.Member], config, rng: np.random.Generator, batch: int,
                     inputs: int, outputs: int, steps: int | None = None):
    """``batches`` as a ``tf.data.Dataset`` of ``(x, y, w)``, prefetched; auto-sharding off (each worker already
    reads only its own series)."""
    import tensorflow as tf

    signature = (
        tf.TensorSpec((None, config.window, inputs), tf.float32),
        tf.TensorSpec((None, config.window, outputs), tf.float32),
        tf.TensorSpec((None, config.window), tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(
        lambda: batches(source, members, config, rng, batch, steps), output_signature=signature
    )
    count = steps if steps is not None else -(-P.chunk_count(members, config.window) // batch)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))  # Keras then knows where an epoch ends
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(1)
