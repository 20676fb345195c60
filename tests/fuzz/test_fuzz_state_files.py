"""Damaged state files: whatever is done to a valid one, loading it returns a state or raises StateFileError.

Valid files (one stream, one stream with a float64 ``x_prev``, a pool, an empty pool, each stored and deflated) are
mutated by hypothesis: flipped bytes, truncation, inserted and deleted runs, edited fields of the zip's local headers,
central directory and end record, edited header JSON (values, nesting, shapes, dtypes, names, keys; checksum
recomputed or not), replaced, dropped, added and renamed arrays (other dtypes and shapes, pickled objects, NaN), and
rewritten .npy array headers (huge and negative shapes, other dtypes). Anything but a loaded state or a
StateFileError fails the test, as does an example slower than the deadline (a watchdog alarm ends a hang).

The default run generates ``DEFAULT_EXAMPLES``; ``-m slow`` runs ``SLOW_EXAMPLES`` more.
"""

from __future__ import annotations

import hashlib
import io
import json
import signal
import struct
import zipfile
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statelite import StateFileError
from statelite.state_file import HEADER_KEY, load_pool_state, load_state, save_pool_state, save_state

DEFAULT_EXAMPLES = 200
SLOW_EXAMPLES = 2500
WATCHDOG_SECONDS = 10  # a hang, not a slow example: the deadline below catches those
DEADLINE = timedelta(seconds=3)  # each example takes milliseconds; generous for 2 busy cores

SHA = "a1" * 32
_F32 = np.float32


def _valid_files(folder) -> list[tuple[str, str, bytes, dict]]:
    """``(name, kind, bytes, shapes)`` of the valid files every example starts from."""
    rng = np.random.default_rng(0)
    lstm = {"h_0": rng.normal(size=(1, 8)).astype(_F32), "c_0": rng.normal(size=(1, 8)).astype(_F32)}
    diff = {"h_0": rng.normal(size=(1, 4)).astype(_F32), "x_prev": np.array([[370.125, np.nan]])}
    pool = {"a": diff, 7: {"h_0": np.zeros((1, 4), _F32), "x_prev": np.array([[1.5, 2.5]])}}
    out = []
    for name, kind, state, shapes in [
        ("lstm", "single", lstm, {"h_0": (1, 8), "c_0": (1, 8)}),
        ("diff", "single", diff, {"h_0": (1, 4), "x_prev": (1, 2)}),
        ("pool", "pool", pool, {"h_0": (1, 4), "x_prev": (1, 2)}),
        ("empty_pool", "pool", {}, {"h_0": (1, 4), "x_prev": (1, 2)}),
    ]:
        path = folder / f"{name}.npz"
        (save_state if kind == "single" else save_pool_state)(path, state, SHA)
        data = path.read_bytes()
        out.append((name, kind, data, shapes))
        out.append((name + "_deflated", kind, _rezip(data, zipfile.ZIP_DEFLATED), shapes))
    return out


def _entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _zip(entries: dict[str, bytes], method=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, raw in entries.items():
            z.writestr(name, raw)
    return buf.getvalue()


def _rezip(data: bytes, method) -> bytes:
    return _zip(_entries(data), method)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)  # the reader must refuse pickles, not the writer
    return buf.getvalue()


def _arrays(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    entries = _entries(data)
    arrays = {n[:-4]: np.load(io.BytesIO(raw), allow_pickle=False) for n, raw in entries.items()}
    header = json.loads(str(arrays.pop(HEADER_KEY)[()]))
    return header, arrays


def _checksum(header: dict, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for s in header.get("states", []):
        if isinstance(s, dict) and isinstance(s.get("name"), str) and s["name"] in arrays:
            h.update(np.ascontiguousarray(arrays[s["name"]]).tobytes())
    return h.hexdigest()


def _build(header_text: str, arrays: dict[str, bytes | np.ndarray], method) -> bytes:
    entries = {HEADER_KEY + ".npy": _npy(np.array(header_text))}
    entries.update({n + ".npy": raw if isinstance(raw, bytes) else _npy(raw) for n, raw in arrays.items()})
    return _zip(entries, method)


# -- mutations: each is a strategy of functions bytes -> bytes ------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
INTERESTING = st.sampled_from([0, 1, 7, 8, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**31, 1 << 24])
DTYPES = st.sampled_from(
    ["float32", "float64", "<f4", ">f4", ">f8", "float16", "int8", "int64", "bool", "complex64", "U3", "S4", "V8",
     "O", "(2,)f4", "bogus", "", "M8[s]"]
)
SHAPE = st.lists(
    st.one_of(st.integers(0, 9), st.sampled_from([-1, 2**31, 2**40, 2**62, 2**64])), max_size=4
)


@st.composite
def byte_flips(draw):
    flips = draw(st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)), min_size=1, max_size=8))

    def apply(data: bytes) -> bytes:
        out = bytearray(data)
        for at, x in flips:
            out[at % len(out)] ^= x
        return bytes(out)

    return apply


