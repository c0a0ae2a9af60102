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


# ------------------------------------------------------------------------------------------- weights, uncertainties
@pytest.fixture(scope="module")
def weighted_dataset(tiny_dataset, tmp_path_factory):
    """The tiny dataset with an `event_weight` column (float32, as the converter writes it) on the test split."""
    import shutil

    import pyarrow as pa

    root = shutil.copytree(tiny_dataset, tmp_path_factory.mktemp("weighted") / "data_root")
    for part in sorted((root / "data" / "test").glob("*.parquet")):
        table = pq.read_table(part)
        w = np.random.default_rng(7).uniform(0.3, 2.0, table.num_rows).astype(np.float32)
        column, index = pa.array(w, pa.float32()), table.schema.get_field_index("event_weight")
        table = table.set_column(index, "event_weight", column) if index >= 0 else table.append_column("event_weight", column)
        pq.write_table(table, part)
    return root


def _nan(values):
    return [float("nan") if v is None else v for v in values]


def _columns(root, names):
    table = pq.read_table(root / "data" / "test")
    return {k: table.column(k).to_numpy(zero_copy_only=False) for k in names}


def test_weighted_regression_matches_the_metric_module(trained, weighted_dataset, tmp_path):
    import evaluate as hf_evaluate

    from recipes.evaluate import evaluate
    from recipes.evaluate_metrics import METRICS_DIR

    saved = evaluate(str(trained["regression"]), str(weighted_dataset), "test", out_dir=str(tmp_path / "w"),
                     n_bootstrap=30, make_plots=False)
    plain = evaluate(str(trained["regression"]), str(weighted_dataset), "test", out_dir=str(tmp_path / "u"),
                     use_weights=False, n_bootstrap=30, make_plots=False)
    assert saved["weights"]["used"] and saved["weights"]["column"] == "event_weight"
    assert not plain["weights"]["used"] and "turned off" in plain["weights"]["reason"]
    cols = _columns(weighted_dataset, ("e_avail", "q3", "passes_cc_inclusive", "calo_e_avail", "event_weight"))
    module = hf_evaluate.load(str(METRICS_DIR / "eavail_resolution"))
    expect = module.compute(predictions=cols["calo_e_avail"], references=cols["e_avail"], q3=cols["q3"],
                            sample_weight=cols["event_weight"], selection=cols["passes_cc_inclusive"], n_bootstrap=30)
    calo = saved["baselines"]["calorimetric"]["regression"]
    for key in ("iqr", "mpv", "rms", "iqr_err", "mpv_err", "sum_weights"):
        assert calo["overall"][key] == pytest.approx(expect["overall"][key]), key
        assert calo["low_q3"][key] == pytest.approx(expect["low_q3"][key]), key
        assert _nan(calo[key]) == pytest.approx([b[key] for b in expect["bins"][:-1]], nan_ok=True), key
    assert calo["overall"]["iqr"] != pytest.approx(plain["baselines"]["calorimetric"]["regression"]["overall"]["iqr"])
    assert saved["uncertainties"] == {"tpr": "clopper-pearson", "confidence_level": 0.6827, "iqr_mpv": "bootstrap",
                                      "n_bootstrap": 30, "seed": 0}
    assert saved["selection"]["passes_cc_inclusive"] is True
    assert saved["selection"]["n_selected"] == int((cols["passes_cc_inclusive"] & (cols["e_avail"] >= 0.05)).sum())


def test_classification_matches_the_metric_module_and_records_no_selection(trained, weighted_dataset, tmp_path):
    import evaluate as hf_evaluate
    import torch

    from dataset_builder.collator import MinervaCollator
    from recipes import metrics
    from recipes.data import iter_tables, load_split
    from recipes.evaluate import evaluate, load_model, predict
    from recipes.evaluate_metrics import METRICS_DIR

    saved = evaluate(str(trained["classification"]), str(weighted_dataset), "test", out_dir=str(tmp_path))
    assert saved["selection"]["passes_cc_inclusive"] is False  # classification uses every test event
    assert saved["selection"]["n_selected"] == saved["selection"]["n_events"] == 128
    net, _ = load_model(str(trained["classification"]))
    with torch.no_grad():
        pred = predict(net, iter_tables(load_split(str(weighted_dataset), "test"), 64), MinervaCollator(task=None))
    module = hf_evaluate.load(str(METRICS_DIR / "tpr_at_baseline_fpr"))
    block = saved["models"]["mlp-classification"]["classification"]["ccnpi_charged"]
    y = metrics.is_signal(pred["topology"], "ccnpi_charged")
    expect = module.compute(predictions=metrics.signal_score(pred["probabilities"], "ccnpi_charged"),
                            references=y.astype(int), baseline_predictions=pred["tag_ccnpi_charged"].astype(int),
                            sample_weight=pred["event_weight"], bin_values={"w": pred["w"]})
    assert block["tpr_model"] == pytest.approx(expect["model"]["tpr"])
    assert block["tpr_cut"] == pytest.approx(expect["baseline"]["tpr"])
    assert block["tpr_model_interval"] == pytest.approx(expect["model"]["tpr_interval"])
    assert _nan(block["bins"]["tpr_model"]) == pytest.approx([b["tpr"] for b in expect["bins"]["w"]["model"]],
                                                             nan_ok=True)
    assert _nan(block["bins"]["tpr_cut_hi"]) == pytest.approx([b["tpr_hi"] for b in expect["bins"]["w"]["baseline"]],
                                                              nan_ok=True)
    # empty W bins stay empty (null), never 0
    assert all((t is None) == (n == 0) for t, n in zip(block["bins"]["tpr_model"], block["bins"]["n_signal"]))
    pion = saved["models"]["mlp-classification"]["classification"]["cc1pi_charged"]["bins_by_variable"]
    energy = pion["pion_energy"]
    assert energy["overflow"]["n_signal"] >= 1 and energy["overflow"]["lo"] == energy["edges"][-1]


