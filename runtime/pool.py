"""``StreamPool``: many independent streams stepped in one ``invoke()`` of a model converted with ``--batch N``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np

from .binding import GraphBinding
from .errors import BadInputError, NonFiniteStepError
from .ranges import RangeCallback, RangeReport
from .runner import PREV_KEY

_count_nonzero = np.count_nonzero


class StreamPool:
    """Up to ``batch`` independent streams (say 64 sensors on one gateway) sharing one batched interpreter.

    Each stream holds a lane of the batch. ``step({key: row, ...})`` advances only the streams given, in one
    ``invoke()``; the lanes of streams that did not step this tick keep their state exactly (their inputs are not
    carried over), so a slow sensor never drifts.

    Bad input never reaches the state: a call with a row that is NaN/inf, or beyond the model's input limits (as for
    ``StatefulRunner.step``), is refused whole with ``BadInputError`` naming the streams, and nothing is stepped.
    A stream whose step comes out NaN or inf is rolled back alone: the other streams advance, and
    ``NonFiniteStepError`` names the rolled-back streams (``keys``) and carries the others' forecasts (``results``).
    A pool is single-threaded: a second thread stepping it at the same time gets ``ConcurrentUseError``.

    A panel model (metadata ``panel``) scales each lane's rows with the scaler of its stream's key (a key that is not
    text is looked up as its text); a key not in the training panel gets the global scaler and one
    ``UnseenKeyWarning``. A model with calendar inputs takes each stepping stream's time (``times``).

    Args:
        path: a ``.tflite`` converted with ``--batch N`` (N > 1).
        backend, num_threads, allow_nonfinite: as for ``StatefulRunner``.

    Raises:
        BadInputError: the model is not batched.
    """

    def __init__(self, path, backend: str = "auto", num_threads: int | None = None, allow_nonfinite: bool = False):
        self._b = b = GraphBinding(path, backend=backend, num_threads=num_threads)
        md = b.metadata
        if md.batch < 2:
            raise BadInputError(
                f"a StreamPool needs a model converted with --batch N (N > 1); {path} has batch {md.batch}. "
                f"Convert again with, e.g., --batch 64, or use StatefulRunner for one stream."
            )
        self.metadata = md
        self.capacity = md.batch
        self.allow_nonfinite = allow_nonfinite
        self._on_out_of_range: RangeCallback | None = None
        self._slots: dict[Hashable, int] = {}
        self._cached_keys: tuple = ()
        self._cached_lanes = None
        self._free = list(range(self.capacity - 1, -1, -1))
        n_features = len(md.features)
        self._x = np.zeros((self.capacity, n_features))
        self._calendar = bool(md.calendar)
        self._cal = np.zeros((self.capacity, b.n_calendar))
        self._known: dict[Hashable, bool] = {}
        self._warned: set = set()
        if md.panel is not None:
            b.use_lane_scalers()
        self._prev = np.zeros((self.capacity, n_features))
        self._has_prev = np.zeros(self.capacity, dtype=bool)
        self._zero_state = [p.from_real(np.zeros(p.spec.input.shape[1:], np.float32)) for p in b.pairs]
        if md.difference:
            self._target_index = b.transform.target_index

    # -- membership ----------------------------------------------------------------------------------------------

    def add(self, key: Hashable, warn: bool = True) -> None:
        """Give ``key`` a free lane with a zero state (and, for a panel model, the scaler of its series).

        Args:
            key: the stream's key.
            warn: issue ``UnseenKeyWarning`` (once per key) when a panel model has no scaler for ``key``.
        """
        if key in self._slots:
            raise BadInputError(f"stream {key!r} is already in the pool.")
        if not self._free:
            raise BadInputError(
                f"the pool is full: {self.capacity} streams (the model's batch). Remove one, or convert with a "
                f"larger --batch."
            )
        lane = self._slots[key] = self._free.pop()
        self._cached_keys = ()
        if self.metadata.panel is not None:
            scaler, known = self._b.scaler_of(key)
            self._b.set_lane_scaler(lane, scaler)
            self._known[key] = known
            if not known and warn and key not in self._warned:
                self._warned.add(key)
                self._b.warn_unseen(key)
        self.reset(key)

    def key_known(self, key: Hashable) -> bool:
        """Whether a panel model has a scaler of its own for stream ``key`` (False: the global one; always False for
        a model that is not a panel).

        Raises:
            BadInputError: an unknown key.
        """
        self._slot(key)
        return self._known.get(key, False)

    def remove(self, key: Hashable) -> None:
        self._free.append(self._slot(key))
        del self._slots[key]
        self._known.pop(key, None)
        self._cached_keys = ()

    def reset(self, key: Hashable) -> None:
        """Zero one stream's state (and forget its previous row); the other streams are untouched."""
        lane = self._slot(key)
        for view, zero in zip(self._b.in_views, self._zero_state):
            view[lane] = zero
        self._has_prev[lane] = False

    def monitor(self, key: Hashable, options=None):
        """One lane with prediction intervals and anomaly scores (``StatefulRunner.monitor`` for a pool's stream):
        ``m = pool.monitor("pump-3"); obs = m.step(x)`` steps that lane alone.

        Raises:
            BadInputError: an unknown key.
            IncompatibleModelError: the model carries no residual calibration.
        """
        from .monitor import StreamMonitor, monitor_for

        self._slot(key)
        if self._calendar:
            def step(x, time=None):
                return self.step({key: x}, times={key: time})[key]
        else:
            def step(x, time=None):
                return self.step({key: x})[key]
        panel_key = key if isinstance(key, str) or key is None else str(key)
        return StreamMonitor(step, lambda: self.reset(key), monitor_for(self.metadata, options, key=panel_key),
                             calendar=self._calendar)

    def __contains__(self, key) -> bool:
        return key in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def keys(self) -> list:
        return list(self._slots)

    def _slot(self, key) -> int:
        try:
            return self._slots[key]
        except KeyError:
            raise BadInputError(f"no stream {key!r} in the pool; add it first (streams: {len(self._slots)}).") from None

    # -- state ---------------------------------------------------------------------------------------------------

    def state(self, key: Hashable) -> dict[str, np.ndarray]:
        """One stream's state, shaped as a single-stream runner's (``(1, units)`` arrays), a copy."""
        lane = self._slot(key)
        out = {p.spec.name: p.to_real(view[lane : lane + 1]) for p, view in zip(self._b.pairs, self._b.in_views)}
        if self.metadata.difference:
            out[PREV_KEY] = self._prev[lane : lane + 1].copy() if self._has_prev[lane] else np.full(
                (1, self._x.shape[1]), np.nan
            )
        return out

    def set_state(self, key: Hashable, values: Mapping[str, np.ndarray]) -> None:
        """Set one stream's state from a dict shaped as ``state(key)`` returns it (names and shapes checked)."""
        lane = self._slot(key)
        expected = {p.spec.name for p in self._b.pairs} | ({PREV_KEY} if self.metadata.difference else set())
        if set(values) != expected:
            raise BadInputError(f"state must have exactly the keys {sorted(expected)}; received {sorted(values)}.")
        rows = []
        for p in self._b.pairs:
            v = np.asarray(values[p.spec.name], dtype=np.float32)
            want = (1,) + p.spec.input.shape[1:]
            if v.shape != want:
                raise BadInputError(f"state {p.spec.name!r} must have shape {want}; received shape {v.shape}.")
            if not np.isfinite(v).all():
                raise BadInputError(f"state {p.spec.name!r} of stream {key!r} contains NaN or inf.")
            rows.append(p.from_real(v[0]))
        if self.metadata.difference:
            prev = np.asarray(values[PREV_KEY], dtype=np.float64).reshape(-1)
            if prev.shape != (self._x.shape[1],):
                raise BadInputError(f"state {PREV_KEY!r} must have {self._x.shape[1]} values; received {prev.size}.")
        for view, row in zip(self._b.in_views, rows):
            view[lane] = row
        if self.metadata.difference:
            self._has_prev[lane] = not np.isnan(prev).all()
            self._prev[lane] = np.where(np.isnan(prev), 0.0, prev)

    @property
    def model_sha256(self) -> str:
        return self._b.model_sha256

    @property
    def model_size(self) -> int:
        return self._b.model_size

    @property
    def backend(self) -> str:
        return self._b.backend

    @property
    def backend_version(self) -> str:
        return self._b.backend_version

    # -- input range ---------------------------------------------------------------------------------------------

    @property
    def range_report(self) -> RangeReport | None:
        """Rows of every stream outside the training range or clipped, per column, as ``StatefulRunner.range_report``
        (a step is one ``step``/``step_all`` call; ``rows`` counts the streams' rows). None without recorded ranges."""
        guard = self._b.guard
        return None if guard is None else guard.report()

    def reset_range_counts(self) -> None:
        if self._b.guard is not None:
            self._b.guard.reset_counts()

    @property
    def on_out_of_range(self) -> RangeCallback | None:
        """As ``StatefulRunner.on_out_of_range``: an exception it raises leaves every stream's state as it was."""
        return self._on_out_of_range

    @on_out_of_range.setter
    def on_out_of_range(self, fn: RangeCallback | None) -> None:
        self._on_out_of_range = fn
        if self._b.guard is not None:
            self._b.guard.on_out_of_range = fn

    # -- stepping ------------------------------------------------------------------------------------------------

    def step(self, rows: Mapping[Hashable, object], times: Mapping[Hashable, object] | None = None
             ) -> dict[Hashable, np.ndarray]:
        """Advance the given streams by one step in one ``invoke()``.

        Args:
            rows: ``{key: raw feature row}`` for the streams that have a new row this tick.
            times: for a model with calendar inputs, ``{key: time}`` of every stream in ``rows`` (the time column's
                text, a ``datetime`` or wall-clock seconds since 1970); ignored by other models.

        Returns:
            ``{key: (horizon, targets) forecast}`` in raw units.

        Raises:
            BadInputError: an unknown key, a row of the wrong length, NaN/inf, a value beyond the model's input
                limits, or a calendar model's time missing or unreadable. Nothing is stepped then.
            NonFiniteStepError: the step of the streams in its ``keys`` came out NaN or inf and was rolled back;
                every other stream advanced, and its ``results`` holds their forecasts.
            ConcurrentUseError: another thread is stepping this pool.
        """
        if not rows:
            return {}
        cal = None
        if self._calendar:
            if times is None or any(k not in times for k in rows):
                missing = [k for k in rows if times is None or k not in times]
                raise BadInputError(
                    f"expected times={{key: time}} for every stream of a model with calendar inputs "
                    f"({', '.join(self.metadata.calendar)}); received none for streams {missing[:5]}"
                )
            cal = self._b.calendar([times[k] for k in rows], where="times")
        keys = tuple(rows)
        if keys != self._cached_keys:  # a gateway usually ticks the same streams in the same order
            self._cached_lanes = self._lanes_of(keys)
            self._cached_keys = keys
        try:
            block = np.asarray(list(rows.values()), dtype=np.float64).reshape(len(keys), self._x.shape[1])
        except ValueError:
            raise BadInputError(
                f"every row must have {self._x.shape[1]} values (features: {', '.join(self.metadata.features)})."
            ) from None
        try:
            return dict(zip(keys, self._locked_step(self._cached_lanes, block, keys, cal)))
        except NonFiniteStepError as exc:
            bad = set(exc.keys)
            exc.results = {k: y for k, y in zip(keys, exc.results) if k not in bad}
            raise

    def step_all(self, xs, times=None) -> np.ndarray:
        """Advance every stream by one step, rows given in ``keys`` order: the fast path for a gateway whose
        sensors all tick together (no dict built or read).

        Args:
            xs: ``(len(pool), features)`` raw rows, in the order of ``pool.keys``.
            times: for a model with calendar inputs, one time for every stream, or one per stream in ``keys``
                order; ignored by other models.

        Returns:
            ``(len(pool), horizon, targets)`` forecasts in raw units, in the same order.

        Raises:
            BadInputError, ConcurrentUseError: as ``step``.
            NonFiniteStepError: as ``step``; its ``results`` is the forecast array with NaN rows for the streams
                rolled back.
        """
        xs = np.asarray(xs, dtype=np.float64)
        if xs.shape != (len(self._slots), self._x.shape[1]):
            raise BadInputError(
                f"xs must have shape ({len(self._slots)}, {self._x.shape[1]}) (one row per stream, in pool.keys "
                f"order); received shape {xs.shape}."
            )
        keys = tuple(self._slots)
        cal = None
        if self._calendar:
            cal = self._b.calendar(times, where="times")
            if len(cal) not in (1, len(keys)):
                raise BadInputError(f"expected one time, or {len(keys)} (one per stream); received {len(cal)}")
        if keys != self._cached_keys:
            self._cached_lanes = self._lanes_of(keys)
            self._cached_keys = keys
        return self._locked_step(self._cached_lanes, xs, keys, cal)

    def _lanes_of(self, keys: tuple):
        lanes = np.fromiter((self._slot(k) for k in keys), dtype=np.intp, count=len(keys))
        # Streams in lanes 0..n-1 in order (the usual case) are addressed by a slice, without copies.
        return slice(0, len(lanes)) if (lanes == np.arange(len(lanes))).all() else lanes

    def _locked_step(self, lanes, block: np.ndarray, keys: tuple, cal=None) -> np.ndarray:
        b = self._b
        if not b.lock.acquire(False):
            raise b.busy()
        try:
            return self._step_lanes(lanes, block, keys, cal)
        finally:
            b.lock.release()

    def _step_lanes(self, lanes, block: np.ndarray, keys: tuple, cal=None) -> np.ndarray:
        b = self._b
        check = not self.allow_nonfinite
        # block . 0 is 0 for finite rows and NaN when any value is NaN or inf: one call instead of isfinite().all().
        if check and block.reshape(-1).dot(np.zeros(block.size)) != 0.0:
            bad = [k for k, row in zip(keys, block) if not np.isfinite(row).all()]
            raise BadInputError(f"rows of streams {bad} contain NaN or inf; nothing was stepped.")
        if self.metadata.difference:
            has = self._has_prev[lanes]
            every = bool(has.all())
            if check and not every:
                error = b.first_row_refusal(block[~has], f"streams {[k for k, h in zip(keys, has) if not h]}")
                if error is not None:
                    raise error
            xin = block - (self._prev[lanes] if every else np.where(has[:, None], self._prev[lanes], block))
        else:
            xin = block
        if check and (_count_nonzero(xin < b.refuse_lo) or _count_nonzero(xin > b.refuse_hi)):
            raise self._refusal(xin, block, keys)
        x = self._x
        x[:] = 0.0
        x[lanes] = xin
        if cal is None:
            b.feed(x, lanes)  # the range guard sees only the stepping streams' rows
        else:
            self._cal[lanes] = cal
            b.feed(x, lanes, cal=self._cal)
        try:
            b.invoke()
        except RuntimeError as exc:
            raise b.invoke_failed(exc) from None
        bad = None
        if check:
            total = 0.0
            for flat, zeros in b.checks:
                total += flat.dot(zeros)
            if total != 0.0:  # some lane is not finite: which of the stepping ones?
                bad = b.nonfinite_lanes(lanes)
                if not bad.any():
                    bad = None  # only idle lanes (their inputs are never carried)
        y = b.yv[lanes].astype(np.float64)
        if bad is None:
            b.carry_state(lanes)
            if self.metadata.difference:
                self._prev[lanes] = block
                self._has_prev[lanes] = True
        else:
            good = np.arange(self.capacity)[lanes][~bad]  # the rolled-back lanes are simply not carried
            b.carry_state(good)
            if self.metadata.difference:
                self._prev[good] = block[~bad]
                self._has_prev[good] = True
        if not b.direct:
            y = b.raw_outputs(y, lanes)
        y = y.reshape(len(block), *b.y_shape[1:])
        if self.metadata.difference:
            y += block[:, None, self._target_index]
        if bad is not None:
            y[bad] = np.nan
            names = [k for k, flag in zip(keys, bad) if flag]
            raise NonFiniteStepError(
                f"the step of streams {names} gave a forecast or next state with NaN or inf (the input overflowed "
                f"inside the model's float arithmetic); those streams were rolled back (their state is the one from "
                f"before it), the other {len(keys) - len(names)} advanced.",
                keys=names,
                results=y,
            )
        return y

    def _refusal(self, xin: np.ndarray, block: np.ndarray, keys: tuple) -> BadInputError:
        b, md = self._b, self.metadata
        bad = (xin < b.refuse_lo) | (xin > b.refuse_hi)
        names = [k for k, row in zip(keys, bad) if row.any()]
        i, j = (int(v) for v in np.argwhere(bad)[0])
        what = "first difference" if md.difference else "value"
        return BadInputError(
            f"rows of streams {names} are beyond the model's input limits: {b.refuse_bound(j)}; received {what} "
            f"{xin[i, j]:.6g} (stream {keys[i]!r}, row {block[i, j]:.6g}), a glitch rather than a reading. Nothing "
            f"was stepped; every state was kept."
        )
