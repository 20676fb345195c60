"""Fuzz: corrupt golden traces through ``read_golden`` and ``statelite verify`` (in worker subprocesses, as the model
fuzz). Mutations: byte flips and 32-bit overwrites anywhere in the ``.npz`` (zip headers, ``.npy`` headers, data),
truncation, and well-formed archives whose arrays have the wrong dtype, shape or values (NaN, inf, strings, object
arrays that would need a pickle, empty, huge). Anything but success or a ``StateliteError`` fails.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest

try:  # tests/fuzz is a package (it has an __init__.py) under pytest; a plain module when run from its folder
    from .test_fuzz_models import assert_no_escapes, reference_models, run_jobs
except ImportError:
    from test_fuzz_models import assert_no_escapes, reference_models, run_jobs

KEYS = ("format_version", "model_sha256", "x", "y_keras", "target_scale", "tol_max_abs", "tol_rmse", "quant")
_ODD_ARRAYS = [
    np.array(np.nan), np.array(np.inf), np.array(-1.0), np.array(2**62), np.array("x" * 70), np.array(""),
    np.zeros(0), np.zeros((0, 3)), np.zeros((2, 2, 2, 2)), np.array([1, 2, 3], dtype=np.int8), np.array([True]),
    np.array([1 + 2j]), np.array(["a", "b"]), np.array([None, 1], dtype=object), np.full((3, 1), np.nan),
    np.full((200, 1), 1e308), np.array(b"bytes"), np.zeros((200, 4, 1), dtype=np.float16),
]


def mutate_golden(data: bytes, arrays: dict, kind: str, draw) -> bytes:
    from hypothesis import strategies as st

    n = len(data)
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            out[draw(st.integers(0, n - 1))] ^= draw(st.integers(1, 255))
        return bytes(out)
    if kind == "truncate":
        return data[: draw(st.integers(0, n - 1))]
    if kind == "length":
        out = bytearray(data)
        pos = draw(st.integers(0, n - 4))
        struct.pack_into("<I", out, pos, draw(st.sampled_from([0, 0xFFFFFFFF, 0x7FFFFFFF, n * 1000]) | st.integers(0, 2**32 - 1)))
        return bytes(out)
    # arrays: a well-formed archive with one to three arrays replaced or removed.
    changed = dict(arrays)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(KEYS))
        choice = draw(st.integers(0, 3))
        if choice == 0:
            changed.pop(key, None)
        elif choice == 1 and key in arrays and arrays[key].dtype.kind == "f" and arrays[key].size:
            a = arrays[key].copy()
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308, 0.0]))
            changed[key] = a
        else:
            changed[key] = draw(st.sampled_from(_ODD_ARRAYS))
    buf = io.BytesIO()
    np.savez(buf, **changed)
    return buf.getvalue()


KINDS = ("flip", "truncate", "length", "arrays")


def _fuzz_golden(tmp_path: Path, count: int, derandomize: bool) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    refs = reference_models()
    sources = {}
    for p in refs:
        g = p.with_name(p.stem + ".golden.npz")
        with np.load(g) as d:
            sources[p] = (g.read_bytes(), {k: d[k] for k in d.files})
    jobs: list[dict] = []

    @settings(max_examples=count, derandomize=derandomize, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def collect(data):
        ref = data.draw(st.sampled_from(refs))
        kind = data.draw(st.sampled_from(KINDS))
        raw, arrays = sources[ref]
        out = tmp_path / f"g{len(jobs):05d}_{kind}_{ref.stem}.golden.npz"
        out.write_bytes(mutate_golden(raw, arrays, kind, data.draw))
        jobs.append({"kind": "golden", "file": str(out), "model": str(ref)})

    collect()
    assert len(jobs) >= count * 0.9
    assert_no_escapes(run_jobs(jobs, tmp_path), len(jobs))


def test_fuzz_golden(tmp_path):
    _fuzz_golden(tmp_path, 150, derandomize=True)


@pytest.mark.slow
def test_fuzz_golden_many(tmp_path):
    _fuzz_golden(tmp_path, 2000, derandomize=False)
