"""The `evaluate` metric modules: hand-computed weighted statistics and uncertainties, loading from a folder and from
a Space repo on the loopback Hub in a clean interpreter, and the same numbers as recipes/metrics.py."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta

from minerva_common import results as contract
from recipes import metrics
from recipes.evaluate_metrics import METRICS_DIR, METRIC_NAMES
from recipes.evaluate_metrics.eavail_resolution import eavail_resolution as res
from recipes.evaluate_metrics.tpr_at_baseline_fpr import tpr_at_baseline_fpr as tpr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for isolated_python
from isolated_python import run_isolated  # noqa: E402

ALPHA_HALF = (1 - 0.6827) / 2


SAMPLES = """
import numpy as np


def _regression_sample(n=400, seed=1):
    rng = np.random.default_rng(seed)
    e_true = rng.uniform(0.02, 3.0, n)
    e_pred = e_true * rng.normal(1.0, 0.2, n)
    q3 = rng.uniform(0.0, 3.5, n)
    return e_pred, e_true, q3, rng.uniform(0.5, 1.5, n)


def _tagging_sample(n=600, seed=2):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    score = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    baseline = (score + rng.normal(0, 0.25, n)) > 0.6
    return score, y, baseline, rng.uniform(0, 4, n), rng.uniform(0.5, 1.5, n)


def _compute_both(loaded_resolution, loaded_tpr):
    e_pred, e_true, q3, w = _regression_sample()
    score, y, baseline, w_bins, wt = _tagging_sample()
    resolution = loaded_resolution.compute(predictions=e_pred, references=e_true, q3=q3, sample_weight=w,
                                           n_bootstrap=20, seed=3)
    tagging = loaded_tpr.compute(predictions=score, references=y.astype(int), baseline_predictions=baseline.astype(int),
                                 sample_weight=wt, bin_values={"w": w_bins})
    return resolution, tagging
