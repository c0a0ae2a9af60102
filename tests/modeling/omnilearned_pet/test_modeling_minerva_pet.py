"""MinervaPet config, heads, masks, invariances, bad input, saving/remote code, init, checkpointing and LoRA."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from isolated_python import isolated_code
import torch.nn.functional as F
from pet_test_utils import make_batch, model_inputs, tiny_config
from safetensors.torch import save_file

from modeling.omnilearned_pet import (
    PRESETS,
    MinervaPetConfig,
    MinervaPetForEventClassification,
    MinervaPetModel,
)
from modeling.omnilearned_pet import modeling_minerva_pet

REGRESSION = dict(num_labels=1, problem_type="regression")  # the one head as the E_avail regressor

torch.manual_seed(0)


def _eval(model):
    return model.eval()


# ---------------------------------------------------------------- config


def test_presets_carry_the_published_sizes():
    expected = {"small": (128, 8, 8, 2), "medium": (512, 16, 12, 2), "large": (1024, 32, 28, 4)}
    for name, (width, heads, depth, head_depth) in expected.items():
        config = MinervaPetConfig.from_preset(name)
        assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (width, heads, depth)
        assert config.num_head_layers == config.num_local_layers == head_depth
        assert (config.num_class_tokens, config.mlp_ratio, config.num_neighbors) == (4, 2, 10)
    assert set(PRESETS) == set(expected) | {"tiny"}  # tiny: tests and smoke runs
    assert MinervaPetConfig().num_labels == 5 and MinervaPetConfig().zeroed_event_features == [2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(hidden_size=30, num_attention_heads=4), "hidden_size=30 is not divisible by num_attention_heads=4"),
        (dict(zeroed_event_features=[16]), "zeroed_event_features=[16]"),
        (dict(num_knn_coordinates=5), "num_knn_coordinates=5"),
        (dict(num_extra_features=6), "num_extra_features=6 exceeds num_object_features=9"),
        (dict(class_weights=[1.0, 2.0]), "class_weights has 2 entries but num_labels=5"),
        (dict(num_neighbors=0), "num_neighbors=0"),
        (dict(hidden_dropout=1.5), "hidden_dropout=1.5"),
        (dict(pid_vocab_size=1), "pid_vocab_size=1"),
    ],
)
def test_config_validation_names_fields_and_values(overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        MinervaPetConfig(**overrides)
    with pytest.raises(ValueError, match="unknown MinervaPet preset 'huge'"):
        MinervaPetConfig.from_preset("huge")


def test_every_config_field_is_read_by_the_model_code():
    """Mirror of transformers' check_config_attributes: no config field that the modeling file never reads."""
    source = inspect.getsource(modeling_minerva_pet)
    own_fields = [f.name for f in dataclasses.fields(MinervaPetConfig) if f.name in MinervaPetConfig.__annotations__]
    unread = [name for name in own_fields if f".{name}" not in source]
    assert own_fields and not unread


def test_config_round_trip_keeps_fields(tmp_path):
    config = tiny_config(class_weights=[1.0, 2.0, 0.5, 1.0, 3.0], zeroed_event_features=[2, 5],
                         new_parameter_names=["event_embedding.fc1.weight"])
    config.save_pretrained(tmp_path)
    again = MinervaPetConfig.from_pretrained(tmp_path)
    for name in ("class_weights", "zeroed_event_features", "new_parameter_names", "hidden_size", "num_labels"):
        assert getattr(again, name) == getattr(config, name)


# ---------------------------------------------------------------- shapes and heads


