"""A minimal, bounds-checked reader of the TFLite flatbuffer: operators with versions, signatures with their
tensors' shapes and dtypes, and metadata entries with where their bytes lie in the file.

Devices that have only ``tflite-runtime`` have no TFLite schema module, so this walks the flatbuffer by hand with the
field slots of TFLite's ``schema.fbs``. It reads only; the converter writes with TensorFlow's own schema module.

Every offset and length read from the file is checked against the file's size before it is followed, and nothing
recurses, so any byte string gives either a ``TFLiteFile`` or a ``ModelFormatError``: never another exception, and
never a read outside the buffer. (The interpreters' own flatbuffer verifiers are not enough: single-byte changes
that pass LiteRT's verifier have crashed it; the digest check in ``statelite.integrity`` catches those.)
"""

from __future__ import annotations

import dataclasses
import struct

from .errors import ModelFormatError
from .ops import builtin_name

_IDENTIFIER = b"TFL3"
# No statelite model has more than a few thousand of anything; a length beyond this is corruption, not a big model.
_MAX_ITEMS = 1 << 20

# TFLite's TensorType enum, the values statelite can meet at a signature.
_TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
    8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64", 15: "uint32", 16: "uint16", 17: "int4",
}


@dataclasses.dataclass(frozen=True)
class OperatorCode:
    name: str
    version: int


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A tensor of a subgraph as the file declares it: ``scale``/``zero_point`` are None without quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    key: str
    inputs: dict[str, int]
    outputs: dict[str, int]
    subgraph_index: int
    # The tensors behind ``inputs`` and ``outputs``, by signature name.
    input_tensors: dict[str, TensorInfo] = dataclasses.field(default_factory=dict)
    output_tensors: dict[str, TensorInfo] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TFLiteFile:
    """What statelite needs to know about a ``.tflite`` file before handing it to an interpreter."""

    size: int
    schema_version: int
    operator_codes: tuple[OperatorCode, ...]
    used_operators: tuple[OperatorCode, ...]
    signatures: tuple[SignatureInfo, ...]
    metadata: dict[str, bytes]
    # name -> (offset, length) of each metadata entry's bytes in the file (the digest entry is patched in place).
    metadata_spans: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    # "verified", "not recorded" (no digest entry: a model converted before digests), or "unchecked" (bytes parsed
    # by ``read_tflite`` alone; ``read_model_file`` checks the digest and sets one of the other two).
    integrity: str = "unchecked"
    # Each subgraph's input and output tensor indices, in the order an interpreter without signatures (TFLite Micro)
    # numbers its inputs and outputs.
    subgraph_io: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()


class _Corrupt(Exception):
    """Internal: what is wrong, turned into a ``ModelFormatError`` naming the file by ``read_tflite``."""


