"""The paper's metrics on hand-made predictions; every expected value is computed by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recipes import metrics as m


def test_regression_selection_drops_low_truth_nan_and_failed_selection():
    e_true = np.array([0.04, 0.05, 1.0, np.nan, 2.0])
    passes = np.array([True, True, False, True, True])
    assert m.regression_selection(e_true, passes).tolist() == [False, True, False, False, True]
    assert m.regression_selection(e_true).tolist() == [False, True, True, False, True]


def test_response_ratio_zeroes_tiny_predictions_and_ignores_negative_sentinel():
    r = m.response_ratio([0.005, 0.5, -1.0, 3.0], [1.0, 1.0, 1.0, 2.0])
    assert r[0] == 0.0 and r[1] == 0.5 and math.isnan(r[2]) and r[3] == 1.5


def test_iqr_and_rms_use_r_in_0_to_20():
    # in range: 0.5, 1.0, 1.5, 2.0 (0, 25 and NaN are excluded)
    r = np.array([0.5, 1.0, 1.5, 2.0, 25.0, 0.0, np.nan])
    # P25 at position 0.75 -> 0.5 + 0.75*0.5 = 0.875; P75 at 2.25 -> 1.5 + 0.25*0.5 = 1.625
    assert m.iqr(r) == pytest.approx(0.75)
    # (r-1)^2 = 0.25, 0, 0.25, 1 -> mean 0.375
    assert m.rms(r) == pytest.approx(math.sqrt(0.375))
    assert math.isnan(m.iqr(np.array([0.0, 30.0])))


def test_mpv_is_centre_of_fullest_of_100_bins_in_0_to_2():
    # bins of width 0.02: 1.005 and 1.011 fall in [1.00, 1.02) (centre 1.01), 0.995 in [0.98, 1.00)
    assert m.mpv(np.array([0.995, 1.005, 1.011, 0.5, 3.0, 3.0, 3.0])) == pytest.approx(1.01)
    # 50 bins of width 0.04: 0.995 in [0.96, 1.00); 1.005 and 1.011 in [1.00, 1.04) -> centre 1.02
    assert m.mpv(np.array([0.995, 1.005, 1.011]), n_bins=50) == pytest.approx(1.02)
    # r = 2 belongs to (0, 2] (last bin centre 1.99); r = 0 does not count
    assert m.mpv(np.array([2.0, 2.0, 0.0, 0.0, 0.0])) == pytest.approx(1.99)


def test_binned_resolution_by_q3_with_left_open_bins():
    # four events in q3 bin (0, 0.6], two in (0.6, 1.2], one exactly on 1.2 (belongs to (0.6, 1.2]), one overflow
    e_true = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 0.01])
    e_pred = np.array([0.5, 1.0, 1.5, 2.0, 2.0, 3.0, 1.0, 1.0, 1.0])
    q3 = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 1.0, 1.2, 150.0, 0.3])  # last: E_true < 0.05 -> dropped
    out = m.binned_resolution(e_pred, e_true, q3)
    first, second = out["bins"][0], out["bins"][1]
    assert first["n"] == 4 and first["iqr"] == pytest.approx(0.75)
    # second bin r = 1.0, 1.5, 1.0 -> sorted 1, 1, 1.5: P25 = 1, P75 at position 1.5 -> 1.25
    assert second["n"] == 3 and second["iqr"] == pytest.approx(0.25) and second["mpv"] == pytest.approx(1.01)
    assert [b["n"] for b in out["bins"]] == [4, 3, 0, 0, 0, 0]  # q3 = 150 is beyond the overflow edge 100
    assert out["low_q3"]["n"] == 7 and out["overall"]["n"] == 8
    assert out["bins"][-1]["overflow"] and not out["bins"][0]["overflow"]
    assert math.isnan(out["bins"][2]["iqr"])


def test_signal_score_sums_softmax_over_signal_classes():
    probs = np.array([[0.1, 0.2, 0.3, 0.15, 0.25]])
    assert m.signal_score(probs, "cc1pi_charged")[0] == pytest.approx(0.1)
    assert m.signal_score(probs, "ccnpi_charged")[0] == pytest.approx(0.3)
    assert m.signal_score(probs, "cc1pi0")[0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown tagging task 'cc2pi'"):
        m.signal_score(probs, "cc2pi")
    np.testing.assert_allclose(m.softmax(np.log(probs)), probs)


def test_roc_threshold_at_cut_fpr_and_auroc():
    y = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.1])
    fpr, tpr, thr = m.roc_curve(y, score)
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    tag = np.array([1, 0, 1, 0, 0, 0], dtype=bool)  # cut: TPR 1/3, FPR 1/3
    assert m.tag_rates(tag, y) == pytest.approx((1 / 3, 1 / 3))
    # largest FPR <= 1/3 is 1/3; best TPR there is 1 at threshold 0.6
    assert m.threshold_at_fpr(y, score, 1 / 3) == pytest.approx((0.6, 1.0, 1 / 3))
    # below the first background: FPR 0, TPR 2/3 at threshold 0.8
    assert m.threshold_at_fpr(y, score, 0.2) == pytest.approx((0.8, 2 / 3, 0.0))
    # correctly ordered pairs: 0.9 and 0.8 beat all 3 backgrounds, 0.6 beats 0.55 and 0.1 -> 8/9
    assert m.auroc(y, score) == pytest.approx(8 / 9)
    assert m.auroc(np.array([1, 0], dtype=bool), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_roc_with_tied_scores_has_one_point_per_distinct_score():
    y = np.array([1, 0, 1, 0], dtype=bool)
    fpr, tpr, thr = m.roc_curve(y, np.array([0.7, 0.7, 0.2, 0.1]))
    np.testing.assert_allclose(fpr, [0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    assert thr[1:].tolist() == [0.7, 0.2, 0.1]


def test_auroc_matches_sklearn_on_random_scores():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    score = np.round(rng.random(500) + 0.3 * y, 2)  # rounding makes ties
    assert m.auroc(y, score) == pytest.approx(sklearn_metrics.roc_auc_score(y, score))
    fpr, tpr, _ = m.roc_curve(y, score)
    ref_fpr, ref_tpr, _ = sklearn_metrics.roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)


def test_binned_tpr_right_open_bins_last_closed():
    y = np.array([1, 1, 1, 1, 0], dtype=bool)
    selected = np.array([1, 0, 1, 1, 1], dtype=bool)
    w = np.array([0.2, 0.4, 0.5, 4.0, 0.1])  # 0.5 -> [0.5, 1.0); 4.0 -> last bin [3.5, 4.0]
    bins = m.binned_tpr(y, selected, w, m.W_EDGES)
    assert len(bins) == 8
    assert {k: bins[0][k] for k in ("lo", "hi", "tpr", "n_signal")} == {"lo": 0.0, "hi": 0.5, "tpr": 0.5, "n_signal": 2}
    # Clopper-Pearson 68.27 % for 1 of 2: beta.ppf(0.15865, 1, 2) and beta.ppf(0.84135, 2, 1)
    assert bins[0]["tpr_lo"] == pytest.approx(1 - math.sqrt(1 - 0.158655), abs=1e-5)
    assert bins[0]["tpr_hi"] == pytest.approx(math.sqrt(0.841345), abs=1e-5)
    assert bins[1]["tpr"] == 1.0 and bins[1]["n_signal"] == 1
    assert bins[7]["tpr"] == 1.0 and bins[7]["n_signal"] == 1
    assert math.isnan(bins[3]["tpr"]) and bins[3]["n_signal"] == 0


def test_equal_frequency_edges():
    assert m.equal_frequency_edges(np.arange(1.0, 11.0), n_bins=2) == pytest.approx([1.0, 5.5, 10.0])


def test_tagging_metrics_model_vs_cut_at_equal_fpr():
    topology = np.array([0, 0, 3, 0, 4, 2])  # cc1pi_charged signal = class 0
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.1])
    tag = np.array([1, 0, 1, 0, 0, 0], dtype=bool)
    w = np.array([0.2, 1.2, 0.3, 1.4, 0.5, 3.0])
    out = m.tagging_metrics(score, tag, topology, "cc1pi_charged", {"w": (w, [0.0, 1.0, 2.0])})
    assert out["cut"]["tpr"] == pytest.approx(1 / 3) and out["cut"]["fpr"] == pytest.approx(1 / 3)
    assert out["model"]["tpr"] == pytest.approx(1.0) and out["model"]["threshold"] == pytest.approx(0.6)
    # bin [0, 1): signal event 0 (tagged, score 0.9); bin [1, 2]: events 1 and 3 (not tagged; scores 0.8, 0.6)
    assert [b["tpr"] for b in out["cut"]["bins"]["w"]] == [1.0, 0.0]
    assert [b["tpr"] for b in out["model"]["bins"]["w"]] == [1.0, 1.0]
    assert out["n_signal"] == 3 and out["n_background"] == 3


def test_per_bin_threshold_variant():
    y = np.array([1, 0, 1, 0, 1, 1, 0, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.4, 0.1, 0.9, 0.3, 0.5, 0.2])
    tag = np.array([0, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    var = np.array([0.1, 0.2, 0.3, 0.4, 1.1, 1.2, 1.3, 1.4])
    bins = m.binned_tpr_per_bin_threshold(y, score, tag, var, [0.0, 1.0, 2.0])
    # bin 0: cut FPR 1/2 (bkg 0.8 tagged), cut TPR 1/2; ROC: largest FPR <= 0.5 -> threshold 0.4 with TPR 1
    assert bins[0]["fpr"] == 0.5 and bins[0]["cut_tpr"] == 0.5 and bins[0]["tpr"] == 1.0
    # bin 1: cut FPR 0, TPR 1/2; model at FPR 0: threshold 0.9, TPR 1/2
    assert bins[1]["fpr"] == 0.0 and bins[1]["cut_tpr"] == 0.5 and bins[1]["tpr"] == 0.5
