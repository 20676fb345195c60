"""Training beyond one process: ``--strategy multi-worker`` with two real worker processes on localhost
(tf.distribute.MultiWorkerMirroredStrategy from TF_CONFIG), against a single-process run with the same global batch."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from statelite.errors import BadInputError

pytestmark = pytest.mark.tf


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _panel_csv(path):
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sensor", "value"])
        for k in range(4):
            walk = np.cumsum(rng.normal(0, 1, 240)) * (k + 1) + 100 * k
            writer.writerows([f"s{k}", f"{v:.5f}"] for v in walk)
    return str(path)


def _command(data, out, *extra):
    return [sys.executable, "-m", "statelite", "train", data, "--target", "value", "--series-column", "sensor",
            "--units", "8", "--window", "20", "--horizon", "2", "--epochs", "2", "--batch-size", "8",
            "--out", str(out), *extra]


def _env(tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _start_workers(data, tmp_path, *extra, count=2):
    """``count`` worker processes of one multi-worker run on localhost, each writing to ``tmp_path/run<i>``."""
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(count)]}
    return [
        subprocess.Popen(
            _command(data, tmp_path / f"run{i}", "--strategy", "multi-worker", *extra),
            env=_env({"cluster": cluster, "task": {"type": "worker", "index": i}}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(count)
    ]


def _best_val_loss(run_dir):
    return json.loads((run_dir / "run.json").read_text())["metrics"]["best_val_loss"]


def test_two_worker_processes_end_with_the_same_weights_and_the_single_process_loss(tmp_path):
    pytest.importorskip("tensorflow")
    data = _panel_csv(tmp_path / "panel.csv")
    workers = _start_workers(data, tmp_path)
    single = subprocess.run(_command(data, tmp_path / "single"), env=_env(), capture_output=True, text=True,
                            timeout=600)
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
    assert single.returncode == 0, single.stderr[-3000:]
    # the chief (worker 0) alone writes the run folder; worker 1 says where its weights ended
    chief = json.loads((tmp_path / "run0" / "run.json").read_text())
    assert not (tmp_path / "run1").exists()
    digest = chief["metrics"]["throughput"]["weights_sha256"]
    assert f"worker 1/2: done, weights sha256 {digest}" in outputs[1][0]
    assert chief["metrics"]["throughput"]["workers"] == 2
    # each worker read half the series, and together they took the single process's global batch: the validation
    # losses (the same held-out chunks, the same measure) agree; the batches mix the series differently
    assert _best_val_loss(tmp_path / "run0") == pytest.approx(_best_val_loss(tmp_path / "single"), rel=0.15)
    assert not any(line.startswith("Traceback") for line in outputs[0][1].splitlines())


def test_a_lost_worker_stops_the_run_with_one_line_and_writes_nothing(tmp_path):
    pytest.importorskip("tensorflow")
    workers = _start_workers(_panel_csv(tmp_path / "panel.csv"), tmp_path, "--epochs", "500", "--patience", "500")
    try:
        assert workers[0].stdout.readline().startswith("epoch   1/500")  # both are training
        workers[1].kill()
        out, err = workers[0].communicate(timeout=300)
    finally:
        for w in workers:
            w.kill()
    assert workers[0].returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: worker 0/2: lost the other workers of the run") and "restart every worker" in last
    assert "Traceback" not in err and not (tmp_path / "run0").exists()


@pytest.mark.parametrize("tf_config, words", [
    (None, "expected TF_CONFIG for --strategy multi-worker"),
    ("{not json", "expected TF_CONFIG with cluster.worker"),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}, r"task.index in \[0, 1\]"),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, "worker tasks only"),
])
def test_a_bad_tf_config_is_one_clear_line(monkeypatch, tf_config, words):
    from statelite.train.distribute import tf_config_worker

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config if isinstance(tf_config, str) else json.dumps(tf_config))
    with pytest.raises(BadInputError, match=words):
        tf_config_worker()


def test_the_worker_index_and_count_come_from_tf_config(monkeypatch):
    from statelite.train.distribute import tf_config_worker

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2", "c:3"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert tf_config_worker() == (1, 3)


def test_mirrored_strategy_trains_with_the_distributed_step(tmp_path):
    pytest.importorskip("tensorflow")
    from statelite.train import TrainConfig, train

    config = TrainConfig(out=str(tmp_path / "run"), data=_panel_csv(tmp_path / "panel.csv"), targets=("value",),
                         series_column="sensor", units=8, window=20, horizon=2, epochs=2, batch_size=8,
                         strategy="mirrored")
    result = train(config)
    # one CPU: one replica, the custom step under strategy.run; the chief (the only worker) writes the run
    assert result.metrics["throughput"]["strategy"] == "mirrored" and result.metrics["throughput"]["workers"] == 1
    assert (tmp_path / "run" / "model.keras").exists()
    assert all(np.isfinite(h["loss"]) for h in result.history) and result.history[-1]["loss"] < result.history[0]["loss"]