class _Reader:
    """Flatbuffer access where every position is checked before it is read."""

    def __init__(self, buf: bytes):
        self.buf = buf
        self.n = len(buf)

    def _need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > self.n:
            raise _Corrupt(f"{what} at byte {pos} (+{size}) lies outside the file's {self.n} bytes")

    def u8(self, pos: int) -> int:
        self._need(pos, 1, "a byte")
        return self.buf[pos]

    def u16(self, pos: int) -> int:
        self._need(pos, 2, "a 16-bit field")
        return struct.unpack_from("<H", self.buf, pos)[0]

    def u32(self, pos: int) -> int:
        self._need(pos, 4, "a 32-bit field")
        return struct.unpack_from("<I", self.buf, pos)[0]

    def i32(self, pos: int) -> int:
        self._need(pos, 4, "a 32-bit field")
        return struct.unpack_from("<i", self.buf, pos)[0]

    def table(self, pos: int) -> tuple[int, int, int]:
        """``(table position, vtable position, vtable length)``."""
        vt = pos - self.i32(pos)
        vt_len = self.u16(vt)
        if vt_len < 4 or vt_len % 2:
            raise _Corrupt(f"the table at byte {pos} has a vtable of impossible length {vt_len}")
        self._need(vt, vt_len, "a vtable")
        return pos, vt, vt_len

    def field(self, t, index: int) -> int:
        """The field's absolute position, or 0 when it is absent."""
        pos, vt, vt_len = t
        slot = 4 + 2 * index
        if slot >= vt_len:
            return 0
        off = self.u16(vt + slot)
        return pos + off if off else 0

    def scalar(self, t, index: int, fmt: str, default):
        p = self.field(t, index)
        if not p:
            return default
        size = struct.calcsize(fmt)
        self._need(p, size, "a scalar field")
        return struct.unpack_from(fmt, self.buf, p)[0]

    def _indirect(self, p: int) -> int:
        return p + self.u32(p)

    def vector(self, t, index: int, elem: int) -> tuple[int, int]:
        """``(start of the elements, count)``; ``(0, 0)`` when the field is absent."""
        p = self.field(t, index)
        if not p:
            return 0, 0
        v = self._indirect(p)
        n = self.u32(v)
        if n > _MAX_ITEMS:
            raise _Corrupt(f"a vector at byte {v} claims {n} elements (at most {_MAX_ITEMS} expected)")
        self._need(v + 4, n * elem, "a vector")
        return v + 4, n

    def tables(self, t, index: int) -> list:
        start, n = self.vector(t, index, 4)
        return [self.table(self._indirect(start + 4 * i)) for i in range(n)]

    def table_field(self, t, index: int):
        p = self.field(t, index)
        return self.table(self._indirect(p)) if p else None

    def numbers(self, t, index: int, fmt: str) -> list:
        size = struct.calcsize(fmt)
        start, n = self.vector(t, index, size)
        return [struct.unpack_from(fmt, self.buf, start + size * i)[0] for i in range(n)]

    def bytes_span(self, t, index: int) -> tuple[int, int]:
        return self.vector(t, index, 1)

    def string(self, t, index: int) -> str | None:
        p = self.field(t, index)
        if not p:
            return None
        v = self._indirect(p)
        n = self.u32(v)
        self._need(v + 4, n, "a string")
        return bytes(self.buf[v + 4 : v + 4 + n]).decode("utf-8")


def read_tflite(data: bytes, source: str = "model") -> TFLiteFile:
    """Parse the parts of a TFLite flatbuffer statelite uses.

    Args:
        data: the whole file's bytes.
        source: a name for the file in error messages.

    Returns:
        A ``TFLiteFile`` (``integrity`` "unchecked": ``statelite.integrity`` checks the digest).

    Raises:
        ModelFormatError: the bytes are not a TFLite flatbuffer, or are truncated or corrupt. Nothing else, whatever
            the bytes.
    """
    data = bytes(data)
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        got = data[4:8] if len(data) >= 8 else f"{len(data)} bytes"
        raise ModelFormatError(
            f"{source} is not a TFLite model: expected the flatbuffer identifier {_IDENTIFIER!r} at bytes 4-8, "
            f"received {got!r}. Pass the .tflite file that 'statelite convert' wrote."
        )
    try:
        return _parse(data)
    except (_Corrupt, struct.error, IndexError, UnicodeDecodeError, ValueError, OverflowError, RecursionError,
            MemoryError, KeyError, TypeError) as exc:
        raise ModelFormatError(
            f"{source} is not a readable TFLite model ({len(data)} bytes): the flatbuffer is truncated or corrupt "
            f"({type(exc).__name__ if not isinstance(exc, _Corrupt) else 'corrupt'}: {exc}). Copy the file again "
            f"from the machine that converted it."
        ) from None