def test_output_shapes_per_head():
    config = tiny_config()
    batch = make_batch([7, 3, 1], num_slots=7)
    with torch.no_grad():
        bare = _eval(MinervaPetModel(config))(**model_inputs(batch), output_hidden_states=True)
        classification = _eval(MinervaPetForEventClassification(config))(**model_inputs(batch))
        regression = _eval(MinervaPetForEventClassification(tiny_config(**REGRESSION)))(**model_inputs(batch))
    assert bare.last_hidden_state.shape == (3, 3 + 1 + 7, 32)
    assert bare.pooler_output.shape == (3, 32)
    torch.testing.assert_close(bare.pooler_output, bare.last_hidden_state[:, :3].mean(1))
    assert len(bare.hidden_states) == config.num_hidden_layers + 1
    assert torch.all(bare.last_hidden_state[1, 4 + 3:] == 0) and torch.all(bare.last_hidden_state[2, 4 + 1:] == 0)
    assert classification.logits.shape == (3, 5) and classification.loss is None
    assert regression.logits.shape == (3, 1) and regression.predictions.shape == (3,)
    expected = torch.clamp(torch.exp(regression.logits.squeeze(-1)) - 1, min=0)
    torch.testing.assert_close(regression.predictions, expected)


def test_event_token_absent_and_feature_zeroing():
    config = tiny_config(use_event_token=False)
    batch = make_batch([5, 2], num_slots=5)
    with torch.no_grad():
        out = _eval(MinervaPetModel(config))(**model_inputs(batch))
    assert out.last_hidden_state.shape == (2, 3 + 5, 32)
    model = _eval(MinervaPetModel(tiny_config(zeroed_event_features=[2])))
    changed = dict(model_inputs(batch))
    changed["event_features"] = batch["event_features"].clone()
    changed["event_features"][:, 2] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(model(**changed).last_hidden_state, model(**model_inputs(batch)).last_hidden_state)
        changed["event_features"][:, 3] += 5.0
        assert not torch.allclose(model(**changed).last_hidden_state, model(**model_inputs(batch)).last_hidden_state)


# ---------------------------------------------------------------- masks and invariances


def test_padded_slots_do_not_change_real_outputs():
    config = tiny_config()
    model = _eval(MinervaPetForEventClassification(config))
    batch = make_batch([6, 4, 2], num_slots=6)
    padded = {k: v for k, v in model_inputs(batch).items()}
    extra = 5
    garbage = torch.randn(3, extra, 9) * 10  # padded slots hold garbage: the mask, not the values, decides
    padded["object_features"] = torch.cat([batch["object_features"], garbage], 1)
    padded["object_pid"] = torch.cat([batch["object_pid"], torch.randint(0, 9, (3, extra))], 1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(3, extra, dtype=torch.bool)], 1)
    with torch.no_grad():
        base_hidden = model.pet(**model_inputs(batch)).last_hidden_state
        padded_hidden = model.pet(**padded).last_hidden_state
        torch.testing.assert_close(padded_hidden[:, : base_hidden.shape[1]], base_hidden, atol=1e-6, rtol=1e-5)
        assert torch.all(padded_hidden[:, base_hidden.shape[1]:] == 0)
        torch.testing.assert_close(model(**padded).logits, model(**model_inputs(batch)).logits, atol=1e-6, rtol=1e-5)


def test_pooled_output_is_invariant_to_object_order():
    model = _eval(MinervaPetModel(tiny_config()))
    batch = model_inputs(make_batch([9, 9], num_slots=9, seed=3))
    order = torch.randperm(9)
    permuted = {k: (v[:, order] if k != "event_features" else v) for k, v in batch.items()}
    with torch.no_grad():
        out, out_permuted = model(**batch), model(**permuted)
    torch.testing.assert_close(out_permuted.pooler_output, out.pooler_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_permuted.last_hidden_state[:, 4:], out.last_hidden_state[:, 4:][:, order],
                               atol=1e-5, rtol=1e-5)


