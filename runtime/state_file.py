"""Saved recurrent state: an ``.npz`` file tagged with the model's hash and a checksum, written atomically by one
writer at a time, and read without trusting anything it declares.

A device that restarts (power cut, reboot, ``statelite run`` stopped) resumes its stream from the saved state instead
of a cold start. The file is a plain ``.npz`` (``numpy.load`` opens it) holding one array per state and a JSON header
under ``__statelite_state__``::

    {"format": "statelite-state", "format_version": 1, "model_sha256": "...",
     "states": [{"name": "h_0", "shape": [1, 32], "dtype": "float32"}, ...], "payload_sha256": "..."}

Recurrent states are float32; ``x_prev`` (the previous raw row of a differencing model) is float64, because raw
values stay float64 until they are scaled. Each array keeps its dtype.

A *pool* file holds many streams (``statelite run --stream-key``, a ``StreamPool``): the header adds ``"keys"``, the
streams' keys (strings or integers) in order, and each array is the streams' states of that name stacked on a new
first axis in that order (``h_0`` of shape ``(streams, 1, 32)``). Pool files are format version 2; single-stream files
are still written as version 1, so an older statelite keeps reading them. Each kind refuses the other by name.

``payload_sha256`` covers the arrays' bytes in the listed order, so a file that unzips but was damaged is refused.

Writing (``save_state``, ``save_pool_state``):

- *Atomic.* The arrays go to a temporary file with a fresh random name in the state's directory (created with
  ``O_EXCL``, so a planted file or symlink of that name is never followed), which is flushed, fsynced and renamed over
  the old file, then the directory is fsynced: after a crash at any moment the file holds either the previous state or
  the new one. The temporary file is removed on any failure; one left by a killed writer is removed by the next writer
  that takes the lock.
- *One writer.* A writer holds an advisory lock (``fcntl.flock``) on ``STATE.lock`` beside the state while it writes;
  ``statelite run --state`` holds it for its whole run (``StateLock``), a lone ``save_state`` for one save. A second
  writer gets a ``StateFileError`` at once, naming the holder's pid. Readers take no lock: they always see a whole file.
- *Symlinks.* A state path that is a symlink is written through: the new file replaces the symlink's final target
  (the temporary file is made beside the target), so the symlink stays a symlink. A symlink into a directory that does
  not exist, or a symlink loop, is refused.
- *Permissions.* A state file that exists keeps its mode (and, where allowed, its owner); a new one gets 0666 minus
  the umask, as ``open`` gives.
- *Finite.* A state holding NaN or inf is never written (``x_prev`` may hold NaN: no previous row); the previous file
  is kept. Every restart would otherwise fail on it.

Reading (``load_state``, ``load_pool_state``) checks sizes before it reads: the file (``MAX_FILE_BYTES``), the zip's
entries (only ``.npy`` arrays, stored or deflated, unencrypted, at most ``MAX_MEMBERS``), each entry's declared size
against its array header's shape and dtype and all of them against ``MAX_PAYLOAD_BYTES``, the JSON header's size and
nesting. Arrays are float32 or float64 (the header a unicode string); nothing is ever unpickled. Whatever is wrong
with a file, the error is one ``StateFileError`` that says what was expected and what was received.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import stat
import struct
import threading
import tokenize
import zipfile
import zlib
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from .errors import BadInputError, StateFileError
from .files import open_bounded

try:
    import fcntl
except ImportError:  # Windows has no flock: one writer per state file is then the caller's promise, not enforced
    fcntl = None

HEADER_KEY = "__statelite_state__"
FORMAT_NAME = "statelite-state"
FORMAT_VERSION = 2  # the newest this statelite reads
_SINGLE_VERSION = 1  # one stream; what older statelites read
_POOL_VERSION = 2  # many streams, with their keys
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_PREV_KEY = "x_prev"  # runner.PREV_KEY: a raw row, NaN before the first step (not imported: runner is heavier)

# What a state file may declare before any of it is read. A real state is small (an LSTM of 2 x 256 units is 2 KB per
# stream, a pool of 4,096 such streams 8 MB): the limits leave room for far more, and keep a damaged or hostile file
# from costing a small device its memory (a 1 MB deflated entry can claim 1 GiB).
MAX_FILE_BYTES = 64 * 1024 * 1024  # the .npz on disk
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # every entry uncompressed, as the zip's directory declares it
MAX_HEADER_BYTES = 4 * 1024 * 1024  # the JSON header entry (a pool's keys live there), uncompressed
MAX_JSON_DEPTH = 8  # a valid header nests 4 deep: header, states, one state, its shape
MAX_MEMBERS = 1024  # entries in the zip: one array per state name, never one per stream
_MAX_NPY_HEADER = 10000  # numpy's own default limit on an .npy header (max_header_size)
_ENCRYPTED_FLAGS = 0x1 | 0x40 | 0x2000  # zip general-purpose bits: encrypted, strong encryption, masked directory
_TMP_SUFFIX = ".tmp"
# Optional arrays beside the recurrent state, saved by ``statelite run`` so a restart goes on where it stopped:
# ``monitor.<name>`` a stream's ``ForecastMonitor`` online state (``statelite.monitor``: interval corrections, the
# forecasts waiting for their truth), ``gaps.<name>`` its gap tracker (the last time seen, the last row and forecast a
# gap is filled from). The recurrent state's readers ignore them.
MONITOR_PREFIX = "monitor."
EXTRA_PREFIXES = (MONITOR_PREFIX, "gaps.")


def _payload_sha256(names, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def _as_stored(value) -> np.ndarray:
    a = np.asarray(value)
    return a if a.dtype in _DTYPES else a.astype(np.float32)


def _nonfinite(name: str, a: np.ndarray) -> np.ndarray:
    """Per element: is it a value no state file may hold? ``x_prev`` may be NaN (no previous row), never inf."""
    return np.isinf(a) if name == _PREV_KEY else ~np.isfinite(a)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms (Windows) cannot open a directory; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- where a state file really is -----------------------------------------------------------------------------------


def _target(path) -> Path:
    """The file a save must replace: ``path`` itself, or, when it is a symlink, its final target (so the symlink
    stays a symlink and the state goes where it points)."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    if os.path.islink(path):
        if os.path.islink(real):  # realpath stops at a loop and returns a link
            raise StateFileError(f"cannot write the state file {path}: it is a symlink loop. Expected a file or a "
                                 f"symlink to one; received a link that never reaches a file.")
        if not real.parent.is_dir():
            raise StateFileError(
                f"cannot write the state file {path}: it is a symlink to {real}, whose directory does not exist. "
                f"Create {real.parent} or point the symlink elsewhere."
            )
    return real


