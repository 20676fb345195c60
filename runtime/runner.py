"""``StatefulRunner``: step a converted model one time step at a time, holding its recurrent state by name."""

from __future__ import annotations


import numpy as np

from .binding import GraphBinding, StatePair, quantize
from .errors import BadInputError, NonFiniteStepError
from .monitor import MonitorOptions, StreamMonitor, monitor_for
from .ranges import RangeCallback, RangeReport

PREV_KEY = "x_prev"  # the previous raw row, part of the state of a differencing model
_F64 = np.dtype(np.float64)
_count_nonzero = np.count_nonzero
_StatePair = StatePair  # the old private names, for code that reached into them
_quantize = quantize


def _num(v: float) -> str:
    return format(float(v), ".6g")


class StatefulRunner:
    """Run a statelite ``.tflite`` model step by step, feeding its recurrent state back by name.

    A runner is single-threaded: stepping it from a second thread while a step runs raises
    ``ConcurrentUseError`` (never a lost or doubled step). Give each thread its own runner, or hold a lock.

    Args:
        path: a ``.tflite`` file written by ``statelite convert``.
        backend: ``auto`` (``litert``, then ``tflite-runtime``, then ``tensorflow``) or one of those names.
        num_threads: interpreter threads (None: the interpreter's default).
        allow_nonfinite: feed every value as it is: accept NaN or inf inputs and values beyond the model's input
            limits, and keep a step whose results are not finite (no ``BadInputError``, no rollback).
        key: the stream's series, for a panel model (metadata ``panel``): its rows are scaled with that series'
            scaler. A key not in the training panel gets the global scaler and one ``UnseenKeyWarning``; None the
            global scaler, without a warning. Ignored by other models.

    Attributes:
        key, key_known: the stream's key, and whether a panel model has a scaler of its own for it.

    Raises:
        ModelFormatError: not a TFLite file, truncated, or without statelite metadata.
        IncompatibleModelError: operators newer than the interpreter, or metadata newer than this statelite.
        InterpreterNotFoundError: no interpreter installed.
    """

    def __init__(self, path, backend: str = "auto", num_threads: int | None = None, allow_nonfinite: bool = False,
                 key: str | None = None):
        b = self._binding = GraphBinding(path, backend=backend, num_threads=num_threads, key=key)
        self.path = b.path
        md = self.metadata = b.metadata
        self.key = key
        self.key_known = b.scaler_of(key)[1]
        if md.panel is not None and key is not None and not self.key_known:
            b.warn_unseen(key)
        self._calendar = bool(md.calendar)
        self.model_sha256 = b.model_sha256
        self.model_size = b.model_size
        self.operators = b.operators
        self.backend = b.backend
        self.backend_version = b.backend_version
        self.allow_nonfinite = allow_nonfinite
        self._chunk = b.chunk
        self._transform = b.transform
        self.batch = b.batch
        self._x_shape = b.x_shape
        self._in_shape = b.in_shape
        self._y_shape = b.y_shape
        self._xq, self._yq, self._x_dtype = b.xq, b.yq, b.x_dtype
        self._difference = md.difference
        self._direct = b.direct
        self._out_map = b.out_map
        self._guard = b.guard
        self._raw_outputs = b.raw_outputs
        self._feed_input = b.feed
        self._zeros_in = np.zeros(int(np.prod(self._in_shape)))
        if md.difference:
            ti = self._transform.target_index
            contiguous = len(ti) and (np.diff(ti) == 1).all()
            cols = slice(int(ti[0]), int(ti[-1]) + 1) if contiguous else ti
            # The current level of each target, broadcast over the horizon: x[cols] for one stream, else per row.
            self._levels = cols if self.batch == 1 else (slice(None), None, cols)
        # One stream of one feature forecasting one target (a single sensor): plain Python floats around the graph
        # are cheaper than numpy calls on 1-element arrays. The previous row is then kept as a float.
        # (Not for a calendar model: its graph input is wider than the one feature.)
        self._scalar = self.batch == 1 and len(md.features) == 1 and len(md.targets) == 1 and not self._calendar
        if self._scalar:
            self._scalar_in = (float(self._transform.f_offset[0]), float(self._transform.f_inv_scale[0]))
            self._scalar_out = (float(self._transform.t_scale[0]), float(self._transform.t_offset[0]))
            # One pair of comparisons per step: inside [lo0, hi0] the range guard has nothing to count and the
            # value is far inside the refuse bounds; only a miss looks closer (count, or refuse).
            lo, hi = float(b.refuse_lo[0]), float(b.refuse_hi[0])
            if self._guard is not None:
                lo, hi = max(lo, self._guard.lo0), min(hi, self._guard.hi0)
            self._lo0, self._hi0 = lo, hi
        self._on_out_of_range: RangeCallback | None = None
        self._acquire, self._release = b.lock.acquire, b.lock.release
        self._level_bounds = b.level_bounds
        if self._scalar:
            self.step = self._step_scalar  # the single-sensor path without the dispatch (same contract, same lock)
        self._cache()
        self.reset()

    def _set_key(self, key: str | None) -> None:
        """Serve the series ``key`` from now on (a panel model's scaler; ``run --stream-key`` hands a runner made
        without a key to a stream). No warning: the caller reports an unseen key its own way."""
        from .transform import Transform

        b, md = self._binding, self.metadata
        b.transform = self._transform = Transform.from_metadata(md, key)
        b.out_map = self._out_map = None if md.graph_scales_outputs else b.transform.output_map()
        self.key, self.key_known = key, b.scaler_of(key)[1]
        if self._scalar:
            self._scalar_in = (float(self._transform.f_offset[0]), float(self._transform.f_inv_scale[0]))
            self._scalar_out = (float(self._transform.t_scale[0]), float(self._transform.t_offset[0]))

    @property
    def _pairs(self) -> list[StatePair]:
        return self._binding.pairs

    def _bind(self, fast: bool | None = None) -> None:
        """Bind the tensors again (after changing ``_pairs``' indices, or to force the public-API path)."""
        b = self._binding
        self._invoke = self._xv = self._yv = self._yv_shaped = self._in_views = self._carry = None
        b.bind(b.fast if fast is None else fast)
        self._cache()

    def _cache(self) -> None:
        """The binding's views and calls as attributes: the step path reads them without another lookup."""
        b = self._binding
        self._invoke = b.invoke
        self._xv, self._yv, self._yv_shaped = b.xv, b.yv, b.yv_shaped
        self._in_views = b.in_views
        self._carry = b.carry
        self._checks = b.checks
        self._carry_state = b.carry_state

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

    def _refusal(self, xin: np.ndarray, x=None, prev=None, where: str = "x") -> BadInputError:
        """The error for graph inputs beyond the refuse bounds: which column, what was received, what the limit is."""
        b, md = self._binding, self.metadata
        xin = np.asarray(xin, dtype=np.float64).reshape(-1, len(md.features))
        bad = (xin < b.refuse_lo) | (xin > b.refuse_hi)
        i, j = (int(v) for v in np.argwhere(bad)[0])
        value = xin[i, j]
        what = "first difference" if md.difference else "value"
        received = f"{what} {_num(value)}"
        if md.difference and x is not None and prev is not None:
            row = np.asarray(x, dtype=np.float64).reshape(-1, len(md.features))[i, j]
            last = np.asarray(prev, dtype=np.float64).reshape(-1, len(md.features))[i, j]
            received += f" (row {_num(row)} minus the previous row {_num(last)})"
        return BadInputError(
            f"{where}: {b.refuse_bound(j)}; received {received}, a glitch rather than a reading. The row was not "
            f"stepped and the state was kept."
        )

    def _rolled_back(self, what: str = "the step") -> NonFiniteStepError:
        return NonFiniteStepError(
            f"{what} gave a forecast or next state with NaN or inf (the input overflowed inside the model's float "
            f"arithmetic); it was rolled back: the state is the one from before it."
        )

    def step(self, x, time=None) -> np.ndarray:
        """Advance the state by one time step and return the forecast in raw units.

        Args:
            x: one raw row of features, shape ``(features,)``; a ``(batch, features)`` array for a batched model.
            time: the row's time, for a model with calendar inputs (metadata ``calendar``; ignored otherwise): the
                time column's cell text, a ``datetime`` or wall-clock seconds since 1970 (a batched model: one for
                every lane, or one per lane).

        Returns:
            float64 ``(horizon, targets)`` forecasts (``(batch, horizon, targets)`` for a batched model).

        Raises:
            BadInputError: wrong shape, NaN/inf, a value beyond the model's input limits (``REFUSE_SPANS``
                training spans outside the training range, or not finite in float32 once scaled), or a calendar
                model's time missing or unreadable; the state is left as it was.
            NonFiniteStepError: the step's forecast or next state was not finite; it was rolled back.
            ConcurrentUseError: another thread is stepping this runner.
        """
        if self._scalar:  # takes the lock itself: one call less on the fastest path
            return self._step_scalar(x)
        if not self._acquire(False):
            raise self._binding.busy()
        try:
            return self._step(x, self._step_calendar(time) if self._calendar else None)
        finally:
            self._release()

    def _step_calendar(self, time) -> np.ndarray:
        """The calendar inputs of one step: ``(2C,)``, or ``(batch, 2C)`` for a batched model."""
        cal = self._binding.calendar(time, where="time")
        if self.batch == 1:
            if len(cal) != 1:
                raise BadInputError(f"expected one time for a one-stream model; received {len(cal)}")
            return cal[0]
        if len(cal) not in (1, self.batch):
            raise BadInputError(f"expected one time, or {self.batch} (one per lane); received {len(cal)}")
        return np.broadcast_to(cal, (self.batch, cal.shape[1]))

    def _step(self, x, cal=None) -> np.ndarray:
        if x.__class__ is not np.ndarray or x.dtype is not _F64 or x.shape != self._in_shape:
            x = self._coerce(x)
        check = not self.allow_nonfinite
        # x . 0 is 0 for finite rows and NaN when any value is NaN or inf: one call instead of isfinite().all().
        if check and x.reshape(-1).dot(self._zeros_in) != 0.0:
            raise self._nonfinite(x)
        prev = self._prev
        if prev is None and check and self._level_bounds is not None:
            error = self._binding.first_row_refusal(x, "x")
            if error is not None:
                raise error
        if self._difference:
            x = x.copy()  # kept as the next step's previous row: later changes to the caller's array must not leak
            xin = x - prev if prev is not None else self._zeros_in.reshape(self._in_shape)
        else:
            xin = x
        b = self._binding
        if check and (_count_nonzero(xin < b.refuse_lo) or _count_nonzero(xin > b.refuse_hi)):
            raise self._refusal(xin, x, prev)
        if cal is None:
            self._feed_input(xin)
        else:
            self._feed_input(xin, cal=cal)
        try:
            self._invoke()
        except RuntimeError as exc:
            raise b.invoke_failed(exc) from None
        if check:
            total = 0.0
            for flat, zeros in self._checks:
                total += flat.dot(zeros)
            if total != 0.0:  # not carried: the state inputs still hold the state from before this step
                raise self._rolled_back()
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

    def _scalar_miss(self, d: float, v: float) -> None:
        """The single-sensor path after its one comparison failed: refuse the value, or let the range guard count
        it (``steps`` counted here)."""
        b = self._binding
        if not self.allow_nonfinite and not float(b.refuse_lo[0]) <= d <= float(b.refuse_hi[0]):
            raise self._refusal(np.array([d]), np.array([v]), None if self._prev is None else np.array([self._prev]))
        guard = self._guard
        if guard is not None:
            guard.steps += 1
            if not guard.lo0 <= d <= guard.hi0:
                guard.miss(d)

    def _step_scalar(self, x, time=None) -> np.ndarray:
        """``step`` for one stream of one feature and one target, with Python floats around ``Invoke`` (never a
        calendar model: ``time`` is ignored)."""
        if not self._acquire(False):
            raise self._binding.busy()
        try:
            if x.__class__ is np.ndarray and x.size == 1:
                v = float(x.item())
            else:
                v = float(self._coerce(x).item())
            if v - v != 0.0 and not self.allow_nonfinite:  # NaN - NaN and inf - inf are NaN
                raise self._nonfinite(np.array([v]))
            prev = self._prev
            if prev is None and self._level_bounds is not None and not self.allow_nonfinite:
                error = self._binding.first_row_refusal(np.array([v]), "x")
                if error is not None:
                    raise error
            d = (v - prev if prev is not None else 0.0) if self._difference else v
            if self._lo0 <= d <= self._hi0:  # in range: two float comparisons
                if self._guard is not None:
                    self._guard.steps += 1
            else:
                self._scalar_miss(d, v)
            if self._direct:
                self._xv[0, 0] = d
            else:
                offset, inv = self._scalar_in
                d = (d - offset) * inv if not self._transform.graph_scales_inputs else d
                if self._xq is not None:
                    info = np.iinfo(self._x_dtype)
                    d = min(max(round(d / self._xq.scale) + self._xq.zero_point, info.min), info.max)
                self._xv[0, 0] = d
            try:
                self._invoke()
            except RuntimeError as exc:
                raise self._binding.invoke_failed(exc) from None
            y = self._yv.tolist()[0]
            if not self.allow_nonfinite:
                # Python floats (numpy scalars would cost more): NaN once minus itself if any is not finite. A
                # non-finite state always shows in the forecast (see GraphBinding.bind, where the checks are made).
                total = sum(y)
                if total - total != 0.0:  # not carried: the state inputs still hold the state from before this step
                    raise self._rolled_back()
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
        finally:
            self._release()

    def run(self, xs, chunked: bool = True, times=None) -> np.ndarray:
        """Step through a sequence of raw rows, carrying the state; returns one forecast per row.

        All or nothing: every row is checked before any is stepped, and a step whose results are not finite rolls
        the whole call back.

        Args:
            xs: ``(steps, features)`` (``(steps, batch, features)`` for a batched model).
            chunked: on a model converted with ``--chunk K``, take K steps per call (the remainder one by one).
            times: for a model with calendar inputs, each row's time (as ``step``'s ``time``; a batched model: one
                per step for every lane, or ``(steps, batch)``). Ignored by other models.

        Returns:
            ``(steps, horizon, targets)`` (``(steps, batch, horizon, targets)`` for a batched model).

        Raises:
            BadInputError: wrong shape, NaN/inf, a value beyond the model's input limits, or a calendar model's
                times missing, of the wrong number or unreadable; nothing was stepped.
            NonFiniteStepError: a step's results were not finite; the state is the one from before ``run``.
            ConcurrentUseError: another thread is stepping this runner.
        """
        if not self._acquire(False):
            raise self._binding.busy()
        try:
            return self._run(xs, chunked, times)
        finally:
            self._release()

    def _run_calendar(self, times, steps: int) -> np.ndarray:
        """The calendar inputs of ``steps`` rows: ``(steps, 2C)``, or ``(steps, batch, 2C)`` for a batched model."""
        b = self._binding
        if self.batch == 1:
            return b.calendar(times, n=steps, where="times")
        if times is not None and not isinstance(times, str) and np.ndim(times) == 2:
            cal = b.calendar(np.asarray(times, dtype=object).reshape(-1), n=steps * self.batch, where="times")
            return cal.reshape(steps, self.batch, -1)
        cal = b.calendar(times, n=steps, where="times")
        return np.repeat(cal[:, None, :], self.batch, axis=1)

    def _run(self, xs, chunked: bool, times=None) -> np.ndarray:
        xs = np.asarray(xs, dtype=np.float64)
        if xs.ndim != len(self._in_shape) + 1 or xs.shape[1:] != self._in_shape:
            want = ", ".join(map(str, self._in_shape))
            raise BadInputError(f"xs must have shape (steps, {want}); received shape {xs.shape}.")
        cal = self._run_calendar(times, len(xs)) if self._calendar else None
        check = not self.allow_nonfinite
        if check and not np.isfinite(xs).all():
            bad = int(np.argwhere(~np.isfinite(xs))[0][0])
            raise BadInputError(f"xs contains NaN or inf (first at step {bad}); nothing was stepped.")
        if check and len(xs) and self._prev is None:
            error = self._binding.first_row_refusal(xs[0], "xs step 0")
            if error is not None:
                raise BadInputError(str(error).replace("The row was not stepped", "Nothing was stepped")) from None
        if check and len(xs):
            xin = self._differenced(xs)
            b = self._binding
            bad = (xin < b.refuse_lo) | (xin > b.refuse_hi)
            if bad.any():
                i = int(np.argwhere(bad)[0][0])
                prev = xs[i - 1] if i else self._prev_row()
                error = self._refusal(xin[i], xs[i], prev, where=f"xs step {i}")
                raise BadInputError(str(error).replace("The row was not stepped", "Nothing was stepped")) from None
        saved = self._snapshot() if check else None
        out = []
        done = 0
        try:
            if chunked and self._chunk is not None:
                done = len(xs) // self.metadata.chunk * self.metadata.chunk
                if done:
                    out.append(self._run_chunks(xs[:done], None if cal is None else cal[:done]))
            for i in range(done, len(xs)):
                out.append(self._step_scalar(xs[i]) if self._scalar else self._step(xs[i], None if cal is None
                                                                                     else cal[i]))
        except NonFiniteStepError:
            self._restore(saved)
            raise NonFiniteStepError(
                "a step of xs gave a forecast or next state with NaN or inf (the input overflowed inside the model's "
                "float arithmetic); the whole run was rolled back: the state is the one from before it."
            ) from None
        if not out:
            return np.zeros((0,) + self.output_shape)
        return np.concatenate([o if o.ndim == len(self._y_shape) + 1 else o[None] for o in out])

    def _prev_row(self):
        if self._prev is None:
            return None
        return np.array([self._prev]) if self._scalar else self._prev

    def _differenced(self, xs: np.ndarray) -> np.ndarray:
        """The graph's raw inputs for consecutive rows ``xs``: the rows, or their first differences (the first one
        against the previous row, or zero at the start of a stream)."""
        if not self._difference:
            return xs
        first = xs[:1] if self._prev is None else self._prev_row()[None]
        return xs - np.concatenate([first, xs[:-1]])

    def _snapshot(self):
        return [np.array(v) for v in self._in_views], (self._prev.copy() if isinstance(self._prev, np.ndarray)
                                                          else self._prev)

    def _restore(self, saved) -> None:
        views, prev = saved
        for view, value in zip(self._in_views, views):
            view[...] = value
        self._prev = prev

    def _run_chunks(self, xs: np.ndarray, cal: np.ndarray | None = None) -> np.ndarray:
        """Rows (a multiple of K) through the step_chunk signature, K per ``Invoke``.

        The host work is done once for all rows; between chunks the state moves from the chunk subgraph's outputs
        to its inputs in place, and only at the end back into the step subgraph's inputs.
        """
        k, n = self.metadata.chunk, len(xs)
        b = self._binding
        xin = self._differenced(xs)
        if self._guard is not None:
            self._guard.check(xin, steps=n)
        xin = self._transform.scale_diff(xin)
        if cal is not None:
            xin = b.with_calendar(xin, cal)
        if self.batch == 1:
            blocks = xin.reshape(n // k, 1, k, -1)
        else:  # (steps, batch, features) -> (chunks, batch, K, features)
            blocks = xin.reshape(n // k, k, self.batch, -1).transpose(0, 2, 1, 3)
        c_in, c_out = b.chunk_in_views, b.chunk_out_views
        for view_in, view in zip(c_in, self._in_views):
            view_in[...] = view
        ys = np.empty((n // k,) + b.chunk_yv.shape, np.float32)
        check = not self.allow_nonfinite
        for c in range(n // k):
            b.chunk_xv[...] = blocks[c]
            try:
                b.invoke_chunk()
            except RuntimeError as exc:
                raise b.invoke_failed(exc) from None
            ys[c] = b.chunk_yv
            if check and not all(np.isfinite(v).all() for v in [b.chunk_yv, *c_out]):
                raise self._rolled_back()  # the step subgraph's state inputs were not touched yet
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

    def monitor(self, options: MonitorOptions | None = None) -> StreamMonitor:
        """This runner with prediction intervals and anomaly scores: ``m = runner.monitor(); obs = m.step(x)``.

        ``obs.forecast`` is what ``step`` returns; ``obs.lower``/``obs.upper`` the interval bounds per level,
        ``obs.score``/``obs.anomaly`` the row's anomaly score and flag (see ``statelite.monitor``). The monitor steps
        this runner: step it through the monitor only.

        Args:
            options: ``MonitorOptions`` (levels, threshold, substitution, adaptation); default: a 90% interval.

        Raises:
            IncompatibleModelError: the model carries no residual calibration (converted before format version 2,
                or from a bare Keras file).
            BadInputError: a batched model (use ``StreamPool.monitor(key)``).
        """
        if self.batch != 1:
            raise BadInputError(
                f"expected a one-stream model for StatefulRunner.monitor; received batch {self.batch}. "
                f"Use StreamPool.monitor(key) for one lane of a batched model."
            )
        return StreamMonitor(self.step, self.reset, monitor_for(self.metadata, options, key=self.key),
                             calendar=self._calendar)

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
