"""The OmniLearned checkpoint converter: loaded vs new tensors, EMA, freezing after reload, bad files, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pet_test_utils import reference_pet, save_original_checkpoint

from modeling.omnilearned_pet import MinervaPetForEventClassification, MinervaPetModel
from modeling.omnilearned_pet.convert_omnilearned_to_hf import convert_omnilearned_checkpoint

ROOT = Path(__file__).resolve().parents[3]

# A jet pre-training checkpoint converted for MINERvA: what must come out newly initialised.
NEW_IN_MINERVA_LAYOUT = {
    "pet.event_embedding.fc1.weight", "pet.event_embedding.fc1.bias", "pet.event_embedding.norm.alpha",
    "pet.event_embedding.norm.weight", "pet.event_embedding.fc2.weight", "pet.event_embedding.fc2.bias",
    "pet.extra_feature_embedding.fc1.weight", "pet.pid_embedding.weight", "head.out.weight", "head.out.bias",
}


@pytest.fixture(scope="module")
def pretrain_checkpoint(tmp_path_factory):
    """A small PET2 in pre-training mode (time token, 210-way classifier, generator) saved like omnilearned does."""
    model = reference_pet(mode="pretrain", conditional=False, add_dim=4, num_classes=210)
    path = tmp_path_factory.mktemp("ckpt") / "best_model_pretrain_s.pt"
    save_original_checkpoint(model, path)
    return path, model


def test_jet_checkpoint_into_minerva_layout_reports_new_tensors(pretrain_checkpoint, tmp_path, capsys):
    path, reference = pretrain_checkpoint
    info = convert_omnilearned_checkpoint(path, tmp_path / "out", size="small", task="classification")
    assert set(info["newly_initialized_keys"]) == NEW_IN_MINERVA_LAYOUT
    assert {k for k, _, _ in info["mismatched_keys"]} == {"pet.extra_feature_embedding.fc1.weight", "head.out.weight",
                                                          "head.out.bias"}
    assert any("time_token" in k for k in info["unused_checkpoint_keys"])
    printed = capsys.readouterr().out
    assert "NEW  pet.extra_feature_embedding.fc1.weight" in printed and "checkpoint (256, 4) vs model (256, 5)" in printed
    model = MinervaPetForEventClassification.from_pretrained(tmp_path / "out")
    assert set(model.config.new_parameter_names) == {k[4:] for k in NEW_IN_MINERVA_LAYOUT if k.startswith("pet.")}
    # loaded tensors are the checkpoint's: the add-MLP fc2 (loaded) equals, fc1 (reshaped) is new
    torch.testing.assert_close(model.pet.extra_feature_embedding.fc2.weight, reference.body.add_embed[0].fc2.weight)
    q, k, v = reference.body.in_blocks[3].attn.in_proj_weight.chunk(3)
    torch.testing.assert_close(model.pet.layers[3].attn.k_proj.weight, k)
    torch.testing.assert_close(model.head.layers[1].mlp_norm.alpha, reference.classifier.in_blocks[1].norm.alpha)
    # freeze_backbone after save/load: the new input layers stay trainable, every pre-trained tensor is frozen
    model.freeze_backbone()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")}
    assert trainable == NEW_IN_MINERVA_LAYOUT - {"head.out.weight", "head.out.bias"}
    # "rw" init of the new tensors differs from anything pre-trained
    assert not torch.equal(model.pet.extra_feature_embedding.fc1.weight[:, :4], reference.body.add_embed[0].fc1.weight)


def test_reused_pid_table_ema_and_backbone_task(pretrain_checkpoint, tmp_path):
    path, reference = pretrain_checkpoint
    info = convert_omnilearned_checkpoint(path, tmp_path / "ema", task="backbone", use_ema=True, pid_embedding="pretrained")
    assert "pid_embedding.weight" in info["loaded_keys"]
    assert any(k.startswith("head.") for k in info["unused_checkpoint_keys"])  # task=backbone drops the head
    model = MinervaPetModel.from_pretrained(tmp_path / "ema")
    torch.testing.assert_close(model.pid_embedding.weight, reference.body.pid_embed[0].weight + 0.01)  # ema_body
    saved = json.loads((tmp_path / "ema" / "config.json").read_text())
    assert saved["auto_map"]["AutoModel"] == "modeling_minerva_pet.MinervaPetModel"
    assert (tmp_path / "ema" / "model.safetensors").is_file() and not list((tmp_path / "ema").glob("*.bin"))


def test_local_pair_features_off_reinitialises_the_local_fc1(pretrain_checkpoint, tmp_path):
    path, _ = pretrain_checkpoint
    info = convert_omnilearned_checkpoint(path, tmp_path / "ols", task="regression",
                                          config_overrides={"use_local_pair_features": False})
    assert "pet.local_embedding.edge_mlp.fc1.weight" in info["newly_initialized_keys"]
    assert "pet.local_embedding.edge_mlp.fc1.bias" in info["loaded_keys"]


def test_bad_checkpoints_are_refused(tmp_path, pretrain_checkpoint):
    not_a_checkpoint = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, not_a_checkpoint)
    with pytest.raises(ValueError, match="not an OmniLearned training checkpoint"):
        convert_omnilearned_checkpoint(not_a_checkpoint, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        convert_omnilearned_checkpoint(tmp_path / "missing.pt", tmp_path / "out")
    with pytest.raises(ValueError, match="do not match size='medium'"):
        convert_omnilearned_checkpoint(pretrain_checkpoint[0], tmp_path / "out", size="medium")


def test_cli_convert_omnilearned(pretrain_checkpoint, tmp_path):
    path, _ = pretrain_checkpoint
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "recipes.cli", "convert-omnilearned", str(path), str(tmp_path / "cli"),
                             "--size", "small", "--task", "regression"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NEW  pet.event_embedding.fc1.weight" in result.stdout and "reload check passed" in result.stdout
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert len(saved["id2label"]) == 1
    assert saved["auto_map"]["AutoModelForSequenceClassification"] == "modeling_minerva_pet.MinervaPetForEventClassification"
    assert saved["problem_type"] == "regression" and saved["auto_map"]["AutoModel"] == "modeling_minerva_pet.MinervaPetModel"
    assert (tmp_path / "cli" / "modeling_minerva_pet.py").is_file()