def test_fewer_slots_than_knn_needs_is_padded_internally():
    config = tiny_config()  # K = 4 needs 5 slots
    model = _eval(MinervaPetModel(config))
    batch = model_inputs(make_batch([3, 1], num_slots=3))
    wide = {k: (F.pad(v, (0, 0, 0, 2)) if k == "object_features" else F.pad(v, (0, 2)) if k != "event_features"
                else v) for k, v in batch.items()}
    with torch.no_grad():
        short, padded = model(**batch).last_hidden_state, model(**wide).last_hidden_state
    assert short.shape == (2, 4 + 3, 32)
    torch.testing.assert_close(short, padded[:, : 4 + 3], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    config = tiny_config()
    model = _eval(MinervaPetModel(config))
    batch = model_inputs(make_batch([4, 2], num_slots=5))
    with pytest.raises(ValueError, match="object_features has 8 features per object but config.num_object_features=9"):
        model(**{**batch, "object_features": batch["object_features"][..., :8]})
    nan = batch["object_features"].clone()
    nan[1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"object_features has NaN/Inf in feature columns \[3\]"):
        model.validate_inputs(**{**batch, "object_features": nan})  # value checks are opt-in, outside forward
    inf = batch["event_features"].clone()
    inf[0, 7] = float("inf")
    with pytest.raises(ValueError, match="event_features has NaN/Inf"):
        _eval(MinervaPetModel(tiny_config(validate_inputs=True)))(**{**batch, "event_features": inf})
    with pytest.raises(ValueError, match=r"event_features must be \(batch, num_event_features\)"):
        model(**{**batch, "event_features": batch["event_features"][:, :10]})
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(**{**batch, "attention_mask": None})
    zero_pid = batch["object_pid"].clone()
    zero_pid[0, 0] = 0
    with pytest.raises(ValueError, match="object_pid of real objects must be in"):
        model.validate_inputs(**{**batch, "object_pid": zero_pid})


def test_all_padding_events():
    """With the event token an empty event is valid (it still has event features); without it: ValueError."""
    batch = model_inputs(make_batch([4, 0], num_slots=5))
    with torch.no_grad():
        logits = _eval(MinervaPetForEventClassification(tiny_config()))(**batch).logits
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match=r"events \[1\] have no real object and use_event_token=False"):
        MinervaPetModel(tiny_config(use_event_token=False)).validate_inputs(**batch)


# ---------------------------------------------------------------- losses, init, checkpointing


def test_losses_are_finite_and_backward_reaches_every_parameter():
    weights = [1.0, 2.0, 0.5, 1.5, 3.0]
    batch = make_batch([6, 5, 3, 1], num_slots=6)
    classifier = MinervaPetForEventClassification(tiny_config(class_weights=weights)).train()
    out = classifier(**model_inputs(batch), labels=batch["labels_class"])
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, batch["labels_class"], weight=torch.tensor(weights)))
    assert not torch.isclose(out.loss, F.cross_entropy(out.logits, batch["labels_class"]))
    out.loss.backward()
    regressor = MinervaPetForEventClassification(tiny_config(**REGRESSION)).train()
    reg = regressor(**model_inputs(batch), labels=batch["labels_energy"])
    target = torch.log(1 + batch["labels_energy"])
    torch.testing.assert_close(reg.loss, F.huber_loss(reg.logits[:, 0], target, delta=1.0))
    reg.loss.backward()
    for model in (classifier, regressor):
        for name, parameter in model.named_parameters():
            if name == "pet.pid_embedding.weight":
                assert torch.all(parameter.grad[0] == 0)  # padding row never trained
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name


def test_random_init_matches_the_reference_recipe():
    model = MinervaPetForEventClassification(MinervaPetConfig.from_preset("small"))
    body = model.pet
    assert abs(body.class_tokens.std().item() - 0.02) < 0.004
    q = body.layers[0].attn.q_proj.weight
    assert q.abs().max() <= math.sqrt(6 / (128 + 3 * 128)) + 1e-7  # Xavier bound of the packed (3D, D) in_proj
    assert q.abs().max() > 0.9 * math.sqrt(6 / (128 + 3 * 128))
    fc1 = body.kinematic_embedding.mlp.fc1
    assert fc1.weight.abs().max() <= math.sqrt(6 / (4 + 256)) + 1e-7 and torch.all(fc1.bias == 0)
    assert torch.all(body.pid_embedding.weight[0] == 0) and abs(body.pid_embedding.weight[1:].std().item() - 1) < 0.1
    assert body.layers[0].attn_norm.alpha.item() == 0.5 and torch.all(body.layers[0].attn_norm.weight == 1)


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config(**REGRESSION)
    batch = make_batch([6, 4], num_slots=6)
    reference = MinervaPetForEventClassification(config).train()
    checkpointed = MinervaPetForEventClassification(config).train()
    checkpointed.load_state_dict(reference.state_dict())
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert checkpointed.pet.layers[0].gradient_checkpointing
    for model in (reference, checkpointed):
        model(**model_inputs(batch), labels=batch["labels_energy"]).loss.backward()
    for (name, p), (_, q) in zip(reference.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)


