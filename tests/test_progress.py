"""The progress line: drawn on a terminal only (a real pseudo-terminal here), erased before other output and at the
end, still drawn while ``filtered_stderr`` holds fd 2, never into a pipe; and the workstation commands use it."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from statelite.progress import TerminalProgress, no_progress, prefixed

ERASE = "\r\x1b[K"


def _read_all(fd: int, timeout: float = 0.2) -> str:
    chunks = []
    while select.select([fd], [], [], timeout)[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the other end closed (Linux reports EIO)
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def terminal():
    master, slave = pty.openpty()
    yield master, slave
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def test_on_a_terminal_the_line_is_drawn_in_place_and_erased_at_the_end(terminal):
    master, slave = terminal
    with TerminalProgress(fd=slave, interval=0) as progress:
        assert progress.active
        progress("calibrating", 3, 10)
        progress("calibrating", 10, 10)
    out = _read_all(master)
    assert out == ERASE + "calibrating 3/10 (30%)" + ERASE + "calibrating 10/10 (100%)" + ERASE


def test_updates_are_throttled_but_the_last_of_a_task_is_always_drawn(terminal):
    master, slave = terminal
    with TerminalProgress(fd=slave, interval=60) as progress:
        for i in range(1, 1001):
            progress("rolling", i, 1000)
    out = _read_all(master)
    assert out.count(ERASE) == 3  # the first update, the finished one, the erase at the end
    assert "rolling 1/1,000 (0%)" in out and "rolling 1,000/1,000 (100%)" in out


def test_a_printed_line_erases_the_progress_line_first(terminal):
    master, slave = terminal
    printed = []
    with TerminalProgress(fd=slave, interval=0) as progress:
        echo = progress.wrap(lambda text: (printed.append(text), os.write(slave, (text + "\n").encode())))
        progress("converting", 1, 2)
        echo("parity PASS")
    assert printed == ["parity PASS"]
    out = _read_all(master).replace("\r\n", "\n")  # the terminal turns \n into \r\n
    assert out == ERASE + "converting 1/2 (50%)" + ERASE + "parity PASS\n"


def test_work_without_a_total_ticks_its_elapsed_time(terminal):
    master, slave = terminal
    out, deadline = "", time.monotonic() + 10
    with TerminalProgress(fd=slave, interval=0) as progress:
        progress("the TFLite converter")
        while "converter  1 s" not in out and time.monotonic() < deadline:  # redrawn every 0.5 s by a thread
            out += _read_all(master, 0.1)
    out += _read_all(master)
    assert "the TFLite converter  1 s" in out and out.endswith(ERASE)


def test_nothing_is_written_into_a_pipe_or_when_quiet(terminal):
    master, slave = terminal
    read, write = os.pipe()
    try:
        with TerminalProgress(fd=write, interval=0) as progress:
            assert not progress.active
            progress("x", 1, 2)
            progress.wrap(lambda: None)()
        os.close(write)
        assert os.read(read, 100) == b""
    finally:
        os.close(read)
    with TerminalProgress(enabled=False, fd=slave, interval=0) as progress:
        progress("x", 1, 2)
    assert _read_all(master) == ""
    no_progress("x", 1, 2)  # the library default: does nothing
    assert TerminalProgress(enabled=False, fd=slave).reporter is None


def test_prefixed_names_the_work_and_keeps_none(terminal):
    master, slave = terminal
    with TerminalProgress(fd=slave, interval=0) as progress:
        assert progress.reporter is progress
        prefixed(progress.reporter, "fold 2/4, ")("epoch 1/9", 1, 2)
    assert ERASE + "fold 2/4, epoch 1/9 1/2 (50%)" in _read_all(master)
    assert prefixed(None, "fold 1/4, ") is None


def test_a_terminal_that_goes_away_stops_the_line_and_nothing_else(terminal):
    master, slave = terminal
    progress = TerminalProgress(fd=slave, interval=0)
    os.close(master)  # the terminal is gone: writes fail
    for i in range(5):
        progress("x", i, 5)
    progress.close()
    assert not progress.active


def test_the_line_reaches_the_terminal_while_filtered_stderr_holds_fd2(terminal):
    # fd 2 of the child is the terminal; TensorFlow's lines on fd 2 are held back in the block, the progress is not
    master, slave = terminal
    code = (
        "import os, time\n"
        "from statelite.progress import TerminalProgress\n"
        "from statelite.quiet import filtered_stderr\n"
        "with TerminalProgress(interval=0) as progress:\n"
        "    with filtered_stderr():\n"
        "        os.write(2, b'fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, '\n"
        "                 b'output_inference_type: FLOAT32\\n')\n"
        "        progress('converting', 1, 4)\n"
        "        os.write(1, b'MARK\\n')\n"
        "        time.sleep(0.5)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "STATELITE_TF_LOGS"}
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                             env=env)
    try:
        deadline, out = time.monotonic() + 30, ""
        while "MARK" not in out and time.monotonic() < deadline:
            out += _read_all(master, 0.5)
        # drawn before the block ended (MARK is written inside the block, after the progress line)
        assert out.index("converting 1/4 (25%)") < out.index("MARK")
        assert child.wait(timeout=30) == 0
        out += _read_all(master)
        assert "fully_quantize" not in out and out.endswith(ERASE)
    finally:
        child.kill()


def _run_on_terminal(args: list[str], cwd, timeout: float = 300) -> tuple[int, str]:
    """A statelite command with stdout and stderr on a pseudo-terminal: its exit code and what the terminal got."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TF_CPP", "GRPC_", "GLOG_", "STATELITE_TF_LOGS"))}
    env["TERM"] = "xterm"
    child = subprocess.Popen([sys.executable, "-m", "statelite.cli", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                             stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out, deadline = [], time.monotonic() + timeout
    try:
        while child.poll() is None and time.monotonic() < deadline:
            out.append(_read_all(master, 0.5))
        out.append(_read_all(master))
        return child.wait(timeout=5), "".join(out)
    finally:
        child.kill()
        os.close(master)


@pytest.mark.tf
def test_convert_on_a_terminal_shows_progress_and_quiet_shows_one_line(tmp_path, keras_models):
    model = str(keras_models("GRU", 1))
    code, out = _run_on_terminal(["convert", model, "--quant", "int8", "--golden-steps", "20",
                                  "--out", "m.tflite"], tmp_path)
    assert code == 0, out
    for stage in ("calibration: rolling the float model", "converting: the TFLite converter",
                  "parity: stepping the .tflite"):
        assert ERASE + stage in out, out
    assert "parity over the test split (PASS)" in out
    assert not re.search(r"^[EWI]\d{4} |oneDNN|fully_quantize", out, re.M), out
    lines = [line for line in out.replace(ERASE, "\n").splitlines() if line.strip()]
    assert lines[-1].startswith("wrote "), lines  # every progress line is erased; the result is last

    code, out = _run_on_terminal(["convert", model, "--quant", "int8", "--golden-steps", "20",
                                  "--out", "q.tflite", "--quiet"], tmp_path)
    assert code == 0, out
    assert ERASE not in out and "calibrat" not in out
    assert out.strip().splitlines() == [
        next(line for line in out.strip().splitlines() if line.startswith("wrote "))
    ] and "parity PASS" in out
