"""Saved recurrent state: an ``.npz`` file tagged with the model's hash and a checksum, written atomically.

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
Writes go to a temporary file in the same directory that is flushed, fsynced and renamed over the old file, then the
directory is fsynced: after a crash at any moment the file holds either the previous state or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np

from .errors import BadInputError, StateFileError

HEADER_KEY = "__statelite_state__"
FORMAT_NAME = "statelite-state"
FORMAT_VERSION = 2  # the newest this statelite reads
_SINGLE_VERSION = 1  # one stream; what older statelites read
_POOL_VERSION = 2  # many streams, with their keys
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _payload_sha256(names, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def _as_stored(value) -> np.ndarray:
    a = np.asarray(value)
    return a if a.dtype in _DTYPES else a.astype(np.float32)


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


def _write(path, fields: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` under a header of ``fields`` (plus the state list and checksum) atomically."""
    path = Path(path)
    names = list(arrays)
    header = {
        "format": FORMAT_NAME,
        **fields,
        "states": [{"name": n, "shape": list(arrays[n].shape), "dtype": arrays[n].dtype.name} for n in names],
        "payload_sha256": _payload_sha256(names, arrays),
    }
    # A fixed temporary name: a writer killed mid-save leaves at most one stale file, overwritten by the next save.
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **{HEADER_KEY: np.array(json.dumps(header))}, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StateFileError(f"cannot write the state file {path}: {exc.strerror or exc}.") from None
    _fsync_dir(path.parent if str(path.parent) else Path("."))


def save_state(path, state: dict, model_sha256: str) -> None:
    """Write ``state`` to ``path`` atomically, tagged with the model's hash.

    Args:
        path: the state file (``.npz``).
        state: ``{name: array}`` in real units, as ``StatefulRunner.state`` returns it. float64 arrays stay float64;
            anything else is stored as float32.
        model_sha256: the hex SHA-256 of the model file the state belongs to.

    Raises:
        StateFileError: the file cannot be written (directory missing, no permission, disk full).
    """
    arrays = {name: _as_stored(value) for name, value in state.items()}
    _write(path, {"format_version": _SINGLE_VERSION, "model_sha256": model_sha256}, arrays)


def _valid_key(key) -> bool:
    return isinstance(key, (str, int)) and not isinstance(key, bool)


def save_pool_state(path, states: Mapping[Hashable, Mapping[str, np.ndarray]], model_sha256: str) -> None:
    """Write many streams' states, with their keys, to one file atomically, tagged with the model's hash.

    Args:
        path: the state file (``.npz``).
        states: ``{key: {name: array}}``, each inner dict as ``StreamPool.state(key)`` or ``StatefulRunner.state``
            returns it; every stream has the same names and shapes. Keys are strings or integers (they are stored as
            JSON).
        model_sha256: the hex SHA-256 of the model file the states belong to.

    Raises:
        BadInputError: a key that is not a string or integer, or streams whose state names or shapes differ.
        StateFileError: the file cannot be written.
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
    _write(path, {"format_version": _POOL_VERSION, "model_sha256": model_sha256, "keys": keys}, arrays)


def _corrupt(path, why: str) -> StateFileError:
    return StateFileError(
        f"{path} is not a readable statelite state file ({why}). Expected an .npz written by 'statelite run --state' "
        f"or StatefulRunner.save_state; delete it to start from a zero state."
    )


def _read(path, model_sha256: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and ``{name: array}`` (in listed order) of a state file, every check but the shapes done."""
    try:
        with open(path, "rb") as f:
            with np.load(f, allow_pickle=False) as npz:
                files = set(npz.files)
                if HEADER_KEY not in files:
                    raise _corrupt(path, f"no {HEADER_KEY!r} header; entries present: {sorted(files)}")
                header = json.loads(str(npz[HEADER_KEY][()]))
                if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
                    raise _corrupt(path, f"the header is not a {FORMAT_NAME!r} header")
                arrays = {name: npz[name] for name in files - {HEADER_KEY}}
    except FileNotFoundError:
        raise StateFileError(f"state file not found: {path}.") from None
    except IsADirectoryError:
        raise StateFileError(f"expected a state file, received a directory: {path}.") from None
    except StateFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"truncated or corrupt: {type(exc).__name__}: {exc}") from None

    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
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
    try:
        listed = [(s["name"], tuple(int(d) for d in s["shape"]), np.dtype(s["dtype"])) for s in header["states"]]
        names = [n for n, _, _ in listed]
        checksum = header["payload_sha256"]
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(path, f"the header's state list is unreadable ({type(exc).__name__}: {exc})") from None
    if set(names) != set(arrays) or len(names) != len(arrays):
        raise _corrupt(path, f"the header lists states {names}, the file holds {sorted(arrays)}")
    for name, shape, dtype in listed:
        if arrays[name].shape != shape or arrays[name].dtype != dtype or dtype not in _DTYPES:
            raise _corrupt(path, f"state {name!r} is {arrays[name].dtype} {arrays[name].shape}, the header says {dtype} {shape}")
    if _payload_sha256(names, arrays) != checksum:
        raise _corrupt(path, "its checksum does not match its contents")
    return header, {name: arrays[name] for name in names}


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
        StateFileError: missing, truncated or corrupt file; saved by another model; other names or shapes; a pool
            file (many streams).
    """
    header, arrays = _read(path, model_sha256)
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
        StateFileError: missing, truncated or corrupt file; saved by another model; other names or shapes; a
            single-stream file.
    """
    header, arrays = _read(path, model_sha256)
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