# ---------------------------------------------------------------- saving, remote code, freezing, LoRA


REMOTE_LOAD = textwrap.dedent(
    """
    import json, sys
    for blocked in ("modeling", "dataset_builder", "recipes"):
        sys.modules[blocked] = None  # the project must not be importable: code comes from the saved folder
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
    folder = sys.argv[1]
    data = load_file(folder + "/expected.safetensors")
    inputs = {k: data[k] for k in ("object_features", "object_pid", "attention_mask", "event_features")}
    inputs["attention_mask"] = inputs["attention_mask"].bool()
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    head = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    bare = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        head_out = head(**inputs).logits
        bare_out = bare(**inputs).last_hidden_state
    print(json.dumps({
        "config": type(config).__name__, "head": type(head).__name__, "bare": type(bare).__name__,
        "module": type(head).__module__,
        "head_diff": (head_out - data["logits"]).abs().max().item(),
        "bare_diff": (bare_out - data["last_hidden_state"]).abs().max().item(),
    }))
    """
)


def run_remote_load(folder, home) -> dict:
    """Load `folder` with trust_remote_code in a fresh interpreter where the project is not importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HOME=str(home), PYTHONPATH="", OMP_NUM_THREADS="1", HF_HUB_OFFLINE=env.get("HF_HUB_OFFLINE", "0"))
    result = subprocess.run([sys.executable, "-I", "-c", isolated_code(REMOTE_LOAD), str(folder)], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def save_with_expected_outputs(model, folder, batch) -> None:
    """save_pretrained plus the inputs and this process's outputs, for a comparison elsewhere."""
    model.save_pretrained(folder)
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits
        hidden = model.pet(**model_inputs(batch)).last_hidden_state
    tensors = {k: v.contiguous() for k, v in model_inputs(batch).items()}
    tensors["attention_mask"] = tensors["attention_mask"].to(torch.uint8)
    save_file({**tensors, "logits": logits, "last_hidden_state": hidden}, str(folder / "expected.safetensors"))


@pytest.mark.parametrize("task", [{}, REGRESSION])
def test_save_load_round_trip_and_remote_code(tmp_path, task):
    head_class = MinervaPetForEventClassification
    config = tiny_config(new_parameter_names=["event_embedding.fc1.weight"], **task)
    model = _eval(head_class(config))
    batch = make_batch([6, 3, 1], num_slots=6)
    folder = tmp_path / "model"
    save_with_expected_outputs(model, folder, batch)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_minerva_pet.MinervaPetConfig",
        "AutoModel": "modeling_minerva_pet.MinervaPetModel",
        "AutoModelForSequenceClassification": f"modeling_minerva_pet.{head_class.__name__}",
    }
    assert {"configuration_minerva_pet.py", "modeling_minerva_pet.py", "model.safetensors"} <= {
        p.name for p in folder.iterdir()}
    again, info = head_class.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(**model_inputs(batch)).logits, model(**model_inputs(batch)).logits,
                                   atol=1e-6, rtol=1e-6)
    remote = run_remote_load(folder, tmp_path / "hf-home")
    assert remote["config"] == "MinervaPetConfig" and remote["bare"] == "MinervaPetModel"
    assert remote["head"] == head_class.__name__ and remote["module"].startswith("transformers_modules")
    assert remote["head_diff"] <= 1e-6 and remote["bare_diff"] <= 1e-6


