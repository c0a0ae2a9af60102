"""Model card rendering from eval_results.json + train_config.json (offline)."""

from __future__ import annotations

import json
import math

import pytest
from huggingface_hub import ModelCard

from model_cards.render import EvalResultsError, LOW_Q3_MAX_GEV, write_model_card


def _card_metrics(card: ModelCard) -> dict[tuple[str, str], float]:
    return {(r.metric_type, r.metric_config): r.metric_value for r in card.data.eval_results}


def test_regression_card_carries_every_iqr_from_the_eval_json(regression_run):
    results = json.loads((regression_run / "eval_results.json").read_text())
    path = write_model_card(regression_run, repo_id="tester/tiny-mlp-e-avail")
    card = ModelCard.load(path)
    reg = results["models"]["tiny-mlp"]["regression"]
    expected = {("iqr", f"q3_{b['lo']:g}_{b['hi']:g}"): b["iqr"] for b in reg["bins"]
                if not b["overflow"] and math.isfinite(b["iqr"])}
    expected[("iqr", "low_q3")] = reg["low_q3"]["iqr"]
    assert _card_metrics(card) == pytest.approx(expected)
    assert card.data.model_name == "tiny-mlp-e-avail"
    assert card.data.datasets == ["tester/minerva-synthetic"] and card.data.library_name == "transformers"
    text = path.read_text()
    first = reg["bins"][0]
    assert f"| **({first['lo']:g}, {first['hi']:g}]** | **{first['iqr']:.3f}** |" in text  # low q3 in bold
    calo_first = results["baselines"]["calorimetric"]["regression"]["bins"][0]
    assert "calorimetric (baseline)" in text and f"{calo_first['iqr']:.3f}" in text
    assert "(3, 100]" not in text  # overflow bin not shown
    assert "![summary](plots/summary.png)" in text
    assert "Trained and evaluated on synthetic" in text and "2604.12364" in text
    assert '"weight_decay": 0.01' in text and "| num_processes | 1 |" in text
    assert f"low q3, (0, {LOW_Q3_MAX_GEV:g}]" in text


def test_classification_card_has_tpr_at_cut_fpr_and_auroc_per_signal(classification_run):
    results = json.loads((classification_run / "eval_results.json").read_text())
    card = ModelCard.load(write_model_card(classification_run, repo_id="tester/tiny-mlp-topology"))
    cls = results["models"]["tiny-mlp"]["classification"]
    expected = {}
    for signal, m in cls.items():
        expected[("tpr_at_cut_fpr", signal)] = m["model"]["tpr"]
        expected[("roc_auc", signal)] = m["model"]["auroc"]
    assert _card_metrics(card) == pytest.approx(expected)
    text = str(card)
    m = cls["cc1pi0"]
    assert f"| CC1π⁰ | {m['cut']['fpr']:.4f} | {m['cut']['tpr']:.3f} | **{m['model']['tpr']:.3f}** |" in text
    assert "TPR per bin of w" in text


def test_contract_column_layout_renders_and_skips_null_bins(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    results = {"task": "regression", "split": "test", "dataset": "tester/d",
               "models": {"m": {"regression": {"q3_bins": [[0, 0.6], [0.6, 1.2], [1.2, 1.8]],
                                               "iqr": [0.25, None, 0.5], "mpv": [1, 0.9, 0.8],
                                               "rms": [0.3, 0.4, 0.5], "n": [10, 0, 7]}}}}
    (run / "eval_results.json").write_text(json.dumps(results))
    card = ModelCard.load(write_model_card(run))
    assert _card_metrics(card) == {("iqr", "q3_0_0.6"): 0.25, ("iqr", "q3_1.2_1.8"): 0.5}
    assert "| (1.2, 1.8] | 0.500 | 0.800 | 0.500 | 7 |" in str(card)
    assert "No `train_config.json` was saved" in str(card)


def test_low_q3_region_comes_from_the_eval_json(tmp_path):
    """`low_q3_range` in the eval results sets which q3 bins are bold and the low-q3 label (default 1.2 GeV)."""
    run = tmp_path / "run"
    run.mkdir()
    reg = {"q3_bins": [[0, 0.6], [0.6, 1.2], [1.2, 1.8]], "iqr": [0.25, 0.3, 0.5], "mpv": [1, 0.9, 0.8],
           "rms": [0.3, 0.4, 0.5], "n": [10, 8, 7], "low_q3": {"iqr": 0.27, "mpv": 1.0, "rms": 0.35, "n": 18}}
    for bounds, low_bins in (([0.0, 0.6], ["(0, 0.6]"]), (None, ["(0, 0.6]", "(0.6, 1.2]"])):
        results = {"task": "regression", "split": "test", "dataset": "tester/d",
                   "models": {"m": {"regression": {**reg, **({"low_q3_range": bounds} if bounds else {})}}}}
        (run / "eval_results.json").write_text(json.dumps(results))
        path = write_model_card(run)
        text = path.read_text()
        q3_max = bounds[1] if bounds else LOW_Q3_MAX_GEV
        assert f"low q3, (0, {q3_max:g}]" in text
        assert ("iqr", "low_q3") in _card_metrics(ModelCard.load(path))
        bold = [label for label in ("(0, 0.6]", "(0.6, 1.2]", "(1.2, 1.8]") if f"| **{label}** |" in text]
        assert bold == low_bins


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("{not json", "not valid JSON"),
    ({"task": "ranking", "models": {"m": {}}}, "field 'task'"),
    ({"task": "regression", "models": {}}, "field 'models'"),
    ({"task": "regression", "models": {"m": {"regression": {"q3_bins": [[0, 1]], "iqr": [1, 2]}}}}, "2 values"),
    ({"task": "classification", "models": {"m": {"regression": {"q3_bins": [], "iqr": []}}}}, "has no 'classification'"),
])
def test_bad_eval_results_name_the_problem(tmp_path, content, message):
    if content is not None:
        (tmp_path / "eval_results.json").write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(EvalResultsError, match=message):
        write_model_card(tmp_path)
    assert not (tmp_path / "README.md").exists()


