"""``statelite.monitor``: the residual calibration, p-values and scores, interval coverage with online adaptation,
events, substitution, warm-up, and a monitor wired to a runner (``StatefulRunner.monitor``). numpy and seeded
synthetic data, except the last tests, which step the committed reference GRU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from statelite import BadInputError, StatefulRunner
from statelite.monitor import (
    DEFAULT_THRESHOLD,
    PROBS,
    TAIL_P,
    Event,
    ForecastMonitor,
    MonitorOptions,
    ResidualCalibration,
    calibrate,
    coverage,
    replay,
)

MODELS = Path(__file__).resolve().parents[1] / "models"


def gaussian_calibration(horizon: int = 4, targets: int = 1, n: int = 3000, sigma: float = 1.0,
                         seed: int = 0) -> ResidualCalibration:
    """Residuals N(0, sigma^2), the same for every horizon step and target."""
    rng = np.random.default_rng(seed)
    forecasts = np.full((n, horizon, targets), 10.0)
    return calibrate(forecasts, forecasts + sigma * rng.normal(size=forecasts.shape))


def synthetic_stream(rows: int, horizon: int, scale, seed: int):
    """Forecasts and truth for ``replay``: the forecast made after row ``i`` for row ``i + h + 1`` misses it by
    ``scale(i + h + 1) * N(0, 1)``. Returns ``(forecasts (rows, horizon, 1), actual (rows, 1))``."""
    rng = np.random.default_rng(seed)
    truth = np.cumsum(rng.normal(size=rows + horizon + 1))
    target_row = np.arange(rows)[:, None] + np.arange(1, horizon + 1)[None, :]
    noise = rng.normal(size=(rows, horizon)) * scale(target_row)
    forecasts = truth[target_row] + noise
    return forecasts[..., None], truth[:rows, None]


# -- calibrate ---------------------------------------------------------------------------------------------------


def test_calibrate_shapes_increasing_quantiles_and_steps():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(500, 3, 2))
    a = f + rng.normal(size=f.shape) * np.array([1.0, 5.0])  # target 1's errors five times target 0's
    cal = calibrate(f, a, source="test")
    assert cal.quantiles.shape == (3, 2, len(PROBS)) and cal.tail.shape == (3, 2)
    assert (cal.horizon, cal.targets, cal.steps, cal.source) == (3, 2, 500, "test")
    assert (np.diff(cal.quantiles, axis=-1) > 0).all(), "quantiles strictly increasing for continuous residuals"
    assert (cal.tail > 0).all()
    # They are the quantiles of |residual|, per cell: the median of |N(0, s^2)| is 0.674 s.
    np.testing.assert_allclose(cal.quantiles[..., PROBS.index(0.5)],
                               np.quantile(np.abs(a - f), 0.5, axis=0), rtol=1e-12)
    np.testing.assert_allclose(cal.quantiles[:, 1, 10] / cal.quantiles[:, 0, 10], 5.0, rtol=0.2)


def test_calibrate_skips_nan_actuals():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(300, 4, 1))
    a = f + rng.normal(size=f.shape)
    full = calibrate(f, a)
    a_late = a.copy()
    a_late[-20:, 2:] = np.nan  # past the data's end: the far horizon steps of the last positions are unknown
    cal = calibrate(f, a_late)
    np.testing.assert_array_equal(cal.quantiles[:2], full.quantiles[:2])  # untouched steps: same residuals
    np.testing.assert_array_equal(cal.quantiles[2:], calibrate(f[:-20], a[:-20]).quantiles[2:])
    assert cal.steps == 300  # every position still has a known residual (its first steps)
    a_late[-20:] = np.nan
    assert calibrate(f, a_late).steps == 280


def test_calibrate_all_zero_residuals_get_a_positive_floor():
    f = np.full((50, 2, 1), 400.0)
    cal = calibrate(f, f.copy())
    np.testing.assert_allclose(cal.quantiles, 400.0 * 1e-9)
    np.testing.assert_allclose(cal.tail, 400.0 * 1e-9)
    zero = calibrate(np.zeros((50, 2, 1)), np.zeros((50, 2, 1)))
    assert (zero.quantiles == 1e-12).all() and (zero.tail == 1e-12).all(), "a zero series: floor 1e-12"
    # The floor keeps a later residual finite and surprising: a p-value, not a division by zero.
    mon = ForecastMonitor(cal, [0], MonitorOptions(levels=()))
    mon.push(mon.observe([400.0]), np.full((2, 1), 400.0))
    obs = mon.observe([400.001])
    assert obs.anomaly and math.isfinite(obs.score)


def test_calibrate_refuses_shape_mismatch_and_no_known_residual():
    with pytest.raises(ValueError, match=r"expected forecasts and actual values of one shape .*received \(5, 2, 1\) "
                                         r"and \(5, 2, 2\)"):
        calibrate(np.zeros((5, 2, 1)), np.zeros((5, 2, 2)))
    with pytest.raises(ValueError, match="one shape"):
        calibrate(np.zeros((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="expected at least one position with a known residual; received none"):
        calibrate(np.zeros((5, 2, 1)), np.full((5, 2, 1), np.nan))


def test_calibration_round_trips_through_a_dict_and_json():
    cal = gaussian_calibration(horizon=3, targets=2, n=400)
    d = cal.to_dict()
    assert d["probs"] == list(PROBS) and d["steps"] == 400 and d["source"] == "validation split"
    assert ResidualCalibration.from_dict(d) == cal
    assert ResidualCalibration.from_dict(json.loads(json.dumps(d)), horizon=3, targets=2) == cal
    other = ResidualCalibration.from_dict({**d, "tail": (cal.tail * 2).tolist()})
    assert other != cal, "equality compares the arrays"


def _bad(d: dict, **changes) -> dict:
    return {**d, **changes}


@pytest.mark.parametrize("change, message", [
    (lambda d: _bad(d, probs=d["probs"][:-1]), r"residuals probs must be \[0\.0, 0\.05"),
    (lambda d: _bad(d, probs=[p + 0.01 for p in d["probs"]]), "residuals probs must be"),
    (lambda d: _bad(d, steps=0), "residuals steps must be a positive integer; received 0"),
    (lambda d: _bad(d, steps=True), "residuals steps must be a positive integer; received True"),
    (lambda d: _bad(d, quantiles=[[q[0][:-1]] for q in d["quantiles"]]),
     r"residuals quantiles must be finite numbers of shape \(2, 1, 19\); received shape \(2, 1, 18\)"),
    (lambda d: _bad(d, quantiles=d["quantiles"][:1]),
     r"residuals tail must be finite numbers of shape \(1, 1\); received shape \(2, 1\)"),
    (lambda d: _bad(d, quantiles=[[[math.nan] * 19]] * 2), r"residuals quantiles must be finite numbers"),
    (lambda d: _bad(d, tail=[[0.1, 0.2]]), r"residuals tail must be finite numbers of shape \(2, 1\)"),
    (lambda d: _bad(d, tail=[[math.inf], [0.1]]), "residuals tail must be finite"),
    (lambda d: _bad(d, quantiles=[[[-1.0] + q[0][1:]] for q in d["quantiles"]]),
     "residuals quantiles must be non-negative and increasing, and tail scales positive"),
    (lambda d: _bad(d, quantiles=[[q[0][::-1]] for q in d["quantiles"]]), "non-negative and increasing"),
    (lambda d: _bad(d, tail=[[0.0], [0.1]]), "tail scales positive"),
    (lambda d: _bad(d, tail=[[-0.1], [0.1]]), "tail scales positive"),
    (lambda d: [d], "residuals must be an object; received list"),
])
def test_from_dict_refuses(change, message):
    d = gaussian_calibration(horizon=2, targets=1, n=200).to_dict()
    with pytest.raises(ValueError, match=message):
        ResidualCalibration.from_dict(change(d))


def test_from_dict_checks_the_model_shape():
    d = gaussian_calibration(horizon=2, targets=1, n=200).to_dict()
    with pytest.raises(ValueError, match=r"shape \(4, 1, 19\); received shape \(2, 1, 19\)"):
        ResidualCalibration.from_dict(d, horizon=4, targets=1)


# -- quantiles and p-values --------------------------------------------------------------------------------------


def test_quantile_interpolates_inside_the_grid_and_follows_the_tail_above():
    cal = gaussian_calibration(horizon=2, targets=1, n=500)
    q = cal.quantiles
    np.testing.assert_array_equal(cal.quantile(0.0), q[..., 0])
    np.testing.assert_array_equal(cal.quantile(0.5), q[..., 10])
    np.testing.assert_allclose(cal.quantile(0.525), (q[..., 10] + q[..., 11]) / 2, rtol=1e-12)
    np.testing.assert_allclose(cal.quantile(0.88), 0.4 * q[..., 17] + 0.6 * q[..., 18], rtol=1e-12)
    np.testing.assert_allclose(cal.quantile(0.9), q[..., 18], rtol=1e-12)
    # Above 0.9: P(|r| > u + x) = 0.1 exp(-x / beta), so Q(l) = u + beta ln(0.1 / (1 - l)).
    np.testing.assert_allclose(cal.quantile(0.99), q[..., 18] + cal.tail * math.log(10.0), rtol=1e-12)
    np.testing.assert_allclose(cal.quantile(0.999), q[..., 18] + cal.tail * math.log(100.0), rtol=1e-12)
    assert (cal.quantile(0.95) > cal.quantile(0.9)).all()


def reference_p(cal: ResidualCalibration, theta_scale: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The documented p-value, written independently with numpy: the residual divided by the online scale, then the
    inverse of the piecewise-linear quantile function of |r| up to the 90th percentile, the exponential tail above."""
    z = np.abs(r) * np.exp(-theta_scale)
    p = np.full(z.shape, np.nan)
    for idx in np.ndindex(z.shape):
        q, u, beta = cal.quantiles[idx], cal.quantiles[idx][-1], cal.tail[idx]
        if np.isnan(z[idx]):
            continue
        if z[idx] > u:
            p[idx] = 0.1 * np.exp(-(z[idx] - u) / beta)
        elif z[idx] <= q[0]:
            p[idx] = 1.0
        else:
            p[idx] = 1.0 - np.interp(z[idx], q, PROBS)
    return p


