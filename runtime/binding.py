"""``GraphBinding``: one converted model bound to one interpreter, shared by ``StatefulRunner`` and ``StreamPool``.

It owns everything that touches the interpreter: the tensor indices of ``x``, ``y`` and the state pairs (paired by
name), numpy views of those tensors (the state lives in the state input tensors themselves), the carry from each
state output to its input (requantized where the scales differ), feeding a row of graph inputs (scaled and quantized
as the graph needs), the map from graph outputs to raw units, the ``step_chunk`` subgraph's views, and the bounds
beyond which an input is refused rather than fed.

The fast path calls the interpreter's private C++ ``Invoke`` and holds ``tensor()`` views, which the public API
forbids around ``invoke()``. Both are checked for once; an interpreter without them (a future LiteRT, a stripped
build) gets the public ``set_tensor``/``invoke``/``get_tensor`` API on buffers of our own, with the same results.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import threading
import warnings

import numpy as np

from .errors import BadInputError, ConcurrentUseError, ModelFormatError, UnseenKeyWarning
from .interpreter import backend_version, create_interpreter, load_backend, min_runtime_version
from .metadata import CHUNK_SIGNATURE_KEY, ModelMetadata, StateSpec, metadata_from_file, read_model_file
from .ranges import RangeGuard
from .transform import Transform

# A value this many training spans beyond the training range (train_max - train_min, per column of the graph input)
# is not a reading but a glitch (a sensor's 1e30, a unit mix-up by 10^6): it is refused instead of fed. Ordinary
# out-of-range values stay below this by orders of magnitude and are only counted by the range guard; far beyond it,
# float32 arithmetic in the graph overflows and fills the state with NaN.
REFUSE_SPANS = 1000.0
FLOAT32_MAX = float(np.finfo(np.float32).max)

# The finiteness checks multiply by zeros (inf * 0 is NaN): on the error path numpy warns about it, and the error
# raised says it better.
warnings.filterwarnings("ignore", message="invalid value encountered in dot", category=RuntimeWarning,
                        module=r"statelite\.(binding|runner|pool)")


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero_point, info.min, info.max).astype(dtype)


class StatePair:
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
        return quantize(np.asarray(x, dtype=np.float32), qi.scale, qi.zero_point, self.dtype)


def has_fast_api(it, chunk_subgraph: int | None = None) -> bool:
    """Whether the interpreter exposes the private calls the fast path uses (checked once, at binding)."""
    w = getattr(it, "_interpreter", None)
    if w is None or not callable(getattr(w, "Invoke", None)) or not callable(getattr(it, "tensor", None)):
        return False
    if chunk_subgraph is not None:
        return callable(getattr(w, "tensor", None)) and callable(getattr(w, "AllocateTensors", None))
    return True


def refuse_bounds(md: ModelMetadata) -> tuple[np.ndarray, np.ndarray]:
    """Per graph-input column (raw units, differenced when the model differences), the range beyond which a value is
    refused: its scaled value must be finite in float32, and (when the model records ``input_range``) it must lie
    within ``REFUSE_SPANS`` training spans of the training range."""
    n = len(md.features)
    with np.errstate(over="ignore"):
        if md.graph_scales_inputs:
            lo, hi = np.full(n, -FLOAT32_MAX), np.full(n, FLOAT32_MAX)
        else:  # the host scales in float64, then casts to float32
            lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
            # A panel model's rows are scaled by their series' scaler: every one of them must keep it finite.
            scalers = [md.scaler] + (list(md.panel.scalers.values()) if md.panel is not None else [])
            for s in scalers:
                offset, scale = np.asarray(s.feature_offset, float), np.abs(np.asarray(s.feature_scale, float))
                lo, hi = np.maximum(lo, offset - FLOAT32_MAX * scale), np.minimum(hi, offset + FLOAT32_MAX * scale)
        r = md.input_range
        if r is not None and r.train_min is not None and r.train_max is not None:
            tlo, thi = np.asarray(r.train_min, float), np.asarray(r.train_max, float)
            # A constant training column has no span: count one unit (or its magnitude) instead.
            span = np.where(thi > tlo, thi - tlo, np.maximum(np.abs(thi), 1.0))
            lo, hi = np.maximum(lo, tlo - REFUSE_SPANS * span), np.minimum(hi, thi + REFUSE_SPANS * span)
    return lo, hi


def level_refuse_bounds(md: ModelMetadata) -> tuple[np.ndarray, np.ndarray] | None:
    """For a differencing model that records its levels' training range: the range beyond which the first row of a
    stream (which has no previous row to difference against) is refused, ``REFUSE_SPANS`` spans around it."""
    r = md.input_range
    if not md.difference or r is None or r.level_min is None or r.level_max is None:
        return None
    lo, hi = np.asarray(r.level_min, float), np.asarray(r.level_max, float)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    return lo - REFUSE_SPANS * span, hi + REFUSE_SPANS * span


class GraphBinding:
    """A model file bound to an interpreter: its tensors, state carry, input feed and output map.

    Args:
        path: a ``.tflite`` file written by ``statelite convert``.
        backend, num_threads: as for ``StatefulRunner``.
        fast: use the interpreter's private ``Invoke`` and tensor views when it has them (False: the public API).
        key: the series whose scaler a panel model's rows are scaled with (None, or a key not in the panel: the
            global scaler). A pool gives each lane its own with ``set_lane_scaler``.

    Raises:
        ModelFormatError, IncompatibleModelError, InterpreterNotFoundError: as ``StatefulRunner``.
    """

    def __init__(self, path, backend: str = "auto", num_threads: int | None = None, fast: bool = True,
                 key: str | None = None):
        self.path = os.fspath(path)
        data, info = read_model_file(self.path)
        md = metadata_from_file(info, source=self.path)
        self.metadata: ModelMetadata = md
        self.model_sha256 = hashlib.sha256(data).hexdigest()
        self.model_size = len(data)
        self.operators = info.used_operators
        self.backend, interpreter_cls = load_backend(backend)
        self.backend_version = backend_version(self.backend)
        self.it = create_interpreter(
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

        self.chunk = None
        if md.chunk > 1 and self.backend != "tflm":  # TFLite Micro runs the primary subgraph only
            chunk_sig = signatures.get(CHUNK_SIGNATURE_KEY)
            if chunk_sig is None or md.chunk_x is None:
                raise ModelFormatError(f"{self.path}: the metadata says chunk {md.chunk} but the model has no "
                                       f"{CHUNK_SIGNATURE_KEY!r} signature. Convert the model again.")
            self.chunk = (
                chunk_sig.subgraph_index,
                chunk_sig.inputs[md.x.name],
                chunk_sig.outputs[md.y.name],
                [(chunk_sig.inputs[s.input.name], chunk_sig.outputs[s.output.name]) for s in md.states],
            )
        if sig.subgraph_index != 0:
            raise ModelFormatError(f"{self.path}: signature {sig.key!r} is not the primary subgraph. Convert again.")
        self.x_index = index(sig.inputs, md.x.name, "input")
        self.y_index = index(sig.outputs, md.y.name, "output")
        self.pairs = [
            StatePair(s, index(sig.inputs, s.input.name, "input"), index(sig.outputs, s.output.name, "output"))
            for s in md.states
        ]
        self._check_shapes()
        self.transform = Transform.from_metadata(md, key)
        self.batch = md.batch
        # The raw rows the caller gives: the features. The graph's input adds the calendar columns after them.
        self.n_features = len(md.features)
        self.n_calendar = 2 * len(md.calendar)
        self.x_shape = (self.batch, self.n_features)
        self.graph_x_shape = tuple(md.x.shape)
        self.in_shape = self.x_shape[1:] if self.batch == 1 else self.x_shape
        hy = (md.horizon, len(md.targets))
        self.y_shape = hy if self.batch == 1 else (self.batch,) + hy
        self.xq = md.x.quantization
        self.yq = md.y.quantization
        self.x_dtype = np.dtype(md.x.dtype)
        # Raw rows go straight into the graph when it holds the scaler and has float inputs and outputs.
        self.direct = md.graph_scales_inputs and md.graph_scales_outputs and self.xq is None and self.yq is None
        self.out_map = None if md.graph_scales_outputs else self.transform.output_map()
        # A panel pool's per-lane scalers (``set_lane_scaler``): the output map as y * scale + offset per lane, then
        # the cumulative sum of a differencing model. None: one scaler for every lane (``out_map``).
        self.lane_out = None
        # Counts inputs outside the training range or clipped by an integer input (None: the model records neither).
        self.guard = RangeGuard.for_model(md)
        self.refuse_lo, self.refuse_hi = refuse_bounds(md)
        self.level_bounds = level_refuse_bounds(md)
        # Held around every step: a second thread stepping at the same time gets ConcurrentUseError, not lost steps.
        self.lock = threading.RLock()  # re-entrant: run() holds it while it steps; another thread still fails
        self.fast = False
        self.bind(fast)

    def _check_shapes(self) -> None:
        details = {d["index"]: d for d in self.it.get_input_details() + self.it.get_output_details()}
        md = self.metadata
        expected = [(self.x_index, md.x), (self.y_index, md.y)]
        expected += [(p.in_index, p.spec.input) for p in self.pairs] + [(p.out_index, p.spec.output) for p in self.pairs]
        for idx, spec in expected:
            d = details.get(idx)
            if d is None or tuple(d["shape"]) != spec.shape or np.dtype(d["dtype"]) != np.dtype(spec.dtype):
                got = "absent" if d is None else f"shape {tuple(d['shape'])} {np.dtype(d['dtype'])}"
                raise ModelFormatError(
                    f"{self.path}: tensor {spec.name!r} should be shape {spec.shape} {spec.dtype} by the metadata; "
                    f"the interpreter has it {got}. The file's metadata does not match its graph."
                )

    # -- binding -------------------------------------------------------------------------------------------------

    def bind(self, fast: bool = True) -> None:
        """(Re)bind the tensors, from ``pairs`` as they are now; the current state is kept.

        Fast: numpy views of the interpreter's own tensors, and the C++ ``Invoke``. Otherwise (or when the interpreter
        lacks those private calls): buffers of our own, copied in and out through the public API around ``invoke()``.
        """
        it = self.it
        old_state = [np.array(v) for v in self.in_views] if getattr(self, "in_views", None) is not None else None
        chunk_subgraph = None if self.chunk is None else self.chunk[0]
        # Drop the old views first: the public invoke() refuses to run while views of the interpreter are alive.
        self.xv = self.yv = self.yv_shaped = self.in_views = self.out_views = self.carry = None
        self.chunk_xv = self.chunk_yv = self.chunk_in_views = self.chunk_out_views = None
        self.fast = bool(fast) and has_fast_api(it, chunk_subgraph)
        if self.fast:
            if chunk_subgraph is not None and not getattr(self, "_chunk_allocated", False):
                # Allocate the chunk subgraph before any view is held: allocation may move the tensors.
                it._interpreter.AllocateTensors(chunk_subgraph)
                self._chunk_allocated = True
            self.invoke = it._interpreter.Invoke
            self.xv = it.tensor(self.x_index)()
            self.yv = it.tensor(self.y_index)()
            self.in_views = [it.tensor(p.in_index)() for p in self.pairs]
            self.out_views = [it.tensor(p.out_index)() for p in self.pairs]
        else:
            details = {d["index"]: d for d in it.get_input_details() + it.get_output_details()}

            def buffer(index):
                d = details[index]
                return np.zeros(tuple(d["shape"]), d["dtype"])

            self.invoke = self._public_invoke
            self.xv, self.yv = buffer(self.x_index), buffer(self.y_index)
            self.in_views = [buffer(p.in_index) for p in self.pairs]
            self.out_views = [buffer(p.out_index) for p in self.pairs]
        if old_state is not None:
            for view, value in zip(self.in_views, old_state):
                view[...] = value
        self.yv_shaped = self.yv.reshape(self.y_shape)
        self.plain_carry = all(p.requant is None for p in self.pairs)
        self.carry = list(zip(self.in_views, self.out_views))
        # The finiteness check of a step's results. The forecast alone tells: every state element feeds every
        # forecast of its lane in the same step through a matrix product (the next layer, then the head), and
        # IEEE arithmetic makes 0 * NaN and 0 * inf NaN, so a NaN or inf anywhere in h (or in an LSTM's c, through
        # h = o * tanh(c); c cannot reach inf from a finite state, |c'| <= |c| + 1) shows in y. Checking y only
        # keeps the single-sensor step at its old cost (checking every state tensor too cost about 1.2 us of 3.3).
        # Graphs with integer activations (int8, int16x8) dequantize their outputs: always finite, nothing to check.
        integer = self.metadata.quant in ("int8", "int16x8")
        y = self.yv.reshape(-1)
        self.checks = [] if integer or y.dtype.kind != "f" else [(y, np.zeros(y.size, y.dtype))]
        if self.chunk is not None:
            self._bind_chunk()

    def _bind_chunk(self) -> None:
        subgraph, x_index, y_index, state_indices = self.chunk
        if self.fast:
            w = self.it._interpreter

            def view(index):
                return w.tensor(w, index, subgraph)

            self.chunk_xv, self.chunk_yv = view(x_index), view(y_index)
            self.chunk_in_views = [view(i) for i, _ in state_indices]
            self.chunk_out_views = [view(o) for _, o in state_indices]
            self.invoke_chunk = lambda: w.Invoke(subgraph)
            return
        md = self.metadata
        runner = self.it.get_signature_runner(CHUNK_SIGNATURE_KEY)
        ins, outs = runner.get_input_details(), runner.get_output_details()

        def buffer(details, name):
            return np.zeros(tuple(details[name]["shape"]), details[name]["dtype"])

        self.chunk_xv, self.chunk_yv = buffer(ins, md.x.name), buffer(outs, md.y.name)
        self.chunk_in_views = [buffer(ins, s.input.name) for s in md.states]
        self.chunk_out_views = [buffer(outs, s.output.name) for s in md.states]

        def invoke_chunk():
            feed = {md.x.name: self.chunk_xv}
            feed.update({s.input.name: v for s, v in zip(md.states, self.chunk_in_views)})
            out = runner(**feed)
            self.chunk_yv[...] = out[md.y.name]
            for s, v in zip(md.states, self.chunk_out_views):
                v[...] = out[s.output.name]

        self.invoke_chunk = invoke_chunk

    def _public_invoke(self) -> None:
        it = self.it
        it.set_tensor(self.x_index, self.xv)
        for p, v in zip(self.pairs, self.in_views):
            it.set_tensor(p.in_index, v)
        it.invoke()
        self.yv[...] = it.get_tensor(self.y_index)
        for p, v in zip(self.pairs, self.out_views):
            v[...] = it.get_tensor(p.out_index)

    def invoke_failed(self, exc: Exception) -> ModelFormatError:
        """The statelite error for an interpreter failure while invoking (one line naming the model)."""
        from . import interpreter

        helper = getattr(interpreter, "invoke_error", None)
        if helper is not None:
            return helper(exc, self.path, self.backend)
        text = " ".join(str(exc).split()) or type(exc).__name__
        return ModelFormatError(f"{self.path}: the interpreter ({self.backend}) failed to run the model: {text}")

    # -- stepping ------------------------------------------------------------------------------------------------

    def busy(self) -> ConcurrentUseError:
        return ConcurrentUseError(
            f"{self.path}: stepped from two threads at once. A runner or pool is single-threaded: give each thread "
            f"its own, or hold a lock around every call."
        )

    def finite_results(self) -> bool:
        """Whether this invoke's float outputs and next state are all finite (one dot product per tensor)."""
        total = 0.0
        for flat, zeros in self.checks:
            total += flat.dot(zeros)  # 0 for finite values, NaN when any is NaN or inf
        return total == 0.0

    def refuse_bound(self, j: int) -> str:
        """Column ``j``'s refuse bounds and where they come from, as the refusal messages word them."""
        r = self.metadata.input_range
        if r is not None and r.train_min is not None:
            limit = (f"the training range [{r.train_min[j]:.6g}, {r.train_max[j]:.6g}] widened by "
                     f"{REFUSE_SPANS:g} training spans on each side")
        else:
            limit = "the largest values whose scaled value is finite in float32"
        return (f"column {self.metadata.features[j]!r} must be within [{self.refuse_lo[j]:.6g}, "
                f"{self.refuse_hi[j]:.6g}] ({limit})")

    def first_row_refusal(self, rows: np.ndarray, where: str) -> BadInputError | None:
        """The error for first rows (no previous row) whose level is beyond ``level_bounds``, or None."""
        if self.level_bounds is None:
            return None
        lo, hi = self.level_bounds
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(lo))
        bad = (rows < lo) | (rows > hi)
        if not bad.any():
            return None
        i, j = (int(v) for v in np.argwhere(bad)[0])
        r = self.metadata.input_range
        return BadInputError(
            f"{where}: column {self.metadata.features[j]!r} of a stream's first row (no previous row to difference "
            f"against) must be within [{lo[j]:.6g}, {hi[j]:.6g}] (the training range [{r.level_min[j]:.6g}, "
            f"{r.level_max[j]:.6g}] widened by {REFUSE_SPANS:g} training spans on each side); received "
            f"{rows[i, j]:.6g}, a glitch rather than a reading. The row was not stepped and the state was kept."
        )

    # -- panel and calendar --------------------------------------------------------------------------------------

    def use_lane_scalers(self) -> None:
        """Give every lane its own scaler (a panel model's pool), all the global one until ``set_lane_scaler``.

        The transform's feature offsets and scales become ``(batch, features)`` arrays and the output map per-lane
        ``(batch, horizon * targets)`` scales and offsets, so a step of many lanes stays one vectorised expression.
        """
        t = self.transform
        h = self.metadata.horizon
        t.f_offset = np.tile(t.f_offset, (self.batch, 1))
        t.f_inv_scale = np.tile(t.f_inv_scale, (self.batch, 1))
        scale = np.tile(np.tile(t.t_scale, h), (self.batch, 1))
        offset = np.tile(np.tile(t.t_offset, h), (self.batch, 1))
        self.lane_out = (scale, offset, t.horizon_sum())

    def set_lane_scaler(self, lane: int, scaler) -> None:
        """Lane ``lane``'s rows are scaled with ``scaler`` (a ``Scaler``) from now on (after ``use_lane_scalers``)."""
        t, h = self.transform, self.metadata.horizon
        t.f_offset[lane] = scaler.feature_offset
        t.f_inv_scale[lane] = 1.0 / np.asarray(scaler.feature_scale, dtype=np.float64)
        scale, offset, _ = self.lane_out
        scale[lane] = np.tile(np.asarray(scaler.target_scale, dtype=np.float64), h)
        offset[lane] = np.tile(np.asarray(scaler.target_offset, dtype=np.float64), h)

    def scaler_of(self, key) -> tuple:
        """``(scaler, known)`` of a stream key (``ModelMetadata.scaler_for``; a key that is not text is looked up
        as its text, the way it reads in a CSV)."""
        return self.metadata.scaler_for(None if key is None else key if isinstance(key, str) else str(key))

    def warn_unseen(self, key, stacklevel: int = 3) -> None:
        """The one ``UnseenKeyWarning`` for a stream ``key`` that is not in the model's training panel."""
        warnings.warn(UnseenKeyWarning(
            f"stream {str(key)[:80]!r} was not in the training panel of {os.path.basename(self.path)} "
            f"({len(self.metadata.panel.scalers)} series): using the global scaler"
        ), stacklevel=stacklevel)

    def calendar(self, times, n: int | None = None, where: str = "time") -> np.ndarray:
        """The calendar inputs of ``times``: ``(len(times), 2 * len(calendar))`` float64.

        Args:
            times: a sequence of times, each the time column's cell text, a ``datetime`` (its wall-clock time; an
                offset is not applied, as for text), a ``numpy.datetime64``, or wall-clock seconds since 1970.
            n: the number of times expected (None: any).
            where: how the caller names the times in messages (``time``, ``times``).

        Raises:
            BadInputError: no times for a calendar model, the wrong number of them, or one that cannot be read.
        """
        from .calendar import calendar_values

        md = self.metadata
        if times is None:
            raise BadInputError(
                f"expected {where}=... for a model with calendar inputs ({', '.join(md.calendar)}, from the time "
                f"column {md.time_column!r}); received none"
            )
        if isinstance(times, (str, bytes, _dt.date, np.datetime64)) or np.ndim(times) == 0:
            times = [times]
        times = list(times)
        if n is not None and len(times) != n:
            raise BadInputError(f"expected {n} {where} value(s), one per row; received {len(times)}")
        seconds = np.fromiter((_wall_seconds(t, md.time_column, where) for t in times), dtype=np.float64,
                              count=len(times))
        return calendar_values(seconds, md.calendar)

    def refused(self, xin: np.ndarray):
        """Columns' boolean mask of rows beyond the refuse bounds (``xin`` ``(..., features)``), or None if none."""
        bad = (xin < self.refuse_lo) | (xin > self.refuse_hi)
        return bad if bad.any() else None

    def feed(self, xin: np.ndarray, lanes=None, cal: np.ndarray | None = None) -> None:
        """Write graph inputs (raw rows, already differenced) into the input tensor: scaled and quantized as the
        graph needs, after the range guard has seen them (only the rows of ``lanes``, when given: a pool's stepping
        streams). A calendar model's ``cal`` (the calendar inputs of each row, ``calendar``) follow the scaled
        features, unscaled."""
        if self.guard is not None:
            self.guard.check(xin if lanes is None else xin[lanes])
        if self.direct:
            self.xv[...] = xin
            return
        xm = self.transform.scale_diff(xin)
        if self.n_calendar:
            xm = self.with_calendar(xm, cal)
        if self.xq is not None:
            xm = quantize(xm, self.xq.scale, self.xq.zero_point, self.x_dtype)
        self.xv[...] = xm

    def with_calendar(self, xm: np.ndarray, cal: np.ndarray | None) -> np.ndarray:
        """Scaled features ``(..., features)`` with the calendar columns appended: ``(..., graph width)`` float32."""
        out = np.empty(xm.shape[:-1] + (self.n_features + self.n_calendar,), np.float32)
        out[..., : self.n_features] = xm
        out[..., self.n_features:] = 0.0 if cal is None else cal
        return out

    def raw_outputs(self, y: np.ndarray, lanes=None) -> np.ndarray:
        """Flat float64 graph outputs (..., outputs) of a quantized or host-scaled graph in raw units (before adding
        the level of a differencing model); with per-lane scalers, ``y`` holds the rows of ``lanes``."""
        if self.yq is not None:
            y = (y - self.yq.zero_point) * self.yq.scale
        if self.lane_out is not None:
            scale, offset, cum = self.lane_out
            sel = slice(None) if lanes is None else lanes
            y = y * scale[sel] + offset[sel]
            return y if cum is None else y @ cum
        if self.out_map is not None:
            y = y @ self.out_map[0] + self.out_map[1]
        return y

    def carry_state(self, lanes=None) -> None:
        """Copy every state output into its paired input, in place (requantized where the scales differ); only the
        rows of ``lanes`` when given."""
        if lanes is None:
            if self.plain_carry:
                for view_in, view_out in self.carry:
                    view_in[...] = view_out
            else:
                for p, (view_in, view_out) in zip(self.pairs, self.carry):
                    view_in[...] = p.carry(view_out)
        else:
            for p, (view_in, view_out) in zip(self.pairs, self.carry):
                view_in[lanes] = p.carry(view_out[lanes])

    def nonfinite_lanes(self, lanes) -> np.ndarray:
        """Per stepping lane (a batched graph), whether its forecast or next state has NaN or inf."""
        bad = None
        for flat, _ in self.checks:
            rows = flat.reshape(self.batch, -1)[lanes]
            lane_bad = ~np.isfinite(rows).all(axis=1)
            bad = lane_bad if bad is None else bad | lane_bad
        return bad


