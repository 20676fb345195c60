"""What goes wrong on devices: broken or foreign model files, operators newer than the interpreter, broken state
files, bad rows, closed pipes, SIGKILL while saving. Each ends in one clear line and the right exit code."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner, Result
from device_models import (  # noqa: F401 (device_model is a fixture)
    CLI,
    ENV,
    MODELS,
    device_model,
    golden_path,
    patch_operator_version,
    read_output,
    run_cli,
    sample_rows,
    strip_statelite_metadata,
    write_csv,
)

from statelite import IncompatibleModelError, StatefulRunner, read_metadata
from statelite.cli import main
from statelite.state_file import load_state, save_state

COMMANDS = ["run", "verify", "bench", "inspect"]


@pytest.fixture
def inputs(tmp_path, device_model):
    """A float32 model, a CSV of five rows of its features, and its golden trace."""
    model = device_model("gru")
    csv = write_csv(tmp_path / "in.csv", list(read_metadata(model).features), sample_rows(model, 5))
    return model, csv, golden_path(model)


def invoke(command: str, model, csv, golden) -> Result:
    extra = {
        "run": ["--input", str(csv)],
        "verify": ["--golden", str(golden)],
        "bench": ["--steps", "5", "--warmup", "0"],
        "inspect": [],
    }[command]
    return CliRunner().invoke(main, [command, str(model), *extra])


def assert_one_line_error(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- model files ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_model(tmp_path, inputs, command, keep):
    model, csv, golden = inputs
    data = model.read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: int(len(data) * keep)])
    result = invoke(command, bad, csv, golden)
    assert_one_line_error(result, 2, str(bad))
    assert "truncated or corrupt" in result.stderr or "could not load" in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_not_a_tflite_file(tmp_path, inputs, command):
    model, csv, golden = inputs
    result = invoke(command, csv, csv, golden)
    assert_one_line_error(result, 2, f"{csv} is not a TFLite model", "expected the flatbuffer identifier b'TFL3'")


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_model(tmp_path, inputs, command):
    _, csv, golden = inputs
    result = invoke(command, tmp_path / "none.tflite", csv, golden)
    assert_one_line_error(result, 2, f"model file not found: {tmp_path / 'none.tflite'}")


@pytest.mark.parametrize("command", COMMANDS)
def test_tflite_without_statelite_metadata(tmp_path, inputs, command):
    model, csv, golden = inputs
    bad = tmp_path / "foreign.tflite"
    bad.write_bytes(strip_statelite_metadata(model.read_bytes()))
    result = invoke(command, bad, csv, golden)
    assert_one_line_error(result, 2, "is a TFLite model without statelite metadata", "other_md_", "statelite convert")


@pytest.mark.tf
def test_plain_tf_lite_model(inputs, device_model):
    _, csv, golden = inputs
    plain = device_model("plain")
    for command in COMMANDS:
        result = invoke(command, plain, csv, golden)
        assert_one_line_error(result, 2, "is a TFLite model without statelite metadata")


def test_operator_newer_than_interpreter(tmp_path, inputs, device_model):
    """A real interpreter refusing a real file: one operator's version byte-patched to 99."""
    _, csv, golden = inputs
    data, index = patch_operator_version(device_model("int8").read_bytes(), 99)
    bad = tmp_path / "v99.tflite"
    bad.write_bytes(data)
    from statelite.metadata import read_model_file

    op = read_model_file(bad)[1].operator_codes[index]
    assert op.version == 99
    with pytest.raises(IncompatibleModelError, match=f"uses operator {op.name} version 99, which this interpreter"):
        StatefulRunner(bad)
    for command in ("run", "verify", "bench"):
        assert_one_line_error(invoke(command, bad, csv, golden), 2, f"uses operator {op.name} version 99")
    # inspect reads the file without an interpreter, so it shows the culprit.
    result = invoke("inspect", bad, csv, golden)
    assert result.exit_code == 0 and f"{op.name} v99" in result.stdout


