"""``statelite bench`` (per-step latency) and ``statelite inspect`` (what the file holds, without an interpreter)."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner
from device_models import device_model  # noqa: F401 (a fixture)

from statelite import BadInputError, read_metadata
from statelite.bench import BenchReport, bench, is_emulated
from statelite.cli import main
from statelite.inspection import format_inspection, inspect_model
from statelite.metadata import read_model_file


def test_bench_report(device_model):
    model = device_model("gru")
    r = bench(model, steps=60, warmup=5, threads=1)
    assert isinstance(r, BenchReport)
    assert r.steps == 60 and r.warmup == 5 and r.threads == 1
    assert 0 < r.min_us <= r.median_us <= r.p90_us <= r.p99_us <= r.max_us
    assert r.steps_per_s == pytest.approx(1e6 / r.mean_us, rel=1e-6)
    assert r.model_size == model.stat().st_size
    assert r.peak_rss_kib is None or r.peak_rss_kib > 1000
    assert r.backend_version and r.machine


def test_bench_differencing_model(device_model):
    r = bench(device_model("differencing"), steps=20, warmup=0)
    assert r.median_us > 0


def test_bench_cli_text_and_json(device_model):
    model = str(device_model("int8"))
    result = CliRunner().invoke(main, ["bench", model, "--steps", "30", "--warmup", "3"])
    assert result.exit_code == 0, result.output
    for label in ("per step     median", "p90", "p99", "steps/s", "peak RSS", "interpreter", "machine"):
        assert label in result.stdout
    result = CliRunner().invoke(main, ["bench", model, "--steps", "30", "--json"])
    assert result.exit_code == 0
    d = json.loads(result.stdout)
    assert d["steps"] == 30 and d["median_us"] > 0 and isinstance(d["emulated"], bool)


def test_bench_json_round_trips_and_a_tensorflow_process_is_labelled(device_model):
    r = bench(device_model("gru"), steps=20, warmup=2)
    assert BenchReport.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert r.tensorflow_loaded == ("tensorflow" in sys.modules)
    import dataclasses

    in_tf = dataclasses.replace(r, tensorflow_loaded=True, peak_rss_kib=800 * 1024)
    assert "800.0 MiB (TensorFlow is loaded in this process: not a device figure" in in_tf.format()
    assert "TensorFlow" not in dataclasses.replace(r, tensorflow_loaded=False).format()


def test_bench_bad_options(device_model):
    with pytest.raises(BadInputError, match="steps must be at least 1; received steps=0"):
        bench(device_model("gru"), steps=0)
    result = CliRunner().invoke(main, ["bench", str(device_model("gru")), "--warmup", "-1"])
    assert result.exit_code == 2 and "warmup must be 0 or more; received warmup=-1" in result.stderr


@pytest.mark.parametrize("streams", [None, 3])
def test_bench_pool(reference_model, streams):
    model = reference_model("gru_float32_b8.tflite")
    r = bench(model, steps=40, warmup=3, threads=1, streams=streams)
    n = streams or 8
    assert (r.mode, r.streams, r.capacity, r.steps) == ("pool", n, 8, 40)
    assert 0 < r.min_us <= r.median_us <= r.p90_us <= r.p99_us <= r.max_us
    assert r.steps_per_s == pytest.approx(n * 1e6 / r.mean_us, rel=1e-6), "stream steps: streams x ticks/s"
    assert r.model_size == model.stat().st_size and r.backend_version
    text = r.format()
    assert f"streams      {n} in one StreamPool of 8 lanes, one invoke per tick" in text
    assert "per tick     median" in text and f"steps/s ({n} streams x" in text


def test_bench_separate_runners(reference_model):
    r = bench(reference_model("lstm_int8.tflite"), steps=30, warmup=2, streams=4)
    assert (r.mode, r.streams, r.capacity) == ("runners", 4, 1)
    assert r.steps_per_s == pytest.approx(4 * 1e6 / r.mean_us, rel=1e-6)
    assert "4 separate StatefulRunners stepped round-robin, 4 invokes per tick" in r.format()
    one = bench(reference_model("lstm_int8.tflite"), steps=30, warmup=2)
    assert (one.mode, one.streams) == ("runner", 1) and "per step     median" in one.format()


def test_bench_streams_cli_and_errors(reference_model):
    b8, b1 = str(reference_model("lstm_int8_b8.tflite")), str(reference_model("gru_float32.tflite"))
    for model, mode in ((b8, "pool"), (b1, "runners")):
        args = ["bench", model, "--streams", "8", "--steps", "20", "--warmup", "1", "--json"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        d = json.loads(result.stdout)
        assert (d["streams"], d["mode"], d["steps"]) == (8, mode, 20)
        assert d["steps_per_s"] == pytest.approx(8e6 / d["mean_us"], rel=1e-6)
    result = CliRunner().invoke(main, ["bench", b8, "--streams", "9"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        "Error: streams must be at most the model's batch, 8 (one StreamPool lane each); received streams=9"
        in result.stderr
    )
    result = CliRunner().invoke(main, ["bench", b1, "--streams", "0"])
    assert result.exit_code == 2 and "streams must be at least 1; received streams=0" in result.stderr
    result = CliRunner().invoke(main, ["bench", b1, "--steps", "5", "--json"])
    assert json.loads(result.stdout)["streams"] == 1


def test_emulation_flag(monkeypatch):
    monkeypatch.setenv("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu")
    assert is_emulated()
    monkeypatch.delenv("QEMU_LD_PREFIX")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.delenv("STATELITE_EMULATED", raising=False)
    assert not is_emulated()
    monkeypatch.setenv("STATELITE_EMULATED", "1")
    assert is_emulated()


@pytest.mark.parametrize("kind", ["gru", "int8", "lstm"])
def test_inspect_matches_file(device_model, kind):
    model = device_model(kind)
    md = read_metadata(model)
    _, info = read_model_file(model)
    d = inspect_model(model)
    assert d["size"] == model.stat().st_size and len(d["sha256"]) == 64
    assert d["signature"] == {"key": md.signature_key, "present": True, "signatures": [md.signature_key]}
    assert [s["name"] for s in d["states"]] == [s.name for s in md.states]
    assert [(s["input"], s["output"]) for s in d["states"]] == [(s.input.name, s.output.name) for s in md.states]
    assert [t["name"] for t in d["inputs"]] == [md.x.name] + [s.input.name for s in md.states]
    assert all(t["index"] is not None for t in d["inputs"] + d["outputs"])
    assert [(o["name"], o["version"]) for o in d["operators"]] == [(o.name, o.version) for o in info.used_operators]
    assert d["metadata"]["quant"] == md.quant and d["parity"] == md.parity
    json.dumps(d)  # JSON-ready


def test_inspect_cli(device_model):
    model = device_model("lstm")
    md = read_metadata(model)
    result = CliRunner().invoke(main, ["inspect", str(model)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text == format_inspection(inspect_model(model)) + "\n"
    assert "state pairs" in text and "c_0_out -> c_0" in text
    assert "FULLY_CONNECTED v" in text and f"quantization {md.quant}" in text
    assert "parity       PASS" in text
    result = CliRunner().invoke(main, ["inspect", str(model), "--json"])
    assert json.loads(result.stdout)["states"][0]["name"] == md.states[0].name
