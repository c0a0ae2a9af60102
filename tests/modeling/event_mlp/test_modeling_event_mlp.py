"""Event MLP specifics: the CondOnlyMLP layout, event-feature-only inputs, softplus regression."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1]))
from backbone_helpers import build_tiny, make_batch  # noqa: E402

import modeling  # noqa: E402


def test_default_layout_is_the_reference_cond_only_mlp():
    """16 -> Linear(128)+LayerNorm+SiLU -> 3 pre-norm blocks (128->256->128) -> LayerNorm -> Linear(128) -> head."""
    model = modeling.build_model("mlp", "regression")
    trunk = model.event_mlp
    assert (trunk.input_proj.in_features, trunk.input_proj.out_features) == (16, 128)
    assert len(trunk.blocks) == 3
    assert all((b.fc1.in_features, b.fc1.out_features, b.fc2.out_features) == (128, 256, 128) for b in trunk.blocks)
    assert isinstance(trunk.final_norm, nn.LayerNorm) and trunk.output_proj.out_features == 128
    assert model.head.out_features == 1


def test_outputs_depend_only_on_event_features_without_column_2():
    """Objects are ignored entirely; event column 2 (hadronic recoil) is zeroed; other event columns matter."""
    model = build_tiny("mlp", "classification")
    batch = make_batch()
    other_objects = make_batch(seed=9, objects=3)
    other_objects["event_features"] = batch["event_features"].clone()
    other_objects["event_features"][:, 2] = 123.0
    torch.testing.assert_close(model(**other_objects).logits, model(**batch).logits)
    only_events = model(event_features=batch["event_features"]).logits
    torch.testing.assert_close(only_events, model(**batch).logits)
    moved = dict(batch, event_features=batch["event_features"] + torch.arange(16) * 0.1)
    assert not torch.allclose(model(**moved).logits, model(**batch).logits)


def test_regression_output_is_softplus_and_non_negative():
    """Reference MLP: softplus output in log(1+E) space; switchable for ablations."""
    batch = make_batch()
    with_softplus = build_tiny("mlp", "regression")
    without = build_tiny("mlp", "regression", regression_softplus=False)
    torch.testing.assert_close(with_softplus(**batch).logits, torch.nn.functional.softplus(without(**batch).logits))
    assert (with_softplus(**batch).logits >= 0).all()