def test_weights_null_on_data_are_ignored_and_partial_nulls_are_an_error(trained, weighted_dataset, tmp_path):
    import shutil

    import pyarrow as pa

    from recipes.evaluate import evaluate

    root = shutil.copytree(weighted_dataset, tmp_path / "nulls")
    part = sorted((root / "data" / "test").glob("*.parquet"))[0]
    table = pq.read_table(part)
    index = table.schema.get_field_index("event_weight")
    pq.write_table(table.set_column(index, "event_weight", pa.nulls(table.num_rows, pa.float32())), part)
    saved = evaluate(str(trained["regression"]), str(root), "test", out_dir=str(tmp_path / "o"), make_plots=False,
                     n_bootstrap=0)
    assert saved["weights"]["used"] is False and "null for every event" in saved["weights"]["reason"]
    some = table.column("event_weight").to_pylist()
    some[3] = None
    pq.write_table(table.set_column(index, "event_weight", pa.array(some, pa.float32())), part)
    with pytest.raises(ValueError, match=r"column event_weight: 1 of 128 events have a null weight"):
        evaluate(str(trained["regression"]), str(root), "test", out_dir=str(tmp_path / "p"), make_plots=False)


# --------------------------------------------------------------------------------------------------- command line
def test_cli_keeps_the_comparison_reports_what_it_wrote_and_rerenders_the_card(trained, tiny_dataset, tmp_path,
                                                                              capsys):
    import shutil

    from recipes.cli import main

    folder = shutil.copytree(trained["regression"], tmp_path / "model")
    mlp = str(trained["regression"])
    args = ["evaluate", "--model", str(folder), "--data", str(tiny_dataset), "--no-plots", "--n-bootstrap", "0"]
    assert main(args + ["--mlp", mlp]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert first.startswith(f"wrote {folder / 'eval_results.json'}") and "replacing" not in first
    (folder / "README.md").write_text("stale card\n")
    assert main(args) == 0  # no --mlp: the comparison of the replaced file is evaluated again
    out = capsys.readouterr().out
    assert f"keeping the comparison with {mlp}" in out
    line = out.strip().splitlines()[-1]
    assert "replacing the previous one (models: mlp-regression, mlp-regression-1)" in line and "re-rendered" in line
    saved = json.loads((folder / "eval_results.json").read_text())
    assert set(saved["models"]) == {"mlp-regression", "mlp-regression-1"}
    assert saved["compute"]["device"] == "cpu"
    card = (folder / "README.md").read_text()
    assert "stale card" not in card and "mlp-regression" in card
    assert main(args + ["--mlp", "none"]) == 0
    assert set(json.loads((folder / "eval_results.json").read_text())["models"]) == {"mlp-regression"}


def test_every_evaluate_option_has_help_with_its_default_and_both_push_spellings():
    import argparse

    from recipes.evaluate import add_arguments

    parser = add_arguments(argparse.ArgumentParser())
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and ("default" in action.help or "required" in action.help), action.dest
    for spelling in ("--push-to-hub", "--push_to_hub"):
        assert parser.parse_args(["--model", "m", "--data", "d", spelling, "u/r"]).push_to_hub == "u/r"


def test_script_mode_finds_the_evaluate_library_not_this_recipe(trained, tiny_dataset, tmp_path):
    """`python recipes/evaluate.py` puts recipes/ first on sys.path, where evaluate.py would shadow the library."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    script = str(REPO_ROOT / "recipes" / "evaluate.py")
    done = subprocess.run([sys.executable, script, "--model", str(trained["regression"]),
                           "--data", str(tiny_dataset), "--out", str(tmp_path), "--no-plots", "--n-bootstrap", "0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith(f"wrote {tmp_path / 'eval_results.json'}")


def test_cli_evaluates_another_split_next_to_the_cards_results(trained, tiny_dataset, tmp_path, capsys):
    """A model folder holding test results: `--split shifted` writes <model>/eval/shifted/ and leaves them alone."""
    import shutil

    from recipes.cli import main

    folder = shutil.copytree(trained["regression"], tmp_path / "model")
    mlp = str(trained["regression"])
    args = ["evaluate", "--model", str(folder), "--data", str(tiny_dataset), "--no-plots", "--n-bootstrap", "0"]
    assert main(args + ["--mlp", mlp]) == 0
    (folder / "README.md").write_text("stale card\n")
    before = (folder / "eval_results.json").read_bytes()
    capsys.readouterr()
    assert main(args + ["--split", "shifted"]) == 0
    out = capsys.readouterr().out
    target = folder / "eval" / "shifted" / "eval_results.json"
    assert out.strip().splitlines()[-1].startswith(f"wrote {target}") and "replacing" not in out
    assert f"keeping the comparison with {mlp}" in out
    assert (folder / "eval_results.json").read_bytes() == before
    shifted = json.loads(target.read_text())
    assert shifted["split"] == "shifted" and shifted["compute"]["eval_events"] == 64
    assert set(shifted["models"]) == {"mlp-regression", "mlp-regression-1"}
    card = (folder / "README.md").read_text()
    assert "stale card" not in card and "Split `shifted`" in card
    iqr = shifted["models"]["mlp-regression"]["regression"]["overall"]["iqr"]
    assert f"| mlp-regression | {iqr:.3f} |" in card
    assert main(args + ["--split", "shifted", "--mlp", "none"]) == 0  # the same split again: replaced, reported
    assert "replacing the previous one" in capsys.readouterr().out.strip().splitlines()[-1]