def adapted_monitor(cal: ResidualCalibration, rows: int, scale, seed: int) -> ForecastMonitor:
    """A monitor whose online scale has moved: ``rows`` rows of N(0, scale^2) errors (``scale`` per target)."""
    rng = np.random.default_rng(seed)
    mon = ForecastMonitor(cal, None, MonitorOptions(levels=(0.9,), threshold=300.0))
    zeros = np.zeros((cal.horizon, cal.targets))
    for _ in range(rows):
        mon.push(mon.observe(None, scale * rng.normal(size=cal.targets)), zeros)
    return mon


@pytest.mark.parametrize("rows, scale", [(0, 1.0), (200, 3.0), (200, 0.2)], ids=["fresh", "wider", "narrower"])
def test_p_values_follow_the_documented_formula_in_every_cell(rows, scale):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(800, 4, 5))
    a = f + rng.standard_t(3, size=f.shape) * np.arange(1, 6)  # heavy tails, a different scale per target
    cal = calibrate(f, a)
    mon = adapted_monitor(cal, rows, scale * 1.2 * np.arange(1, 6), seed=4)  # t(3) errors: about 1.2x N(0, 1)'s
    theta_scale = mon.theta_scale
    assert theta_scale.shape == (4, 5)
    if rows:
        assert (np.sign(theta_scale) == np.sign(math.log(scale))).all(), "the online scale followed the errors"
    before = _snapshot(mon)
    r = rng.standard_t(2, size=(200, 4, 5)) * rng.uniform(0.1, 30.0, size=(200, 1, 1))
    r[::17, 1, 2] = np.nan
    r[5] = 0.0  # below the smallest quantile
    for row in r:
        p = mon.p_values(row)
        np.testing.assert_allclose(p, reference_p(cal, theta_scale, row), rtol=1e-12, atol=1e-15)
        assert np.array_equal(np.isnan(p), np.isnan(row))
    assert _same(_snapshot(mon), before) and mon.row == rows, "p_values changes nothing"


