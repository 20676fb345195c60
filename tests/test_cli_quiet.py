"""TensorFlow's C++ log lines stay off the terminal; anything else written to stderr still gets there."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from statelite.quiet import SHOW_ALL_ENV, filtered_stderr, is_noise

# What a user must not see on stderr from a workstation command.
TF_LOG = re.compile(r"^(E|W|I)\d{4} |oneDNN|cuda|absl|fully_quantize", re.IGNORECASE | re.MULTILINE)

SEEN = [  # verbatim from TensorFlow 2.21 on a machine without a GPU
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795902207.474388    4148 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1795902207.474850    4148 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1795902216.469439    4290 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "W0000 00:00:1795902216.100000    4290 tf_tfl_flatbuffer_helpers.cc:365] Ignored output_format.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32",
]
GENUINE = [
    "F0000 00:00:1795902216.469439    4290 tensor.cc:10] Check failed: dims == 2",
    "E0000 00:00:1795902216.469439    4290 flatbuffer_export.cc:52] failed to legalize operation 'tf.Foo'",
    "Traceback (most recent call last):",
    "UserWarning: something a user should read",
]


@pytest.mark.parametrize("line", SEEN)
def test_tensorflow_noise_is_recognised(line):
    assert is_noise(line) and is_noise(line + "\n")


@pytest.mark.parametrize("line", GENUINE)
def test_other_lines_are_not_noise(line):
    assert not is_noise(line)


def test_filtered_stderr_drops_noise_keeps_the_rest_and_restores_fd2(capfd, monkeypatch):
    monkeypatch.delenv(SHOW_ALL_ENV, raising=False)
    before = os.fstat(2).st_ino
    with pytest.raises(RuntimeError, match="boom"):
        with filtered_stderr():
            os.write(2, (SEEN[0] + "\n" + GENUINE[0] + "\n" + SEEN[1] + "\n").encode())
            sys.stderr.write("from python\n")  # capfd swaps sys.stderr for its own, so this one skips fd 2 here
            with filtered_stderr():  # nested
                os.write(2, (SEEN[5] + "\nnested genuine\n").encode())
            raise RuntimeError("boom")
    assert os.fstat(2).st_ino == before
    os.write(2, b"after\n")
    lines = capfd.readouterr().err.splitlines()
    assert "from python" in lines
    assert [line for line in lines if line != "from python"] == [GENUINE[0], "nested genuine", "after"]


def test_show_all_turns_the_filter_off(capfd, monkeypatch):
    monkeypatch.setenv(SHOW_ALL_ENV, "1")
    with filtered_stderr():
        os.write(2, (SEEN[0] + "\n").encode())
    assert capfd.readouterr().err == SEEN[0] + "\n"


def test_in_a_real_process_python_stderr_is_delayed_not_lost():
    code = (
        "import os, sys\n"
        "from statelite.quiet import filtered_stderr\n"
        "sys.stderr.write('before\\n')\n"
        "try:\n"
        "    with filtered_stderr():\n"
        "        sys.stderr.write('inside\\n')\n"
        f"        os.write(2, {(SEEN[5] + chr(10)).encode()!r})\n"
        "        raise SystemExit(3)\n"
        "finally:\n"
        "    sys.stderr.write('after\\n')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != SHOW_ALL_ENV}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 3 and result.stderr.splitlines() == ["before", "inside", "after"], result.stderr


def run_cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "GRPC_", "GLOG_", SHOW_ALL_ENV))}
    return subprocess.run(
        [sys.executable, "-m", "statelite.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.tf
def test_train_and_convert_print_no_tensorflow_log_lines(tmp_path, keras_models):
    pytest.importorskip("tensorflow")
    rows = "\n".join(f"{i},{(i % 10) / 10:.2f}" for i in range(120))
    (tmp_path / "d.csv").write_text("t,a\n" + rows + "\n")
    train = run_cli("train", "d.csv", "--target", "a", "--units", "4", "--window", "12", "--horizon", "1",
                    "--epochs", "1", "--quiet", "--out", "run", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert train.stderr == "", train.stderr
    assert train.stdout.splitlines()[-1] == "run folder: run"

    convert = run_cli("convert", str(keras_models("GRU", 1)), "--quant", "int8", "--golden-steps", "20",
                      "--out", "m.tflite", cwd=tmp_path)
    assert convert.returncode == 0, convert.stderr
    # Neither the import's start-up lines nor the converter's option dump (fully_quantize: ...) reach the terminal.
    assert not TF_LOG.search(convert.stderr), convert.stderr


@pytest.mark.tf
def test_quiet_tensorflow_leaves_the_import_for_later():
    # bad options and bad data must still fail before TensorFlow loads (statelite.train only looks it up)
    code = (
        "import sys; from statelite.cli._common import quiet_tensorflow; quiet_tensorflow(); quiet_tensorflow(); "
        "import statelite.train; assert 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
