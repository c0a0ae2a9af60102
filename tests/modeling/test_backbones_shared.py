"""Behaviour every backbone shares: outputs, save/load (incl. remote code in a clean process), init, freezing,
LoRA, activation checkpointing, padding/permutation invariance and bad-input errors."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest
import torch
from backbone_helpers import (ALL_BACKBONES, OWN_BACKBONES, PERMUTATION_INVARIANT, TASKS, build_tiny, main_output,
                      make_batch, run_isolated)
from safetensors.torch import load_file, save_file

import modeling

AUTO_CLASS = modeling.AUTO_CLASS


def _inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_task_outputs_follow_the_layout_contract(backbone):
    """Shapes, losses and `predictions` as docs/tensor-layout.md states, for the three tasks."""
    bare = build_tiny(backbone, "backbone")
    out = bare(**make_batch())
    assert out.pooler_output.shape[0] == 5 and out.last_hidden_state.dim() == 3

    batch = make_batch(labels="regression")
    regression = build_tiny(backbone, "regression")
    out = regression(**batch)
    assert out.logits.shape == (5, 1) and out.predictions.shape == (5,)
    torch.testing.assert_close(out.predictions, torch.expm1(out.logits.squeeze(-1)).clamp_min(0))
    expected = torch.nn.functional.huber_loss(out.logits.squeeze(-1), torch.log1p(batch["labels"]), delta=1.0)
    torch.testing.assert_close(out.loss, expected)

    batch = make_batch(labels="classification")
    weights = [1.0, 2.0, 0.5, 3.0, 1.5]
    classification = build_tiny(backbone, "classification", class_weights=weights)
    out = classification(**batch)
    assert out.logits.shape == (5, 5)
    expected = torch.nn.functional.cross_entropy(out.logits, batch["labels"], weight=torch.tensor(weights))
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_save_pretrained_writes_safetensors_code_and_auto_map(backbone, tmp_path):
    """save_pretrained: safetensors only, the remote-code files, an auto_map; reload gives identical outputs."""
    model = build_tiny(backbone, "classification")
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))], files
    config = json.loads((tmp_path / "config.json").read_text())
    spec = modeling.BACKBONES[backbone]
    config_module, modeling_module = (m.rsplit(".", 1)[1] for m in (spec.config_module, spec.modeling_module))
    assert config["auto_map"] == {"AutoConfig": f"{config_module}.{spec.config_class}",
                                  "AutoModel": f"{modeling_module}.{spec.model_class}",
                                  "AutoModelForSequenceClassification": f"{modeling_module}.{spec.head_class}"}
    assert {f"{config_module}.py", f"{modeling_module}.py"} <= set(files)

    again = type(model).from_pretrained(tmp_path).eval()
    batch = _inputs(make_batch())
    torch.testing.assert_close(again(**batch).logits, model(**batch).logits, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_remote_code_loads_in_a_clean_process(backbone, tmp_path):
    """trust_remote_code loads of all three tasks in a fresh process without the project: identical outputs."""
    batch = _inputs(make_batch(seed=3))
    save_file({k: v.contiguous() for k, v in batch.items()}, tmp_path / "inputs.safetensors")
    expected, jobs = {}, []
    for task in TASKS:
        model = build_tiny(backbone, task, seed=1)
        model.save_pretrained(tmp_path / task)
        expected[task] = main_output(model(**batch))
        jobs.append((task, AUTO_CLASS[task]))
    run_isolated(f"""
        import torch, transformers
        from safetensors.torch import load_file, save_file
        inputs = load_file("inputs.safetensors")
        outputs = {{}}
        for task, auto_name in {jobs!r}:
            model = getattr(transformers, auto_name).from_pretrained(task, trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            with torch.no_grad():
                out = model(**inputs)
            outputs[task] = out.logits if getattr(out, "logits", None) is not None else out.pooler_output
            outputs[task] = outputs[task].contiguous()
        save_file(outputs, "outputs.safetensors")
    """, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    got = load_file(tmp_path / "outputs.safetensors")
    for task in TASKS:
        torch.testing.assert_close(got[task], expected[task].detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_random_init_from_a_saved_config(backbone, tmp_path):
    """A "-rw" model from a checkpoint's config has the checkpoint's layout but fresh, finite weights."""
    trained = build_tiny(backbone, "regression", seed=0)
    trained.save_pretrained(tmp_path)
    config = type(trained.config).from_pretrained(tmp_path)
    torch.manual_seed(123)
    fresh = type(trained)(config)
    trained_state, fresh_state = trained.state_dict(), fresh.state_dict()
    assert {k: v.shape for k, v in trained_state.items()} == {k: v.shape for k, v in fresh_state.items()}
    assert all(torch.isfinite(v).all() for v in fresh_state.values())
    differing = [k for k, v in fresh_state.items() if v.is_floating_point() and v.numel() > 1 and v.std() > 0
                 and not torch.equal(v, trained_state[k])]
    assert differing, "random init reproduced the saved weights"


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_freeze_backbone_leaves_only_the_head_trainable(backbone):
    """freeze_backbone(): an optimiser step changes the head and nothing else."""
    model = build_tiny(backbone, "classification").train()
    model.freeze_backbone()
    heads = modeling.get_head_modules(model)
    assert heads
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.split(".")[0] in heads for n in trainable), trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**make_batch(labels="classification")).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable, changed - trainable


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_lora_trains_only_adapters_and_head(backbone):
    """peft LoRA on LORA_TARGET_MODULES with the head in modules_to_save: a step changes only those."""
    from peft import LoraConfig, get_peft_model

    model = build_tiny(backbone, "regression").train()
    targets = modeling.get_lora_target_modules(model)
    heads = modeling.get_head_modules(model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, modules_to_save=heads))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable), trainable
    wrapped = {n.split(".lora_")[0] for n in trainable if "lora_" in n}
    if not isinstance(targets, str):  # a suffix list: each suffix must hit a module (a regex only has to hit one)
        assert {t for t in targets if any(w.endswith(t) for w in wrapped)} == set(targets), "a target matched nothing"

    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # step 1 moves lora_B off zero; step 2 then also moves lora_A
        optimizer.zero_grad()
        peft_model(**make_batch(labels="regression")).loss.backward()
        optimizer.step()
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable, changed - trainable
    assert any("lora_A" in n for n in changed) and any("modules_to_save" in n for n in changed)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_activation_checkpointing_gives_the_same_loss_and_gradients(backbone):
    """Activation checkpointing changes memory, not numbers (train mode, no dropout in the tiny configs)."""
    batch = make_batch(labels="regression")
    results = []
    for checkpointing in (False, True):
        model = build_tiny(backbone, "regression").train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], msg=name)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_padded_slots_do_not_change_outputs(backbone):
    """Extra padded slots, even holding garbage values, leave every task output unchanged."""
    batch = _inputs(make_batch())
    padded = {k: v.clone() for k, v in batch.items()}
    extra = 4
    generator = torch.Generator().manual_seed(7)
    padded["object_features"] = torch.cat([batch["object_features"], torch.randn(5, extra, 9, generator=generator)], 1)
    padded["object_pid"] = torch.cat([batch["object_pid"], torch.randint(0, 9, (5, extra), generator=generator)], 1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(5, extra, dtype=torch.bool)], 1)
    # garbage also inside the existing padding
    inner = ~padded["attention_mask"]
    inner[:, -extra:] = False
    padded["object_features"][inner] = 99.0
    for task in TASKS:
        model = build_tiny(backbone, task)
        torch.testing.assert_close(main_output(model(**padded)), main_output(model(**batch)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", sorted(PERMUTATION_INVARIANT))
def test_object_order_does_not_matter(backbone):
    """No positional encoding: permuting the objects (with their PID and mask) leaves the outputs unchanged."""
    batch = _inputs(make_batch(lengths=[7, 7, 5, 3, 1]))
    permutation = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    permuted = {k: (v[:, permutation] if v.dim() > 1 and k != "event_features" else v) for k, v in batch.items()}
    for task in TASKS:
        model = build_tiny(backbone, task)
        torch.testing.assert_close(main_output(model(**permuted)), main_output(model(**batch)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_all_padding_events_give_finite_outputs_independent_of_the_batch(backbone):
    """Documented: an event with no objects is predicted from its event token alone (finite, batch-independent)."""
    batch = _inputs(make_batch(lengths=[7, 0, 3, 0, 2]))
    model = build_tiny(backbone, "regression")
    together = model(**batch).logits
    assert torch.isfinite(together).all()
    alone = model(**{k: v[1:2] for k, v in batch.items()}).logits
    torch.testing.assert_close(alone, together[1:2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_bad_inputs_raise_clear_errors(backbone):
    """Wrong shapes raise ValueError naming the tensor in forward; NaN/Inf in real entries only through the opt-in
    value checks (`validate_inputs(**batch)` or `config.validate_inputs=True`); NaN in padding is ignored."""
    model = build_tiny(backbone, "regression")
    checked = build_tiny(backbone, "regression", validate_inputs=True)
    batch = _inputs(make_batch(lengths=[7, 3, 3, 2, 1]))

    bad = dict(batch, event_features=batch["event_features"][:, :15])
    with pytest.raises(ValueError, match="event_features"):
        model(**bad)
    bad = dict(batch, event_features=batch["event_features"].clone())
    bad["event_features"][2, 5] = float("inf")
    assert model(**bad).logits.shape == (5, 1)  # forward does no value check (no device sync)
    with pytest.raises(ValueError, match=r"event_features.*(NaN|Inf)"):
        model.validate_inputs(**bad)
    with pytest.raises(ValueError, match=r"event_features.*(NaN|Inf)"):
        checked(**bad)
    if backbone == "mlp":
        return  # the MLP ignores object inputs by design
    bad = dict(batch, object_features=batch["object_features"][..., :4])
    with pytest.raises(ValueError, match="object_features"):
        model(**bad)
    with pytest.raises(ValueError, match="attention_mask"):
        model(**dict(batch, attention_mask=None))
    bad = dict(batch, object_features=batch["object_features"].clone())
    bad["object_features"][1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="object_features"):
        model.validate_inputs(**bad)
    with pytest.raises(ValueError, match="object_features"):
        checked(**bad)
    padded_nan = dict(batch, object_features=batch["object_features"].clone())
    padded_nan["object_features"][1, 5, :] = float("nan")  # event 1 has 3 objects: slot 5 is padding
    if backbone in OWN_BACKBONES:  # documented for ours: padded slots are zeroed before use, so NaN there is ignored
        torch.testing.assert_close(model(**padded_nan).logits, model(**batch).logits)
    else:  # other backbones may instead reject non-finite values anywhere; silently wrong outputs are not allowed
        with pytest.raises(ValueError, match="object_features"):
            model.validate_inputs(**padded_nan)


COPIED_FROM = re.compile(r"^[ \t]*# Copied from (\S+\.py):([\w.]+)(?: with (\w+)->(\w+))?$", flags=re.M)


def _node_source(source: str, node: ast.AST) -> str:
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return "\n".join(source.splitlines()[start - 1: node.end_lineno])


def _definition_source(path: Path, dotted_name: str) -> str:
    """Source of the top-level def/class or `Class.method` named `dotted_name` in `path`, decorators included."""
    source = path.read_text()
    scope, node = ast.parse(source).body, None
    for part in dotted_name.split("."):
        node = next((n for n in scope if getattr(n, "name", None) == part), None)
        assert node is not None, f"{dotted_name} not in {path}"
        scope = node.body
    return _node_source(source, node)


def _marked_copies():
    """(file, marker line, copied source, source file, source name, rename) for every `# Copied from` marker."""
    root = Path(modeling.__file__).parent.parent
    for path in sorted((root / "modeling").rglob("*.py")):
        source = path.read_text()
        starts = {min([n.lineno] + [d.lineno for d in n.decorator_list]): n for n in ast.walk(ast.parse(source))
                  if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        for match in COPIED_FROM.finditer(source):
            line = source[: match.start()].count("\n") + 1
            assert line + 1 in starts, f"{path}:{line}: a Copied-from marker must stand right above a def or class"
            source_file, name, old, new = match.groups()
            yield path, line, _node_source(source, starts[line + 1]), root / source_file, name, (old, new)


def test_copied_definitions_match_their_source():
    """Every `# Copied from modeling/<x>.py:<name>[ with A->B]` def, class or method equals its source (renamed)."""
    checked = 0
    for path, line, copied, source_file, name, (old, new) in _marked_copies():
        original = _definition_source(source_file, name)
        if old:
            original = original.replace(old, new)
        assert copied == original, f"{path}:{line} differs from {source_file.name}:{name}"
        checked += 1
    assert checked >= 30


def test_registry_resolves_every_backbone_and_rejects_unknown_names():
    """load_backbone_classes returns the BackboneSpec classes with the documented class attributes."""
    for backbone, spec in modeling.BACKBONES.items():
        config_cls, *model_classes = modeling.load_backbone_classes(backbone)
        assert [c.__name__ for c in [config_cls, *model_classes]] == [spec.config_class, spec.model_class,
                                                                     spec.head_class]
        assert tuple(importlib.import_module(spec.config_module).PRESETS) == spec.presets
        assert callable(config_cls().validate_architecture) and config_cls().huber_delta == 1.0
        for cls in model_classes:
            assert callable(cls.freeze_backbone) and cls.LORA_TARGET_MODULES
        assert inspect.signature(model_classes[1].forward).parameters.keys() >= {
            "object_features", "object_pid", "attention_mask", "event_features", "labels"}
        for legacy in spec.legacy_head_classes:
            assert modeling.model_class_for_architecture(legacy) == (backbone, model_classes[1])
    with pytest.raises(ValueError, match="unknown backbone"):
        modeling.load_backbone_classes("resnet")
    with pytest.raises(ValueError, match="unknown task"):
        modeling.build_model("mlp", "segmentation")
    with pytest.raises(ValueError, match="not a minerva-fm model"):
        modeling.model_class_for_architecture("BertForMaskedLM")


@pytest.mark.parametrize("backbone", OWN_BACKBONES)
def test_build_model_from_a_checkpoint_reuses_the_backbone_and_refits_the_head(backbone, tmp_path):
    """build_model(pretrained=...) loads backbone weights; a head of another task is freshly made."""
    classification = build_tiny(backbone, "classification", seed=4)
    classification.save_pretrained(tmp_path)
    regression = modeling.build_model(backbone, "regression", pretrained=tmp_path)
    prefix = classification.base_model_prefix
    for name, tensor in getattr(classification, prefix).state_dict().items():
        torch.testing.assert_close(getattr(regression, prefix).state_dict()[name], tensor, msg=name)
    assert regression.head.weight.shape[0] == 1 and regression.config.problem_type == "regression"
    regression.save_pretrained(tmp_path / "regression")
    again = modeling.build_model(backbone, "classification", pretrained=tmp_path / "regression")
    assert again.head.weight.shape[0] == 5 and again.config.problem_type == "single_label_classification"