@pytest.mark.parametrize("horizon, targets", [(4, 1), (3, 2)])
def test_p_value_body_and_tail_formula(horizon, targets):
    cal = gaussian_calibration(horizon=horizon, targets=targets, n=500)
    mon = ForecastMonitor(cal, None)
    q, u, beta = cal.quantiles, cal.quantiles[..., -1], cal.tail
    assert (mon.p_values(np.zeros((horizon, targets))) == 1.0).all(), "p = 1 below the smallest quantile"
    assert (mon.p_values(0.5 * q[..., 0]) == 1.0).all()
    np.testing.assert_allclose(mon.p_values(q[..., 10]), 0.5, rtol=1e-12)  # at the median
    np.testing.assert_allclose(mon.p_values(-q[..., 10]), 0.5, rtol=1e-12)  # |residual|
    np.testing.assert_allclose(mon.p_values((q[..., 10] + q[..., 11]) / 2), 0.475, rtol=1e-12)
    np.testing.assert_allclose(mon.p_values(u), TAIL_P, rtol=1e-12)
    for x in (0.3, 2.0, 25.0):
        np.testing.assert_allclose(mon.p_values(u + x * beta), 0.1 * math.exp(-x), rtol=1e-12)
    # The online scale divides the residual: a residual exp(theta_scale) times larger, the same p-value.
    wide = adapted_monitor(cal, 100, 3.0, seed=5)
    grown = np.exp(wide.theta_scale)
    assert (grown > 1.5).all()
    np.testing.assert_allclose(wide.p_values(grown * (u + 2.0 * beta)), 0.1 * math.exp(-2.0), rtol=1e-12)


