"""Writing the final flatbuffer: the ``statelite`` metadata entry, explicit zero biases, 16-byte aligned buffers.

TensorFlow's schema module (workstation only) reads the converter's output into objects; we add our metadata entry
and write it back. Two details the stock object API gets wrong for us:

- Its ``BufferT.Pack`` aligns weight buffers to 1 byte, dropping the schema's ``force_align: 16``; ours aligns
  them to 16, as the converter wrote them.
- An integer FULLY_CONNECTED whose bias is all zero comes out of the converter with no bias input at all, and
  tflite-runtime 2.14's ARM kernel (gemmlowp's per-channel path) dereferences the missing bias and crashes
  (SIGSEGV under emulated armv7l and aarch64; x86-64 runs it). We give every such operator an explicit zero int32
  bias with the scales the kernel expects (input scale times each weight scale).
"""

from __future__ import annotations

import numpy as np

from statelite.integrity import DIGEST_NAME, PLACEHOLDER, declare_digest, seal
from statelite.metadata import METADATA_NAME

_ALIGN = 16


def _aligned_buffer_class(schema):
    class AlignedBufferT(schema.BufferT):
        def Pack(self, builder):  # noqa: N802 (the flatbuffers object API's name)
            data = None
            if self.data is not None and len(self.data):
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), _ALIGN)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head : builder.head + len(raw)] = raw
                builder.vectorNumElems = len(raw)
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def _add_zero_biases(m, schema, buffer_cls) -> int:
    """Give integer FULLY_CONNECTED operators without a bias an explicit zero int32 bias; return how many."""
    added = 0
    for sg in m.subgraphs:
        for op in sg.operators:
            code = m.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.FULLY_CONNECTED:
                continue
            inputs = [int(i) for i in op.inputs]
            if len(inputs) >= 3 and inputs[2] >= 0:
                continue
            x, w = sg.tensors[inputs[0]], sg.tensors[inputs[1]]
            if x.type != schema.TensorType.INT8 or w.quantization is None or x.quantization is None:
                continue
            channels = int(w.shape[0])
            w_scales = np.asarray(w.quantization.scale, dtype=np.float64)
            scales = (float(x.quantization.scale[0]) * w_scales).astype(np.float32)
            buffer = buffer_cls()
            buffer.data = np.zeros(channels, dtype="<i4").view(np.uint8)
            m.buffers.append(buffer)
            q = schema.QuantizationParametersT()
            q.scale = [float(s) for s in scales]
            q.zeroPoint = [0] * len(scales)
            q.quantizedDimension = 0
            t = schema.TensorT()
            t.shape = [channels]
            t.type = schema.TensorType.INT32
            t.buffer = len(m.buffers) - 1
            t.name = f"statelite_zero_bias_{added}".encode()
            t.quantization = q
            sg.tensors.append(t)
            op.inputs = inputs[:2] + [len(sg.tensors) - 1] + inputs[3:]
            added += 1
    return added


def _widen_outputs(m, schema, output_name: str, factor: float) -> int:
    """Multiply the scale of the integer tensor behind each signature output ``output_name`` by ``factor``.

    The calibrator sets the forecast's range to what the training stream produced. Stretching the calibration
    stream widens the input, gate and state ranges, but the forecast is a linear map of the hidden state, which stays
    inside its box, so its calibrated range does not grow with it, and a forecast beyond the training range is
    clipped to it (airline passengers, LSTM, int16x8: max error 1.13 normalised, all of it from that clip). The
    FULLY_CONNECTED (or ADD) kernel derives its requantization multiplier from the tensors' scales when it is
    prepared, and DEQUANTIZE reads the scale too, so scaling the one tensor widens the range with nothing else to
    change. Only symmetric (zero point 0) tensors are widened: int16 activations. Returns how many were widened.
    """
    widened = 0
    producers = {}
    for g, sg in enumerate(m.subgraphs):
        for op in sg.operators:
            for t in op.outputs:
                producers[(g, int(t))] = op
    for sig in m.signatureDefs or []:
        g = sig.subgraphIndex
        sg = m.subgraphs[g]
        for out in sig.outputs:
            if out.name not in (output_name, output_name.encode()):
                continue
            op = producers.get((g, int(out.tensorIndex)))
            if op is None:
                continue
            code = m.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.DEQUANTIZE:
                continue
            index = int(op.inputs[0])
            targets = [index]
            source = producers.get((g, index))
            if source is not None:
                code = m.operatorCodes[source.opcodeIndex]
                # The chunk signature packs K steps' forecasts; PACK requires its inputs to share its output's scale.
                if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.PACK:
                    targets += [int(i) for i in source.inputs]
            tensors = [sg.tensors[i] for i in targets]
            if not all(
                t.type == schema.TensorType.INT16 and t.quantization is not None
                and all(int(z) == 0 for z in t.quantization.zeroPoint)
                for t in tensors
            ):
                continue
            for t in tensors:
                t.quantization.scale = [float(v) * factor for v in t.quantization.scale]
            widened += 1
    return widened


def finalize(model: bytes, payload: bytes, output_headroom: float = 1.0) -> bytes:
    """``model`` with the ``statelite`` metadata entry set to ``payload`` (replacing any earlier one), explicit zero
    biases on integer FULLY_CONNECTED operators that lack one, 16-byte aligned buffers, with ``output_headroom > 1``
    an int16 forecast tensor's range widened that many times (see ``_widen_outputs``), and sealed: a
    ``statelite_sha256`` entry holding the SHA-256 of the file's content, which the runtime checks before it creates
    an interpreter (written as 64 '0' placeholder characters, the file hashed with them in place, and the digest
    written over them; the metadata JSON names that entry in ``content_digest``; see ``statelite.integrity``)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    buffer_cls = _aligned_buffer_class(schema)
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    for i, b in enumerate(m.buffers):
        aligned = buffer_cls()
        aligned.data, aligned.offset, aligned.size = b.data, b.offset, b.size
        m.buffers[i] = aligned
    _add_zero_biases(m, schema, buffer_cls)
    if output_headroom > 1.0:
        _widen_outputs(m, schema, "y", output_headroom)
    ours = (METADATA_NAME, METADATA_NAME.encode(), DIGEST_NAME, DIGEST_NAME.encode())
    entries = [e for e in (m.metadata or []) if e.name not in ours]
    for name, data in ((METADATA_NAME, declare_digest(payload)), (DIGEST_NAME, PLACEHOLDER)):
        buffer = buffer_cls()
        buffer.data = np.frombuffer(data, dtype=np.uint8)
        m.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(m.buffers) - 1
        entries.append(entry)
    m.metadata = entries
    builder = flatbuffers.Builder(len(model) + len(payload) + 4096)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return seal(bytes(builder.Output()))
