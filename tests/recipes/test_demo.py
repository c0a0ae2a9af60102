"""The demo end to end on a tiny size: synthetic ROOT -> Parquet -> PET full/LoRA + MLP -> evaluation -> plots/cards."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path):
    from recipes.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--events", "600", "--steps", "5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["tasks"]) == {"regression", "classification"}
    reg = summary["tasks"]["regression"]
    assert {"pet-full", "pet-lora", "mlp", "calorimetric"} <= set(reg)
    assert all({"iqr", "low_q3_iqr", "mpv"} <= set(reg[name]) for name in ("pet-full", "mlp", "calorimetric"))
    assert reg["pet-lora"]["init"] == "runs/classification/pet-full/model"  # LoRA on the other task's backbone
    lora_cfg = json.loads((out / "runs" / "regression" / "pet-lora" / "train_config.json").read_text())
    assert lora_cfg["model"]["init"] == str(out / "runs" / "classification" / "pet-full" / "model")
    assert {"cut", "pet-full"} <= set(summary["tasks"]["classification"])
    for task in ("regression", "classification"):
        for name in ("pet-full", "pet-lora"):
            model = out / "runs" / task / name / "model"
            results = json.loads((model / "eval_results.json").read_text())
            assert results["task"] == task and results["primary_model"] == name
            assert (model / "model.safetensors").is_file()
        assert (out / "runs" / task / "pet-lora" / "adapter" / "adapter_config.json").is_file()
        assert (out / "plots" / f"{task}_val_loss_vs_flops.png").is_file()
    assert (out / "plots" / "regression_resolution_vs_q3.png").is_file()
    assert (out / "data" / "manifest.json").is_file()
