"""Saved recurrent state: an ``.npz`` file tagged with the model's hash and a checksum, written atomically.

A device that restarts (power cut, reboot, ``statelite run`` stopped) resumes its stream from the saved state instead
of a cold start. The file is a plain ``.npz`` (``numpy.load`` opens it) holding one array per state and a JSON header
under ``__statelite_state__``::

    {"format": "statelite-state", "format_version": 1, "model_sha256": "...",
     "states": [{"name": "h_0", "shape": [1, 32], "dtype": "float32"}, ...], "payload_sha256": "..."}

Recurrent states are float32; ``x_prev`` (the previous raw row of a differencing model) is float64, because raw
values stay float64 until they are scaled. Each array keeps its dtype.

``payload_sha256`` covers the arrays' bytes in the listed order, so a file that unzips but was damaged is refused.
Writes go to a temporary file in the same directory that is flushed, fsynced and renamed over the old file, then the
directory is fsynced: after a crash at any moment the file holds either the previous state or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import StateFileError

HEADER_KEY = "__statelite_state__"
FORMAT_NAME = "statelite-state"
FORMAT_VERSION = 1
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
    path = Path(path)
    names = list(state)
    arrays = {name: _as_stored(state[name]) for name in names}
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_sha256": model_sha256,
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


def _corrupt(path, why: str) -> StateFileError:
    return StateFileError(
        f"{path} is not a readable statelite state file ({why}). Expected an .npz written by 'statelite run --state' "
        f"or StatefulRunner.save_state; delete it to start from a zero state."
    )


def load_state(path, model_sha256: str, shapes: dict) -> dict[str, np.ndarray]:
    """Read a state saved by ``save_state`` for the model with hash ``model_sha256``.

    Args:
        path: the state file.
        model_sha256: the hex SHA-256 of the model that will use the state.
        shapes: ``{name: shape}`` the model expects, every name exactly once.

    Returns:
        ``{name: array}`` (float32, or float64 as saved) in the order of ``shapes``.

    Raises:
        StateFileError: missing, truncated or corrupt file; saved by another model; other names or shapes.
    """
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

    expected = {name: tuple(shape) for name, shape in shapes.items()}
    if set(names) != set(expected):
        raise StateFileError(
            f"{path} does not fit this model: expected states {sorted(expected)}; received {sorted(names)}."
        )
    wrong = [f"{n} expected {expected[n]}, received {s}" for n, s, _ in listed if s != expected[n]]
    if wrong:
        raise StateFileError(f"{path} does not fit this model: state shapes differ ({'; '.join(wrong)}).")
    return {name: arrays[name] for name in expected}