# -- one writer at a time -------------------------------------------------------------------------------------------

_held: dict[str, int] = {}  # lock file -> pid of the process whose StateLock holds it (a forked child is not it)
_held_guard = threading.Lock()


def _lock_path(target: Path) -> str:
    return str(target) + ".lock"


def _holds(lock_path: str) -> bool:
    with _held_guard:
        return _held.get(lock_path) == os.getpid()


def _recorded_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except (OSError, AttributeError):
        return None
    return int(text) if text.isdigit() else None


class StateLock:
    """The right to write one state file, held by one writer at a time (across processes).

    ``statelite run --state`` holds it for its whole run; ``save_state`` takes it for one save when this process does
    not hold it already. The lock is ``fcntl.flock`` on ``STATE.lock`` beside the state file (beside a symlink's
    target), which records the holder's pid and is removed on release; the kernel drops the lock of a killed process,
    so a stale file never blocks anyone. Without ``fcntl`` (Windows) only writers in this process are kept apart.

    Use it as a context manager (``with StateLock(path): ...``) or call ``acquire()`` and ``release()``.

    Args:
        path: the state file (it need not exist yet).

    Raises:
        StateFileError: on ``acquire``: another writer holds the lock (its pid, when recorded, is in the message), or
            the lock file cannot be made (missing directory, no permission).
    """

    def __init__(self, path):
        self.path = Path(path)
        self._fd: int | None = None
        self._lock_path: str | None = None

    @property
    def held(self) -> bool:
        return self._lock_path is not None

    def _busy(self, pid: int | None, here: bool = False) -> StateFileError:
        who = "another writer in this process" if here else "another process"
        known = f" (pid {pid})" if pid is not None else ""
        return StateFileError(
            f"state file {self.path} is being written by {who}{known}; run one writer per state file."
        )

    def acquire(self) -> StateLock:
        if self.held:
            raise self._busy(os.getpid(), here=True)
        target = _target(self.path)
        lock_path = _lock_path(target)
        with _held_guard:
            if _held.get(lock_path) == os.getpid():
                raise self._busy(os.getpid(), here=True)
            fd = self._lock_file(target, lock_path) if fcntl is not None else None
            _held[lock_path] = os.getpid()
        self._fd, self._lock_path = fd, lock_path
        _remove_stale_temps(target)
        return self

    def _lock_file(self, target: Path, lock_path: str) -> int | None:
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode) & 0o666
        except OSError:
            mode = 0o666
        flags = os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        while True:
            try:
                try:
                    fd = os.open(lock_path, os.O_RDWR | flags, mode)
                except PermissionError:  # a lock file another user left behind: flock needs only a read handle
                    fd = os.open(lock_path, os.O_RDONLY | flags, mode)
            except OSError as exc:
                raise StateFileError(
                    f"cannot write the state file {self.path}: cannot create its lock file {lock_path}: "
                    f"{exc.strerror or exc}."
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _recorded_pid(fd)
                os.close(fd)
                raise self._busy(pid, here=pid == os.getpid()) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return None  # a filesystem without locks: write unguarded, as statelite always did there
                raise StateFileError(f"cannot lock the state file {self.path}: {exc.strerror or exc}.") from None
            # The previous holder removes the lock file as it releases: the file we locked may no longer be the one
            # at lock_path. Locking a removed file guards nothing, so try again.
            try:
                now = os.stat(lock_path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            mine = os.fstat(fd)
            if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # read-only handle: the lock holds without the pid
        return fd

    def release(self) -> None:
        if self._lock_path is None:
            return
        fd, lock_path = self._fd, self._lock_path
        self._fd = self._lock_path = None
        with _held_guard:
            _held.pop(lock_path, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                now, mine = os.stat(lock_path, follow_symlinks=False), os.fstat(fd)
                if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                    os.unlink(lock_path)  # while still locked, so nobody locks a file on its way out
            os.close(fd)

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def hold_state_lock(path) -> contextlib.AbstractContextManager:
    """``StateLock(path)``, or a context that does nothing when ``path`` is None (no state file).

    ``statelite run --state`` wraps its whole run, from loading the state to the last save, in
    ``with hold_state_lock(config.state_path):`` so a second run on the same file stops at once.
    """
    return contextlib.nullcontext() if path is None else StateLock(path)


@contextlib.contextmanager
def _save_lock(path, target: Path) -> Iterator[None]:
    if _holds(_lock_path(target)):  # this process's StateLock: the caller is the writer
        yield
        return
    with StateLock(path):
        yield


def _temp_name_pattern(target: Path) -> re.Pattern:
    return re.compile(re.escape(f".{target.name}.") + r"[0-9a-f]{16}" + re.escape(_TMP_SUFFIX))


def _remove_stale_temps(target: Path) -> None:
    """Remove temporary files a killed writer left; safe only while holding the lock (no save is under way)."""
    pattern = _temp_name_pattern(target)
    with contextlib.suppress(OSError), os.scandir(target.parent) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)  # a symlink is removed itself, never followed


def _create_temp(target: Path, mode: int) -> tuple[int, Path]:
    # O_EXCL: a name that exists, even as a dangling symlink, is never opened, so nothing planted is followed.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}{_TMP_SUFFIX}")
        try:
            return os.open(tmp, flags | getattr(os, "O_CLOEXEC", 0), mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))


def _write(path, fields: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` under a header of ``fields`` (plus the state list and checksum) atomically."""
    names = list(arrays)
    header = {
        "format": FORMAT_NAME,
        **fields,
        "states": [{"name": n, "shape": list(arrays[n].shape), "dtype": arrays[n].dtype.name} for n in names],
        "payload_sha256": _payload_sha256(names, arrays),
    }
    target = _target(path)
    with _save_lock(path, target):
        try:
            old = os.stat(target)
        except OSError:
            old = None
        tmp = None
        try:
            # Over an old file: private until it has the old file's mode. A new file: 0666 minus the umask, as open().
            fd, tmp = _create_temp(target, 0o600 if old is not None else 0o666)
            with os.fdopen(fd, "wb") as f:
                if old is not None:
                    _keep_owner_and_mode(f.fileno(), old)
                np.savez(f, **{HEADER_KEY: np.array(json.dumps(header))}, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as exc:  # Ctrl-C mid-save too: never leave the temporary file
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(exc, OSError):
                raise StateFileError(f"cannot write the state file {path}: {exc.strerror or exc}.") from None
            raise
        _fsync_dir(target.parent)


def _keep_owner_and_mode(fd: int, old: os.stat_result) -> None:
    if hasattr(os, "fchown"):
        mine = os.fstat(fd)
        if (mine.st_uid, mine.st_gid) != (old.st_uid, old.st_gid):
            with contextlib.suppress(OSError):  # only root may give a file away; the mode is kept regardless
                os.fchown(fd, old.st_uid, old.st_gid)
    if hasattr(os, "fchmod"):
        os.fchmod(fd, stat.S_IMODE(old.st_mode))  # after fchown, which may clear set-id bits


def _refuse_nonfinite(path, arrays: dict[str, np.ndarray], keys: list | None = None) -> None:
    for name, a in arrays.items():
        bad = _nonfinite(name, a)
        if bad.any():
            where = ""
            if keys is not None:
                where = f" of stream {keys[int(np.argmax(bad.reshape(len(keys), -1).any(axis=1)))]!r}"
            allowed = "inf" if name == _PREV_KEY else "NaN or inf"
            raise StateFileError(
                f"refusing to save the state to {path}: state {name!r}{where} holds {allowed}; expected finite values "
                f"(a state file never holds one, or every restart would fail on it). The previous file is kept; "
                f"reset the state to go on."
            )


def _extra_name(name: str) -> str:
    if not isinstance(name, str) or not name.startswith(EXTRA_PREFIXES):
        raise BadInputError(f"extra state arrays are named {' or '.join(p + '<name>' for p in EXTRA_PREFIXES)}; "
                            f"received {name!r}.")
    return name


def save_state(path, state: dict, model_sha256: str, extras: Mapping[str, np.ndarray] | None = None) -> None:
    """Write ``state`` to ``path`` atomically, tagged with the model's hash.

    Takes the file's ``StateLock`` for the save unless this process holds it already (``statelite run --state``
    does). A symlink is written through to its target; an existing file keeps its mode.

    Args:
        path: the state file (``.npz``).
        state: ``{name: array}`` in real units, as ``StatefulRunner.state`` returns it. float64 arrays stay float64;
            anything else is stored as float32.
        model_sha256: the hex SHA-256 of the model file the state belongs to.
        extras: optional arrays saved beside the state, named ``monitor.<name>`` or ``gaps.<name>`` (see
            ``EXTRA_PREFIXES``); float64, finite.

    Raises:
        StateFileError: the file cannot be written (directory missing, no permission, disk full), another writer
            holds it, or the state holds NaN or inf (``x_prev``: inf); the previous file is kept.
    """
    arrays = {name: _as_stored(value) for name, value in state.items()}
    arrays.update({_extra_name(name): np.asarray(v, np.float64) for name, v in (extras or {}).items()})
    _refuse_nonfinite(path, arrays)
    _write(path, {"format_version": _SINGLE_VERSION, "model_sha256": model_sha256}, arrays)


def _valid_key(key) -> bool:
    return isinstance(key, (str, int)) and not isinstance(key, bool)


def save_pool_state(path, states: Mapping[Hashable, Mapping[str, np.ndarray]], model_sha256: str,
                    extras: Mapping[Hashable, Mapping[str, np.ndarray]] | None = None) -> None:
    """Write many streams' states, with their keys, to one file atomically, tagged with the model's hash.

    Locking, symlinks and modes as ``save_state``.

    Args:
        path: the state file (``.npz``).
        states: ``{key: {name: array}}``, each inner dict as ``StreamPool.state(key)`` or ``StatefulRunner.state``
            returns it; every stream has the same names and shapes. Keys are strings or integers (they are stored as
            JSON).
        model_sha256: the hex SHA-256 of the model file the states belong to.
        extras: ``{key: {name: array}}`` for every key (names as for ``save_state``), stacked like the states;
            None for none.

    Raises:
        BadInputError: a key that is not a string or integer, or streams whose state names or shapes differ.
        StateFileError: the file cannot be written, another writer holds it, or a stream's state holds NaN or inf;
            the previous file is kept.
    """
    keys = list(states)
    bad = [k for k in keys if not _valid_key(k)]
    if bad:
        raise BadInputError(f"stream keys in a state file must be strings or integers; received {bad[:3]!r}.")
    arrays: dict[str, np.ndarray] = {}
    if keys:
        first = {name: _as_stored(v) for name, v in states[keys[0]].items()}
        for name, value in first.items():
            try:
                arrays[name] = np.stack([np.asarray(states[k][name], dtype=value.dtype) for k in keys])
            except (KeyError, ValueError):
                raise BadInputError(
                    f"every stream's state must have the names and shapes of the first ({keys[0]!r}: "
                    f"{ {n: v.shape for n, v in first.items()} }); state {name!r} differs."
                ) from None
        others = [k for k in keys if set(states[k]) != set(first)]
        if others:
            raise BadInputError(
                f"every stream's state must have the names {sorted(first)}; received {sorted(states[others[0]])} "
                f"for stream {others[0]!r}."
            )
        if extras is not None:
            missing = [k for k in keys if k not in extras]
            if missing:
                raise BadInputError(f"every stream needs its extra arrays, or none; received none for {missing[:3]!r}.")
            for name in extras[keys[0]]:
                try:
                    arrays[_extra_name(name)] = np.stack([np.asarray(extras[k][name], np.float64) for k in keys])
                except (KeyError, ValueError):
                    raise BadInputError(f"every stream's extra arrays must have the names and shapes of the first; "
                                        f"{name!r} differs.") from None
        _refuse_nonfinite(path, arrays, keys)
    _write(path, {"format_version": _POOL_VERSION, "model_sha256": model_sha256, "keys": keys}, arrays)


# -- reading, trusting nothing ----------------------------------------------------------------------------------------


def _corrupt(path, why: str) -> StateFileError:
    return StateFileError(
        f"{path} is not a readable statelite state file ({why}). Expected an .npz written by 'statelite run --state' "
        f"or StatefulRunner.save_state; delete it to start from a zero state."
    )


# Everything the zip and .npy parsers (and zlib under them) raise on bytes they cannot make sense of. RuntimeError
# covers zipfile's "password required" and RecursionError; NotImplementedError an unknown compression.
_PARSE_ERRORS = (
    OSError, ValueError, EOFError, KeyError, TypeError, IndexError, OverflowError, RuntimeError, SyntaxError,
    zipfile.BadZipFile, zlib.error, struct.error, MemoryError, tokenize.TokenError,
)
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def _json_depth(text: str) -> int:
    """How deep the arrays and objects of ``text`` nest (strings skipped), without recursing."""
    skeleton = _JSON_STRING.sub('""', text).encode("ascii", "replace")
    codes = np.frombuffer(skeleton, np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def _member_header(path, member, info: zipfile.ZipInfo) -> tuple[tuple, bool, np.dtype, int]:
    """The shape, order and dtype an .npy entry declares, and how many bytes its header takes."""
    name = info.filename
    lead = member.read(10)
    if len(lead) < 10 or lead[:6] != npy_format.MAGIC_PREFIX:
        raise _corrupt(path, f"entry {name!r} is not an .npy array: it does not start with the .npy magic")
    version = (lead[6], lead[7])
    if version == (1, 0):
        size, start = struct.unpack("<H", lead[8:10])[0], 10
    elif version == (2, 0):
        lead += member.read(2)
        if len(lead) < 12:
            raise _corrupt(path, f"entry {name!r} is truncated in its .npy header")
        size, start = struct.unpack("<I", lead[8:12])[0], 12
    else:
        raise _corrupt(path, f"entry {name!r} is .npy format {version[0]}.{version[1]}; expected 1.0 or 2.0")
    if size > _MAX_NPY_HEADER:
        raise _corrupt(path, f"entry {name!r} declares a {size}-byte .npy header; expected at most {_MAX_NPY_HEADER}")
    head = io.BytesIO(lead + member.read(size))
    npy_format.read_magic(head)
    read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    try:
        shape, fortran, dtype = read(head)
    except Exception as exc:  # noqa: BLE001 numpy parses the text with ast and, failing that, tokenize: any of theirs
        raise _corrupt(path, f"entry {name!r} has an unreadable .npy header ({type(exc).__name__}: {exc})") from None
    if head.read(1):
        raise _corrupt(path, f"entry {name!r} has an .npy header longer than it declares")
    return shape, bool(fortran), dtype, start + size


def _read_member(path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One entry as an array, its declared shape, dtype and size checked against each other before the data is read."""
    name, is_header = info.filename, info.filename == HEADER_KEY + ".npy"
    with zf.open(info) as member:
        shape, fortran, dtype, header_bytes = _member_header(path, member, info)
        if is_header:
            if dtype.kind != "U" or shape != () or dtype.itemsize == 0:
                raise _corrupt(path, f"the header entry is {dtype} {shape}; expected one unicode string")
        elif dtype not in _DTYPES:
            raise _corrupt(path, f"entry {name!r} is {dtype}; expected float32 or float64")
        if any(d < 0 for d in shape):
            raise _corrupt(path, f"entry {name!r} declares shape {shape}")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize  # Python ints: a shape of 2**62 x 2**62 does not wrap around
        if header_bytes + nbytes != info.file_size:
            raise _corrupt(
                path, f"entry {name!r} declares {info.file_size} bytes; its .npy header ({dtype} {shape}) needs "
                f"{header_bytes + nbytes}"
            )
        data = member.read(nbytes)
        if len(data) != nbytes or member.read(1):  # reading to the end checks the CRC
            raise _corrupt(path, f"truncated or corrupt: entry {name!r} holds other than the {nbytes} bytes it declares")
    flat = np.frombuffer(data, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def _read_members(path, f) -> dict[str, np.ndarray]:
    """``{name: array}`` of every entry, the zip's structure and sizes checked before anything is decompressed."""
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _corrupt(path, f"{len(infos)} zip entries; expected at most {MAX_MEMBERS}")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise _corrupt(path, f"entries {twice[:3]} appear more than once; expected each array once")
        total = 0
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or "/" in name or "\\" in name or "\0" in name:
                raise _corrupt(path, f"unexpected entry {name!r}; expected only .npy arrays")
            if info.flag_bits & _ENCRYPTED_FLAGS:
                raise _corrupt(path, f"entry {name!r} is encrypted; expected plain arrays")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _corrupt(path, f"entry {name!r} uses zip compression method {info.compress_type}; expected "
                                     f"stored (0) or deflated (8)")
            limit = MAX_HEADER_BYTES if name == HEADER_KEY + ".npy" else MAX_PAYLOAD_BYTES
            if info.file_size > limit:
                raise _corrupt(path, f"entry {name!r} declares {info.file_size} bytes uncompressed; expected at most "
                                     f"{limit}")
            total += info.file_size
        if total > MAX_PAYLOAD_BYTES:
            raise _corrupt(path, f"its entries declare {total} bytes uncompressed; expected at most "
                                 f"{MAX_PAYLOAD_BYTES}")
        if HEADER_KEY + ".npy" not in names:
            raise _corrupt(path, f"no {HEADER_KEY!r} header; entries present: {sorted(n[:-4] for n in names)}")
        return {info.filename[:-4]: _read_member(path, zf, info) for info in infos}


def _open_regular(path):
    """The file opened for reading, refused before any read when it is not a regular file or is too big (a FIFO at
    the state path used to hang 'statelite run --state' at start: opening it blocks until a writer comes)."""
    return open_bounded(path, MAX_FILE_BYTES, "a state file", StateFileError,
                        missing=f"state file not found: {path}.")


def _read(path, model_sha256: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and ``{name: array}`` (in listed order) of a state file, every check but the shapes done."""
    try:
        with _open_regular(path) as f:
            members = _read_members(path, f)
        text = str(members.pop(HEADER_KEY)[()])
        depth = _json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise _corrupt(path, f"its header nests {depth} deep; expected at most {MAX_JSON_DEPTH}")
        header = json.loads(text)
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise _corrupt(path, f"the header is not a {FORMAT_NAME!r} header")
    except FileNotFoundError:
        raise StateFileError(f"state file not found: {path}.") from None
    except IsADirectoryError:
        raise StateFileError(f"expected a state file, received a directory: {path}.") from None
    except StateFileError:
        raise
    except _PARSE_ERRORS as exc:
        raise _corrupt(path, f"truncated or corrupt: {type(exc).__name__}: {exc}") from None
    arrays = members

    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise StateFileError(
            f"{path} is state file format version {version!r}; this statelite reads up to {FORMAT_VERSION}. "
            f"Upgrade statelite, or delete the file to start from a zero state."
        )
    saved_by = str(header.get("model_sha256"))
    if saved_by != model_sha256:
        raise StateFileError(
            f"{path} holds the state of another model: saved by model sha256 {saved_by[:12]}…, this model is "
            f"sha256 {model_sha256[:12]}…. Expected a state saved by this same model file; delete it (or pass "
            f"another --state file) to start from a zero state."
        )
    listed = []
    try:
        states, checksum = header["states"], header["payload_sha256"]
        if not isinstance(states, list) or not isinstance(checksum, str):
            raise TypeError("'states' must be a list and 'payload_sha256' a string")
        for s in states:
            name, shape, dtype = s["name"], s["shape"], s["dtype"]
            if not isinstance(name, str) or not isinstance(dtype, str) or not isinstance(shape, list):
                raise TypeError(f"a state needs a string name and dtype and a list shape, received {s!r:.80}")
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                raise ValueError(f"state {name!r} has shape {shape!r:.80}")
            listed.append((name, tuple(shape), np.dtype(dtype)))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise _corrupt(path, f"the header's state list is unreadable ({type(exc).__name__}: {exc})") from None
    names = [n for n, _, _ in listed]
    if set(names) != set(arrays) or len(names) != len(arrays):
        raise _corrupt(path, f"the header lists states {names}, the file holds {sorted(arrays)}")
    for name, shape, dtype in listed:
        if arrays[name].shape != shape or arrays[name].dtype != dtype or dtype not in _DTYPES:
            raise _corrupt(path, f"state {name!r} is {arrays[name].dtype} {arrays[name].shape}, the header says {dtype} {shape}")
    if _payload_sha256(names, arrays) != checksum:
        raise _corrupt(path, "its checksum does not match its contents")
    for name in names:
        if _nonfinite(name, arrays[name]).any():
            raise _corrupt(path, f"state {name!r} holds a non-finite value; expected finite values (x_prev: no inf)")
    return header, {name: arrays[name] for name in names}


def _without_extras(arrays: dict) -> dict:
    return {n: a for n, a in arrays.items() if not n.startswith(EXTRA_PREFIXES)}


def load_extras(path, model_sha256: str) -> dict:
    """The extra arrays saved beside the recurrent state (``monitor.*``, ``gaps.*``), per stream.

    Returns:
        ``{key: {name: float64 array}}`` with the full names (key None for a single-stream file); empty when the
        file holds none. The arrays are finite and bounded like every array of the file; their users
        (``ForecastMonitor.restore``, ``StreamWatch.restore``) check their shapes.

    Raises:
        StateFileError: as ``load_state``: a missing, corrupt or oversized file, or another model's.
    """
    header, arrays = _read(path, model_sha256)
    found = {n: a.astype(np.float64) for n, a in arrays.items() if n.startswith(EXTRA_PREFIXES)}
    if not found:
        return {}
    if "keys" not in header:
        return {None: found}
    keys = header["keys"]
    if not isinstance(keys, list) or any(a.ndim == 0 or len(a) != len(keys) for a in found.values()):
        raise _corrupt(path, "its monitor or gap arrays do not have one entry per stream key")
    return {key: {n: a[i] for n, a in found.items()} for i, key in enumerate(keys)}


def _check_names(path, names, shapes: dict) -> dict[str, tuple]:
    expected = {name: tuple(shape) for name, shape in shapes.items()}
    if set(names) != set(expected):
        raise StateFileError(
            f"{path} does not fit this model: expected states {sorted(expected)}; received {sorted(names)}."
        )
    return expected


def load_state(path, model_sha256: str, shapes: dict) -> dict[str, np.ndarray]:
    """Read a state saved by ``save_state`` for the model with hash ``model_sha256``.

    Args:
        path: the state file.
        model_sha256: the hex SHA-256 of the model that will use the state.
        shapes: ``{name: shape}`` the model expects, every name exactly once.

    Returns:
        ``{name: array}`` (float32, or float64 as saved) in the order of ``shapes``.

    Raises:
        StateFileError: missing, truncated, corrupt or oversized file (sizes are checked before reading); a state
            holding NaN or inf; saved by another model; other names or shapes; a pool file (many streams).
    """
    header, arrays = _read(path, model_sha256)
    arrays = _without_extras(arrays)
    if "keys" in header:
        n = len(header["keys"]) if isinstance(header["keys"], list) else "several"
        raise StateFileError(
            f"{path} holds the states of {n} streams (saved by 'statelite run --stream-key' or save_pool_state); "
            f"expected one stream's state. Run with --stream-key again, or pass another --state file."
        )
    expected = _check_names(path, arrays, shapes)
    wrong = [f"{n} expected {expected[n]}, received {a.shape}" for n, a in arrays.items() if a.shape != expected[n]]
    if wrong:
        raise StateFileError(f"{path} does not fit this model: state shapes differ ({'; '.join(wrong)}).")
    return {name: arrays[name] for name in expected}


def load_pool_state(path, model_sha256: str, shapes: dict) -> dict[Hashable, dict[str, np.ndarray]]:
    """Read many streams' states saved by ``save_pool_state`` for the model with hash ``model_sha256``.

    Args:
        path: the state file.
        model_sha256: the hex SHA-256 of the model that will use the states.
        shapes: ``{name: shape}`` of one stream's state, every name exactly once (``(1, units)`` for ``h_0``).

    Returns:
        ``{key: {name: array}}`` in the saved order of the keys, each inner dict in the order of ``shapes``.

    Raises:
        StateFileError: missing, truncated, corrupt or oversized file (sizes are checked before reading); a state
            holding NaN or inf; saved by another model; other names or shapes; a single-stream file.
    """
    header, arrays = _read(path, model_sha256)
    arrays = _without_extras(arrays)
    if "keys" not in header:
        raise StateFileError(
            f"{path} holds one stream's state (saved without --stream-key); expected the states of many streams "
            f"with their keys. Run without --stream-key, or pass another --state file."
        )
    keys = header["keys"]
    if not isinstance(keys, list) or not all(_valid_key(k) for k in keys) or len(set(keys)) != len(keys):
        raise _corrupt(path, "its list of stream keys is not a list of distinct strings or integers")
    if not keys:
        return {}
    expected = _check_names(path, arrays, shapes)
    wrong = [
        f"{n} expected {(len(keys),) + expected[n]}, received {a.shape}"
        for n, a in arrays.items()
        if a.shape != (len(keys),) + expected[n]
    ]
    if wrong:
        raise StateFileError(
            f"{path} does not fit this model: state shapes differ ({'; '.join(wrong)}; the first axis is the "
            f"{len(keys)} streams)."
        )
    return {key: {name: arrays[name][i] for name in expected} for i, key in enumerate(keys)}
