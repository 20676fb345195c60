"""``StatefulRunner``: step a converted model one time step at a time, holding its recurrent state by name."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .errors import BadInputError, ModelFormatError
from .interpreter import backend_version, create_interpreter, load_backend, min_runtime_version
from .metadata import CHUNK_SIGNATURE_KEY, ModelMetadata, StateSpec, metadata_from_file, read_model_file
from .ranges import RangeCallback, RangeGuard, RangeReport
from .transform import Transform

PREV_KEY = "x_prev"  # the previous raw row, part of the state of a differencing model
_F64 = np.dtype(np.float64)


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

        self._chunk = None
        if md.chunk > 1:
            chunk_sig = signatures.get(CHUNK_SIGNATURE_KEY)
            if chunk_sig is None or md.chunk_x is None:
                raise ModelFormatError(f"{self.path}: the metadata says chunk {md.chunk} but the model has no "
                                       f"{CHUNK_SIGNATURE_KEY!r} signature. Convert the model again.")
            self._chunk = (
                chunk_sig.subgraph_index,
                chunk_sig.inputs[md.x.name],
                chunk_sig.outputs[md.y.name],
                [(chunk_sig.inputs[s.input.name], chunk_sig.outputs[s.output.name]) for s in md.states],
            )
            # Allocate the chunk subgraph now: tensor views of the step subgraph are held from here on.
            self._it._interpreter.AllocateTensors(chunk_sig.subgraph_index)
        if sig.subgraph_index != 0:
            raise ModelFormatError(f"{self.path}: signature {sig.key!r} is not the primary subgraph. Convert again.")
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
        self._in_shape = self._x_shape[1:] if self.batch == 1 else self._x_shape
        self._y_shape = self.output_shape
        self._xq = md.x.quantization
        self._yq = md.y.quantization
        self._x_dtype = np.dtype(md.x.dtype)
        self._difference = md.difference
        self._zeros_in = np.zeros(int(np.prod(self._in_shape)))
        if md.difference:
            ti = self._transform.target_index
            contiguous = len(ti) and (np.diff(ti) == 1).all()
            cols = slice(int(ti[0]), int(ti[-1]) + 1) if contiguous else ti
            # The current level of each target, broadcast over the horizon: x[cols] for one stream, else per row.
            self._levels = cols if self.batch == 1 else (slice(None), None, cols)
        # Raw rows go straight into the graph when it holds the scaler and has float inputs and outputs.
        self._direct = md.graph_scales_inputs and md.graph_scales_outputs and self._xq is None and self._yq is None
        # One stream of one feature forecasting one target (a single sensor): plain Python floats around the graph
        # are cheaper than numpy calls on 1-element arrays. The previous row is then kept as a float.
        self._scalar = self.batch == 1 and len(md.features) == 1 and len(md.targets) == 1
        if self._scalar:
            self._scalar_in = (float(self._transform.f_offset[0]), float(self._transform.f_inv_scale[0]))
            self._scalar_out = (float(self._transform.t_scale[0]), float(self._transform.t_offset[0]))
        self._out_map = None if md.graph_scales_outputs else self._transform.output_map()
        # Counts inputs outside the training range or clipped by an integer input (None: the model records neither).
        self._guard = RangeGuard.for_model(md)
        self._on_out_of_range: RangeCallback | None = None
        self._bind()
        self.reset()

    def _bind(self) -> None:
        """Hold numpy views of the input and output tensors: the state lives in the state input tensors themselves,
        and each step copies an output into its paired input in place. Holding views is what the Python interpreter
        API guards ``invoke()`` against, so steps call the underlying C++ ``Invoke`` directly."""
        it = self._it
        self._invoke = it._interpreter.Invoke
        self._xv = it.tensor(self._x_index)()
        self._yv = it.tensor(self._y_index)()
        self._yv_shaped = self._yv.reshape(self._y_shape)
        self._in_views = [it.tensor(p.in_index)() for p in self._pairs]
        self._out_views = [it.tensor(p.out_index)() for p in self._pairs]
        self._plain_carry = all(p.requant is None for p in self._pairs)
        self._carry = list(zip(self._in_views, self._out_views))
        if self._chunk is not None:
            subgraph, x_index, y_index, state_indices = self._chunk
            w = it._interpreter

            def view(index):
                return w.tensor(w, index, subgraph)

            self._chunk_xv, self._chunk_yv = view(x_index), view(y_index)
            self._chunk_in_views = [view(i) for i, _ in state_indices]
            self._chunk_out_views = [view(o) for _, o in state_indices]

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
        """Zero every recurrent state (and forget the previous row of a differencing model). The range counts are
        kept (``reset_range_counts`` clears them)."""
        for p, view in zip(self._pairs, self._in_views):
            view[...] = p.from_real(np.zeros(p.spec.input.shape, np.float32))
        self._prev = None

    @property
    def state_names(self) -> tuple[str, ...]:
        names = tuple(p.spec.name for p in self._pairs)
        return names + ((PREV_KEY,) if self.metadata.difference else ())

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The recurrent state as ``{name: float32 array}``, in real (dequantized) units; a copy.

        A differencing model adds ``x_prev``, the previous raw row as float64 (NaN before the first step).
        """
        out = {p.spec.name: p.to_real(view) for p, view in zip(self._pairs, self._in_views)}
        if self.metadata.difference:
            prev = self._prev
            out[PREV_KEY] = np.full(self._x_shape, np.nan if prev is None else prev, dtype=np.float64) if (
                prev is None or self._scalar
            ) else prev.reshape(self._x_shape).copy()
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
            prev = None if np.isnan(v).all() else (float(v[0, 0]) if self._scalar else v.reshape(self._in_shape).copy())
        for view, q in zip(self._in_views, feed):
            view[...] = q
        self._prev = prev

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

    # -- input range ---------------------------------------------------------------------------------------------

    @property
    def range_report(self) -> RangeReport | None:
        """How many stepped rows were outside the training range, or clipped by an integer input, per column, with
        the first step of each (steps since creation or ``reset_range_counts``). None when the model records no
        ranges (converted before statelite recorded them, with a float input)."""
        return None if self._guard is None else self._guard.report()

    def reset_range_counts(self) -> None:
        """Zero the range counts; ``on_out_of_range`` fires again for the next out-of-range row."""
        if self._guard is not None:
            self._guard.reset_counts()

    @property
    def on_out_of_range(self) -> RangeCallback | None:
        """Called as ``fn(column, kind, step, value, lo, hi)`` the first time each column goes outside the training
        range (``kind`` ``RangeKind.OUTSIDE_TRAINING``) or is clipped (``RangeKind.CLIPPED``), with that range.

        It runs before the row reaches the interpreter: an exception it raises propagates from ``step`` (or
        ``run``) and leaves the state as it was before that row. The row is counted either way.
        """
        return self._on_out_of_range

    @on_out_of_range.setter
    def on_out_of_range(self, fn: RangeCallback | None) -> None:
        self._on_out_of_range = fn
        if self._guard is not None:
            self._guard.on_out_of_range = fn

    # -- stepping ------------------------------------------------------------------------------------------------

    def _coerce(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self._in_shape:
            if x.size == self._zeros_in.size and x.ndim <= 2:
                x = x.reshape(self._in_shape)
            else:
                names = ", ".join(self.metadata.features)
                raise BadInputError(
                    f"x must have shape {self._in_shape} (features: {names}); received shape {x.shape}."
                )
        return x

    def _nonfinite(self, x: np.ndarray) -> BadInputError:
        return BadInputError(
            f"x contains NaN or inf: {x.tolist()}. Clean the input, or pass allow_nonfinite=True to run it anyway."
        )

    def step(self, x) -> np.ndarray:
        """Advance the state by one time step and return the forecast in raw units.

        Args:
            x: one raw row of features, shape ``(features,)``; a ``(batch, features)`` array for a batched model.

        Returns:
            float64 ``(horizon, targets)`` forecasts (``(batch, horizon, targets)`` for a batched model).

        Raises:
            BadInputError: wrong shape, or NaN/inf without ``allow_nonfinite``. The state is left as it was.
        """
        if self._scalar:
            return self._step_scalar(x)
        if x.__class__ is not np.ndarray or x.dtype is not _F64 or x.shape != self._in_shape:
            x = self._coerce(x)
        # x . 0 is 0 for finite rows and NaN when any value is NaN or inf: one call instead of isfinite().all().
        if not self.allow_nonfinite and x.reshape(-1).dot(self._zeros_in) != 0.0:
            raise self._nonfinite(x)
        if self._difference:
            prev = self._prev
            x = x.copy()  # kept as the next step's previous row: later changes to the caller's array must not leak
            xin = x - prev if prev is not None else self._zeros_in.reshape(self._in_shape)
        else:
            xin = x
        self._feed_input(xin)
        self._invoke()
        if self._direct:
            # New float64 arrays, never views of the interpreter's memory (the next invoke overwrites it).
            y = self._yv_shaped + x[self._levels] if self._difference else self._yv_shaped.astype(_F64)
        else:
            y = self._raw_outputs(self._yv.astype(_F64)).reshape(self._y_shape)
            if self._difference:
                y += x[self._levels]
        self._carry_state()
        if self._difference:
            self._prev = x
        return y

    def _feed_input(self, xin: np.ndarray, lanes=None) -> None:
        """Write graph inputs (raw rows, already differenced) into the input tensor: scaled and quantized as the
        graph needs, after the range guard has seen them (only the rows of ``lanes``, when given: a pool's stepping
        streams). Shared by ``step`` and ``StreamPool``."""
        if self._guard is not None:
            self._guard.check(xin if lanes is None else xin[lanes])
        if self._direct:
            self._xv[...] = xin
            return
        xm = self._transform.scale_diff(xin)
        if self._xq is not None:
            xm = _quantize(xm, self._xq.scale, self._xq.zero_point, self._x_dtype)
        self._xv[...] = xm

    def _raw_outputs(self, y: np.ndarray) -> np.ndarray:
        """Flat float64 graph outputs (..., outputs) of a quantized or host-scaled graph in raw units (before adding
        the level of a differencing model)."""
        if self._yq is not None:
            y = (y - self._yq.zero_point) * self._yq.scale
        if self._out_map is not None:
            y = y @ self._out_map[0] + self._out_map[1]
        return y

    def _carry_state(self) -> None:
        """Copy every state output into its paired input, in place (requantized where the scales differ)."""
        if self._plain_carry:
            for view_in, view_out in self._carry:
                view_in[...] = view_out
        else:
            for p, (view_in, view_out) in zip(self._pairs, self._carry):
                view_in[...] = p.carry(view_out)

    def _step_scalar(self, x) -> np.ndarray:
        """``step`` for one stream of one feature and one target, with Python floats around ``Invoke``."""
        if x.__class__ is np.ndarray and x.size == 1:
            v = float(x.item())
        else:
            v = float(self._coerce(x).item())
        if v - v != 0.0 and not self.allow_nonfinite:  # NaN - NaN and inf - inf are NaN
            raise self._nonfinite(np.array([v]))
        prev = self._prev
        d = (v - prev if prev is not None else 0.0) if self._difference else v
        guard = self._guard
        if guard is not None:  # in range: one count and two float comparisons
            guard.steps += 1
            if not guard.lo0 <= d <= guard.hi0:
                guard.miss(d)
        if self._direct:
            self._xv[0, 0] = d
        else:
            offset, inv = self._scalar_in
            d = (d - offset) * inv if not self._transform.graph_scales_inputs else d
            if self._xq is not None:
                info = np.iinfo(self._x_dtype)
                d = min(max(round(d / self._xq.scale) + self._xq.zero_point, info.min), info.max)
            self._xv[0, 0] = d
        self._invoke()
        y = self._yv.tolist()[0]
        self._carry_state()
        if not self._direct:
            if self._yq is not None:
                scale, zero = self._yq.scale, self._yq.zero_point
                y = [(q - zero) * scale for q in y]
            if self._out_map is not None:
                t_scale, t_offset = self._scalar_out
                y = [q * t_scale + t_offset for q in y]
                if self._difference:  # the graph predicts differences: accumulate them over the horizon
                    total, acc = 0.0, []
                    for q in y:
                        total += q
                        acc.append(total)
                    y = acc
        if self._difference:
            self._prev = v
            y = [q + v for q in y]
        return np.array(y).reshape(self._y_shape)

    def run(self, xs, chunked: bool = True) -> np.ndarray:
        """Step through a sequence of raw rows, carrying the state; returns one forecast per row.

        Args:
            xs: ``(steps, features)`` (``(steps, batch, features)`` for a batched model).
            chunked: on a model converted with ``--chunk K``, take K steps per call (the remainder one by one).

        Returns:
            ``(steps, horizon, targets)`` (``(steps, batch, horizon, targets)`` for a batched model).

        Raises:
            BadInputError: wrong shape, or NaN/inf without ``allow_nonfinite``; the state is left as it was.
        """
        xs = np.asarray(xs, dtype=np.float64)
        if xs.ndim != len(self._in_shape) + 1 or xs.shape[1:] != self._in_shape:
            want = ", ".join(map(str, self._in_shape))
            raise BadInputError(f"xs must have shape (steps, {want}); received shape {xs.shape}.")
        if not self.allow_nonfinite and not np.isfinite(xs).all():
            bad = int(np.argwhere(~np.isfinite(xs))[0][0])
            raise BadInputError(f"xs contains NaN or inf (first at step {bad}); nothing was stepped.")
        out = []
        done = 0
        if chunked and self._chunk is not None:
            done = len(xs) // self.metadata.chunk * self.metadata.chunk
            if done:
                out.append(self._run_chunks(xs[:done]))
        out += [self.step(x) for x in xs[done:]]
        if not out:
            return np.zeros((0,) + self.output_shape)
        return np.concatenate([o if o.ndim == len(self._y_shape) + 1 else o[None] for o in out])

    def _run_chunks(self, xs: np.ndarray) -> np.ndarray:
        """Rows (a multiple of K) through the step_chunk signature, K per ``Invoke``.

        The host work is done once for all rows; between chunks the state moves from the chunk subgraph's outputs
        to its inputs in place, and only at the end back into the step subgraph's inputs.
        """
        k, n = self.metadata.chunk, len(xs)
        w = self._it._interpreter
        subgraph = self._chunk[0]
        if self._difference:
            if self._prev is None:
                first = xs[:1]
            else:
                first = np.array([[self._prev]]) if self._scalar else self._prev[None]
            xin = xs - np.concatenate([first, xs[:-1]])
        else:
            xin = xs
        if self._guard is not None:
            self._guard.check(xin, steps=n)
        xin = self._transform.scale_diff(xin)
        if self.batch == 1:
            blocks = xin.reshape(n // k, 1, k, -1)
        else:  # (steps, batch, features) -> (chunks, batch, K, features)
            blocks = xin.reshape(n // k, k, self.batch, -1).transpose(0, 2, 1, 3)
        c_in, c_out = self._chunk_in_views, self._chunk_out_views
        for view_in, view in zip(c_in, self._in_views):
            view_in[...] = view
        ys = np.empty((n // k,) + self._chunk_yv.shape, np.float32)
        for c in range(n // k):
            self._chunk_xv[...] = blocks[c]
            w.Invoke(subgraph)
            ys[c] = self._chunk_yv
            for view_in, view_out in zip(c_in, c_out):
                view_in[...] = view_out
        for view, view_in in zip(self._in_views, c_in):
            view[...] = view_in
        # (chunks, batch, K, outputs) -> (steps, [batch,] outputs)
        y = ys.transpose(0, 2, 1, 3).reshape(n, self.batch, -1).astype(_F64)
        y = self._raw_outputs(y[:, 0] if self.batch == 1 else y).reshape((n,) + self._y_shape)
        if self._difference:
            y += self._chunk_levels(xs)
            self._prev = float(xs[-1, 0]) if self._scalar else xs[-1].copy()
        return y

    def _chunk_levels(self, block: np.ndarray) -> np.ndarray:
        cols = self._levels if self.batch == 1 else self._levels[2]
        return block[..., cols][..., None, :]

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
