"""Numerical parity with the installed reference omnilearned 0.2.0 PET2 through the converter, and parameter counts."""

from __future__ import annotations

import pytest
import torch
from pet_test_utils import make_batch, reference_pet, save_original_checkpoint

from modeling.omnilearned_pet import MinervaPetConfig, MinervaPetForEventClassification, MinervaPetModel
from modeling.omnilearned_pet.convert_omnilearned_to_hf import convert_omnilearned_checkpoint

TOLERANCE = 1e-5
SLOT_COUNTS = [33, 20, 11, 5, 1, 8]  # padded events, one with fewer real objects than K + 1, one single object


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def batch():
    return make_batch(SLOT_COUNTS, num_slots=33, seed=7)


def test_minerva_layout_with_event_token(tmp_path, batch):
    """Conditional PET2 (event token, 5 extra features): body and classifier head agree after conversion."""
    reference = reference_pet(mode="classifier", conditional=True, add_dim=5, num_classes=5)
    save_original_checkpoint(reference, tmp_path / "ckpt.pt")
    info = convert_omnilearned_checkpoint(tmp_path / "ckpt.pt", tmp_path / "hf", task="classification",
                                          pid_embedding="pretrained", config_overrides={"zeroed_event_features": []})
    assert info["newly_initialized_keys"] == []
    ours = MinervaPetForEventClassification.from_pretrained(tmp_path / "hf").eval()
    x, cond, pid = batch["object_features"], batch["event_features"], batch["object_pid"]
    with torch.no_grad():
        expected_body = reference.body(x[..., :4], cond, pid, x[..., 4:9], None)
        expected_logits = reference(x[..., :4], None, cond=cond, pid=pid, add_info=x[..., 4:9])["y_pred"]
        inputs = {k: batch[k] for k in ("object_features", "object_pid", "attention_mask", "event_features")}
        body = ours.pet(**inputs).last_hidden_state
        logits = ours(**inputs).logits
    assert body.shape == expected_body.shape == (6, 4 + 1 + 33, 128)
    assert (body - expected_body).abs().max().item() <= TOLERANCE
    assert (logits - expected_logits).abs().max().item() <= TOLERANCE
    assert expected_logits.abs().max().item() > 0.05  # a non-trivial comparison


def test_published_pretrain_layout(tmp_path, batch):
    """Pre-training-mode PET2 (time token, 210 classes, no event token, 4 extra features) in its own jet layout."""
    reference = reference_pet(mode="pretrain", conditional=False, add_dim=4, num_classes=210)
    save_original_checkpoint(reference, tmp_path / "ckpt.pt")
    overrides = {"use_event_token": False, "num_extra_features": 4, "num_labels": 210}
    info = convert_omnilearned_checkpoint(tmp_path / "ckpt.pt", tmp_path / "hf", task="classification",
                                          pid_embedding="pretrained", config_overrides=overrides)
    assert info["newly_initialized_keys"] == []
    ours = MinervaPetForEventClassification.from_pretrained(tmp_path / "hf").eval()
    x, pid = batch["object_features"], batch["object_pid"]
    with torch.no_grad():
        # classifier mode on pre-training weights = body at t = 0: the time token is exactly zero and masked
        expected_body = reference.body(x[..., :4], None, pid, x[..., 4:8], torch.zeros(x.shape[0]))
        expected_logits = reference.classifier(expected_body)
        inputs = {k: batch[k] for k in ("object_features", "object_pid", "attention_mask")}
        body = ours.pet(**inputs).last_hidden_state
        logits = ours(**inputs).logits
    assert torch.all(expected_body[:, 4] == 0)
    expected_body = torch.cat([expected_body[:, :4], expected_body[:, 5:]], dim=1)  # drop the zero time token
    assert (body - expected_body).abs().max().item() <= TOLERANCE
    assert (logits - expected_logits).abs().max().item() <= TOLERANCE


def test_parameter_counts_match_the_reference():
    """Small preset: our model has exactly the reference's parameters in each layout (backbones.md §1.2, §4.3)."""
    # jet layout, classifier mode (the pre-training body minus its 6 time-token tensors, plus the 210-way head)
    jet = MinervaPetConfig.from_preset("small", use_event_token=False, num_extra_features=4, num_labels=210)
    jet_reference = reference_pet(mode="classifier", conditional=False, add_dim=4, num_classes=210)
    assert _count(MinervaPetForEventClassification(jet)) == _count(jet_reference)
    assert _count(MinervaPetModel(jet)) == _count(jet_reference.body)
    pretrain = reference_pet(mode="pretrain", conditional=False, add_dim=4, num_classes=210)
    time_token = sum(p.numel() for n, p in pretrain.body.named_parameters() if n.startswith("time_embed"))
    assert _count(MinervaPetModel(jet)) == _count(pretrain.body) - time_token
    # the MINERvA layout: event token (16), 5 extra features, 9 PID rows, 5 classes
    minerva_reference = reference_pet(mode="classifier", conditional=True, add_dim=5, num_classes=5)
    assert _count(MinervaPetForEventClassification(MinervaPetConfig.from_preset("small"))) == _count(minerva_reference)
    # minerva-ml's "OLS" (no pair features, 8 PID rows): 2,760,754 parameters measured in backbones.md §4.3
    ols = MinervaPetConfig.from_preset("small", use_pair_bias=False, use_local_pair_features=False, pid_vocab_size=8)
    ols_reference = reference_pet(mode="classifier", conditional=True, add_dim=5, num_classes=5, use_int=False,
                                  local_int=False, pid_dim=8)
    assert _count(MinervaPetForEventClassification(ols)) == _count(ols_reference) == 2_760_754
