"""The demo end to end on a tiny size: synthetic ROOT -> Parquet -> masked-object pretraining -> PET rw/full/frozen/
LoRA + MLP -> evaluation on test and shifted -> plots / cards; the run folder against the README's block."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from recipes_test_helpers import REPO_ROOT

TASKS = ("regression", "classification")
MODES = ("rw", "full", "frozen", "lora")
PET_RUNS = tuple(f"pet-{mode}" for mode in MODES)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from recipes.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--out", str(out), "--events", "600", "--steps", "4", "--pretrain-steps", "3"]) == 0
    return out


@pytest.mark.slow
def test_summary_puts_pretrained_next_to_rw_on_test_and_shifted(demo):
    summary = json.loads((demo / "summary.json").read_text())
    backbone = demo / "pretrain" / "backbone"
    assert set(summary["tasks"]) == set(summary["shifted"]) == set(summary["pretrained_vs_rw"]) == set(TASKS)
    for split in ("tasks", "shifted"):
        reg, cls = summary[split]["regression"], summary[split]["classification"]
        assert {*PET_RUNS, "mlp", "calorimetric"} <= set(reg) and {*PET_RUNS, "mlp", "cut"} <= set(cls)
        assert all({"iqr", "low_q3_iqr", "mpv"} <= set(reg[name]) for name in (*PET_RUNS, "mlp", "calorimetric"))
        assert reg["pet-rw"]["init"] == "random (rw)" and reg["pet-lora"]["init"].startswith("pretrain/backbone")
    shifted = json.loads((demo / "runs/regression/pet-full/model/eval/shifted/eval_results.json").read_text())
    assert shifted["split"] == "shifted"
    assert summary["shifted"]["regression"]["pet-full"]["iqr"] == shifted["models"]["pet-full"]["regression"][
        "overall"]["iqr"]
    assert set(summary["pretrained_vs_rw"]["classification"]["shifted"]) >= {*PET_RUNS, "cut"}
    for task, name in itertools.product(TASKS, PET_RUNS):
        config = json.loads((demo / "runs" / task / name / "train_config.json").read_text())["model"]
        assert config["mode"] == name[4:] and config["init"] == (None if name == "pet-rw" else str(backbone))
        results = json.loads((demo / "runs" / task / name / "model" / "eval_results.json").read_text())
        assert results["task"] == task and results["primary_model"] == name and results["split"] == "test"
        assert "mlp" in results["models"]  # the comparison the cards show
    assert json.loads((demo / "pretrain" / "pretrain_record.json").read_text())["objectives"] == {"masked_objects": 1.0}


def readme_run_folder() -> list[str]:
    """The paths of the README's run-folder block (indentation = nesting), `{a,b}`, `<task>`, `<mode>` expanded."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^```\nruns/demo/\n(.*?)^```", readme, flags=re.S | re.M).group(1)
    paths, stack = [], []
    for line in block.splitlines():
        indent = (len(line) - len(line.lstrip())) // 2
        token = line.split()[0]
        stack[indent - 1:] = [token]
        paths.append("".join(stack))
    expanded = []
    for path in paths:
        for task, mode in itertools.product(TASKS, MODES):
            variant = path.replace("<task>", task).replace("<mode>", mode)
            braces = re.search(r"\{([^}]*)\}", variant)
            options = braces.group(1).split(",") if braces else [None]
            expanded += [variant if o is None else variant.replace(braces.group(0), o) for o in options]
    return sorted(set(expanded))


@pytest.mark.slow
def test_run_folder_matches_the_readme_block(demo):
    paths = readme_run_folder()
    assert "dataset/data/shifted/" in paths and "runs/classification/pet-frozen/model/eval/shifted/" in paths
    for path in paths:
        target = demo / path
        assert (target.is_dir() if path.endswith("/") else target.is_file()), f"README promises runs/demo/{path}"
    top = {p.split("/")[0] + ("/" if "/" in p else "") for p in paths}
    assert {p.name + ("/" if p.is_dir() else "") for p in demo.iterdir()} == top  # nothing unlisted either
    assert list((demo / "dataset" / "data" / "shifted").glob("*.parquet")) and not (demo / "dataset/data/data").exists()
    assert list((demo / "dataset" / "plots").glob("*.png"))
    card = (demo / "dataset" / "README.md").read_text()
    assert all(f"plots/{p.name}" in card for p in (demo / "dataset" / "plots").glob("*.png"))  # card WITH plots


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_lora_adapter_loads_with_peft_on_the_base_it_names(demo, task):
    import pyarrow.parquet as pq
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification

    from dataset_builder.collator import MinervaCollator

    run = demo / "runs" / task / "pet-lora"
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str((run / "base").resolve())
    base = AutoModelForSequenceClassification.from_pretrained(adapter_config["base_model_name_or_path"],
                                                              trust_remote_code=True)
    adapted = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(str(run / "model"), trust_remote_code=True).eval()
    table = pq.read_table(next((demo / "dataset" / "data" / "test").glob("*.parquet"))).slice(0, 64)
    batch = MinervaCollator(task=None).collate_arrow(table)
    with torch.no_grad():
        torch.testing.assert_close(adapted(**batch).logits, merged(**batch).logits, rtol=1e-4, atol=1e-5)
    summary = json.loads((run / "train_summary.json").read_text())["lora"]
    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), framework="pt") as handle:
        lora = sum(handle.get_slice(k).get_shape()[0] * handle.get_slice(k).get_shape()[1]
                   for k in handle.keys() if "lora_" in k)
    assert summary["r"] == adapter_config["r"] == 4 and summary["adapter_params"] == lora
    assert summary["base_params"] == sum(p.numel() for p in merged.parameters())
    assert summary["trainable_fraction_of_base"] == pytest.approx(
        (summary["adapter_params"] + summary["head_params_trained_in_full"]) / summary["base_params"], abs=1e-4)
    card = (run / "adapter" / "README.md").read_text()
    assert "[More Information Needed]" not in card and "library_name: peft" in card  # our card, not PEFT's template


@pytest.mark.slow
def test_evaluate_an_adapter_on_another_split_keeps_the_card_results(demo, capsys):
    from recipes.cli import main

    adapter = demo / "runs" / "classification" / "pet-lora" / "adapter"
    before = (adapter / "eval_results.json").read_bytes()
    assert main(["evaluate", "--model", str(adapter), "--data", str(demo / "dataset"), "--split", "shifted",
                 "--no-plots", "--n-bootstrap", "0"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"wrote {adapter / 'eval' / 'shifted' / 'eval_results.json'}") and "replacing" not in line
    assert (adapter / "eval_results.json").read_bytes() == before  # the card's test-split results stay
    shifted = json.loads((adapter / "eval" / "shifted" / "eval_results.json").read_text())
    assert shifted["split"] == "shifted" and set(shifted["models"]) == {"pet-lora", "mlp"}  # comparison kept
    card = (adapter / "README.md").read_text()
    assert "re-rendered" in line and "Split `shifted`" in card
