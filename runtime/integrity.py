"""The model file's content digest: recorded by the converter, checked before any interpreter sees the bytes.

A TFLite interpreter trusts the flatbuffer it is given: a single flipped byte that still passes its verifier can
crash the process (SD-card corruption looks like that). So the converter records a SHA-256 of the file in the file,
and the runtime checks it before creating the interpreter.

The digest cannot cover itself, so it lives in its own metadata entry, ``statelite_sha256``, whose buffer holds 64
ASCII hex characters. The converter writes the file with 64 ``0`` characters there, hashes the whole file with that
placeholder in place, and writes the hex digest over the placeholder (same length: nothing moves). The runtime finds
the entry's bytes with the pure-Python reader, copies the file, puts the placeholder back, hashes and compares. A file
without the entry (converted before digests were recorded) still loads, with ``integrity == "not recorded"``; but
the converter also names the entry in the metadata JSON (``"content_digest": "statelite_sha256"``), so a file whose
digest entry cannot be found because the corruption hit the entry's own name or table is refused, not waved through.

The golden trace and saved states record ``model_sha256``, the plain SHA-256 of the whole file; that is a different
hash (of the sealed bytes) and stays as it is.
"""

from __future__ import annotations

import hashlib
import json

from .errors import ModelFormatError
from .tflite_file import TFLiteFile, read_tflite

DIGEST_NAME = "statelite_sha256"
PLACEHOLDER = b"0" * 64
VERIFIED = "verified"
NOT_RECORDED = "not recorded"
_HEX = frozenset(b"0123456789abcdef")


def content_digest(data: bytes, span: tuple[int, int]) -> str:
    """The SHA-256 (hex) of ``data`` with the 64 bytes at ``span`` replaced by the placeholder."""
    start, size = span
    buf = bytearray(data)
    buf[start : start + size] = PLACEHOLDER
    return hashlib.sha256(buf).hexdigest()


def check_integrity(data: bytes, info: TFLiteFile, source: str = "model") -> str:
    """Check the file's recorded digest against its bytes.

    Args:
        data: the whole file.
        info: ``read_tflite(data)``.
        source: the file's name for messages.

    Returns:
        ``"verified"``, or ``"not recorded"`` for a file without the digest entry.

    Raises:
        ModelFormatError: the digest entry is malformed, or the bytes do not match it (the file changed after it
            was converted).
    """
    span = info.metadata_spans.get(DIGEST_NAME)
    if span is None:
        if _declares_digest(info):
            raise ModelFormatError(
                f"{source} is corrupt: its metadata says the content digest is in the entry {DIGEST_NAME!r}, but the "
                f"file has no such entry (present: {', '.join(sorted(info.metadata)) or 'none'}). Copy it again from "
                f"the machine that converted it."
            )
        return NOT_RECORDED
    recorded = info.metadata.get(DIGEST_NAME, b"")
    if span[1] != len(PLACEHOLDER) or not set(recorded) <= _HEX:
        raise ModelFormatError(
            f"{source}: the file's {DIGEST_NAME} entry is damaged: expected 64 lowercase hex characters, received "
            f"{len(recorded)} bytes {recorded[:16]!r}. Copy the file again from the machine that converted it."
        )
    actual = content_digest(data, span)
    if actual != recorded.decode("ascii"):
        raise ModelFormatError(
            f"{source} is corrupt: its content digest does not match the one recorded at conversion (expected "
            f"sha256 {recorded[:12].decode('ascii')}…, received {actual[:12]}…): the file changed after "
            f"'statelite convert' wrote it. Copy it again from the machine that converted it."
        )
    return VERIFIED


def _declares_digest(info: TFLiteFile) -> bool:
    raw = info.metadata.get("statelite")
    if raw is None or b'"content_digest"' not in raw:
        return False
    try:
        d = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return True  # the key is there but the JSON is damaged: the file is corrupt either way
    return not isinstance(d, dict) or d.get("content_digest") is not None


def declare_digest(payload: bytes) -> bytes:
    """The metadata JSON ``payload`` with ``"content_digest": "statelite_sha256"`` added (the converter's side of
    ``_declares_digest``); written in ``ModelMetadata.to_json``'s layout."""
    d = json.loads(payload.decode("utf-8"))
    d["content_digest"] = DIGEST_NAME
    return json.dumps(d, indent=1, sort_keys=False).encode("utf-8")


def seal(data: bytes, source: str = "model") -> bytes:
    """``data`` with its digest entry's placeholder (or stale digest) replaced by the digest of its content.

    The converter calls this on every file it writes; a tool or test that edits a converted model on purpose calls
    it to make the edit loadable again. A file without the digest entry is returned unchanged.

    Raises:
        ModelFormatError: ``data`` is not a readable TFLite file, or its digest entry is not 64 bytes long.
    """
    info = read_tflite(data, source=source)
    span = info.metadata_spans.get(DIGEST_NAME)
    if span is None:
        return bytes(data)
    if span[1] != len(PLACEHOLDER):
        raise ModelFormatError(f"{source}: the {DIGEST_NAME} entry is {span[1]} bytes long; expected 64.")
    buf = bytearray(data)
    buf[span[0] : span[0] + span[1]] = content_digest(data, span).encode("ascii")
    return bytes(buf)