@pytest.mark.tflite214
def test_dynamic_range_model_under_tflite_runtime_214(tfl214, device_model):
    """TF 2.21 writes FULLY_CONNECTED v12 for dynamic-range weights; tflite-runtime 2.14 cannot load it."""
    model = device_model("dynamic_fc12")
    from statelite.metadata import read_model_file

    assert ("FULLY_CONNECTED", 12) in [(o.name, o.version) for o in read_model_file(model)[1].used_operators]
    cli = "from statelite.cli import main; main()"
    for command in (["verify", str(model)], ["bench", str(model), "--steps", "5"]):
        result = tfl214(cli, *command)
        assert result.returncode == 2, result.stderr
        assert "uses operator FULLY_CONNECTED version 12, which this interpreter (tflite-runtime 2.14.0)" in result.stderr
        assert "--target tflite-runtime-2.14" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.tflite214
def test_int8_model_verifies_under_tflite_runtime_214(tfl214, device_model):
    ref = MODELS / "gru_int8_tfl214.tflite"
    model = ref if ref.exists() and golden_path(ref).exists() else device_model("int8")
    result = tfl214("from statelite.cli import main; main()", "verify", str(model))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "interpreter  tflite-runtime 2.14.0" in result.stdout and "result       PASS" in result.stdout


# -- state files -----------------------------------------------------------------------------------------------------


def _run_with_state(model, csv, state):
    return CliRunner().invoke(main, ["run", str(model), "--input", str(csv), "--state", str(state)])


def test_state_truncated(tmp_path, inputs):
    model, csv, _ = inputs
    state = tmp_path / "s.npz"
    assert _run_with_state(model, csv, state).exit_code == 0
    state.write_bytes(state.read_bytes()[:-30])
    before = state.read_bytes()
    result = _run_with_state(model, csv, state)
    assert_one_line_error(result, 2, f"{state} is not a readable statelite state file", "truncated or corrupt")
    assert result.stdout == "" and state.read_bytes() == before, "a bad state file is never overwritten"


def test_state_from_another_model(tmp_path, inputs, device_model):
    model, csv, _ = inputs
    other = StatefulRunner(device_model("lstm"))
    state = tmp_path / "s.npz"
    other.save_state(state)
    result = _run_with_state(model, csv, state)
    assert_one_line_error(
        result, 2, "holds the state of another model", other.model_sha256[:12], StatefulRunner(model).model_sha256[:12]
    )
    assert load_state(state, other.model_sha256, {k: v.shape for k, v in other.state.items()})


def test_state_wrong_shape(tmp_path, inputs):
    model, csv, _ = inputs
    runner = StatefulRunner(model)
    wrong = {k: np.zeros((1, v.shape[-1] + 3), np.float32) for k, v in runner.state.items()}
    state = tmp_path / "s.npz"
    save_state(state, wrong, runner.model_sha256)
    name = next(iter(runner.state))
    result = _run_with_state(model, csv, state)
    assert_one_line_error(result, 2, "does not fit this model", f"{name} expected {runner.state[name].shape}")


# -- rows and pipes, in a real process --------------------------------------------------------------------------------


def test_bad_rows_and_empty_input_in_a_process(tmp_path, inputs):
    model, _, _ = inputs
    md = read_metadata(model)
    n = len(md.features)
    good = ",".join(["1.5"] * n)
    text = "\n".join([",".join(md.features), good, ",".join(["nan"] * n), ",".join(["oops"] * n), good]) + "\n"
    result = run_cli("run", str(model), input=text)
    assert result.returncode == 0, result.stderr
    assert [r[0] for r in read_output(result.stdout)[1]] == ["2", "5"]
    assert "stdin line 3: column" in result.stderr and "every value must be finite" in result.stderr
    assert "stdin line 4: column" in result.stderr and "not a number" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("run", str(model), input="")
    assert result.returncode == 0 and "stdin is empty: no rows to forecast" in result.stderr
    assert result.stdout.startswith("row,") and "Traceback" not in result.stderr