"""
exec(SAMPLES)  # the same inputs here and in the clean interpreter of the Hub test


# --------------------------------------------------------------------------------------------- weighted statistics
def test_weighted_quantile_equal_weights_is_numpy_linear_and_weights_pull():
    rng = np.random.default_rng(0)
    x = rng.normal(size=37)
    for q in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0):
        assert res.weighted_quantile(x, q, np.full(37, 3.0)) == pytest.approx(np.quantile(x, q), abs=1e-12)
    # x = 1, 2, 3 with w = 1, 1, 2: cum 1, 2, 4; span 4 - (1 + 2)/2 = 2.5; h = 0, 0.4, 1 -> median 2 + 0.1/0.6
    assert res.weighted_quantile([3.0, 1.0, 2.0], 0.5, [2.0, 1.0, 1.0]) == pytest.approx(2 + 1 / 6)
    assert res.weighted_quantile([1.0, 2.0, 9.0], 0.5, [1.0, 1.0, 0.0]) == pytest.approx(1.5)  # zero weight ignored
    with pytest.raises(ValueError, match=r"sample_weight\[1\] = -1.0"):
        res.weighted_quantile([1.0, 2.0], 0.5, [1.0, -1.0])


def test_weighted_mpv_rms_and_iqr():
    r = np.array([0.995, 1.005, 1.011, 0.5])
    assert res.mpv(r) == pytest.approx(1.01)  # two events in [1.00, 1.02)
    assert res.mpv(r, [1.0, 1.0, 1.0, 5.0]) == pytest.approx(0.51)  # the weight-5 event wins: bin [0.50, 0.52)
    # (r - 1)^2 = 0.25 (w 3) and 1 (w 1): sqrt((0.75 + 1) / 4)
    assert res.rms([0.5, 2.0], [3.0, 1.0]) == pytest.approx(math.sqrt(1.75 / 4))
    x = np.array([0.5, 1.0, 1.5, 2.0])
    assert res.iqr(x, np.full(4, 0.3)) == pytest.approx(np.percentile(x, 75) - np.percentile(x, 25))


def test_bootstrap_rows_match_numpy_and_the_asymptotic_iqr_error():
    rng = np.random.default_rng(3)
    values = np.sort(rng.normal(1.0, 0.1, (6, 50)), axis=1)
    used = np.array([50, 49, 30, 2, 1, 0])  # trailing zero weights are left out (out-of-range events)
    weights = (np.arange(50)[None, :] < used[:, None]).astype(float)
    got = res.weighted_quantile_rows(values, weights, 0.75) - res.weighted_quantile_rows(values, weights, 0.25)
    want = [np.subtract(*np.percentile(v[:n], [75, 25])) if n else np.nan for v, n in zip(values, used)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # normal r with sigma 0.1: SE(IQR) = 1.573 sigma / sqrt(n) (asymptotic order statistics)
    r = rng.normal(1.0, 0.1, 2000)
    boot = res.bootstrap_resolution(r, n_bootstrap=300, seed=5)
    assert np.std(boot["iqr"], ddof=1) == pytest.approx(1.573 * 0.1 / math.sqrt(2000), rel=0.25)
    again = res.bootstrap_resolution(r, n_bootstrap=300, seed=5)
    np.testing.assert_array_equal(boot["iqr"], again["iqr"])  # seeded
    assert np.isfinite(boot["mpv"]).all() and np.all((boot["mpv"] > 0.8) & (boot["mpv"] < 1.2))


def test_clopper_pearson_hand_values():
    lo, hi = tpr.clopper_pearson([0, 10, 3], [10, 10, 0])
    assert lo[0] == 0.0 and hi[0] == pytest.approx(1 - ALPHA_HALF ** (1 / 10))  # Beta(1, 10): 1 - (1 - x)^10
    assert hi[1] == 1.0 and lo[1] == pytest.approx(ALPHA_HALF ** (1 / 10))  # Beta(10, 1): x^10
    assert math.isnan(lo[2]) and math.isnan(hi[2])


def test_weighted_rates_roc_and_auroc_follow_sklearn_sample_weight():
    from sklearn.metrics import roc_auc_score, roc_curve

    score, y, baseline, _, w = _tagging_sample()
    sig_tpr = w[baseline & y].sum() / w[y].sum()
    bkg_fpr = w[baseline & ~y].sum() / w[~y].sum()
    assert tpr.tag_rates(baseline, y, w) == pytest.approx((sig_tpr, bkg_fpr))
    fpr_w, tpr_w, _ = tpr.roc_curve(y, score, w)
    ref_fpr, ref_tpr, _ = roc_curve(y, score, sample_weight=w, drop_intermediate=False)
    np.testing.assert_allclose(fpr_w, ref_fpr)
    np.testing.assert_allclose(tpr_w, ref_tpr)
    assert tpr.auroc(y, score, w) == pytest.approx(roc_auc_score(y, score, sample_weight=w))
    out = tpr.tpr_at_baseline_fpr(score, y, baseline, weights=w)
    selected = score >= out["model"]["threshold"]
    assert out["model"]["tpr"] == pytest.approx(w[selected & y].sum() / w[y].sum())
    assert w[selected & ~y].sum() / w[~y].sum() <= bkg_fpr + 1e-12
    # Kish effective counts for the interval
    n_eff = w[y].sum() ** 2 / (w[y] ** 2).sum()
    k = out["model"]["tpr"] * n_eff
    assert out["model"]["tpr_interval"][0] == pytest.approx(beta.ppf(ALPHA_HALF, k, n_eff - k + 1))


def test_binned_resolution_bootstrap_errors_are_per_bin():
    e_pred, e_true, q3, w = _regression_sample()
    out = res.binned_resolution(e_pred, e_true, q3, weights=w, n_bootstrap=50)
    assert all(math.isfinite(b["iqr_err"]) and b["iqr_err"] > 0 for b in out["bins"][:5])
    assert out["overall"]["iqr_err"] < min(b["iqr_err"] for b in out["bins"][:5])  # more events, smaller error
    assert out["overall"]["sum_weights"] == pytest.approx(w[(e_true >= 0.05)].sum())


def test_module_defaults_are_the_contract_constants():
    assert res.Q3_EDGES == contract.Q3_EDGES and res.LOW_Q3_MAX == contract.LOW_Q3_MAX
    assert metrics.Q3_EDGES is contract.Q3_EDGES and metrics.SIGNAL_CLASSES is contract.SIGNAL_CLASSES
    assert tpr.W_EDGES == (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)


# ----------------------------------------------------------------------------------------------- evaluate.load
def _same(a, b):
    as_json = [json.loads(json.dumps(contract.json_safe(x))) for x in (a, b)]
    np.testing.assert_equal(*as_json)


def test_evaluate_load_from_folder_gives_the_recipes_numbers():
    import evaluate

    loaded = [evaluate.load(str(METRICS_DIR / name)) for name in METRIC_NAMES]
    resolution, tagging = _compute_both(*loaded)
    e_pred, e_true, q3, w = _regression_sample()
    _same(resolution, metrics.binned_resolution(e_pred, e_true, q3, weights=w, n_bootstrap=20, seed=3))
    score, y, baseline, w_bins, wt = _tagging_sample()
    _same(tagging, metrics.tpr_at_baseline_fpr(score, y, baseline, {"w": (w_bins, metrics.W_EDGES)}, wt))
    assert "2604.12364" in loaded[0].citation and "q3" in loaded[0].inputs_description
    assert tagging["model"]["tpr"] > tagging["baseline"]["tpr"]  # the sample's score carries more information


def test_metric_cards_describe_inputs_and_cite_the_paper():
    for name in METRIC_NAMES:
        card = (METRICS_DIR / name / "README.md").read_text()
        assert card.startswith("---\n") and "2604.12364" in card and "## Inputs" in card and "sample_weight" in card


def test_metric_modules_load_from_a_space_on_the_hub_without_the_project(hub, tmp_path):
    """Upload each module as a Space, then `evaluate.load("user/name")` in a clean interpreter (HF_ENDPOINT)."""
    from huggingface_hub import HfApi

    from recipes.evaluate_metrics import push_to_hub

    assert push_to_hub(hub.user) == [f"{hub.user}/{name}" for name in METRIC_NAMES]
    assert {"README.md", "eavail_resolution.py"} <= set(HfApi().list_repo_files(f"{hub.user}/eavail_resolution",
                                                                              repo_type="space"))
    script = f"""
        import json
        import evaluate
        exec({SAMPLES!r})
        loaded = [evaluate.load("{hub.user}/" + name) for name in {list(METRIC_NAMES)!r}]
        assert all("evaluate_modules" in type(m).__module__ for m in loaded), [type(m).__module__ for m in loaded]
        resolution, tagging = _compute_both(*loaded)
        def safe(v):
            if isinstance(v, dict): return {{k: safe(x) for k, x in v.items()}}
            if isinstance(v, (list, tuple)): return [safe(x) for x in v]
            if isinstance(v, float) and v != v: return None
            return v
        print(json.dumps(safe([resolution, tagging])))
    """
    out = run_isolated(script, tmp_path, env={"HF_UPDATE_DOWNLOAD_COUNTS": "false"})
    hub_resolution, hub_tagging = json.loads(out.stdout.strip().splitlines()[-1])
    local_resolution, local_tagging = _compute_both(*[_load_local(n) for n in METRIC_NAMES])
    _same(hub_resolution, local_resolution)
    _same(hub_tagging, local_tagging)
    assert any(method == "GET" and path.startswith("/spaces/") and path.endswith("/eavail_resolution.py")
               for method, path, _ in hub.requests)


def _load_local(name):
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_metric_card_snippet_runs_as_printed(name):
    import re
    import subprocess

    card = (METRICS_DIR / name / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", snippet], cwd=METRICS_DIR.parents[1], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()
