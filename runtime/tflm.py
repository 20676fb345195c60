"""TensorFlow Lite for Microcontrollers as a statelite backend: the ``tflite-micro`` package's interpreter (TFLM's
own reference kernels, what a microcontroller runs) behind the subset of the TFLite ``Interpreter`` API that
``GraphBinding`` uses on its public path.

TFLM numbers a subgraph's inputs and outputs by position and knows no signatures, so this adapter reads the
positions from the file (``TFLiteFile.subgraph_io``) and pairs them with tensor indices, as the signature names
them: state stays paired by name. Only the primary subgraph runs (a ``step_chunk`` signature is not available).
The ``tflm`` backend is never chosen by ``auto``: it is for ``verify --backend tflm`` and tests.
"""

from __future__ import annotations

import numpy as np

from .tflite_file import read_tflite

PACKAGE = "tflite-micro"


class Interpreter:
    """``tflite_micro.python.tflite_micro.runtime.Interpreter`` with tensor indices as TFLite numbers them."""

    def __init__(self, model_content: bytes, num_threads: int | None = None):
        from tflite_micro.python.tflite_micro import runtime

        info = read_tflite(bytes(model_content))
        if not info.subgraph_io:
            raise ValueError("the model has no subgraph")
        self._inputs, self._outputs = info.subgraph_io[0]
        sig = next((s for s in info.signatures if s.subgraph_index == 0), None)
        tensors = {}
        if sig is not None:
            tensors.update({sig.inputs[n]: (n, t) for n, t in sig.input_tensors.items()})
            tensors.update({sig.outputs[n]: (n, t) for n, t in sig.output_tensors.items()})
        self._tensors = tensors
        self._micro = runtime.Interpreter.from_bytes(bytes(model_content))
        self._values = {}

    def allocate_tensors(self) -> None:
        """TFLM allocates its arena when it is created."""

    def _details(self, indices, get) -> list[dict]:
        out = []
        for position, index in enumerate(indices):
            d = get(position)
            name, info = self._tensors.get(index, (f"tensor_{index}", None))
            q = d.get("quantization_parameters", {})
            scales, zeros = q.get("scales", ()), q.get("zero_points", ())
            quant = (float(scales[0]), int(zeros[0])) if len(scales) else (0.0, 0)
            out.append({"index": index, "name": name, "shape": np.asarray(d["shape"], dtype=np.int32),
                        "dtype": np.dtype(d["dtype"]).type, "quantization": quant})
        return out

    def get_input_details(self) -> list[dict]:
        return self._details(self._inputs, self._micro.get_input_details)

    def get_output_details(self) -> list[dict]:
        return self._details(self._outputs, self._micro.get_output_details)

    def set_tensor(self, index: int, value) -> None:
        if index not in self._inputs:
            raise ValueError(f"tensor {index} is not an input of the primary subgraph {list(self._inputs)}")
        self._micro.set_input(np.ascontiguousarray(value), self._inputs.index(index))

    def invoke(self) -> None:
        self._micro.invoke()

    def get_tensor(self, index: int) -> np.ndarray:
        if index not in self._outputs:
            raise ValueError(f"tensor {index} is not an output of the primary subgraph {list(self._outputs)}")
        return np.array(self._micro.get_output(self._outputs.index(index)))

    def get_signature_runner(self, key=None):
        raise ValueError("TFLite Micro runs the primary subgraph only: no signature runners")