def test_row_score_is_bonferroni_over_the_forecasts_that_cover_it():
    cal = gaussian_calibration(horizon=4, targets=1, n=500)
    u, beta = cal.quantiles[:, 0, -1], cal.tail[:, 0]
    mon = ForecastMonitor(cal, None, MonitorOptions(levels=(), adapt=False))
    zeros = np.zeros((4, 1))
    mon.push(mon.observe(None, [0.0]), zeros)
    # Row 1: only the one-step forecast of row 0 covers it (m = 1).
    obs = mon.observe(None, [u[0] + 3 * beta[0]])
    assert obs.p_value == pytest.approx(0.1 * math.exp(-3), rel=1e-12)
    assert obs.score == pytest.approx(-math.log10(0.1 * math.exp(-3)), rel=1e-12) and not obs.anomaly
    mon.push(obs, zeros)
    # Row 2: forecasts of rows 0 (h=2) and 1 (h=1): m = 2, p = 2 * min p.
    value = u[1] + 12 * beta[1]
    p2 = 0.1 * math.exp(-(value - u[0]) / beta[0]) if value > u[0] else 1.0
    expected = min(1.0, 2 * min(p2, 0.1 * math.exp(-12)))
    obs = mon.observe(None, [value])
    assert obs.p_value == pytest.approx(expected, rel=1e-12)
    assert obs.score == pytest.approx(-math.log10(expected), rel=1e-12)
    assert obs.anomaly == (obs.score >= DEFAULT_THRESHOLD)


# -- coverage and scores on synthetic streams --------------------------------------------------------------------


LEVELS = (0.8, 0.9, 0.95)


