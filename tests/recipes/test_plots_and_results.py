"""The results contract (minerva_common.results) and what the evaluation plots draw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minerva_common import results as contract
from recipes import plots


def _regression_results():
    reg = {"q3_bins": [[0.0, 0.6], [0.6, 1.2]], "iqr": [0.3, None], "mpv": [1.0, None], "iqr_over_mpv": [0.3, None],
           "rms": [0.4, None], "n": [10, 0], "iqr_err": [0.05, None], "mpv_err": [0.02, None],
           "overall": {"iqr": 0.3, "mpv": 1.0, "iqr_over_mpv": 0.3, "rms": 0.4, "n": 10},
           "low_q3": {"iqr": 0.3, "mpv": 1.0, "iqr_over_mpv": 0.3, "rms": 0.4, "n": 10}}
    return {"schema_version": 1, "task": "regression", "split": "test", "dataset": "d", "primary_model": "pet-full",
            "models": {"pet-full": {"regression": reg}}, "baselines": {"calorimetric": {"regression": reg}},
            "future_key": {"kept": True}}


def test_dump_load_round_trip_keeps_unknown_keys(tmp_path):
    path = contract.dump(_regression_results(), tmp_path / "eval_results.json")
    loaded = contract.load_results(tmp_path)
    assert isinstance(loaded, contract.EvalResults) and loaded.primary == "pet-full"
    assert loaded.models["pet-full"]["regression"]["iqr"] == [0.3, None]
    assert loaded.extra == {"future_key": {"kept": True}}
    round_trip = loaded.to_dict()
    assert all(round_trip[k] == v for k, v in json.loads(path.read_text()).items())
    assert round_trip["plots"] == [] and round_trip["selection"] == {}  # the typed defaults of absent keys


@pytest.mark.parametrize("change, field", [
    (lambda r: r["models"]["pet-full"]["regression"].update(iqr=[0.3]), "models.pet-full.regression.iqr"),
    (lambda r: r.update(schema_version=2), "schema_version"),
    (lambda r: r.update(task="ranking"), "task"),
    (lambda r: r["models"]["pet-full"]["regression"]["low_q3"].update(iqr="wide"),
     "models.pet-full.regression.low_q3.iqr"),
    (lambda r: r.update(primary_model="nope"), "primary_model"),
])
def test_load_results_names_the_file_and_the_bad_field(tmp_path, change, field):
    bad = _regression_results()
    change(bad)
    path = tmp_path / "eval_results.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(contract.ResultsError, match=rf"^{path}: field {field}: "):
        contract.load_results(path)
    with pytest.raises(contract.ResultsError, match="field"):  # nothing invalid is written either
        contract.dump(bad, tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


def test_classification_bins_are_checked_against_their_edges(tmp_path):
    block = {"fpr_cut": 0.1, "tpr_cut": 0.5, "tpr_model": 0.6, "auroc": 0.8,
             "bins": {"variable": "w", "edges": [0.0, 0.5, 1.0], "tpr_model": [0.5], "tpr_cut": [0.4, 0.3]}}
    data = {"task": "classification", "split": "test", "dataset": "d",
            "models": {"m": {"classification": {"cc1pi0": block}}}}
    with pytest.raises(contract.ResultsError,
                       match=r"field models\.m\.classification\.cc1pi0\.bins_by_variable\.w\.tpr_model"):
        contract.validate(data, "x.json")
    (tmp_path / "eval_results.json").write_text("{not json")
    with pytest.raises(contract.ResultsError, match="not valid JSON"):
        contract.load_results(tmp_path)


def test_style_table_gives_each_model_one_style():
    assert plots.style_for("pet-lora") == plots.style_for("runs/pet-lora") != plots.style_for("pet-full")
    assert plots.style_for("calorimetric")["ls"] == "--" and plots.style_for("mlp")["marker"] == "^"
    assert plots.style_for("some-new-model") == plots.style_for("some-new-model")


def test_resolution_plot_draws_iqr_with_errors_and_leaves_empty_bins_empty(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    results = _regression_results()
    entries = {name: e["regression"] for group in ("models", "baselines") for name, e in results[group].items()}
    plots.plot_resolution_vs_q3(entries, tmp_path / "r.png")
    top = figures[0].axes[0]
    first = top.containers[0]  # the errorbar container of pet-full
    y = first.lines[0].get_ydata()
    assert y[0] == pytest.approx(0.3) and np.isnan(y[1])  # IQR, the empty bin not drawn
    assert first.has_yerr
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert any("low $q_3$" in label for label in labels) and "no events in bin" in labels
    assert not [t for t in top.texts if "low" in t.get_text()]  # the low-q3 label is in the legend, off the curves
    assert top.get_ylabel().startswith("IQR")


def test_contract_signal_table_is_the_schema_one():
    from dataset_builder import schema

    assert {k: tuple(v) for k, v in schema.SIGNAL_CLASSES.items()} == contract.SIGNAL_CLASSES


def _capture(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    return figures


def test_tpr_plot_error_bars_and_the_low_w_bin_explained(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    bins = {"variable": "w", "edges": [0.0, 0.5, 1.0, 1.5], "tpr_model": [0.5, 0.8, None], "tpr_cut": [0.4, 0.6, None],
            "tpr_model_lo": [0.3, 0.7, None], "tpr_model_hi": [0.7, 0.9, None], "tpr_cut_lo": [0.2, 0.5, None],
            "tpr_cut_hi": [0.6, 0.7, None], "n_signal": [4, 20, 0]}
    block = {"cc1pi0": {"fpr_cut": 0.1, "bins": bins, "bins_by_variable": {"w": bins}}}
    plots.plot_tpr_bins({"pet-full": block}, "cc1pi0", "w", tmp_path / "t.png")
    ax = figures[0].axes[0]
    model = ax.containers[0]
    assert model.has_yerr and np.isnan(model.lines[0].get_ydata()[2])  # the empty bin is not drawn as 0
    assert any("W < 0.5 GeV" in t.get_text() for t in ax.texts)
    assert "no events in bin" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_loss_plot_names_the_task_and_the_loss(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "val/loss": 0.5}\n{"step": 2, "val/loss": 0.4}\n')
    (run / "train_config.json").write_text('{"model": {"task": "regression"}}')
    plots.plot_training_curves({"pet-full": run / "metrics.jsonl"}, tmp_path / "l.png")
    ax = figures[0].axes[0]
    assert "Huber" in ax.get_ylabel() and ax.get_title().startswith("regression")
    assert ax.lines[0].get_color() == plots.style_for("pet-full")["color"]