def test_closed_output_pipe(tmp_path, inputs):
    """``statelite run ... | head -3`` ends quietly with exit 0 and the state saved."""
    model, _, _ = inputs
    md = read_metadata(model)
    csv = write_csv(tmp_path / "long.csv", list(md.features), sample_rows(model, 20000))
    state, err = tmp_path / "s.npz", tmp_path / "err.txt"
    command = " ".join(f"'{a}'" for a in [*CLI, "run", str(model), "--input", str(csv), "--state", str(state)])
    shell = f"set -o pipefail; {command} 2>'{err}' | head -3; echo \"status ${{PIPESTATUS[0]}}\""
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=ENV, timeout=120)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("row,") and len(lines) == 4 and lines[-1] == "status 0", done.stdout
    stderr = err.read_text()
    for noise in ("Traceback", "BrokenPipe", "Exception ignored", "Error"):
        assert noise not in stderr, stderr
    assert state.exists()


def test_sigterm_stops_cleanly_with_state_saved(tmp_path, inputs):
    model, _, _ = inputs
    md = read_metadata(model)
    state = tmp_path / "s.npz"
    p = subprocess.Popen(
        [*CLI, "run", str(model), "--state", str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=ENV,
    )
    xs = sample_rows(model, 4)
    p.stdin.write(",".join(md.features) + "\n" + "".join(",".join(repr(float(v)) for v in x) + "\n" for x in xs))
    p.stdin.flush()
    for _ in range(5):
        p.stdout.readline()  # header and four forecasts: every row has been stepped
    p.send_signal(signal.SIGTERM)  # while it waits for more input
    out, err = p.communicate(timeout=30)
    p.stdin.close()
    assert p.returncode == 0, err
    assert "statelite run: stopped, 4 rows forecast" in err and "Traceback" not in err
    reference = StatefulRunner(model)
    reference.run(xs)
    loaded = load_state(state, reference.model_sha256, {k: v.shape for k, v in reference.state.items()})
    for name, value in reference.state.items():
        np.testing.assert_array_equal(loaded[name], value)


def test_sigkill_while_saving_never_leaves_a_broken_state(tmp_path, inputs):
    """kill -9 at random moments of a run that saves after every row: the file always holds a state the runner
    really had (the one after some row k), never a torn or empty one."""
    model, _, _ = inputs
    md = read_metadata(model)
    steps = 30000
    xs = sample_rows(model, steps)
    csv = write_csv(tmp_path / "long.csv", list(md.features), xs)
    # Every state of an unbroken run, keyed by its bytes.
    runner = StatefulRunner(model)
    names = list(runner.state)

    def key(state) -> bytes:
        return b"".join(np.asarray(state[n]).tobytes() for n in names)

    known = {key(runner.state): 0}
    for i, x in enumerate(xs):
        runner.step(x)
        known.setdefault(key(runner.state), i + 1)
    shapes = {n: v.shape for n, v in runner.state.items()}

    rng = random.Random(1234)
    state = tmp_path / "s.npz"
    seen = []
    for _ in range(14):
        if state.exists():
            state.unlink()
        p = subprocess.Popen(
            [*CLI, "run", str(model), "--input", str(csv), "--output", os.devnull, "--state", str(state),
             "--save-every", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
        )
        deadline = time.monotonic() + 30
        while not state.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL, "the run ended before it was killed; make the input longer"
        loaded = load_state(state, runner.model_sha256, shapes)
        assert key(loaded) in known, "the state file holds a state the runner never had"
        seen.append(known[key(loaded)])
    assert len(set(seen)) > 1, f"every kill landed at the same step: {seen}"


def test_device_path_never_imports_tensorflow(tmp_path, inputs):
    model, csv, _ = inputs
    code = f"""
import io, sys
import numpy as np
import statelite
from statelite.stream import run_stream, StreamConfig
from statelite.verify import verify
from statelite.bench import bench
from statelite.inspection import inspect_model
from statelite.cli import main
r = statelite.StatefulRunner({str(model)!r})
r.run(np.zeros((3, len(r.metadata.features)), np.float32))
run_stream(statelite.StatefulRunner({str(model)!r}), open({str(csv)!r}), io.StringIO(), StreamConfig(state_path={str(tmp_path / 's.npz')!r}))
assert verify({str(model)!r}).passed
bench({str(model)!r}, steps=10, warmup=1)
inspect_model({str(model)!r})
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'jax', 'torch'))
print('HEAVY', heavy)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout
