"""What a transformers user expects of every model (our own checks, parametrised over the backbone registry):
attention implementations and `attentions`, config-driven outputs, tuples, export/compile, dtype, embeddings,
problem_type, shape errors in forward and value errors behind the opt-in validation, old checkpoints."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from backbone_helpers import ALL_BACKBONES, TASKS, build_tiny, main_output, make_batch

import modeling
from modeling.export import ExportableModel, INPUT_NAMES, dynamic_shapes, example_inputs, export_program

CASES = [(backbone, task) for backbone in ALL_BACKBONES for task in TASKS]
ATTENTION_BACKBONES = [b for b in ALL_BACKBONES if b != "mlp"]  # the event MLP has no attention
LABELS = {"backbone": None, "regression": "regression", "classification": "classification"}


def _num_layers(config) -> int:
    return getattr(config, "bert_config", config).num_hidden_layers


def _inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize("backbone, task", CASES)
def test_return_dict_false_and_config_flags_are_honoured(backbone, task):
    """return_dict=False (argument or config) gives the output's tuple; config.output_hidden_states fills them."""
    model = build_tiny(backbone, task)
    batch = make_batch(labels=LABELS[task])
    out = model(**batch)
    as_tuple = model(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(out.to_tuple())
    torch.testing.assert_close(as_tuple[0], out.to_tuple()[0])
    model.config.return_dict = False
    assert isinstance(model(**batch), tuple)
    model.config.return_dict, model.config.output_hidden_states = True, True
    hidden = model(**batch).hidden_states
    assert hidden is not None and len(hidden) == _num_layers(model.config) + 1
    reference = model.base_model(**_inputs(batch)).last_hidden_state
    assert all(h.dim() == 3 and h.shape[0] == 5 and h.shape[-1] == reference.shape[-1] for h in hidden)


@pytest.mark.parametrize("backbone", ATTENTION_BACKBONES)
def test_eager_and_sdpa_agree_and_attentions_are_returned(backbone, tmp_path):
    """attn_implementation "sdpa" (default) and "eager" load and agree; output_attentions gives one (B, H, T, T)
    probability tensor per layer on the bare model and the head, rows summing to 1."""
    model = build_tiny(backbone, "classification")
    assert model.config._attn_implementation == "sdpa"
    model.save_pretrained(tmp_path)
    batch = _inputs(make_batch())
    cls = type(model)
    sdpa = cls.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    eager = cls.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    torch.testing.assert_close(sdpa(**batch).logits, eager(**batch).logits, atol=1e-5, rtol=1e-5)
    for attentions in (sdpa(**batch, output_attentions=True).attentions,
                       sdpa.base_model(**batch, output_attentions=True).attentions):
        assert len(attentions) == _num_layers(model.config)
        tokens = sdpa.base_model(**batch).last_hidden_state.shape[1]
        assert attentions[0].shape[0] == 5 and attentions[0].shape[-2:] == (tokens, tokens)
        torch.testing.assert_close(attentions[0].sum(-1), torch.ones(attentions[0].shape[:-1]))
    assert sdpa(**batch).attentions is None  # only when asked for


def test_event_mlp_has_no_attention_but_accepts_the_flag():
    model = build_tiny("mlp", "classification")
    assert model(**make_batch(), output_attentions=True).attentions is None


@pytest.mark.parametrize("backbone, task", CASES)
def test_torch_export_matches_eager_with_dynamic_batch_and_objects(backbone, task):
    """torch.export (no data-dependent guards left in forward) reproduces eager at other batch sizes and lengths."""
    model = build_tiny(backbone, task)
    program = export_program(model).module()
    wrapped = ExportableModel(model)
    for batch_size, num_objects in ((1, 1), (3, 11), (2, 33)):
        inputs = [example_inputs(model.config, batch_size, num_objects, seed=num_objects)[n] for n in INPUT_NAMES]
        for got, expected in zip(program(*inputs), wrapped(*inputs)):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_compile_fullgraph_matches_eager(backbone):
    """torch.compile(fullgraph=True) of the head (the body is the same code as the bare model) runs without breaks."""
    model = build_tiny(backbone, "regression")
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    batch = _inputs(make_batch())
    torch.testing.assert_close(compiled(**batch).logits, model(**batch).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_bfloat16_weights_take_a_float32_or_float64_batch(backbone, tmp_path):
    """from_pretrained(dtype=bfloat16) accepts the collator's float32 batch (and float64) by casting to the weights."""
    model = build_tiny(backbone, "regression")
    model.save_pretrained(tmp_path)
    half = type(model).from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    batch = _inputs(make_batch())
    out = half(**batch)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()
    double = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    torch.testing.assert_close(model(**double).logits, model(**batch).logits)


@pytest.mark.parametrize("backbone, task", [(b, t) for b, t in CASES if t != "backbone"])
def test_every_parameter_gets_a_gradient(backbone, task):
    """No dead weights (BERT's word embeddings are gone): DDP works without find_unused_parameters."""
    model = build_tiny(backbone, task).train()
    model(**make_batch(labels=LABELS[task])).loss.backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


def test_bert_projection_holds_no_word_embeddings():
    model = build_tiny("bert_projection", "regression")
    assert not any("word_embeddings" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("backbone, task", CASES)
def test_main_input_name_is_the_first_forward_argument_and_input_embeddings(backbone, task):
    """main_input_name leads forward; get/set_input_embeddings reach the per-object (MLP: per-event) embedding and
    enable_input_require_grads makes its output require grad with every weight frozen."""
    model = build_tiny(backbone, task)
    assert next(iter(inspect.signature(model.forward).parameters)) == model.main_input_name
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, torch.nn.Module) and embedding is model.base_model.get_input_embeddings()
    model.set_input_embeddings(embedding)
    assert model.get_input_embeddings() is embedding
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.enable_input_require_grads()
    assert main_output(model(**_inputs(make_batch()))).requires_grad


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_shape_errors_in_forward(backbone):
    """Missing attention_mask, empty batch and wrong label shape: ValueError naming the tensor."""
    model = build_tiny(backbone, "classification")
    batch = make_batch(labels="classification")
    if backbone != "mlp":
        with pytest.raises(ValueError, match="attention_mask"):
            model(**{k: v for k, v in batch.items() if k != "attention_mask"})
    empty = {k: v[:0] for k, v in batch.items()}
    with pytest.raises(ValueError, match="batch size 0"):
        model(**empty)
    with pytest.raises(ValueError, match="labels must have shape"):
        model(**dict(batch, labels=batch["labels"][:, None].expand(5, 2)))


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_label_values_are_checked_only_by_the_opt_in_validation(backbone):
    """Class labels >= num_labels and NaN regression targets: ValueError from validate_inputs / validate_inputs=True."""
    classifier = build_tiny(backbone, "classification")
    batch = make_batch(labels="classification")
    bad = dict(batch, labels=batch["labels"].clone())
    bad["labels"][0] = 5
    with pytest.raises(ValueError, match="0..4"):
        classifier.validate_inputs(**bad)
    with pytest.raises(ValueError, match="0..4"):
        build_tiny(backbone, "classification", validate_inputs=True)(**bad)
    regressor = build_tiny(backbone, "regression")
    batch = make_batch(labels="regression")
    bad = dict(batch, labels=batch["labels"].clone())
    bad["labels"][3] = float("nan")
    with pytest.raises(ValueError, match=r"events \[3\]"):
        regressor.validate_inputs(**bad)
    regressor.validate_inputs(**batch)  # a good batch passes


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_loss_follows_problem_type(backbone):
    """One head: regression (Huber with config.huber_delta on log1p), single-label (weighted CE), multi-label (BCE);
    num_labels=1 without problem_type is regression, as in transformers."""
    batch = make_batch(labels="regression")
    regressor = build_tiny(backbone, "regression", huber_delta=0.25)
    out = regressor(**batch)
    expected = torch.nn.functional.huber_loss(out.logits.squeeze(-1), torch.log1p(batch["labels"]), delta=0.25)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.predictions, torch.expm1(out.logits.squeeze(-1)).clamp_min(0))
    implicit = build_tiny(backbone, "backbone").config.to_dict()
    implicit_head = type(regressor)(type(regressor.config)(**{**implicit, "num_labels": 1, "problem_type": None}))
    assert implicit_head(**batch).predictions is not None
    multi = build_tiny(backbone, "classification", problem_type="multi_label_classification")
    targets = (torch.rand(5, 5, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    out = multi(**dict(batch, labels=targets))
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))
    assert out.predictions is None


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_checkpoints_of_the_old_regression_head_still_load(backbone, tmp_path):
    """A config.json naming `...ForEventRegression` (5 default labels, no problem_type) loads as the one head with a
    1-output regression layer, through model_class_for_architecture and build_model."""
    model = build_tiny(backbone, "regression", seed=3)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    legacy = modeling.BACKBONES[backbone].legacy_head_classes[0]
    config.update(architectures=[legacy], id2label={str(i): f"LABEL_{i}" for i in range(5)},
                  label2id={f"LABEL_{i}": i for i in range(5)})
    config.pop("problem_type")
    (tmp_path / "config.json").write_text(json.dumps(config))
    name, cls = modeling.model_class_for_architecture(legacy)
    assert name == backbone and cls is type(model)
    batch = _inputs(make_batch())
    for loaded in (cls.from_pretrained(tmp_path), modeling.build_model(backbone, "regression", pretrained=tmp_path)):
        loaded.eval()
        assert loaded.config.problem_type == "regression" and loaded.config.num_labels == 1
        torch.testing.assert_close(loaded(**batch).predictions, model(**batch).predictions)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_presets_have_tiny_and_the_registry_lists_them(backbone):
    spec = modeling.BACKBONES[backbone]
    config_cls, _, _ = modeling.load_backbone_classes(backbone)
    assert spec.presets[0] == "tiny"
    tiny, small = (config_cls.from_preset(size).to_dict() for size in ("tiny", "small"))
    assert tiny != small
    assert dynamic_shapes(config_cls.from_preset("tiny"))["object_pid"][1].max >= 33