@st.composite
def cuts(draw):
    at, kind = draw(st.floats(0, 1)), draw(st.sampled_from(["truncate", "delete", "insert"]))
    length, junk = draw(st.integers(1, 64)), draw(st.binary(min_size=1, max_size=64))

    def apply(data: bytes) -> bytes:
        i = int(at * len(data))
        if kind == "truncate":
            return data[:i]
        if kind == "delete":
            return data[:i] + data[i + length :]
        return data[:i] + junk + data[i:]

    return apply


# (signature, {field: (offset, struct format)}) of the zip records worth editing.
RECORDS = {
    b"PK\x03\x04": {"flags": (6, "<H"), "method": (8, "<H"), "crc": (14, "<I"), "csize": (18, "<I"),
                    "usize": (22, "<I"), "namelen": (26, "<H"), "extralen": (28, "<H")},
    b"PK\x01\x02": {"flags": (8, "<H"), "method": (10, "<H"), "crc": (16, "<I"), "csize": (20, "<I"),
                    "usize": (24, "<I"), "namelen": (28, "<H"), "extralen": (30, "<H"), "commentlen": (32, "<H"),
                    "offset": (42, "<I")},
    b"PK\x05\x06": {"disk_entries": (8, "<H"), "entries": (10, "<H"), "cd_size": (12, "<I"), "cd_offset": (16, "<I"),
                    "commentlen": (20, "<H")},
    b"PK\x06\x06": {"entries": (32, "<Q"), "cd_size": (40, "<Q"), "cd_offset": (48, "<Q")},
}


@st.composite
def zip_fields(draw):
    signature = draw(st.sampled_from(sorted(RECORDS)))
    field = draw(st.sampled_from(sorted(RECORDS[signature])))
    which = draw(st.integers(0, 7))
    value = draw(st.one_of(INTERESTING, st.integers(0, 2**32 - 1), st.integers(0, 2**16)))

    def apply(data: bytes) -> bytes:
        places, start = [], data.find(signature)
        while start >= 0:
            places.append(start)
            start = data.find(signature, start + 1)
        if not places:
            return data
        offset, fmt = RECORDS[signature][field]
        at = places[which % len(places)] + offset
        size = struct.calcsize(fmt)
        if at + size > len(data):
            return data
        return data[:at] + struct.pack(fmt, value % (1 << (8 * size))) + data[at + size :]

    return apply


@st.composite
def header_edits(draw):
    kind = draw(st.sampled_from(["value", "state_field", "state", "deep", "text", "keys", "shape", "dtype"]))
    key = draw(st.sampled_from(["format", "format_version", "model_sha256", "states", "payload_sha256", "keys", "x"]))
    field = draw(st.sampled_from(["name", "shape", "dtype", "other"]))
    value = draw(JSON)
    index = draw(st.integers(0, 3))
    depth = draw(st.sampled_from([9, 50, 1000, 100_000]))
    shape, dtype = draw(SHAPE), draw(DTYPES)
    cut, junk = draw(st.floats(0, 1)), draw(st.text(max_size=8))
    fix_checksum, deflate = draw(st.booleans()), draw(st.booleans())

    def apply(data: bytes) -> bytes:
        header, arrays = _arrays(data)
        states = header.get("states") or [{}]
        target = states[index % len(states)]
        if kind == "value":
            header[key] = value
        elif kind == "state_field":
            target[field] = value
        elif kind == "state":
            states[index % len(states)] = value
        elif kind == "keys":
            header["keys"] = value if isinstance(value, list) else [value, value]
        elif kind == "shape":
            target["shape"] = shape
        elif kind == "dtype":
            target["dtype"] = dtype
        if fix_checksum:
            header["payload_sha256"] = _checksum(header, arrays)
        text = json.dumps(header)
        if kind == "deep":
            text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
        elif kind == "text":
            i = int(cut * len(text))
            text = text[:i] + junk + text[i + len(junk) :]
        return _build(text, arrays, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)

    return apply


