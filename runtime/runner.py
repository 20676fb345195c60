"""``StatefulRunner``: step a converted model one time step at a time, holding its recurrent state by name."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .errors import BadInputError, ModelFormatError
from .interpreter import backend_version, create_interpreter, load_backend, min_runtime_version
from .metadata import ModelMetadata, StateSpec, metadata_from_file, read_model_file
from .transform import Transform

PREV_KEY = "x_prev"  # the previous raw row, part of the state of a differencing model


def _quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero_point, info.min, info.max).astype(dtype)


class _StatePair:
    """One state tensor's input and output indices, and how to carry its value from output to input."""

    __slots__ = ("spec", "in_index", "out_index", "dtype", "requant")

    def __init__(self, spec: StateSpec, in_index: int, out_index: int):
        self.spec, self.in_index, self.out_index = spec, in_index, out_index
        self.dtype = np.dtype(spec.input.dtype)
        self.requant = None
        qi, qo = spec.input.quantization, spec.output.quantization
        if self.dtype.kind == "i" and (qi.scale, qi.zero_point) != (qo.scale, qo.zero_point):
            self.requant = (qo.scale / qi.scale, qo.zero_point, qi.zero_point)

    def carry(self, q: np.ndarray) -> np.ndarray:
        """The next input value from this step's output value (requantized when the scales differ)."""
        if self.requant is None:
            return q
        ratio, zo, zi = self.requant
        info = np.iinfo(self.dtype)
        return np.clip(np.rint((q.astype(np.float32) - zo) * ratio) + zi, info.min, info.max).astype(self.dtype)

    def to_real(self, q: np.ndarray) -> np.ndarray:
        qi = self.spec.input.quantization
        if self.dtype.kind != "i":
            return q.astype(np.float32, copy=True)
        return ((q.astype(np.float32) - qi.zero_point) * qi.scale).astype(np.float32)

    def from_real(self, x: np.ndarray) -> np.ndarray:
        qi = self.spec.input.quantization
        if self.dtype.kind != "i":
            return np.array(x, dtype=np.float32)
        return _quantize(np.asarray(x, dtype=np.float32), qi.scale, qi.zero_point, self.dtype)


