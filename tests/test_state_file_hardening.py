"""State files under faults (issue 10): two writers, planted and followed symlinks, modes, sizes, poisoned states.

Each ``test_issue10_*`` is one reproducer of the issue, now a regression test; the others pin the behaviour around
them. Runtime only (no TensorFlow): the writers and readers are plain processes calling ``statelite.state_file``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from device_models import ENV

from statelite import StateFileError
from statelite.state_file import (
    HEADER_KEY,
    MAX_FILE_BYTES,
    MAX_JSON_DEPTH,
    MAX_PAYLOAD_BYTES,
    StateLock,
    hold_state_lock,
    load_pool_state,
    load_state,
    save_pool_state,
    save_state,
)

SHA = "a1" * 32
STATE = {"h_0": np.full((1, 8), 0.25, np.float32), "c_0": -np.ones((1, 8), np.float32)}
SHAPES = {"h_0": (1, 8), "c_0": (1, 8)}
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX files: flock, symlinks, modes")


def _entries(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=True)
    return buf.getvalue()


def _raw_zip(entries: list[tuple[str, bytes, int, int, int, int]]) -> bytes:
    """A zip built field by field: ``(name, stored bytes, method, crc, declared size, flags)`` per entry, so an entry
    may declare what it does not hold."""
    out, central = bytearray(), bytearray()
    for name, data, method, crc, size, flags in entries:
        offset, raw = len(out), name.encode()
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, method, 0, 0x21, crc, len(data), size,
                           len(raw), 0) + raw + data
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, 0, 0x21, crc, len(data),
                               size, len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + end)


def _stored(name: str, data: bytes, flags: int = 0):
    return (name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data), flags)


def _writer_code(path, body: str) -> str:
    return textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from statelite import StateFileError
        from statelite.state_file import StateLock, save_state
        path, SHA = {str(path)!r}, {SHA!r}
        def state(value):
            return {{"h_0": np.full((1, 8), value, np.float32), "c_0": np.zeros((1, 8), np.float32)}}
    """) + textwrap.dedent(body)


