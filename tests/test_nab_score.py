"""NAB scoring on hand-made series (expected raw scores computed here from NAB's formulas) and the corpus loader."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.nab import (  # noqa: E402
    DEFAULT_ROOT,
    NAB_PROFILES,
    STANDARD,
    NabSeries,
    Profile,
    corpus_score,
    load_corpus,
    probationary_rows,
    score_series,
)

TP, FP, FN = 1.0, 0.11, 1.0


def S(y: float) -> float:
    """NAB's scaled sigmoid, written out independently of the module."""
    return -1.0 if y > 3 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def series(n: int = 100, windows=((40, 49),), probation: int = 0) -> NabSeries:
    return NabSeries(name="synthetic", timestamps=[str(i) for i in range(n)], values=np.zeros(n),
                     windows=list(windows), probation=probation)


def flags(n: int = 100, *rows: int) -> np.ndarray:
    f = np.zeros(n, dtype=bool)
    f[list(rows)] = True
    return f


def test_standard_profile_is_nabs():
    assert STANDARD == Profile(tp=1.0, fp=0.11, fn=1.0, tn=1.0)
    assert NAB_PROFILES["reward_low_FP_rate"].fp == 0.22
    assert NAB_PROFILES["reward_low_FN_rate"].fn == 2.0


def test_perfect_detector_scores_100_and_null_detector_0():
    s = series(windows=[(20, 29), (60, 74)])
    perfect = score_series(flags(100, 20, 60), s)
    null = score_series(flags(100), s)
    assert perfect.raw == pytest.approx(2 * TP, abs=1e-12)
    assert (perfect.tp, perfect.fp, perfect.fn) == (2, 0, 0)
    assert null.raw == -2 * FN and (null.tp, null.fp, null.fn) == (0, 0, 2)
    assert perfect.null == null.null == -2 * FN and perfect.perfect == 2 * TP
    assert corpus_score([perfect]) == pytest.approx(100.0, abs=1e-9)
    assert corpus_score([null]) == 0.0


def test_earlier_detection_in_window_scores_more():
    s = series()  # window rows 40..49, width 10
    first = score_series(flags(100, 40), s).raw
    middle = score_series(flags(100, 45), s).raw
    last = score_series(flags(100, 49), s).raw
    assert first == pytest.approx(TP * S(-10 / 10) / S(-1.0), abs=1e-9)  # exactly TP
    assert middle == pytest.approx(TP * S(-5 / 10) / S(-1.0), abs=1e-9)
    # NAB's position at the last row is -1/W, so the score is just above TP * S(0) = 0.
    assert last == pytest.approx(TP * S(-1 / 10) / S(-1.0), abs=1e-9)
    assert first > middle > last > 0


def test_second_detection_in_same_window_adds_nothing():
    s = series()
    assert score_series(flags(100, 40, 45, 49), s).raw == score_series(flags(100, 40), s).raw
    both = score_series(flags(100, 45, 47), s)
    assert both.raw == score_series(flags(100, 45), s).raw
    assert (both.tp, both.fp) == (1, 0)


def test_false_positive_long_after_window_costs_full_fp_weight():
    s = series(windows=[(10, 19)])  # width 10: relative position of row i is (i - 19) / 9
    r = score_series(flags(100, 10, 90), s)  # (90 - 19) / 9 = 7.9 > 3
    assert r.raw == pytest.approx(TP - FP, abs=1e-9)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)
    r = score_series(flags(100, 40), s)  # (40 - 19) / 9 = 2.33: nearly, not quite, full weight
    assert r.raw == pytest.approx(-FN + FP * S(21 / 9), abs=1e-9)
    assert -FN - FP < r.raw < -FN - 0.99 * FP


def test_scaled_sigmoid_is_minus_one_only_beyond_three_window_widths():
    ones = Profile(tp=1.0, fp=1.0, fn=1.0, tn=1.0)  # fp weight 1 so the 6e-7 gap at position 3 is visible
    s = series(windows=[(10, 19)])
    at_3 = score_series(flags(100, 19 + 27), s, ones).raw  # (46 - 19) / 9 = 3.0: still the sigmoid
    past_3 = score_series(flags(100, 19 + 28), s, ones).raw  # 28 / 9 > 3: exactly -1
    assert at_3 == pytest.approx(-1.0 + S(3.0), abs=1e-12) and at_3 > -2.0 + 1e-7
    assert past_3 == -2.0


def test_false_positive_just_after_window_costs_less():
    s = series(windows=[(10, 19)])
    just_after = score_series(flags(100, 20), s).raw
    later = score_series(flags(100, 25), s).raw
    assert just_after == pytest.approx(-FN + FP * S(1 / 9), abs=1e-9)
    assert later == pytest.approx(-FN + FP * S(6 / 9), abs=1e-9)
    assert -FN > just_after > later > -FN - FP


def test_false_positive_before_any_window_costs_full_fp_weight():
    r = score_series(flags(100, 5, 39), series())
    assert r.raw == pytest.approx(-FN - 2 * FP, abs=1e-12)
    assert r.fp == 2


def test_series_without_windows_each_false_positive_costs():
    s = series(windows=[])
    r = score_series(flags(100, 3, 50, 51, 99), s)
    assert r.raw == pytest.approx(-4 * FP, abs=1e-12)
    assert (r.tp, r.fp, r.fn, r.null, r.perfect) == (0, 4, 0, 0.0, 0.0)
    assert score_series(flags(100), s).raw == 0.0
    with pytest.raises(ValueError, match="no scorable window"):
        corpus_score([r])