def test_freeze_backbone_keeps_new_tensors_trainable(tmp_path):
    new = ["event_embedding.fc1.weight", "event_embedding.fc1.bias", "pid_embedding.weight"]
    model = MinervaPetForEventClassification(tiny_config(new_parameter_names=new))
    model.save_pretrained(tmp_path)
    model = MinervaPetForEventClassification.from_pretrained(tmp_path)
    frozen = model.freeze_backbone()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"pet.{n}" for n in new} | {n for n, _ in model.named_parameters() if n.startswith("head.")}
    assert len(frozen) == len(list(model.pet.parameters())) - len(new)
    whole = MinervaPetForEventClassification(tiny_config(**REGRESSION))
    whole.freeze_backbone()
    assert not any(p.requires_grad for p in whole.pet.parameters())
    assert all(p.requires_grad for p in whole.head.parameters())


def test_lora_trains_only_adapters_and_head():
    from peft import LoraConfig, get_peft_model

    import re

    model = MinervaPetForEventClassification(tiny_config())
    for candidate in (model, MinervaPetModel(tiny_config())):
        targets = [n for n, _ in candidate.named_modules() if re.fullmatch(candidate.LORA_TARGET_MODULES, n)]
        assert len(targets) == 4 * 3 and not any(n.startswith("head.") for n in targets)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=model.LORA_TARGET_MODULES,
                                            modules_to_save=model.LORA_MODULES_TO_SAVE))
    trainable = [name for name, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or ".head.modules_to_save." in n for n in trainable)
    wrapped = [n for n in trainable if "lora_A" in n]
    # q/k/v/o of 2 body layers + 1 local layer, none in the head
    assert len(wrapped) == 4 * 3 and not any("head" in n for n in wrapped)
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    batch = make_batch([6, 4, 2], num_slots=6)
    lora.train()
    for _ in range(2):
        loss = lora(**model_inputs(batch), labels=batch["labels_class"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    base = lora.get_base_model()
    changed_base = [k for k, v in base.state_dict().items() if "lora_" not in k and "modules_to_save" not in k
                    and "original_module" not in k and k.replace(".base_layer", "") in before
                    and not torch.equal(v, before[k.replace(".base_layer", "")])]
    assert changed_base == []
    head_copy = dict(base.named_parameters())["head.modules_to_save.default.out.weight"]
    assert not torch.equal(head_copy, before["head.out.weight"])


HUB_LOAD = textwrap.dedent(
    """
    import json, sys
    for blocked in ("modeling", "dataset_builder", "recipes"):
        sys.modules[blocked] = None
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification
    repo, revision, expected_file = sys.argv[1:4]
    data = load_file(expected_file)
    inputs = {k: data[k] for k in ("object_features", "object_pid", "attention_mask", "event_features")}
    inputs["attention_mask"] = inputs["attention_mask"].bool()
    model = AutoModelForSequenceClassification.from_pretrained(repo, revision=revision, trust_remote_code=True).eval()
    with torch.no_grad():
        diff = (model(**inputs).logits - data["logits"]).abs().max().item()
    print(json.dumps({"head": type(model).__name__, "module": type(model).__module__, "diff": diff}))
    """
)


def test_push_to_hub_and_load_with_remote_code(hub, tmp_path):
    from huggingface_hub import HfApi

    model = _eval(MinervaPetForEventClassification(tiny_config(**REGRESSION)))
    batch = make_batch([5, 2], num_slots=5)
    local = tmp_path / "local"
    save_with_expected_outputs(model, local, batch)
    repo_id = f"{hub.user}/minerva-pet-tiny-regression"
    model.push_to_hub(repo_id)
    revision = HfApi().model_info(repo_id).sha
    files = set(HfApi().list_repo_files(repo_id, revision=revision))
    assert {"config.json", "model.safetensors", "configuration_minerva_pet.py", "modeling_minerva_pet.py"} <= files
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH="", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-I", "-c", isolated_code(HUB_LOAD), repo_id, revision,
                             str(local / "expected.safetensors")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["head"] == "MinervaPetForEventClassification" and loaded["module"].startswith("transformers_modules")
    assert loaded["diff"] <= 1e-6