def test_adaptive_intervals_keep_their_coverage_when_the_errors_triple():
    cal = gaussian_calibration(horizon=4, n=4000, seed=4)
    rows = 4000
    f, actual = synthetic_stream(rows, 4, lambda t: np.where(t < rows // 2, 1.0, 3.0), seed=5)
    adaptive = replay(cal, f, actual, MonitorOptions(levels=LEVELS))
    cov = coverage(adaptive["lower"], adaptive["upper"], actual)
    np.testing.assert_allclose(cov, LEVELS, atol=0.03)
    fixed = replay(cal, f, actual, MonitorOptions(levels=LEVELS, adapt=False))
    cov_fixed = coverage(fixed["lower"], fixed["upper"], actual)
    assert (cov_fixed < np.array(LEVELS) - 0.15).all(), f"the calibration alone should miss: {cov_fixed}"
    # The second half alone: the adapted intervals are about three times wider than the calibrated ones.
    ratio = (adaptive["upper"] - adaptive["lower"])[-500:] / (fixed["upper"] - fixed["lower"])[-500:]
    assert 2.2 < float(np.median(ratio)) < 4.0


def test_coverage_counts_truth_inside_per_level():
    lower = np.zeros((3, 2, 1, 1))
    upper = np.ones((3, 2, 1, 1))
    upper[:, 1] = 10.0
    actual = np.array([[0.0], [0.5], [5.0]])  # rows 1 and 2 are the truths of the forecasts of rows 0 and 1
    np.testing.assert_array_equal(coverage(lower, upper, actual), [0.5, 1.0])


def test_a_ten_sigma_spike_is_flagged_and_clean_rows_rarely_are():
    cal = gaussian_calibration(horizon=4, n=4000, seed=6)
    rows = 3000
    f, actual = synthetic_stream(rows, 4, lambda t: np.ones_like(t, dtype=float), seed=7)
    actual[1500] += 10.0
    out = replay(cal, f, actual)
    assert out["score"][1500] >= DEFAULT_THRESHOLD and out["anomaly"][1500]
    clean = np.delete(out["anomaly"], 1500)
    assert clean.mean() < 0.01, f"false alarm rate {clean.mean():.3%}"
    assert np.isnan(out["score"][0]) and np.isfinite(out["score"][1:]).all()


# -- events ------------------------------------------------------------------------------------------------------


def _flat_monitor(horizon: int = 2, **options) -> ForecastMonitor:
    options.setdefault("levels", ())
    return ForecastMonitor(gaussian_calibration(horizon=horizon, n=500), [0], MonitorOptions(**options))


def _feed(mon: ForecastMonitor, values, forecast: float = 0.0) -> list:
    """Observe each value and push a flat forecast after it."""
    out = []
    for v in values:
        out.append(mon.push(mon.observe(np.array([float(v)])), np.full((mon.horizon, 1), forecast)))
    return out


def test_consecutive_anomalous_rows_form_one_event_closed_by_the_next_normal_row():
    mon = _flat_monitor(adapt=False)
    obs = _feed(mon, [0, 0, 0, 0, 0, 50, 80, 50, 0, 0])
    assert [o.anomaly for o in obs] == [False] * 5 + [True] * 3 + [False] * 2
    assert [o.event for o in obs[:8]] == [None] * 8, "an event is delivered once it has ended"
    event = obs[8].event
    assert event == Event(start=5, end=7, peak=obs[6].score, peak_row=6)
    assert event.rows == 3 and obs[6].score > obs[5].score
    assert obs[9].event is None
    assert mon.close_event() is None


def test_close_event_ends_an_open_event():
    mon = _flat_monitor(adapt=False)
    obs = _feed(mon, [0, 0, 0, 60, 40])
    event = mon.close_event()
    assert event == Event(3, 4, obs[3].score, 3) and event.rows == 2
    assert mon.close_event() is None
    assert _feed(mon, [0])[0].event is None, "a closed event is not delivered again"


# -- observe is pure, push commits --------------------------------------------------------------------------------


def _snapshot(mon: ForecastMonitor) -> tuple:
    one = mon.one_step()
    return mon.theta.copy(), mon.theta_scale.copy(), mon.row, None if one is None else one.copy()


def _same(a: tuple, b: tuple) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y)) for x, y in zip(a, b)
    )


