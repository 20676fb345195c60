"""Events, event-level metrics, anomaly injection and the rolling z-score baseline, on hand-made cases."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.events import (  # noqa: E402
    KINDS,
    MAGNITUDES,
    event_metrics,
    events,
    inject,
    plan_injections,
    robust_scale,
    rolling_zscore,
)


def flags(n: int, *runs: tuple[int, int]) -> np.ndarray:
    f = np.zeros(n, dtype=bool)
    for a, b in runs:
        f[a:b + 1] = True
    return f


# --- events -------------------------------------------------------------------------------------------------------


def test_events_are_maximal_runs():
    f = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    assert events(f) == [(0, 1), (4, 4), (6, 8)]
    assert events(np.zeros(5, dtype=bool)) == []
    assert events(np.ones(3, dtype=bool)) == [(0, 2)]
    assert events(np.zeros(0, dtype=bool)) == []


def test_events_refuse_non_bool():
    with pytest.raises(TypeError, match="bool"):
        events(np.array([0.0, 1.0]))


# --- event_metrics ------------------------------------------------------------------------------------------------


def test_perfect_detection():
    m = event_metrics(flags(100, (10, 12), (50, 55)), [(10, 20), (50, 60)])
    assert (m.tp, m.fp, m.fn, m.n_events) == (2, 0, 0, 2)
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    assert m.delays == [0, 0] and m.mean_delay == 0.0


def test_all_missed():
    m = event_metrics(flags(100), [(10, 20), (50, 60)])
    assert (m.tp, m.fp, m.fn, m.n_events) == (0, 0, 2, 0)
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)  # no detections: precision undefined -> 0
    assert m.delays == [] and math.isnan(m.mean_delay)
    assert event_metrics(flags(100), [(10, 20)], zero_division=1.0).precision == 1.0


def test_one_false_positive_and_delays():
    f = flags(100, (14, 16), (30, 31), (58, 70))
    m = event_metrics(f, [(10, 20), (50, 60)])
    assert (m.tp, m.fp, m.fn, m.n_events) == (2, 1, 0, 3)
    assert m.precision == pytest.approx(2 / 3) and m.recall == 1.0
    assert m.f1 == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert m.delays == [4, 8] and m.mean_delay == 6.0


def test_tolerance_extends_windows_at_the_end():
    f = flags(100, (23, 24))  # 3 rows after the window (10, 20)
    strict = event_metrics(f, [(10, 20)])
    assert (strict.tp, strict.fp, strict.fn) == (0, 1, 1)
    loose = event_metrics(f, [(10, 20)], tolerance=3)
    assert (loose.tp, loose.fp, loose.fn) == (1, 0, 0)
    assert loose.delays == [13]
    assert event_metrics(f, [(10, 20)], tolerance=2).tp == 0  # row 23 is outside [10, 22]


def test_start_cuts_detections_and_windows():
    f = flags(100, (5, 12), (40, 41))
    m = event_metrics(f, [(0, 8), (10, 20), (40, 45)], start=10)
    # (0, 8) ends before start: dropped. The run (5, 12) is cut to (10, 12) and detects (10, 20) with delay 0.
    assert (m.tp, m.fp, m.fn, m.n_events) == (2, 0, 0, 2)
    assert m.delays == [0, 0]
    m = event_metrics(flags(100, (2, 4)), [(10, 20)], start=5)  # the only detection is before start
    assert (m.tp, m.fp, m.fn, m.n_events) == (0, 0, 1, 0)


def test_empty_cases_follow_zero_division():
    clean = event_metrics(flags(50), [])
    assert (clean.precision, clean.recall, clean.f1, clean.fp) == (0.0, 0.0, 0.0, 0)
    clean1 = event_metrics(flags(50), [], zero_division=1.0)
    assert (clean1.precision, clean1.recall, clean1.f1) == (1.0, 1.0, 1.0)
    noisy = event_metrics(flags(50, (3, 4)), [], zero_division=1.0)
    assert (noisy.precision, noisy.recall, noisy.f1, noisy.fp) == (0.0, 1.0, 0.0, 1)


def test_one_event_spanning_two_windows_detects_both():
    m = event_metrics(flags(100, (15, 55)), [(10, 20), (50, 60)])
    assert (m.tp, m.fp, m.n_events, m.precision) == (2, 0, 1, 1.0)
    assert m.delays == [5, 0]


def test_event_metrics_refuse_bad_windows():
    with pytest.raises(ValueError, match="start <= end"):
        event_metrics(flags(10), [(5, 10)])


# --- injection ----------------------------------------------------------------------------------------------------


def clean_series(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 50.0 + 10.0 * np.sin(2 * np.pi * t / 50) + rng.normal(0.0, 1.0, n)


def test_robust_scale_measures_the_noise_not_the_season():
    rng = np.random.default_rng(0)
    x = 50.0 + 10.0 * np.sin(2 * np.pi * np.arange(4000) / 500) + rng.normal(0.0, 1.0, 4000)
    assert robust_scale(x) == pytest.approx(1.0, rel=0.1)  # the noise sigma, not the sine's amplitude
    assert robust_scale(x + 0.05 * np.arange(4000)) == pytest.approx(robust_scale(x), rel=0.05)  # nor a trend
    assert robust_scale(np.full(10, 45.0)) == 1.0  # flatline: every spread is 0
    square = np.repeat([0.0, 10.0] * 5, 20)  # differences mostly 0: falls back to the values' MAD
    assert robust_scale(square) == pytest.approx(1.4826 * 5.0)
    cols = robust_scale(np.stack([x, 3 * x], axis=1))
    assert cols.shape == (2,) and cols[1] == pytest.approx(3 * cols[0])


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_only_its_window(kind):
    x = clean_series()
    scale = robust_scale(x)
    length = 1 if kind == "spike" else 30
    y, (a, b) = inject(x, kind, 200, length, np.random.default_rng(1), scale)
    assert (a, b) == (200, 200 + length - 1)
    outside = np.ones(len(x), dtype=bool)
    outside[a:b + 1] = False
    assert np.array_equal(y[outside], x[outside])
    changed = y[a:b + 1] != x[a:b + 1]
    if kind == "stuck":
        assert changed[1:].all()  # row `at` holds its own value
    else:
        assert changed.all()
    assert np.array_equal(x, clean_series())  # the input is not modified


def test_injection_shapes():
    x = clean_series()
    s = robust_scale(x)
    rng = np.random.default_rng(2)
    y, _ = inject(x, "spike", 100, 1, rng, s)
    assert abs(y[100] - x[100]) == pytest.approx(MAGNITUDES["spike"] * s)
    y, _ = inject(x, "level_shift", 100, 20, rng, s)
    d = y[100:120] - x[100:120]
    assert np.allclose(d, d[0]) and abs(d[0]) == pytest.approx(MAGNITUDES["level_shift"] * s)
    y, _ = inject(x, "drift", 100, 20, rng, s)
    d = y[100:120] - x[100:120]
    assert np.allclose(np.abs(d), MAGNITUDES["drift"] * s * np.arange(1, 21) / 20)  # a linear ramp
    assert np.all(np.sign(d) == np.sign(d[-1]))
    y, _ = inject(x, "stuck", 100, 20, rng, s)
    assert np.all(y[100:120] == x[100])
    y, _ = inject(x, "dropout", 100, 20, rng, s)
    assert np.all(y[100:120] == 0.0)  # the series is positive, so 0 is outside its range
    y, _ = inject(x, "noise", 100, 200, rng, s)
    assert np.std(y[100:300] - x[100:300]) == pytest.approx(MAGNITUDES["noise"] * s, rel=0.2)


def test_dropout_on_a_series_around_zero_falls_below_its_minimum():
    x = clean_series() - 50.0  # crosses 0, so reading 0 would be ordinary
    s = robust_scale(x)
    y, _ = inject(x, "dropout", 100, 10, np.random.default_rng(0), s)
    assert np.allclose(y[100:110], x.min() - MAGNITUDES["dropout"] * s)


def test_injection_on_columns_uses_each_columns_scale():
    x = np.stack([clean_series(), 10 * clean_series(seed=1)], axis=1)
    s = robust_scale(x)
    y, _ = inject(x, "level_shift", 50, 5, np.random.default_rng(0), s)
    d = y[50] - x[50]
    assert np.allclose(np.abs(d), MAGNITUDES["level_shift"] * s) and np.sign(d[0]) == np.sign(d[1])
    assert np.array_equal(y[:50], x[:50]) and np.array_equal(y[55:], x[55:])


def test_injection_is_deterministic_and_refuses_bad_arguments():
    x = clean_series()
    a, _ = inject(x, "noise", 10, 30, np.random.default_rng(7), 1.0)
    b, _ = inject(x, "noise", 10, 30, np.random.default_rng(7), 1.0)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="expected length 1"):
        inject(x, "spike", 10, 3, np.random.default_rng(0), 1.0)
    with pytest.raises(ValueError, match="at \\+ length <= 400"):
        inject(x, "stuck", 390, 20, np.random.default_rng(0), 1.0)
    with pytest.raises(ValueError, match="kind"):
        inject(x, "teleport", 10, 3, np.random.default_rng(0), 1.0)


# --- plan_injections ----------------------------------------------------------------------------------------------


def test_plan_injections_disjoint_with_gap_after_start():
    for seed in range(20):
        plan = plan_injections(3000, KINDS, start=500, count_per_kind=3, length=40, rng=np.random.default_rng(seed),
                               gap=50)
        assert sorted(k for k, _, _ in plan) == sorted(list(KINDS) * 3)
        assert [at for _, at, _ in plan] == sorted(at for _, at, _ in plan)
        for kind, at, length in plan:
            assert length == (1 if kind == "spike" else 40)
            assert at >= 500 and at + length <= 3000
        for (_, a1, l1), (_, a2, _) in zip(plan, plan[1:]):
            assert a2 - (a1 + l1) >= 50  # at least `gap` clean rows between consecutive anomalies


def test_plan_injections_tight_fit_and_too_many():
    # 2 level shifts of 10 rows + 1 gap of 5 = 25 rows: exactly the room after start.
    plan = plan_injections(125, ["level_shift"], start=100, count_per_kind=2, length=10, rng=np.random.default_rng(0),
                           gap=5)
    assert [(at, ln) for _, at, ln in plan] == [(100, 10), (115, 10)]
    with pytest.raises(ValueError, match="need 26 rows"):
        plan_injections(125, ["level_shift"], start=100, count_per_kind=2, length=10, rng=np.random.default_rng(0),
                        gap=6)


def test_plan_injections_deterministic_under_seed():
    def go(seed):
        return plan_injections(2000, KINDS, 100, 2, 25, np.random.default_rng(seed), 30)

    assert go(3) == go(3)
    assert go(3) != go(4)


# --- rolling_zscore -----------------------------------------------------------------------------------------------


def naive_zscore(x: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for t in range(len(x)):
        h = x[max(0, t - window):t]
        if len(h) >= min_periods:
            mean = h.mean()
            std = max(h.std(), 1e-8 * abs(mean), 1e-12)
            out[t] = abs(x[t] - mean) / std
    return out


@pytest.mark.parametrize("window, min_periods", [(1, 1), (5, 2), (20, 20), (50, 10)])
def test_rolling_zscore_matches_naive_loop(window, min_periods):
    rng = np.random.default_rng(window)
    x = 1000.0 + np.cumsum(rng.normal(size=600))  # a random walk far from 0: tests the centring
    z = rolling_zscore(x, window, min_periods)
    ref = naive_zscore(x, window, min_periods)
    assert np.array_equal(np.isnan(z), np.isnan(ref))
    assert np.isnan(z[:min_periods]).all() and not np.isnan(z[min_periods:]).any()
    ok = ~np.isnan(ref)
    assert np.allclose(z[ok], ref[ok], rtol=1e-9, atol=1e-9)


def test_rolling_zscore_on_a_flatline():
    x = np.full(100, 45.0)
    x[60] = 46.0
    z = rolling_zscore(x, window=10, min_periods=3)
    assert np.isnan(z[:3]).all()
    assert np.all(z[3:60] == 0.0)  # an unchanged value after a flat history scores exactly 0
    assert np.isfinite(z[60]) and z[60] > 1e5  # a change after a flat history is huge but finite
    # A flatline far from the series' median, after noisy rows: prefix-sum rounding must not leak into its std.
    rng = np.random.default_rng(0)
    y = np.r_[1000.0 + 300.0 * rng.normal(size=3000), np.full(30, 5000.3), 5001.3]
    zy = rolling_zscore(y, window=20, min_periods=20)
    assert np.all(zy[3020:3030] == 0.0)
    assert zy[-1] == pytest.approx(1.0 / (1e-8 * 5000.3), rel=1e-12)  # the std floor, exactly
    zeros = rolling_zscore(np.r_[np.zeros(20), 1.0], window=10, min_periods=1)
    assert np.isfinite(zeros[-1]) and zeros[-1] == pytest.approx(1e12)


def test_rolling_zscore_refuses_bad_arguments():
    with pytest.raises(ValueError, match="min_periods <= window"):
        rolling_zscore(np.zeros(10), window=3, min_periods=4)
    with pytest.raises(ValueError, match="finite"):
        rolling_zscore(np.array([1.0, np.nan]), window=3, min_periods=1)
