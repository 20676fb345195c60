"""A minimal reader of the TFLite flatbuffer: operators with versions, signatures and metadata entries.

Devices that have only ``tflite-runtime`` have no TFLite schema module, so this walks the flatbuffer with the
``flatbuffers`` package's table accessor and the field slots of TFLite's ``schema.fbs``. It reads only; the
converter writes metadata with TensorFlow's own schema module.
"""

from __future__ import annotations

import dataclasses
import struct

from flatbuffers import number_types as N
from flatbuffers.table import Table

from .errors import ModelFormatError
from .ops import builtin_name

_IDENTIFIER = b"TFL3"


def _slot(index: int) -> int:
    return 4 + 2 * index


@dataclasses.dataclass(frozen=True)
class OperatorCode:
    name: str
    version: int


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    key: str
    inputs: dict[str, int]
    outputs: dict[str, int]
    subgraph_index: int


@dataclasses.dataclass(frozen=True)
class TFLiteFile:
    """What statelite needs to know about a ``.tflite`` file before handing it to an interpreter."""

    size: int
    schema_version: int
    operator_codes: tuple[OperatorCode, ...]
    used_operators: tuple[OperatorCode, ...]
    signatures: tuple[SignatureInfo, ...]
    metadata: dict[str, bytes]


class _Reader:
    def __init__(self, buf: bytes):
        self.buf = buf

    def table(self, pos: int) -> Table:
        return Table(self.buf, pos)

    def field(self, t: Table, index: int) -> int:
        return t.Offset(_slot(index))

    def scalar(self, t: Table, index: int, flags, default):
        o = self.field(t, index)
        return t.Get(flags, o + t.Pos) if o else default

    def string(self, t: Table, index: int) -> str | None:
        o = self.field(t, index)
        return t.String(o + t.Pos).decode("utf-8") if o else None

    def tables(self, t: Table, index: int) -> list[Table]:
        o = self.field(t, index)
        if not o:
            return []
        start = t.Vector(o)
        return [self.table(t.Indirect(start + 4 * i)) for i in range(t.VectorLen(o))]

    def ints(self, t: Table, index: int, fmt: str = "<i") -> list[int]:
        o = self.field(t, index)
        if not o:
            return []
        start, n = t.Vector(o), t.VectorLen(o)
        size = struct.calcsize(fmt)
        return [struct.unpack_from(fmt, self.buf, start + size * i)[0] for i in range(n)]

    def bytes_vector(self, t: Table, index: int) -> bytes:
        o = self.field(t, index)
        if not o:
            return b""
        start, n = t.Vector(o), t.VectorLen(o)
        return bytes(self.buf[start : start + n])


def read_tflite(data: bytes, source: str = "model") -> TFLiteFile:
    """Parse the parts of a TFLite flatbuffer statelite uses.

    Args:
        data: the whole file's bytes.
        source: a name for the file in error messages.

    Returns:
        A ``TFLiteFile``.

    Raises:
        ModelFormatError: the bytes are not a TFLite flatbuffer, or are truncated.
    """
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        got = data[4:8] if len(data) >= 8 else f"{len(data)} bytes"
        raise ModelFormatError(
            f"{source} is not a TFLite model: expected the flatbuffer identifier {_IDENTIFIER!r} at bytes 4-8, "
            f"received {got!r}. Pass the .tflite file that 'statelite convert' wrote."
        )
    try:
        return _parse(data)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFormatError(
            f"{source} is not a readable TFLite model ({len(data)} bytes): the flatbuffer is truncated or corrupt "
            f"({exc}). Copy the file again from the machine that converted it."
        ) from None


def _parse(data: bytes) -> TFLiteFile:
    r = _Reader(data)
    root = struct.unpack_from("<I", data, 0)[0]
    if root >= len(data):
        raise ValueError(f"root offset {root} beyond end of file")
    model = r.table(root)
    schema_version = r.scalar(model, 0, N.Uint32Flags, 0)
    codes = []
    for oc in r.tables(model, 1):
        deprecated = r.scalar(oc, 0, N.Int8Flags, 0)
        builtin = r.scalar(oc, 3, N.Int32Flags, 0)
        version = r.scalar(oc, 2, N.Int32Flags, 1)
        custom = r.string(oc, 1)
        code = max(deprecated, builtin)
        name = f"CUSTOM:{custom}" if custom else builtin_name(code)
        codes.append(OperatorCode(name, version))
    used: dict[int, None] = {}
    for sg in r.tables(model, 2):
        for op in r.tables(sg, 3):
            used[r.scalar(op, 0, N.Uint32Flags, 0)] = None
    for index in used:
        if index >= len(codes):
            raise ValueError(f"operator code index {index} out of range ({len(codes)} codes)")
    buffers = r.tables(model, 4)
    metadata = {}
    for md in r.tables(model, 6):
        name = r.string(md, 0) or ""
        index = r.scalar(md, 1, N.Uint32Flags, 0)
        if index >= len(buffers):
            raise ValueError(f"metadata {name!r} points at buffer {index} of {len(buffers)}")
        metadata[name] = _buffer_bytes(r, buffers[index], data)
    signatures = []
    for sd in r.tables(model, 7):
        ins = {r.string(tm, 0): r.scalar(tm, 1, N.Uint32Flags, 0) for tm in r.tables(sd, 0)}
        outs = {r.string(tm, 0): r.scalar(tm, 1, N.Uint32Flags, 0) for tm in r.tables(sd, 1)}
        signatures.append(SignatureInfo(r.string(sd, 2) or "", ins, outs, r.scalar(sd, 4, N.Uint32Flags, 0)))
    return TFLiteFile(
        size=len(data),
        schema_version=schema_version,
        operator_codes=tuple(codes),
        used_operators=tuple(codes[i] for i in sorted(used)),
        signatures=tuple(signatures),
        metadata=metadata,
    )


def _buffer_bytes(r: _Reader, buffer: Table, data: bytes) -> bytes:
    offset = r.scalar(buffer, 1, N.Uint64Flags, 0)
    size = r.scalar(buffer, 2, N.Uint64Flags, 0)
    if offset > 1:  # large models keep buffers after the flatbuffer, addressed from the file's start
        if offset + size > len(data):
            raise ValueError(f"buffer at {offset}+{size} beyond end of file")
        return bytes(data[offset : offset + size])
    return r.bytes_vector(buffer, 0)