def test_detections_in_probation_are_ignored():
    s = series(windows=[(40, 49)], probation=30)
    r = score_series(flags(100, 0, 10, 29), s)
    assert r.raw == -FN and (r.tp, r.fp, r.fn) == (0, 0, 1)
    r = score_series(flags(100, 29, 30), s)  # row 30 is the first scored row: a FP before any window
    assert r.raw == pytest.approx(-FN - FP, abs=1e-12) and r.fp == 1


def test_window_inside_probation_scores_nothing_but_still_precedes():
    # Window (5, 10) lies in the probationary period (rows 0..11): neither TP nor FN, not in null, but NAB still counts
    # it in `perfect` and measures a later false positive from it.
    s = series(windows=[(5, 10), (40, 49)], probation=12)
    r = score_series(flags(100, 7, 13, 40), s)
    assert r.raw == pytest.approx(TP + FP * S((13 - 10) / 5), abs=1e-9)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)
    assert (r.null, r.perfect) == (-FN, 2 * TP)


def test_window_straddling_probation_scores_from_its_true_start():
    s = series(windows=[(25, 34)], probation=30)
    r = score_series(flags(100, 26, 31), s)  # row 26 is in probation; row 31 is position -(34 - 31 + 1) / 10
    assert r.raw == pytest.approx(TP * S(-4 / 10) / S(-1.0), abs=1e-9)


def test_single_row_window_false_positive_uses_nabs_earlier_convention():
    s = series(windows=[(50, 50)])
    assert score_series(flags(100, 50), s).raw == pytest.approx(TP, abs=1e-12)
    assert score_series(flags(100, 51), s).raw == pytest.approx(-FN + FP * S(2.0), abs=1e-9)


def test_nab_unit_test_right_edge_tp_and_next_row_fp_cancel():
    # NAB's own test (tests/unit/true_positive_test.py): with all weights 1, a TP at a 100-row window's last row plus a
    # FP on the next row plus the FN of the second run sum to about 0 (3 decimals).
    ones = Profile(tp=1.0, fp=1.0, fn=1.0, tn=1.0)
    s = series(n=1000, windows=[(450, 549)])
    tp = score_series(flags(1000, 549), s, ones).raw
    fp = score_series(flags(1000, 550), s, ones).raw
    assert tp + fp + 1 == pytest.approx(0.0, abs=5e-4)


def test_corpus_score_normalises_the_total_not_each_file():
    a = score_series(flags(100, 49), series())  # one late TP
    b = score_series(flags(100, 10, 20), series(windows=[]))  # two FPs, no window
    expected = 100 * ((a.raw + b.raw) - (-FN)) / (TP - (-FN))
    assert corpus_score([a, b]) == pytest.approx(expected, abs=1e-9)
    assert corpus_score([a, b]) < corpus_score([a])  # the FPs of a windowless file still count


def test_other_profile_weights_apply():
    p = NAB_PROFILES["reward_low_FN_rate"]
    r = score_series(flags(100, 5), series(), p)
    assert r.raw == pytest.approx(-2.0 - 0.11, abs=1e-12) and r.null == -2.0


def test_bad_inputs_are_refused_naming_what_was_expected():
    s = series()
    with pytest.raises(TypeError, match="bool"):
        score_series(np.zeros(100), s)
    with pytest.raises(ValueError, match=r"shape \(100,\)"):
        score_series(np.zeros(99, dtype=bool), s)
    with pytest.raises(ValueError, match="disjoint"):
        series(windows=[(10, 20), (20, 30)])
    with pytest.raises(ValueError, match="start <= end"):
        series(windows=[(10, 100)])


@pytest.mark.parametrize("n, expected", [(20, 3), (100, 15), (2380, 357), (4032, 604), (4999, 749), (5000, 750),
                                         (10_000, 750)])
def test_probationary_rows_follows_nab(n, expected):
    assert probationary_rows(n) == expected  # min(floor(0.15 n), 750)
    assert probationary_rows(n, cap=10**9) == math.floor(0.15 * n)


def test_load_corpus_maps_windows_and_probation():
    corpus = load_corpus()
    assert len(corpus) == 18
    labels = json.loads((DEFAULT_ROOT / "windows.json").read_text())
    assert [s.name for s in corpus] == sorted(labels)
    assert sum(len(s.windows) for s in corpus) == 20
    for s in corpus:
        n = len(s.values)
        assert s.values.dtype == np.float64 and len(s.timestamps) == n > 1000
        assert s.probation == min(math.floor(0.15 * n), 750)
        assert len(s.windows) == len(labels[s.name])
        for (a, b), (ta, tb) in zip(s.windows, labels[s.name]):
            assert 0 <= a <= b < n
            assert dt.datetime.fromisoformat(s.timestamps[a]) == dt.datetime.fromisoformat(ta)
            assert dt.datetime.fromisoformat(s.timestamps[b]) == dt.datetime.fromisoformat(tb)
    by_name = {s.name: s for s in corpus}
    assert by_name["realTraffic/speed_6005.csv"].windows == [(2261, 2499)]
    assert len(by_name["realTraffic/speed_6005.csv"]) == 2500
    # The perfect detector over the real corpus scores 100, the null one 0.
    perfect = [score_series(np.isin(np.arange(len(s)), [a for a, _ in s.windows]), s) for s in corpus]
    assert corpus_score(perfect) == pytest.approx(100.0, abs=1e-9)
    assert corpus_score([score_series(np.zeros(len(s), bool), s) for s in corpus]) == 0.0
