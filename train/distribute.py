"""Training on ``tf.distribute``: the strategy for ``--strategy``, which worker this process is, and the distributed
training step.

* ``none``: TensorFlow's default strategy and Keras's own ``fit``.
* ``mirrored``: ``MirroredStrategy`` over this machine's devices.
* ``multi-worker``: ``MultiWorkerMirroredStrategy``, the cluster and this worker's index from ``TF_CONFIG``. Each
  worker reads its own share of the series (``panel.shard``) and the chief (worker 0) alone writes the run folder.

Keras 3's ``fit`` does not accept a multi-worker distributed dataset (keras-team/keras#20585), so both distributed
strategies train with a custom step under ``strategy.run``: the loss of each replica's chunks is their weighted
squared error over the sum of the weights of the *global* batch (an all-reduce), so the summed gradients are those
of the single-process loss on the same global batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from statelite.errors import BadInputError, WorkerLostError
from statelite.options import Strategy


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process in the run: ``index`` of ``count`` workers; the chief is worker 0."""

    strategy: object  # a tf.distribute.Strategy
    kind: Strategy
    index: int = 0
    count: int = 1

    @property
    def chief(self) -> bool:
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.kind is not Strategy.NONE


def tf_config_worker() -> tuple[int, int]:
    """``(index, count)`` of this worker from ``TF_CONFIG``.

    Raises:
        BadInputError: TF_CONFIG missing, not JSON, or without a worker cluster and task.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise BadInputError(
            "expected TF_CONFIG for --strategy multi-worker (the cluster's workers and this one's index), Received: "
            'none; e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": '
            '"worker", "index": 0}}\''
        )
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
        if task.get("type") not in ("worker", "chief") or not isinstance(workers, list) or not workers:
            raise ValueError("task type or worker list")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInputError(
            f"expected TF_CONFIG with cluster.worker (a list of host:port) and task (type worker, index), "
            f"Received: {text[:200]!r} ({exc})"
        ) from None
    if task.get("type") == "chief":
        raise BadInputError("expected worker tasks only in TF_CONFIG (worker 0 is the chief), Received: a chief task")
    if not 0 <= index < len(workers):
        raise BadInputError(f"expected task.index in [0, {len(workers) - 1}] in TF_CONFIG, Received: {index}")
    return index, len(workers)


def make_worker(kind: Strategy) -> Worker:
    """The strategy and this process's place in it. Call before any other TensorFlow op (multi-worker needs it)."""
    import tensorflow as tf

    kind = Strategy(kind)
    if kind is Strategy.NONE:
        return Worker(tf.distribute.get_strategy(), kind)
    if kind is Strategy.MIRRORED:
        return Worker(tf.distribute.MirroredStrategy(), kind)
    index, count = tf_config_worker()
    return Worker(tf.distribute.MultiWorkerMirroredStrategy(), kind, index, count)


def train_step(worker: Worker, model, optimizer):
    """A ``tf.function`` taking one distributed ``(x, y, w)`` batch, applying its gradients and returning the global
    batch's weighted mean squared error."""
    import tensorflow as tf

    strategy = worker.strategy

    def replica_step(x, y, w):
        total = tf.distribute.get_replica_context().all_reduce("sum", tf.reduce_sum(w))
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            per_step = tf.reduce_mean(tf.square(pred - y), axis=-1)
            loss = tf.reduce_sum(per_step * w) / tf.maximum(total, 1.0)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def step(x, y, w):
        return strategy.reduce("sum", strategy.run(replica_step, args=(x, y, w)), axis=None)

    return step


def distribute(worker: Worker, dataset):
    """The dataset as the strategy feeds it (each worker's own dataset, already its share)."""
    return worker.strategy.experimental_distribute_dataset(dataset)


def run_epoch(worker: Worker, step, dataset) -> list[float]:
    """One epoch of ``step`` over the distributed ``dataset``: the global loss of each step.

    Raises:
        WorkerLostError: another worker failed or cannot be reached (TensorFlow's collective ops report it); the run
            stops on every worker and nothing is written.
    """
    import tensorflow as tf

    try:
        losses = [step(*batch) for batch in distribute(worker, dataset)]  # read once at the end: no sync per step
        return [float(loss) for loss in losses]
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as exc:
        raise _lost(worker, exc) from None


def all_sum(worker: Worker, values: list[float]) -> list[float]:
    """``values`` added across every worker (a collective all-reduce; each worker passes its own)."""
    import tensorflow as tf

    strategy = worker.strategy

    @tf.function
    def reduce(x):
        return strategy.reduce("sum", strategy.run(tf.identity, args=(x,)), axis=None)

    try:
        return [float(v) for v in reduce(tf.constant(values, tf.float64)).numpy()]
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as exc:
        raise _lost(worker, exc) from None


def _lost(worker: Worker, exc) -> WorkerLostError:
    first = re.sub(r"\{\{[^}]*\}\}\s*", "", " ".join(str(exc.message).split()))[:200]
    return WorkerLostError(
        f"worker {worker.index}/{worker.count}: lost the other workers of the run ({first}); a multi-worker run "
        f"stops when any worker fails and writes nothing: restart every worker"
    )


def weights_digest(model) -> str:
    """SHA-256 of the model's weights (float32 bytes in order): equal on every worker after a synchronous run."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return h.hexdigest()