def _wall_seconds(t, column: str | None, where: str) -> float:
    """One time as wall-clock seconds since 1970 (the calendar's input), from text, a datetime or a number."""
    from .calendar import wall_seconds

    if isinstance(t, str):
        return wall_seconds(t, column or "time")
    if isinstance(t, _dt.datetime):
        return (t.replace(tzinfo=None) - _EPOCH).total_seconds()  # its wall clock, as for text with an offset
    if isinstance(t, _dt.date):
        return float((t - _EPOCH.date()).days * 86400)
    if isinstance(t, np.datetime64):
        if np.isnat(t):
            raise BadInputError(f"expected a date-time for {where}; received NaT")
        return float(t.astype("datetime64[us]").astype(np.int64)) / 1e6
    if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, (bool, np.bool_)):
        if not math.isfinite(float(t)):
            raise BadInputError(f"expected a finite time for {where} (wall-clock seconds since 1970); received {t}")
        return float(t)
    raise BadInputError(
        f"expected {where} as the time column's text, a datetime or seconds since 1970; received "
        f"{type(t).__name__} {str(t)[:40]!r}"
    )


_EPOCH = _dt.datetime(1970, 1, 1)

__all__ = ["FLOAT32_MAX", "REFUSE_SPANS", "GraphBinding", "StatePair", "has_fast_api", "quantize", "refuse_bounds"]