def test_observe_changes_nothing_until_push():
    cal = gaussian_calibration(horizon=2, n=500)
    mon = ForecastMonitor(cal, [0], MonitorOptions(levels=(0.8, 0.9)))
    rng = np.random.default_rng(8)
    _feed(mon, rng.normal(size=30))
    before = _snapshot(mon)
    assert np.any(before[0] != 0) and np.any(before[1] != 0), "30 rows adapted the corrections"
    miss = mon.observe(np.array([3.0]))  # outside both intervals, not anomalous: push would adapt
    assert not miss.anomaly
    again = mon.observe(np.array([3.0]))
    assert (again.score, again.p_value) == (miss.score, miss.p_value)
    spike = mon.observe(np.array([500.0]))
    assert spike.anomaly
    assert _same(_snapshot(mon), before)
    assert _feed(mon, [0.0])[0].event is None, "an anomalous row observed but never pushed opens no event"
    after_normal = _snapshot(mon)
    mon.push(mon.observe(np.array([3.0])), np.zeros((2, 1)))
    assert mon.row == before[2] + 2
    assert (mon.theta > after_normal[0]).all(), "the miss, once pushed, widens every interval"


def test_push_commits_the_adaptation_and_refuses_another_rows_observation():
    cal = gaussian_calibration(horizon=2, n=500)
    mon = ForecastMonitor(cal, [0], MonitorOptions(levels=(0.9,)))
    _feed(mon, [0.0, 0.0, 0.0])
    theta = mon.theta.copy()
    obs = mon.observe(np.array([3.0]))  # a miss at both horizon steps
    mon.push(obs, np.zeros((2, 1)))
    np.testing.assert_allclose(mon.theta, theta + 0.05 * (1 - 0.1))  # rate * (miss - (1 - level))
    with pytest.raises(ValueError, match=r"^expected the observation of row 4; received row 3$"):
        mon.push(obs, np.zeros((2, 1)))
    assert mon.row == 4


# -- substitution ------------------------------------------------------------------------------------------------


def _two_feature_monitor(**options) -> ForecastMonitor:
    """Features (target, other); flat forecasts 1.0 for every step."""
    options.setdefault("levels", ())
    mon = ForecastMonitor(gaussian_calibration(horizon=4, n=500), [0], MonitorOptions(adapt=False, **options))
    for _ in range(5):
        mon.push(mon.observe(np.array([1.0, 7.0])), np.full((4, 1), 1.0))
    return mon


def _run_spikes(mon: ForecastMonitor, n: int) -> list:
    out = []
    for _ in range(n):
        x = np.array([100.0, 7.0])
        obs = mon.observe(x)
        assert x[0] == 100.0, "the row itself is never changed"
        out.append(obs)
        mon.push(obs, np.full((4, 1), 1.0))
    return out


def test_substitute_feeds_the_one_step_forecast_for_the_targets_only():
    mon = _two_feature_monitor(substitute=True)
    assert mon.one_step().tolist() == [1.0]
    (obs,) = _run_spikes(mon, 1)
    assert obs.anomaly and obs.substituted
    assert obs.fed.tolist() == [1.0, 7.0], "the target takes the forecast, the other feature stays"
    normal = mon.observe(np.array([1.0, 7.0]))
    assert not normal.substituted and normal.fed.tolist() == [1.0, 7.0]


def test_without_substitute_fed_is_the_row_itself():
    mon = _two_feature_monitor(substitute=False)
    x = np.array([100.0, 7.0])
    obs = mon.observe(x)
    assert obs.anomaly and not obs.substituted and obs.fed is x
    no_targets = ForecastMonitor(mon.calibration, None, MonitorOptions(levels=(), substitute=True))
    no_targets.push(no_targets.observe(x, [1.0]), np.full((4, 1), 1.0))
    obs = no_targets.observe(x, actual=[100.0])
    assert obs.anomaly and not obs.substituted and obs.fed is x, "no target column to replace"


@pytest.mark.parametrize("max_substitute, expected", [(None, 4), (2, 2), (0, 0)])
def test_at_most_max_substitute_consecutive_rows_are_substituted(max_substitute, expected):
    mon = _two_feature_monitor(substitute=True, max_substitute=max_substitute)
    obs = _run_spikes(mon, expected + 1)
    assert all(o.anomaly for o in obs)
    assert [o.substituted for o in obs] == [True] * expected + [False]
    assert obs[-1].fed[0] == 100.0, "after the cap the row is taken as it is"


def test_after_the_cap_the_rest_of_the_event_is_taken_as_it_is():
    mon = _two_feature_monitor(substitute=True)
    obs = _run_spikes(mon, 10)
    assert all(o.anomaly for o in obs)
    assert [o.substituted for o in obs] == [True] * 4 + [False] * 6