class StatefulRunner:
    """Run a statelite ``.tflite`` model step by step, feeding its recurrent state back by name.

    Args:
        path: a ``.tflite`` file written by ``statelite convert``.
        backend: ``auto`` (``litert``, then ``tflite-runtime``, then ``tensorflow``) or one of those names.
        num_threads: interpreter threads (None: the interpreter's default).
        allow_nonfinite: accept NaN or inf inputs instead of raising ``BadInputError``.

    Raises:
        ModelFormatError: not a TFLite file, truncated, or without statelite metadata.
        IncompatibleModelError: operators newer than the interpreter, or metadata newer than this statelite.
        InterpreterNotFoundError: no interpreter installed.
    """

    def __init__(self, path, backend: str = "auto", num_threads: int | None = None, allow_nonfinite: bool = False):
        self.path = os.fspath(path)
        data, info = read_model_file(self.path)
        md = metadata_from_file(info, source=self.path)
        self.metadata: ModelMetadata = md
        self.model_sha256 = hashlib.sha256(data).hexdigest()
        self.model_size = len(data)
        self.operators = info.used_operators
        self.backend, interpreter_cls = load_backend(backend)
        self.backend_version = backend_version(self.backend)
        self.allow_nonfinite = allow_nonfinite
        self._it = create_interpreter(
            interpreter_cls, self.backend, data, self.path, num_threads, min_runtime_version(info)
        )
        signatures = {s.key: s for s in info.signatures}
        sig = signatures.get(md.signature_key)
        if sig is None:
            raise ModelFormatError(
                f"{self.path}: the metadata names signature {md.signature_key!r}, but the model has "
                f"{sorted(signatures) or 'no signatures'}. Convert the model again."
            )

        def index(names: dict, name: str, kind: str) -> int:
            if name not in names:
                raise ModelFormatError(
                    f"{self.path}: the metadata names {kind} {name!r}, but signature {sig.key!r} has {kind}s "
                    f"{sorted(names)}. Convert the model again."
                )
            return names[name]

        self._x_index = index(sig.inputs, md.x.name, "input")
        self._y_index = index(sig.outputs, md.y.name, "output")
        self._pairs = [
            _StatePair(s, index(sig.inputs, s.input.name, "input"), index(sig.outputs, s.output.name, "output"))
            for s in md.states
        ]
        self._check_shapes()
        self._transform = Transform.from_metadata(md)
        self.batch = md.batch
        self._x_shape = tuple(md.x.shape)
        self._x_dtype = np.dtype(md.x.dtype)
        self._xq = md.x.quantization
        self._yq = md.y.quantization
        self._y_dtype = np.dtype(md.y.dtype)
        self.reset()

    def _check_shapes(self) -> None:
        details = {d["index"]: d for d in self._it.get_input_details() + self._it.get_output_details()}
        md = self.metadata
        expected = [(self._x_index, md.x), (self._y_index, md.y)]
        expected += [(p.in_index, p.spec.input) for p in self._pairs] + [(p.out_index, p.spec.output) for p in self._pairs]
        for idx, spec in expected:
            d = details.get(idx)
            if d is None or tuple(d["shape"]) != spec.shape or np.dtype(d["dtype"]) != np.dtype(spec.dtype):
                got = "absent" if d is None else f"shape {tuple(d['shape'])} {np.dtype(d['dtype'])}"
                raise ModelFormatError(
                    f"{self.path}: tensor {spec.name!r} should be shape {spec.shape} {spec.dtype} by the metadata; "
                    f"the interpreter has it {got}. The file's metadata does not match its graph."
                )

    # -- state ---------------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Zero every recurrent state (and forget the previous row of a differencing model)."""
        self._feed = [p.from_real(np.zeros(p.spec.input.shape, np.float32)) for p in self._pairs]
        self._prev = None

    @property
    def state_names(self) -> tuple[str, ...]:
        names = tuple(p.spec.name for p in self._pairs)
        return names + ((PREV_KEY,) if self.metadata.difference else ())

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The recurrent state as ``{name: float32 array}``, in real (dequantized) units; a copy.

        A differencing model adds ``x_prev``, the previous raw row (NaN before the first step).
        """
        out = {p.spec.name: p.to_real(q) for p, q in zip(self._pairs, self._feed)}
        if self.metadata.difference:
            shape = self._x_shape
            out[PREV_KEY] = np.full(shape, np.nan) if self._prev is None else self._prev.copy()
        return out

    @state.setter
    def state(self, values: dict[str, np.ndarray]) -> None:
        expected = set(self.state_names)
        if set(values) != expected:
            raise BadInputError(
                f"state must have exactly the keys {sorted(expected)}; received {sorted(values)}."
            )
        feed = []
        for p in self._pairs:
            v = np.asarray(values[p.spec.name], dtype=np.float32)
            if v.shape != p.spec.input.shape:
                raise BadInputError(
                    f"state {p.spec.name!r} must have shape {p.spec.input.shape}; received shape {v.shape}."
                )
            if not np.isfinite(v).all():
                raise BadInputError(f"state {p.spec.name!r} contains NaN or inf; every value must be finite.")
            feed.append(p.from_real(v))
        prev = None
        if self.metadata.difference:
            v = np.asarray(values[PREV_KEY], dtype=np.float64)
            if v.shape != self._x_shape:
                raise BadInputError(f"state {PREV_KEY!r} must have shape {self._x_shape}; received shape {v.shape}.")
            prev = None if np.isnan(v).all() else v.copy()
        self._feed, self._prev = feed, prev

    def save_state(self, path) -> None:
        """Save the state atomically (temporary file, fsync, rename), tagged with this model's hash."""
        from .state_file import save_state

        save_state(path, self.state, self.model_sha256)

    def load_state(self, path) -> None:
        """Load a state saved by ``save_state`` for this same model file.

        Raises:
            StateFileError: truncated or corrupt file, another model's state, or wrong shapes.
        """
        from .state_file import load_state

        self.state = load_state(path, self.model_sha256, {k: v.shape for k, v in self.state.items()})

    # -- stepping ------------------------------------------------------------------------------------------------

    def _coerce(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self._x_shape:
            if x.size == self._x_shape[1] * self.batch and x.ndim <= 2 and (self.batch == 1 or x.ndim == 2):
                x = x.reshape(self._x_shape)
            else:
                names = ", ".join(self.metadata.features)
                raise BadInputError(
                    f"x must have shape {self._x_shape[1:] if self.batch == 1 else self._x_shape} "
                    f"(features: {names}); received shape {x.shape}."
                )
        if not self.allow_nonfinite and not np.isfinite(x).all():
            raise BadInputError(
                f"x contains NaN or inf: {x.tolist()}. Clean the input, or pass allow_nonfinite=True to run it anyway."
            )
        return x

    def step(self, x) -> np.ndarray:
        """Advance the state by one time step and return the forecast in raw units.

        Args:
            x: one raw row of features, shape ``(features,)``; a ``(batch, features)`` array for a batched model.

        Returns:
            ``(horizon, targets)`` forecasts (``(batch, horizon, targets)`` for a batched model).

        Raises:
            BadInputError: wrong shape, or NaN/inf without ``allow_nonfinite``. The state is left as it was.
        """
        x = self._coerce(x)
        xm = self._transform.inputs(x, self._prev)
        it = self._it
        if self._xq is not None:
            xm = _quantize(xm, self._xq.scale, self._xq.zero_point, self._x_dtype)
        it.set_tensor(self._x_index, xm)
        for p, q in zip(self._pairs, self._feed):
            it.set_tensor(p.in_index, q)
        it.invoke()
        y = it.get_tensor(self._y_index)
        self._feed = [p.carry(it.get_tensor(p.out_index)) for p in self._pairs]
        self._prev = x
        if self._yq is not None:
            y = (y.astype(np.float32) - self._yq.zero_point) * self._yq.scale
        y = self._transform.outputs(y, x)
        return y[0] if self.batch == 1 else y

    def run(self, xs) -> np.ndarray:
        """Step through a sequence of raw rows, carrying the state; returns one forecast per row.

        Args:
            xs: ``(steps, features)`` (``(steps, batch, features)`` for a batched model).

        Returns:
            ``(steps, horizon, targets)`` (``(steps, batch, horizon, targets)`` for a batched model).
        """
        xs = np.asarray(xs, dtype=np.float64)
        want = (self._x_shape[1],) if self.batch == 1 else self._x_shape
        if xs.ndim != len(want) + 1 or xs.shape[1:] != want:
            raise BadInputError(f"xs must have shape (steps, {', '.join(map(str, want))}); received shape {xs.shape}.")
        return np.stack([self.step(x) for x in xs]) if len(xs) else np.zeros((0,) + self.output_shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        hy = (self.metadata.horizon, len(self.metadata.targets))
        return hy if self.batch == 1 else (self.batch,) + hy

    def __repr__(self) -> str:
        md = self.metadata
        return (
            f"StatefulRunner({self.path!r}, quant={md.quant}, states={list(self.state_names)}, "
            f"backend={self.backend} {self.backend_version})"
        )
