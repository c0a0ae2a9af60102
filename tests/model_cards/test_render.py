"""Model card rendering from eval_results.json (the results contract) + train_config/train_summary (offline)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from huggingface_hub import ModelCard

from card_run_helpers import make_run_dir, tiny_model
from minerva_common.results import LOW_Q3_MAX, ResultsError
from model_cards.render import REPO_PLACEHOLDER, write_model_card


def _card_metrics(card: ModelCard) -> dict[tuple[str, str], float]:
    return {(r.metric_type, r.metric_config): r.metric_value for r in card.data.eval_results}


def _row(text: str, first_cell: str) -> list[str]:
    """The cells of the markdown table row starting with `first_cell`."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_regression_card_carries_every_iqr_with_its_bootstrap_error(regression_run):
    results = json.loads((regression_run / "eval_results.json").read_text())
    path = write_model_card(regression_run, repo_id="tester/tiny-mlp-e-avail")
    card = ModelCard.load(path)
    reg = results["models"]["tiny-mlp"]["regression"]
    expected = {("iqr", f"q3_{lo:g}_{hi:g}"): iqr for (lo, hi), iqr in zip(reg["q3_bins"], reg["iqr"])
                if iqr is not None}
    expected[("iqr", "low_q3")] = reg["low_q3"]["iqr"]
    assert _card_metrics(card) == pytest.approx(expected)
    assert card.data.model_name == "tiny-mlp-e-avail" and card.text.lstrip().startswith("# tiny-mlp-e-avail\n")
    assert card.data.datasets == ["tester/minerva-synthetic"] and card.data.library_name == "transformers"
    text = path.read_text()
    calo = results["baselines"]["calorimetric"]["regression"]
    for i, (lo, hi) in enumerate(reg["q3_bins"]):
        cells = _row(text, f"({lo:g}, {hi:g}]" + (" · low q3" if hi <= LOW_Q3_MAX else ""))
        model_cell = f"{reg['iqr'][i]:.3f} ± {reg['iqr_err'][i]:.3f}"
        calo_cell = f"{calo['iqr'][i]:.3f} ± {calo['iqr_err'][i]:.3f}"
        better_model = reg["iqr"][i] < calo["iqr"][i]
        assert cells[2:] == ([f"**{model_cell}**", calo_cell] if better_model else [model_cell, f"**{calo_cell}**"])
    low = _row(text, f"low q3 (0, {LOW_Q3_MAX:g}]")
    assert low[1] == str(reg["low_q3"]["n"]) and f"{reg['low_q3']['iqr']:.3f} ± " in low[2]
    assert "(3, 100]" not in text  # the overflow bin is not shown
    assert "![summary](plots/summary.png)" in text
    assert "Trained and evaluated on synthetic" in text and "2604.12364" in text
    assert '"weight_decay": 0.01' in text and "100 bootstrap" not in text and "20 bootstrap resamples" in text
    assert "Event weights: not used (no event_weight column in the data)" in text


def test_compute_table_and_size_come_from_the_saved_files(regression_run):
    summary = json.loads((regression_run / "train_summary.json").read_text())
    text = write_model_card(regression_run).read_text()
    assert _row(text, "training FLOPs (estimate)")[1] == f"{summary['compute/flops']:.3g}"
    assert _row(text, "training wall time")[1] == "36.0 s"
    assert _row(text, "parameters (total)")[1] == f"{summary['n_params']:,}"
    assert _row(text, "parameters (trainable)")[1] == f"{summary['n_trainable']:,} (100 %)"
    assert _row(text, "evaluation time")[1] == "1.2 s for 400 events on cpu"
    assert "custom (hidden_size 16, num_hidden_layers 1, intermediate_size 24; the `small` preset with overrides)" \
        in text and "preset `small`" not in text
    assert "Initial weights | random initialisation (rw), seed 0 |" in text


def test_tiny_preset_is_named_when_the_config_matches_it(tmp_path):
    torch.manual_seed(0)
    from modeling import build_model

    run = make_run_dir(tmp_path / "tiny", "regression", model=build_model("mlp", "regression", size="tiny"),
                       size="tiny", overrides={})
    assert "| Size | preset `tiny`, " in write_model_card(run).read_text()