@st.composite
def array_edits(draw):
    kind = draw(st.sampled_from(["replace", "drop", "add", "rename", "nonfinite", "object", "npy_header"]))
    index, dtype, shape = draw(st.integers(0, 3)), draw(DTYPES), draw(SHAPE)
    fill = draw(st.sampled_from([0.0, np.nan, np.inf, -np.inf, 1e300]))
    fortran, raw_header = draw(st.booleans()), draw(st.text(max_size=40))
    header_kind = draw(st.sampled_from(["dict", "raw"]))
    fix_checksum = draw(st.booleans())

    def apply(data: bytes) -> bytes:
        header, arrays = _arrays(data)
        names = sorted(arrays) or ["h_0"]
        name = names[index % len(names)]
        out: dict[str, bytes | np.ndarray] = dict(arrays)
        if kind == "replace":
            small = tuple(d for d in shape if 0 <= d < 10)
            try:
                out[name] = np.zeros(small, dtype=dtype)
            except (TypeError, ValueError):
                out[name] = np.zeros(small, dtype=np.int16)
        elif kind == "drop":
            out.pop(name, None)
        elif kind == "add":
            out[name + "_extra"] = np.zeros((1, 2), _F32)
        elif kind == "rename" and name in out:
            out[name + "x"] = out.pop(name)
        elif kind == "nonfinite" and name in out:
            with np.errstate(over="ignore"):  # 1e300 as float32 is inf: wanted
                out[name] = np.full_like(out[name], fill)
        elif kind == "object":
            out[name] = np.array([{"a": 1}, None], dtype=object)
        elif kind == "npy_header":
            body = np.zeros((1, 4), _F32).tobytes()
            if header_kind == "dict":
                text = repr({"descr": dtype, "fortran_order": fortran, "shape": tuple(shape)})
            else:
                text = raw_header
            text = text.ljust(118) + "\n"
            blob = text.encode("latin1", "replace")
            out[name] = np.lib.format.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", len(blob)) + blob + body
        if fix_checksum:
            plain = {n: a for n, a in out.items() if isinstance(a, np.ndarray) and a.dtype != object}
            header["payload_sha256"] = _checksum(header, plain)
        return _build(json.dumps(header), out, zipfile.ZIP_STORED)

    return apply


MUTATIONS = st.lists(
    st.one_of(byte_flips(), cuts(), zip_fields(), header_edits(), array_edits()), min_size=1, max_size=3
)


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang(f"loading one state file took longer than {WATCHDOG_SECONDS} s")


def _fuzz(tmp_path, examples: int) -> None:
    bases = _valid_files(tmp_path)
    path = tmp_path / "fuzzed.npz"
    outcomes = {"loaded": 0, "refused": 0}

    @settings(max_examples=examples, deadline=DEADLINE, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(base=st.sampled_from(bases), mutations=MUTATIONS, swap_kind=st.booleans())
    def check(base, mutations, swap_kind):
        _, kind, data, shapes = base
        for mutate in mutations:
            if not data:
                break
            try:
                data = mutate(data)
            except Exception:  # noqa: BLE001 (the mutator's own parse, not the reader under test)
                break  # an earlier mutation broke the zip this one rebuilds from: load what we have
        path.write_bytes(data)
        load = load_state if (kind == "single") != swap_kind else load_pool_state
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, WATCHDOG_SECONDS)
        try:
            loaded = load(path, SHA, shapes)
        except StateFileError as exc:
            assert "\n" not in str(exc), "one line"
            outcomes["refused"] += 1
            return
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        streams = [loaded] if load is load_state else list(loaded.values())
        for state in streams:
            assert {n: a.shape for n, a in state.items()} == {n: tuple(s) for n, s in shapes.items()}
            assert all(a.dtype in (np.float32, np.float64) for a in state.values())
        outcomes["loaded"] += 1

    check()
    print(f"fuzzed state files: {outcomes}")
    assert outcomes["refused"] > examples // 4, outcomes


pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="the watchdog needs signal.setitimer")


def test_fuzzed_state_files_load_or_raise_state_file_error(tmp_path):
    _fuzz(tmp_path, DEFAULT_EXAMPLES)


@pytest.mark.slow
def test_fuzzed_state_files_many(tmp_path):
    _fuzz(tmp_path, SLOW_EXAMPLES)