def _tensor(r: _Reader, tensors: list, index: int) -> TensorInfo:
    if not 0 <= index < len(tensors):
        raise _Corrupt(f"a signature names tensor {index} of a subgraph with {len(tensors)} tensors")
    t = tensors[index]
    shape = tuple(r.numbers(t, 0, "<i"))
    type_code = r.scalar(t, 1, "<b", 0)
    name = r.string(t, 3) or ""
    scale = zero_point = None
    q = r.table_field(t, 4)
    if q is not None:
        scales = r.numbers(q, 2, "<f")
        zeros = r.numbers(q, 3, "<q")
        if len(scales) == 1:  # a per-tensor scale: what statelite's signature tensors have
            scale, zero_point = float(scales[0]), int(zeros[0]) if zeros else 0
    return TensorInfo(name, shape, _TENSOR_TYPES.get(type_code, f"type{type_code}"), scale, zero_point)


def _parse(data: bytes) -> TFLiteFile:
    r = _Reader(data)
    model = r.table(r.u32(0))
    schema_version = r.scalar(model, 0, "<I", 0)
    codes = []
    for oc in r.tables(model, 1):
        deprecated = r.scalar(oc, 0, "<b", 0)
        builtin = r.scalar(oc, 3, "<i", 0)
        version = r.scalar(oc, 2, "<i", 1)
        custom = r.string(oc, 1)
        code = max(deprecated, builtin)
        name = f"CUSTOM:{custom}" if custom else builtin_name(code)
        codes.append(OperatorCode(name, version))
    used: dict[int, None] = {}
    subgraph_tensors, subgraph_io = [], []
    for sg in r.tables(model, 2):
        for op in r.tables(sg, 3):
            used[r.scalar(op, 0, "<I", 0)] = None
        subgraph_tensors.append(r.tables(sg, 0))
        io = (tuple(r.numbers(sg, 1, "<i")), tuple(r.numbers(sg, 2, "<i")))
        if any(not 0 <= i < len(subgraph_tensors[-1]) for side in io for i in side):
            raise _Corrupt(f"subgraph {len(subgraph_io)} names an input or output tensor out of range")
        subgraph_io.append(io)
    for index in used:
        if index >= len(codes):
            raise _Corrupt(f"operator code index {index} out of range ({len(codes)} codes)")
    buffers = r.tables(model, 4)
    metadata, spans = {}, {}
    for md in r.tables(model, 6):
        name = r.string(md, 0) or ""
        index = r.scalar(md, 1, "<I", 0)
        if index >= len(buffers):
            raise _Corrupt(f"metadata {name!r} points at buffer {index} of {len(buffers)}")
        if name in metadata:
            raise _Corrupt(f"metadata entry {name!r} appears twice")
        start, size = _buffer_span(r, buffers[index])
        metadata[name] = bytes(data[start : start + size])
        spans[name] = (start, size)
    signatures = []
    for sd in r.tables(model, 7):
        key = r.string(sd, 2) or ""
        g = r.scalar(sd, 4, "<I", 0)
        if g >= len(subgraph_tensors):
            raise _Corrupt(f"signature {key!r} names subgraph {g} of {len(subgraph_tensors)}")
        tensors = subgraph_tensors[g]
        sides = []
        for side in (0, 1):
            indices, infos = {}, {}
            for tm in r.tables(sd, side):
                name, index = r.string(tm, 0) or "", r.scalar(tm, 1, "<I", 0)
                indices[name], infos[name] = index, _tensor(r, tensors, index)
            sides += [indices, infos]
        signatures.append(SignatureInfo(key, sides[0], sides[2], g, sides[1], sides[3]))
    return TFLiteFile(
        size=len(data),
        schema_version=schema_version,
        operator_codes=tuple(codes),
        used_operators=tuple(codes[i] for i in sorted(used)),
        signatures=tuple(signatures),
        metadata=metadata,
        metadata_spans=spans,
        subgraph_io=tuple(subgraph_io),
    )


def _buffer_span(r: _Reader, buffer) -> tuple[int, int]:
    offset = r.scalar(buffer, 1, "<Q", 0)
    size = r.scalar(buffer, 2, "<Q", 0)
    if offset > 1:  # large models keep buffers after the flatbuffer, addressed from the file's start
        if offset + size > r.n:
            raise _Corrupt(f"buffer at {offset}+{size} beyond end of file")
        return offset, size
    return r.bytes_span(buffer, 0)