# -- warm-up and restart -----------------------------------------------------------------------------------------


def test_rows_are_unscored_until_forecasts_made_after_warmup_cover_them():
    cal = gaussian_calibration(horizon=2, n=500)
    mon = ForecastMonitor(cal, [0], MonitorOptions(levels=(0.9,)), warmup=3)
    obs = _feed(mon, np.zeros(8))
    # Forecasts after rows 0-2 (the warm-up) are not kept; row 3's is the first to cover a row (row 4).
    assert [math.isnan(o.score) for o in obs] == [True] * 4 + [False] * 4
    assert [math.isnan(o.p_value) for o in obs] == [True] * 4 + [False] * 4
    assert not any(o.anomaly for o in obs)
    assert obs[0].lower.shape == (1, 2, 1) and np.isfinite(obs[0].lower).all(), "intervals from the first row"


def test_restart_clears_the_pending_forecasts_and_keeps_the_corrections():
    cal = gaussian_calibration(horizon=2, n=500)
    mon = ForecastMonitor(cal, [0], MonitorOptions(levels=(0.9,)), warmup=1)
    _feed(mon, np.random.default_rng(9).normal(size=20) * 2)
    theta, theta_scale, row = mon.theta.copy(), mon.theta_scale.copy(), mon.row
    assert np.any(theta != 0) and mon.one_step() is not None
    mon.restart()
    assert mon.one_step() is None and mon.row == row
    np.testing.assert_array_equal(mon.theta, theta)
    np.testing.assert_array_equal(mon.theta_scale, theta_scale)
    obs = _feed(mon, np.zeros(4))
    assert [math.isnan(o.score) for o in obs] == [True, True, False, False], "warm-up again after the restart"
    assert obs[0].row == row


