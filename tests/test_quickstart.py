"""``statelite quickstart`` as a new user sees it: only statelite's own lines (no TensorFlow log line, nothing on
stderr), and the summary's memory figure measured in a device-like process, not in the TensorFlow one."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tf


def test_quickstart_prints_only_its_own_lines_and_the_device_process_memory(tmp_path):
    pytest.importorskip("tensorflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "GRPC_", "GLOG_", "STATELITE_TF_LOGS"))}
    done = subprocess.run([sys.executable, "-m", "statelite.cli", "quickstart", "--out", "qs", "--epochs", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert not re.search(r"^[EWI]\d{4} |oneDNN|cuda|absl|fully_quantize|Warning", out, re.M | re.I), out
    rows = re.findall(r"^  (float32|int8) .* PASS .* ([\d.]+) MiB$", out, re.M)
    assert [quant for quant, _ in rows] == ["float32", "int8"], out
    for _, mib in rows:  # a process without TensorFlow: tens of MiB (the quickstart process itself holds ~800)
        assert 10 < float(mib) < 200, out
    assert "TensorFlow is loaded in this process" not in out
    assert (tmp_path / "qs" / "run" / "forecast.png").stat().st_size > 0
