"""Evaluation of exported models: eval_results.json schema (strict JSON), baselines, plots, CLI, model card."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from recipes_test_helpers import REPO_ROOT
from recipes import metrics
from recipes.config import load_config
from recipes.finetune import train

CONFIGS = REPO_ROOT / "recipes" / "configs"


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """A regression and a classification MLP export trained for a few steps."""
    out = {}
    for task in ("regression", "classification"):
        run = tmp_path_factory.mktemp(task)
        train(load_config(CONFIGS / "tiny_mlp_cpu.yaml", [
            f"--data.path={tiny_dataset}", f"--train.output_dir={run}", "--train.tracker=none",
            "--train.progress=false", "--train.max_steps=3", "--train.eval_every=3", "--train.save_every=0",
            f"--model.task={task}", f"--name=mlp-{task}"]))
        out[task] = run / "model"
    return out


def test_regression_results_schema_and_baseline_values(trained, tiny_dataset, tmp_path):
    from recipes.evaluate import evaluate

    results = evaluate(str(trained["regression"]), str(tiny_dataset), "test", out_dir=str(tmp_path),
                       mlp=str(trained["regression"]))
    saved = json.loads((tmp_path / "eval_results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert saved["task"] == "regression" and saved["split"] == "test" and saved["primary_model"] == "mlp-regression"
    assert set(saved["models"]) == {"mlp-regression", "mlp-regression-1"}
    reg = saved["models"]["mlp-regression"]["regression"]
    assert reg["q3_bins"] == [[0.0, 0.6], [0.6, 1.2], [1.2, 1.8], [1.8, 2.4], [2.4, 3.0]]
    assert all(len(reg[k]) == 5 for k in ("iqr", "mpv", "iqr_over_mpv", "rms", "n"))
    assert {"overall", "low_q3", "overflow"} <= set(reg)
    # the calorimetric baseline, recomputed independently from the Parquet columns
    table = pq.read_table(tiny_dataset / "data" / "test")
    cols = {k: table.column(k).to_numpy() for k in ("e_avail", "q3", "passes_cc_inclusive", "calo_e_avail")}
    keep = cols["passes_cc_inclusive"] & (cols["e_avail"] >= 0.05)
    r = np.where(cols["calo_e_avail"] < 0.01, 0.0, cols["calo_e_avail"])[keep] / cols["e_avail"][keep]
    r = r[(cols["calo_e_avail"][keep] >= 0) & (r > 0) & (r <= 20)]
    calo = saved["baselines"]["calorimetric"]["regression"]["overall"]
    assert calo["iqr"] == pytest.approx(np.percentile(r, 75) - np.percentile(r, 25))
    assert calo["n"] == int(keep.sum() - (cols["calo_e_avail"][keep] < 0).sum())
    assert saved["plots"] == ["plots/resolution_vs_q3.png"] and (tmp_path / saved["plots"][0]).is_file()
    assert results["compute"]["eval_events"] == 128


def test_classification_results_against_cut_taggers(trained, tiny_dataset, tmp_path):
    from recipes.evaluate import evaluate

    saved = evaluate(str(trained["classification"]), str(tiny_dataset), "test", out_dir=str(tmp_path))
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    block = saved["models"]["mlp-classification"]["classification"]
    assert set(block) == {"cc1pi_charged", "ccnpi_charged", "cc1pi0"}
    table = pq.read_table(tiny_dataset / "data" / "test")
    y = metrics.is_signal(table.column("topology").to_numpy(), "ccnpi_charged")
    tpr, fpr = metrics.tag_rates(table.column("tag_ccnpi_charged").to_numpy(), y)
    entry = block["ccnpi_charged"]
    assert entry["fpr_cut"] == pytest.approx(fpr) and entry["tpr_cut"] == pytest.approx(tpr)
    assert entry["fpr_model"] <= entry["fpr_cut"] + 1e-12 and 0 <= entry["auroc"] <= 1
    assert entry["bins"]["variable"] == "w" and len(entry["bins"]["tpr_model"]) == 8
    assert set(block["cc1pi_charged"]["bins_by_variable"]) == {"w", "pion_energy", "pion_theta"}
    assert saved["baselines"]["cut"]["classification"]["ccnpi_charged"]["tpr_cut"] == pytest.approx(tpr)
    # W for all three tasks; pion energy/angle only for cc1pi_charged (the fixture's pi0 signal has no pion energy)
    assert all((tmp_path / p).is_file() for p in saved["plots"]) and len(saved["plots"]) == 5


def test_cli_evaluate_and_model_card(trained, tiny_dataset, tmp_path):
    from recipes.cli import main

    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(trained["regression"]), "--data", str(tiny_dataset), "--out", str(out),
                 "--no-plots", "--data-origin", "synthetic"]) == 0
    assert json.loads((out / "eval_results.json").read_text())["data_origin"] == "synthetic"
    render = pytest.importorskip("model_cards.render")
    (out / "config.json").write_text((trained["regression"] / "config.json").read_text())
    (out / "train_config.json").write_text((trained["regression"] / "train_config.json").read_text())
    card = render.write_model_card(out).read_text()
    assert "mlp-regression" in card or "iqr" in card.lower()


def test_unknown_model_folder_is_a_clear_error(tmp_path, tiny_dataset):
    from recipes.evaluate import evaluate

    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        evaluate(str(tmp_path), str(tiny_dataset), "test", out_dir=str(tmp_path / "o"))


def test_evaluate_push_to_hub_uploads_model_results_and_card(trained, tiny_dataset, tmp_path, hub):
    import shutil

    from huggingface_hub import HfApi, ModelCard

    from recipes.cli import main

    model_dir = shutil.copytree(trained["regression"], tmp_path / "model")
    repo_id = f"{hub.user}/mlp-regression-evaluated"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(tiny_dataset), "--data-origin", "synthetic",
                 "--push_to_hub", repo_id]) == 0
    files = set(HfApi().list_repo_files(repo_id))
    assert {"config.json", "model.safetensors", "eval_results.json", "README.md"} <= files
    assert any(name.endswith(".py") for name in files)  # the backbone's remote code travels with the weights
    card = ModelCard.load(repo_id)
    local = json.loads((model_dir / "eval_results.json").read_text())
    iqr = local["models"]["mlp-regression"]["regression"]["low_q3"]["iqr"]
    values = [m.metric_value for m in card.data.eval_results]
    assert any(abs(v - iqr) < 1e-6 for v in values), (iqr, values)