def _spawn(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


# -- two writers ------------------------------------------------------------------------------------------------------


@posix_only
def test_issue10_second_writer_is_refused_at_once(tmp_path):
    """A writer holding the lock (as 'statelite run --state' does) saves in a loop; a second writer is refused at
    once, naming the holder's pid, while a reader always loads a whole state; the file ends as the holder left it."""
    path = tmp_path / "s.npz"
    holder = _spawn(_writer_code(path, """
        with StateLock(path):
            print("locked", flush=True)
            i = 0
            while not sys.stdin.readline().startswith("stop"):
                for _ in range(20):
                    i += 1
                    save_state(path, state(i), SHA)
                print("saved", i, flush=True)
        print("last", i, flush=True)
    """), stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        for _ in range(20):
            holder.stdin.write("go\n")
            holder.stdin.flush()
            start = time.monotonic()
            with pytest.raises(StateFileError, match=rf"state file .*s\.npz is being written by another process "
                                                      rf"\(pid {holder.pid}\); run one writer per state file\."):
                StateLock(path).acquire()
            with pytest.raises(StateFileError, match="being written by another process"):
                save_state(path, STATE, SHA)
            assert time.monotonic() - start < 2, "refused at once, not after waiting"
            if path.exists():
                loaded = load_state(path, SHA, SHAPES)  # never torn, never the refused writer's state
                assert loaded["h_0"][0, 0] >= 1 and (loaded["h_0"] == loaded["h_0"][0, 0]).all()
            assert holder.stdout.readline().startswith("saved"), holder.stderr.read()
        holder.stdin.write("stop\n")
        holder.stdin.close()
        last = int(holder.stdout.readline().split()[1])
        assert holder.wait(30) == 0, holder.stderr.read()
    finally:
        holder.kill()
        holder.wait()
    np.testing.assert_array_equal(load_state(path, SHA, SHAPES)["h_0"], np.full((1, 8), last, np.float32))
    with StateLock(path):  # free again once the holder is gone
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"], "no lock or temporary file left behind"


@posix_only
def test_issue10_two_writers_saving_in_a_loop(tmp_path):
    """The issue's race: two processes save to one file in a loop (each save takes the lock for itself). Every
    refused save is the clear StateFileError, a concurrent reader never sees a broken file, and the file ends holding
    the last state one of them saved."""
    path = tmp_path / "s.npz"
    save_state(path, {"h_0": np.zeros((1, 8), np.float32), "c_0": np.zeros((1, 8), np.float32)}, SHA)
    body = """
        writer = int(sys.argv[1])
        ok = refused = last = 0
        end = time.monotonic() + 1.5
        i = 0
        while time.monotonic() < end:
            i += 1
            try:
                save_state(path, state(writer * 100000 + i), SHA)
                ok, last = ok + 1, i
            except StateFileError as e:
                assert "is being written by another process" in str(e) and "run one writer per" in str(e), e
                refused += 1
        print(ok, refused, writer * 100000 + last)
    """
    writers = [subprocess.Popen([sys.executable, "-c", _writer_code(path, body), str(w)], env=ENV, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for w in (1, 2)]
    reads = 0
    while any(w.poll() is None for w in writers):
        h = load_state(path, SHA, SHAPES)["h_0"]
        assert (h == h[0, 0]).all()
        reads += 1
    results = []
    for w in writers:
        out, err = w.communicate()
        assert w.returncode == 0, err
        results.append([float(v) for v in out.split()])
    assert all(ok > 0 for ok, _, _ in results), results
    final = load_state(path, SHA, SHAPES)["h_0"][0, 0]
    assert final in {last for _, _, last in results}, (final, results)
    assert reads > 10
    print("two writers:", results, "reads", reads)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_save_inside_the_held_lock_and_a_second_lock_in_process(tmp_path):
    path = tmp_path / "s.npz"
    with StateLock(path) as lock:
        assert lock.held and (tmp_path / "s.npz.lock").read_text().strip() == str(os.getpid())
        save_state(path, STATE, SHA)  # the holder's own saves go through
        save_pool_state(tmp_path / "other.npz", {"a": STATE}, SHA)  # another file has its own lock
        with pytest.raises(StateFileError, match=rf"another writer in this process \(pid {os.getpid()}\)"):
            StateLock(path).acquire()
    assert not lock.held
    lock.release()  # twice is harmless
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.npz", "s.npz"]
    with hold_state_lock(None):  # no state file: nothing to hold
        pass
    with hold_state_lock(path) as held:
        assert isinstance(held, StateLock) and held.held


@posix_only
def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    path = tmp_path / "s.npz"
    holder = _spawn(_writer_code(path, """
        lock = StateLock(path).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """))
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    assert (tmp_path / "s.npz.lock").exists(), "the stale lock file stays..."
    save_state(path, STATE, SHA)  # ...but the kernel dropped the lock with the process
    assert not (tmp_path / "s.npz.lock").exists()


# -- files: temporaries, symlinks, modes ----------------------------------------------------------------------------


@posix_only
def test_issue10_planted_tmp_symlink_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "s.npz"
    (tmp_path / "s.npz.tmp").symlink_to(victim)  # the old fixed temporary name
    (tmp_path / ".s.npz.0123456789abcdef.tmp").symlink_to(victim)  # the new pattern: removed as stale, not followed
    save_state(path, STATE, SHA)
    save_state(path, STATE, SHA)
    assert victim.read_text() == "precious"
    assert (tmp_path / "s.npz.tmp").is_symlink(), "a file that is not ours is left alone"
    assert not os.path.lexists(tmp_path / ".s.npz.0123456789abcdef.tmp")
    np.testing.assert_array_equal(load_state(path, SHA, SHAPES)["h_0"], STATE["h_0"])


def test_temporary_removed_on_failure_and_stale_ones_cleaned(tmp_path, monkeypatch):
    path = tmp_path / "s.npz"
    save_state(path, STATE, SHA)
    before = path.read_bytes()
    (tmp_path / ".s.npz.fedcba9876543210.tmp").write_bytes(b"left by a writer killed mid-save")

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(StateFileError, match="cannot write the state file .*No space left on device"):
        save_state(path, STATE, SHA)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"], "neither this temporary nor the stale one"


@posix_only
def test_issue10_state_symlink_stays_a_symlink(tmp_path):
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "real.npz"
    link = tmp_path / "state.npz"
    link.symlink_to(target)  # dangling until the first save
    save_state(link, STATE, SHA)
    newer = {k: v + 1 for k, v in STATE.items()}
    save_state(link, newer, SHA)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(load_state(target, SHA, SHAPES)["c_0"], newer["c_0"])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["real.npz"]
    with StateLock(link):  # the lock sits beside the target: two links to one file share it
        assert (tmp_path / "data" / "real.npz.lock").exists()
        with pytest.raises(StateFileError, match="being written by another writer"):
            StateLock(target).acquire()


@posix_only
def test_symlinks_that_lead_nowhere_are_refused(tmp_path):
    nowhere = tmp_path / "state.npz"
    nowhere.symlink_to(tmp_path / "missing" / "real.npz")
    with pytest.raises(StateFileError, match=r"is a symlink to .*missing/real\.npz, whose directory does not exist"):
        save_state(nowhere, STATE, SHA)
    loop = tmp_path / "loop.npz"
    loop.symlink_to(loop)
    with pytest.raises(StateFileError, match="symlink loop"):
        save_state(loop, STATE, SHA)


@posix_only
def test_issue10_mode_0600_stays_0600(tmp_path):
    path = tmp_path / "s.npz"
    save_state(path, STATE, SHA)
    path.chmod(0o600)
    save_state(path, STATE, SHA)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o640)
    save_pool_state(path, {"a": STATE}, SHA)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@posix_only
def test_new_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        save_state(tmp_path / "s.npz", STATE, SHA)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s.npz").stat().st_mode) == 0o640


# -- sizes: checked before anything is read --------------------------------------------------------------------------

GIB = 1 << 30


def _bomb(tmp_path, declare_all: bool) -> bytes:
    """A ~1 MB state file whose h_0 entry inflates to 1 GiB: declared honestly (and refused for its size), or declared
    as the 32 bytes its header's shape needs (and never inflated past them)."""
    path = tmp_path / "valid.npz"
    save_state(path, STATE, SHA)
    entries = _entries(path)
    shape = (GIB // 4,) if declare_all else (1, 8)
    head = _npy_header(shape)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    lead = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    zeros = deflate.compress(bytes(1 << 22)) + deflate.flush(zlib.Z_FULL_FLUSH)  # repeatable: no back-references
    stream = lead + zeros * (GIB >> 22) + b"\x03\x00"  # an empty final block ends the stream
    declared = len(head) + (GIB if declare_all else 32)
    crc = zlib.crc32(head + bytes(32))  # right for the declared 32 bytes: the extra GiB is the only fault
    h_0 = ("h_0.npy", stream, zipfile.ZIP_DEFLATED, crc, declared, 0)
    return _raw_zip([_stored(HEADER_KEY + ".npy", entries[HEADER_KEY + ".npy"]), h_0,
                     _stored("c_0.npy", entries["c_0.npy"])])


def _npy_header(shape) -> bytes:
    text = repr({"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    text = text.ljust(117) + "\n"  # 10 + 118: the 128 bytes numpy writes for a small array
    return np.lib.format.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode()


@pytest.mark.parametrize("declare_all", [True, False], ids=["declared_1GiB", "declared_32B"])
def test_issue10_zip_bomb_costs_no_memory(tmp_path, declare_all):
    path = tmp_path / "bomb.npz"
    path.write_bytes(_bomb(tmp_path, declare_all))
    assert path.stat().st_size < 2 * 1024 * 1024
    # Declared: refused by the size cap. Declared short: the 32 declared bytes (zeros) are all that is inflated,
    # and they do not match the header's checksum.
    message = (rf"entry 'h_0.npy' declares {GIB + 128} bytes uncompressed; expected at most {MAX_PAYLOAD_BYTES}"
               if declare_all else "its checksum does not match its contents")
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(StateFileError, match=message):
            load_state(path, SHA, SHAPES)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"
    assert time.monotonic() - start < 2, "inflating 1 GiB takes seconds: it was never inflated"


def test_file_size_is_capped_before_reading(tmp_path):
    path = tmp_path / "huge.npz"
    with open(path, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(StateFileError, match=rf"expected at most {MAX_FILE_BYTES:,} bytes, received {MAX_FILE_BYTES + 1:,}"):
        load_state(path, SHA, SHAPES)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_refused_without_reading(tmp_path):
    """Regression: the state file was opened before its type was checked, and opening a FIFO with no writer blocks:
    a FIFO at the --state path hung 'statelite run' at start."""
    import threading

    os.mkfifo(tmp_path / "fifo.npz")
    outcome = []

    def load():
        try:
            load_state(tmp_path / "fifo.npz", SHA, SHAPES)
        except StateFileError as exc:
            outcome.append(str(exc))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "loading a FIFO hung"
    assert outcome and "received a FIFO" in outcome[0]


# -- corrupt files: one clear StateFileError ---------------------------------------------------------------------------


def _valid_entries(tmp_path) -> dict[str, bytes]:
    save_state(tmp_path / "valid.npz", STATE, SHA)
    return _entries(tmp_path / "valid.npz")


def _with_header(entries: dict[str, bytes], text: str) -> list:
    rest = [_stored(n, d) for n, d in entries.items() if n != HEADER_KEY + ".npy"]
    return [_stored(HEADER_KEY + ".npy", _npy(np.array(text))), *rest]


def test_issue10_corrupt_zip_features_refused(tmp_path):
    entries = _valid_entries(tmp_path)
    path = tmp_path / "s.npz"
    cases = {
        "encrypted": ([_stored(n, d, flags=0x1) for n, d in entries.items()], "is encrypted; expected plain arrays"),
        "bzip2": ([(n, d, zipfile.ZIP_BZIP2, zlib.crc32(d), len(d), 0) for n, d in entries.items()],
                  r"uses zip compression method 12; expected stored \(0\) or deflated \(8\)"),
        "other member": ([*(_stored(n, d) for n, d in entries.items()), _stored("notes.txt", b"hi")],
                         "unexpected entry 'notes.txt'; expected only .npy arrays"),
        "directory": ([*(_stored(n, d) for n, d in entries.items()), _stored("x/h_0.npy", b"")], "unexpected entry"),
        "twice": ([*(_stored(n, d) for n, d in entries.items()), _stored("h_0.npy", entries["h_0.npy"])],
                  r"entries \['h_0.npy'\] appear more than once"),
        "bad crc": ([(n, d, 0, zlib.crc32(d) ^ 1, len(d), 0) for n, d in entries.items()],
                    "truncated or corrupt: BadZipFile: Bad CRC-32"),
        "declared long": ([(n, d, 0, zlib.crc32(d), len(d) + 1, 0) for n, d in entries.items()],
                          "declares .* bytes; its .npy header .* needs"),
        "declared short": ([(n, d, 0, zlib.crc32(d), len(d) - 1, 0) for n, d in entries.items()],
                           "truncated or corrupt: BadZipFile: Bad CRC-32"),
    }
    for name, (zip_entries, message) in cases.items():
        path.write_bytes(_raw_zip(zip_entries))
        with pytest.raises(StateFileError, match=message) as e:
            load_state(path, SHA, SHAPES)
        assert "not a readable statelite state file" in str(e.value) and "\n" not in str(e.value), name


def test_issue10_deep_json_refused(tmp_path):
    entries = _valid_entries(tmp_path)
    header = json.loads(str(np.load(io.BytesIO(entries[HEADER_KEY + ".npy"]))[()]))
    path = tmp_path / "s.npz"
    for depth in (MAX_JSON_DEPTH + 1, 100_000):
        text = json.dumps(header)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
        path.write_bytes(_raw_zip(_with_header(entries, text)))
        with pytest.raises(StateFileError, match=rf"its header nests {depth + 1} deep; expected at most {MAX_JSON_DEPTH}"):
            load_state(path, SHA, SHAPES)
    header["padding"] = "[" * 1000  # brackets inside strings do not count
    path.write_bytes(_raw_zip(_with_header(entries, json.dumps(header))))
    assert load_state(path, SHA, SHAPES)


@pytest.mark.parametrize("shape", [(2**40,), (2**31, 2**31), (-1, 8), (2**62, 2**62, 2**62)])
def test_issue10_huge_declared_shapes_refused(tmp_path, shape):
    entries = _valid_entries(tmp_path)
    entries["h_0.npy"] = _npy_header(shape) + entries["h_0.npy"][128:]  # the 32 bytes of a (1, 8) float32
    path = tmp_path / "s.npz"
    path.write_bytes(_raw_zip([_stored(n, d) for n, d in entries.items()]))
    tracemalloc.start()
    try:
        with pytest.raises(StateFileError, match=r"entry 'h_0.npy' (declares 160 bytes; its .npy header|declares shape)"):
            load_state(path, SHA, SHAPES)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


@pytest.mark.parametrize("text", [")", "{'descr': '<f4', 'shape': (1,", "{'descr': 'O', 'fortran_order': False, "
                                  "'shape': (1, 8)}", "[1, 2]"])
def test_unreadable_npy_headers_refused(tmp_path, text):
    # ")" once escaped as tokenize.TokenError: numpy retries a header ast cannot parse through tokenize.
    entries = _valid_entries(tmp_path)
    blob = (text.ljust(117) + "\n").encode()
    entries["h_0.npy"] = np.lib.format.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", len(blob)) + blob + bytes(32)
    path = tmp_path / "s.npz"
    path.write_bytes(_raw_zip([_stored(n, d) for n, d in entries.items()]))
    with pytest.raises(StateFileError, match="entry 'h_0.npy' (has an unreadable .npy header|is object)"):
        load_state(path, SHA, SHAPES)


def test_pickles_are_never_loaded(tmp_path):
    """numpy.load(allow_pickle=True) would run this pickle; the reader refuses the object dtype before reading it."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    entries = _valid_entries(tmp_path)
    entries["h_0.npy"] = _npy(np.array([Evil()], dtype=object))
    assert pickle.dumps(Evil())  # a real pickle
    path = tmp_path / "s.npz"
    path.write_bytes(_raw_zip([_stored(n, d) for n, d in entries.items()]))
    with pytest.raises(StateFileError, match="entry 'h_0.npy' is object; expected float32 or float64"):
        load_state(path, SHA, SHAPES)
    assert not marker.exists()


# -- non-finite states ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_issue10_nonfinite_state_never_saved(tmp_path, bad):
    path = tmp_path / "s.npz"
    save_state(path, STATE, SHA)
    before = path.read_bytes()
    poisoned = {**STATE, "c_0": np.array([[0, 1, bad, 3, 4, 5, 6, 7]], np.float32)}
    with pytest.raises(StateFileError, match=r"refusing to save the state to .*s\.npz: state 'c_0' holds NaN or inf; "
                                             r"expected finite values.*The previous file is kept"):
        save_state(path, poisoned, SHA)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]
    pool = {"a": STATE, "b": poisoned}
    with pytest.raises(StateFileError, match="state 'c_0' of stream 'b' holds NaN or inf"):
        save_pool_state(path, pool, SHA)
    assert path.read_bytes() == before


def test_previous_row_may_be_nan_never_inf(tmp_path):
    path = tmp_path / "s.npz"
    state = {"h_0": np.zeros((1, 4), np.float32), "x_prev": np.array([[np.nan, np.nan]])}
    save_state(path, state, SHA)  # NaN: no previous row yet
    assert np.isnan(load_state(path, SHA, {"h_0": (1, 4), "x_prev": (1, 2)})["x_prev"]).all()
    with pytest.raises(StateFileError, match="state 'x_prev' holds inf"):
        save_state(path, {**state, "x_prev": np.array([[1.0, np.inf]])}, SHA)


def test_nonfinite_state_written_by_an_older_statelite_is_refused(tmp_path):
    """Loading a NaN state used to fail in the runner with a BadInputError on every restart; now it is a
    StateFileError that says to delete the file."""
    h = np.full((1, 8), np.nan, np.float32)
    c = STATE["c_0"]
    import hashlib

    header = {"format": "statelite-state", "format_version": 1, "model_sha256": SHA,
              "states": [{"name": "h_0", "shape": [1, 8], "dtype": "float32"},
                         {"name": "c_0", "shape": [1, 8], "dtype": "float32"}],
              "payload_sha256": hashlib.sha256(h.tobytes() + c.tobytes()).hexdigest()}
    np.savez(tmp_path / "s.npz", **{HEADER_KEY: np.array(json.dumps(header)), "h_0": h, "c_0": c})
    with pytest.raises(StateFileError, match="state 'h_0' holds a non-finite value.*delete it to start from a zero"):
        load_state(tmp_path / "s.npz", SHA, SHAPES)


def test_pool_files_get_the_same_checks(tmp_path):
    path = tmp_path / "p.npz"
    save_pool_state(path, {"a": STATE, 3: STATE}, SHA)
    assert list(load_pool_state(path, SHA, SHAPES)) == ["a", 3]
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(StateFileError, match="truncated or corrupt"):
        load_pool_state(path, SHA, SHAPES)