# -- options -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"levels": (0.0,)}, r"expected interval levels between 0 and 1 \(e\.g\. 0\.9\); received 0\.0"),
    ({"levels": (1.0,)}, "received 1.0"),
    ({"levels": (0.9, 1.5)}, "received 1.5"),
    ({"levels": (-0.1,)}, "received -0.1"),
    ({"levels": (0.9, 0.8, 0.9)}, r"expected each interval level once; received \[0\.9, 0\.8, 0\.9\]"),
    ({"threshold": -1.0}, r"expected a threshold >= 0 \(a score, -log10 of a p-value\); received -1\.0"),
    ({"threshold": math.nan}, "expected a threshold >= 0"),
    ({"threshold": math.inf}, "expected a threshold >= 0"),
    ({"rate": 0.0}, r"expected a rate in \(0, 1\]; received 0\.0"),
    ({"rate": 1.5}, "received 1.5"),
    ({"max_substitute": -1}, "expected max_substitute >= 0; received -1"),
])
def test_monitor_options_refuse(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MonitorOptions(**kwargs)


def test_monitor_options_accept_the_edges():
    assert MonitorOptions(levels=[0.5, 0.99], threshold=0.0, rate=1.0).levels == (0.5, 0.99)
    assert MonitorOptions(levels=()).levels == ()


# -- a monitor wired to a runner -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gru():
    path = MODELS / "gru_float32.tflite"
    if not path.exists():
        pytest.fail("models/gru_float32.tflite is missing; run python models/regenerate.py")
    with np.load(path.with_name("gru_float32.golden.npz")) as d:
        return path, d["x"].astype(np.float64)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_a_refused_row_leaves_the_monitor_and_the_state_as_they_were(gru):
    model, xs = gru
    options = MonitorOptions(levels=(0.8, 0.9), threshold=300.0)  # nothing anomalous: every row would adapt
    runner = StatefulRunner(model)
    m = runner.monitor(options)
    twin = StatefulRunner(model).monitor(options)
    for x in xs[:40]:
        m.step(x)
        twin.step(x)
    before, state = _snapshot(m.monitor), runner.state
    assert np.any(before[0] != 0)
    with pytest.raises(BadInputError, match="NaN"):
        m.step([math.nan])
    assert _same(_snapshot(m.monitor), before) and _states_equal(runner.state, state)

    def refuse(*args):
        raise BadInputError("refused by the test")

    runner.on_out_of_range = refuse  # a first difference of 3 is outside the training range [-1.9, 1.9]
    with pytest.raises(BadInputError, match="refused by the test"):
        m.step(xs[39] + 3.0)
    runner.on_out_of_range = None
    assert _same(_snapshot(m.monitor), before) and _states_equal(runner.state, state)
    # The next good row is handled as if the refused ones never came.
    a, b = m.step(xs[40]), twin.step(xs[40])
    assert (a.row, a.score) == (b.row, b.score)
    np.testing.assert_array_equal(a.forecast, b.forecast)
    np.testing.assert_array_equal(a.lower, b.lower)
    np.testing.assert_array_equal(m.monitor.theta, twin.monitor.theta)


def test_fill_steps_the_model_on_its_own_forecasts(gru):
    model, xs = gru
    runner = StatefulRunner(model)
    m = runner.monitor()
    assert m.fill(3) == 0, "nothing to fill from before the first row"
    for x in xs[:5]:
        m.step(x)
    state = runner.state
    assert m.fill(3) == 0 and _states_equal(runner.state, state), "no forecast kept during the warm-up"
    for x in xs[5:20]:
        m.step(x)
    row, state = m.monitor.row, runner.state
    assert m.fill(3) == 3
    assert m.monitor.row == row, "filled rows are not observed rows"
    assert not _states_equal(runner.state, state)
    # The same by hand: the model stepped three times on its own one-step forecast.
    twin = StatefulRunner(model)
    y = twin.run(xs[:20])[-1]
    for _ in range(3):
        y = twin.step([y[0, 0]])
    assert _states_equal(runner.state, twin.state)
    obs = m.step(xs[20])
    np.testing.assert_array_equal(obs.forecast, twin.step(xs[20]))
    assert math.isfinite(obs.score), "the filled forecasts cover the next row"


def test_reset_zeroes_the_state_restarts_the_monitor_and_ends_the_event(gru):
    model, xs = gru
    runner = StatefulRunner(model)
    m = runner.monitor()
    for x in xs[:30]:
        m.step(x)
    spike = m.step(xs[30] + 8.0)
    assert spike.anomaly
    theta = m.monitor.theta.copy()
    event = m.reset()
    assert event == Event(30, 30, spike.score, 30)
    assert _states_equal(runner.state, StatefulRunner(model).state)
    np.testing.assert_array_equal(m.monitor.theta, theta)
    obs = m.step(xs[31])
    assert math.isnan(obs.score) and obs.row == 31 and obs.event is None
    assert m.reset() is None


def test_export_and_restore_round_trip_and_refuse_what_does_not_fit():
    mon = _two_feature_monitor(levels=(0.8, 0.9))
    _run_spikes(mon, 0)
    rng = np.random.default_rng(5)
    for _ in range(12):
        x = np.array([rng.normal(), 1.0])
        mon.push(mon.observe(x), rng.normal(size=(mon.horizon, mon.targets)))
    saved = mon.export()
    assert all(np.isfinite(a).all() and a.dtype == np.float64 for a in saved.values())
    fresh = _two_feature_monitor(levels=(0.8, 0.9))
    assert fresh.restore(saved)
    assert all(np.array_equal(saved[k], fresh.export()[k]) for k in saved)
    assert fresh.row == mon.row and np.array_equal(fresh.theta, mon.theta)
    x = np.array([0.3, 1.0])
    assert fresh.observe(x).score == mon.observe(x).score
    # other levels, a wrong shape, a correction beyond its limit, a missing array: refused, nothing changed
    for bad in (
        {**saved, "levels": np.array([0.8, 0.95])},
        {**saved, "ring": saved["ring"][:1]},
        {**saved, "theta": saved["theta"] + 100.0},
        {k: v for k, v in saved.items() if k != "counters"},
    ):
        other = _two_feature_monitor(levels=(0.8, 0.9))
        before = other.export()
        assert not other.restore(bad)
        assert all(np.array_equal(before[k], other.export()[k]) for k in before)
