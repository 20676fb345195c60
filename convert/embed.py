"""Writing the ``statelite`` metadata entry into a TFLite flatbuffer (TensorFlow's schema module; workstation only)."""

from __future__ import annotations

from statelite.metadata import METADATA_NAME


def embed_metadata(model: bytes, payload: bytes) -> bytes:
    """Return ``model`` with a metadata entry named ``statelite`` holding ``payload`` (replacing any earlier one)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    buffer = schema.BufferT()
    buffer.data = list(payload)
    entries = [e for e in (m.metadata or []) if e.name not in (METADATA_NAME, METADATA_NAME.encode())]
    m.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(m.buffers) - 1
    m.metadata = entries + [entry]
    builder = flatbuffers.Builder(len(model) + len(payload) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