def test_rewrite_is_atomic_and_leaves_no_temp_files(regression_run):
    (regression_run / "README.md").write_text("old card")
    write_model_card(regression_run)
    assert (regression_run / "README.md").read_text().startswith("---\n")
    assert not [p for p in regression_run.iterdir() if p.name.endswith(".tmp")]


def test_cli_model_card(regression_run, capsys):
    from recipes.cli import main

    assert main(["model-card", str(regression_run), "--repo-id", "tester/x"]) == 0
    assert capsys.readouterr().out.strip().endswith("README.md")
    assert ModelCard.load(regression_run / "README.md").data.model_name == "x"


def test_recipes_evaluate_layout_with_cut_baseline_and_several_binnings(tmp_path):
    """The schema documented in recipes/evaluate.py: flat signals, bins_by_variable, a cut baseline, recipes config."""
    w = {"variable": "w", "edges": [0.0, 0.5, 1.0], "tpr_model": [0.61, None], "tpr_cut": [0.42, 0.33], "n_signal": [5, 0]}
    pion = {"variable": "pion_energy", "edges": [0.1, 0.3, 0.9], "tpr_model": [0.7, 0.8], "tpr_cut": [0.5, 0.55]}
    signal = {"fpr_cut": 0.0625, "tpr_cut": 0.375, "tpr_model": 0.5625, "fpr_model": 0.06, "threshold": 0.4,
              "auroc": 0.8125, "n_signal": 16, "n_background": 48, "bins": w,
              "bins_by_variable": {"w": w, "pion_energy": pion}}
    results = {"schema_version": 1, "task": "classification", "split": "test", "dataset": "tester/d",
               "primary_model": "pet", "models": {"pet": {"backbone": "omnilearned", "classification": {"cc1pi0": signal}}},
               "baselines": {"cut": {"classification": {"cc1pi0": {"fpr_cut": 0.0625, "tpr_cut": 0.375, "bins": w}}}}}
    (tmp_path / "eval_results.json").write_text(json.dumps(results))
    (tmp_path / "train_config.json").write_text(json.dumps({"model": {
        "backbone": "omnilearned", "size": "small", "mode": "lora", "init": "tester/pet-small", "lora_r": 8}}))
    card = ModelCard.load(write_model_card(tmp_path))
    assert _card_metrics(card) == {("tpr_at_cut_fpr", "cc1pi0"): 0.5625, ("roc_auc", "cc1pi0"): 0.8125}
    assert card.data.base_model == "tester/pet-small"
    text = str(card)
    assert f"| CC1π⁰ | 0.0625 | 0.375 | **{0.5625:.3f}** | {0.8125:.3f} |" in text
    assert "TPR per bin of w" in text and "TPR per bin of pion_energy" in text
    assert "| [0, 0.5) | 0.610 | 0.420 |" in text and "| [0.5, 1) | – | 0.330 |" in text
    assert "cut (baseline)" in text and "preset `small`" in text and "`lora_r` = `8`" in text
    assert "@article{Bhimji:2025isp" in text  # the OmniLearned paper is cited for this backbone