def test_no_local_path_and_no_bare_model_name_in_the_card(tmp_path):
    """A demo-like run folder (…/pet-full/model) evaluated on a local synthetic dataset: the card names the model, the
    repo id placeholder, and describes the data by its generator seed instead of its path."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"source_files": [
        {"name": "a.root", "generator": {"program": "minerva-fm generate", "seed": 7, "shifted": False}}]}))
    run = make_run_dir(tmp_path / "runs" / "pet-full" / "model", "regression")
    results = json.loads((run / "eval_results.json").read_text())
    (run / "eval_results.json").write_text(json.dumps({**results, "dataset": str(data)}))
    card = ModelCard.load(write_model_card(run))
    text = str(card)
    assert str(tmp_path) not in text and "runs/" not in text
    assert card.data.model_name == "tiny-mlp-regression" and "# tiny-mlp-regression\n" in text
    assert f'"{REPO_PLACEHOLDER}"' in text and 'from_pretrained("model"' not in text
    assert "generated with `minerva-fm generate` (seed 7) and converted" in text
    assert card.data.datasets is None and {r.dataset_type for r in card.data.eval_results} == {"synthetic-minerva-like"}


def test_classification_card_bolds_only_the_better_tpr_and_shows_intervals(classification_run):
    results = json.loads((classification_run / "eval_results.json").read_text())
    card = ModelCard.load(write_model_card(classification_run, repo_id="tester/tiny-mlp-topology"))
    cls = results["models"]["tiny-mlp"]["classification"]
    assert _card_metrics(card) == pytest.approx(
        {**{("tpr_at_cut_fpr", s): m["tpr_model"] for s, m in cls.items()},
         **{("roc_auc", s): m["auroc"] for s, m in cls.items()}})
    text = str(card)
    labels = {"cc1pi_charged": "CC1π±", "ccnpi_charged": "CCNπ± (N≥1)", "cc1pi0": "CC1π⁰"}
    for signal, m in cls.items():
        cells = _row(text, labels[signal])
        cut = f"{m['tpr_cut']:.3f} [{m['tpr_cut_interval'][0]:.3f}, {m['tpr_cut_interval'][1]:.3f}]"
        model = f"{m['tpr_model']:.3f} [{m['tpr_model_interval'][0]:.3f}, {m['tpr_model_interval'][1]:.3f}]"
        assert cells[1] == f"{m['fpr_cut']:.4f}"
        if m["tpr_model"] > m["tpr_cut"]:
            assert cells[2:4] == [cut, f"**{model}**"]
        elif m["tpr_cut"] > m["tpr_model"]:
            assert cells[2:4] == [f"**{cut}**", model]
    assert "tiny-mlp (this model), CC1π⁰: TPR per bin of w (GeV)" in text and "Clopper–Pearson at 68.3 %" in text
    w = cls["cc1pi0"]["bins_by_variable"]["w"]
    section = text[text.index("CC1π⁰: TPR per bin of w (GeV)"):]
    for i, (lo, hi) in enumerate(zip(w["edges"][:-1], w["edges"][1:])):
        model = f"{w['tpr_model'][i]:.3f} [{w['tpr_model_lo'][i]:.3f}, {w['tpr_model_hi'][i]:.3f}]"
        cut = f"{w['tpr_cut'][i]:.3f} [{w['tpr_cut_lo'][i]:.3f}, {w['tpr_cut_hi'][i]:.3f}]"
        model, cut = (f"**{model}**" if w["tpr_model"][i] > w["tpr_cut"][i] else model,
                      f"**{cut}**" if w["tpr_cut"][i] > w["tpr_model"][i] else cut)
        assert _row(section, f"[{lo:g}, {hi:g})")[1:] == [model, cut, str(w["n_signal"][i])]


def test_pion_energy_table_has_units_and_the_unplotted_overflow(classification_run):
    results = json.loads((classification_run / "eval_results.json").read_text())
    pion = results["models"]["tiny-mlp"]["classification"]["cc1pi_charged"]["bins_by_variable"]["pion_energy"]
    text = write_model_card(classification_run).read_text()
    section = text[text.index("CC1π±: TPR per bin of pion_energy (GeV)"):]
    overflow = _row(section, f"> {pion['overflow']['lo']:g} (not plotted)")
    assert pion["overflow"]["n_signal"] > 0 and overflow[3] == str(pion["overflow"]["n_signal"])
    assert "TPR per bin of pion_theta (rad)" in text


def test_lora_card_states_the_trainable_fraction_and_the_base_by_its_sha256(tmp_path):
    from peft import LoraConfig, get_peft_model

    from modeling import get_head_modules, get_lora_target_modules

    base_dir = make_run_dir(tmp_path / "base" / "model", "regression", seed=3)
    base = tiny_model("regression", seed=3)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=get_lora_target_modules(base),
                                                 modules_to_save=get_head_modules(base)))
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    run = make_run_dir(tmp_path / "lora" / "adapter", "regression", mode="lora", model=peft_model)
    text = write_model_card(run, repo_id="tester/tiny-lora").read_text()
    total = sum(p.numel() for p in peft_model.parameters())
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    share = 100 * trainable / total
    assert f"LoRA r=2 trains {share:.0f} % of the parameters ({trainable:,} of {total:,}" in text
    import hashlib

    digest = hashlib.sha256((base_dir / "model.safetensors").read_bytes()).hexdigest()
    assert f"`model.safetensors` sha256 `{digest}`" in text and "mlp regression model trained with mode `rw`" in text
    assert str(tmp_path) not in text
    assert ModelCard.load(run / "README.md").data.base_model is None  # a local base is not a Hub id


def test_hub_init_is_named_with_its_revision(tmp_path):
    run = make_run_dir(tmp_path / "run", "regression", mode="full")
    config = json.loads((run / "train_config.json").read_text())
    config["model"].update(init="tester/pet-pretrained", revision="0123abc")
    (run / "train_config.json").write_text(json.dumps(config))
    card = ModelCard.load(write_model_card(run))
    assert card.data.base_model == "tester/pet-pretrained"
    assert "the Hub model [`tester/pet-pretrained`](https://huggingface.co/tester/pet-pretrained), revision " \
           "`0123abc`" in str(card)


def test_onnx_and_logs_sections_only_when_present(regression_run):
    text = write_model_card(regression_run).read_text()
    assert "### ONNX" not in text and "TensorBoard" not in text
    (regression_run / "model.onnx").write_bytes(b"onnx")
    (regression_run / "onnx_export.json").write_text(json.dumps(
        {"file": "model.onnx", "inputs": ["object_features", "object_pid", "attention_mask", "event_features"],
         "outputs": ["logits", "predictions"], "opset": 18, "max_objects": 1024}))
    text = write_model_card(regression_run, logs="logs").read_text()
    assert "### ONNX" in text and "(opset 18)" in text and "outputs: `logits`, `predictions`" in text
    assert "TensorBoard logs are in [`logs/`](logs/)" in text
    assert "onnx" in ModelCard.load(regression_run / "README.md").data.tags


def test_low_q3_region_comes_from_the_eval_json(regression_run):
    results = json.loads((regression_run / "eval_results.json").read_text())
    for entry in (results["models"]["tiny-mlp"], results["baselines"]["calorimetric"]):
        entry["regression"]["low_q3_range"] = [0.0, 0.6]
    (regression_run / "eval_results.json").write_text(json.dumps(results))
    text = write_model_card(regression_run).read_text()
    assert "| low q3 (0, 0.6] |" in text and "| (0, 0.6] · low q3 |" in text and "| (0.6, 1.2] |" in text


@pytest.mark.parametrize("edit, message", [
    (None, r"eval_results\.json: not found"),
    ("{not json", r"eval_results\.json: not valid JSON"),
    ({"task": "ranking"}, r"eval_results\.json: field task: 'ranking'"),
    ({"models": {}}, r"eval_results\.json: field models: expected a non-empty object"),
    ({"models": {"tiny-mlp": {"regression": {"q3_bins": [[0, 1]], "iqr": [1, 2]}}}},
     r"eval_results\.json: field models\.tiny-mlp\.regression\.iqr: expected a list of 1 numbers"),
    ({"models": {"tiny-mlp": {"classification": {}}}},
     r"field models\.tiny-mlp: expected an object with a 'regression' block"),
    ({"primary_model": "other"}, r"field primary_model: 'other' is not one of the models"),
])
def test_malformed_eval_results_are_one_line_errors_naming_file_and_field(regression_run, edit, message, capsys):
    from recipes.cli import main

    path = regression_run / "eval_results.json"
    if edit is None:
        path.unlink()
    elif isinstance(edit, str):
        path.write_text(edit)
    else:
        path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(ResultsError, match=message):
        write_model_card(regression_run)
    assert main(["model-card", str(regression_run)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err) and str(path) in err
    assert not (regression_run / "README.md").exists()


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


def test_the_backbone_paper_is_cited_from_the_registry(tmp_path):
    from modeling import BACKBONES, build_model

    torch.manual_seed(0)
    run = make_run_dir(tmp_path / "pet", "classification", model=build_model("omnilearned", "classification",
                                                                             size="tiny"),
                       backbone="omnilearned", size="tiny", overrides={})
    text = write_model_card(run).read_text()
    assert BACKBONES["omnilearned"].paper == "omnilearned" and "@article{Bhimji:2025isp" in text
    assert "| Size | preset `tiny`, " in text and "`MinervaPetForEventClassification`" in text


def test_a_minimal_v1_results_file_renders_without_the_optional_blocks(tmp_path):
    """Only the contract's required fields (no errors, selection, weights, uncertainties, train files): no crash,
    values without ±, null bins as "–" and left out of the model-index."""
    summary = {"iqr": 0.3, "mpv": 0.95, "iqr_over_mpv": 0.32, "rms": 0.4, "n": 17}
    reg = {"q3_bins": [[0, 0.6], [0.6, 1.2], [1.2, 1.8]], "iqr": [0.25, None, 0.5], "mpv": [1, 0.9, 0.8],
           "iqr_over_mpv": [0.25, None, 0.62], "rms": [0.3, 0.4, 0.5], "n": [10, 0, 7],
           "overall": summary, "low_q3": summary}
    (tmp_path / "eval_results.json").write_text(json.dumps(
        {"task": "regression", "split": "test", "dataset": "tester/d", "models": {"m": {"regression": reg}}}))
    card = ModelCard.load(write_model_card(tmp_path))
    assert _card_metrics(card) == {("iqr", "q3_0_0.6"): 0.25, ("iqr", "q3_1.2_1.8"): 0.5, ("iqr", "low_q3"): 0.3}
    text = str(card)
    assert _row(text, "(0.6, 1.2] · low q3")[2] == "–" and _row(text, "(1.2, 1.8]")[2] == "0.500"
    assert "No `train_config.json` was saved" in text and "Not recorded for this run." in text
    assert "Event weights" not in text and "| Initial weights | not recorded (no training config saved" in text
