"""The python block of the rendered model card, run exactly as printed in a clean interpreter (no project on the path)
against the loopback Hub, for every backbone x task: the card's repo id, Auto class and output names are right."""

from __future__ import annotations

import re

import pytest
import torch
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file, save_file

import modeling
from card_run_helpers import make_run_dir, random_batch
from isolated_python import run_isolated
from model_cards.publish import push_model

TASKS = ("regression", "classification")


def python_block(readme: str) -> str:
    """The one ```python block of a card (exactly one is expected)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", readme, flags=re.S | re.M)
    assert len(blocks) == 1, f"expected one python block, found {len(blocks)}"
    return blocks[0]


@pytest.mark.slow
def test_card_snippet_runs_as_printed_for_every_backbone_and_task(hub, tmp_path):
    batch = random_batch(6, seed=4)
    save_file(batch, tmp_path / "inputs.safetensors")
    jobs, expected = [], {}
    for backbone, spec in modeling.BACKBONES.items():
        for task in TASKS:
            torch.manual_seed(0)
            model = modeling.build_model(backbone, task, size="tiny").eval()
            key = f"{backbone}-{task}"
            run = make_run_dir(tmp_path / key, task, model=model, backbone=backbone, size="tiny", overrides={})
            repo = f"{hub.user}/card-snippet-{backbone.replace('_', '-')}-{task}"
            push_model(run, repo)
            code = python_block(open(hf_hub_download(repo, "README.md")).read())
            assert f'"{repo}"' in code and "<user>/<repo>" not in code
            with torch.no_grad():
                expected[key] = model(**batch).logits
            jobs.append((key, code, spec.head_class, task))
    jobs.append(_lora_adapter_job(hub, tmp_path, batch, expected))
    run_isolated(f"""
        import torch
        from safetensors.torch import load_file, save_file
        inputs, outputs = load_file("inputs.safetensors"), {{}}
        for key, code, class_name, task in {jobs!r}:
            scope = {{}}
            exec(code, scope)  # the card's python block, as printed
            model = scope["model"]
            assert type(model).__name__ == class_name, (key, type(model).__name__)
            base = model.get_base_model() if class_name == "PeftModel" else model
            assert type(base).__module__.startswith("transformers_modules"), type(base).__module__
            if task == "regression":
                assert scope["e_avail_gev"].shape == (1,) and torch.isfinite(scope["e_avail_gev"]).all(), key
            else:
                assert scope["probabilities"].shape == (1, 5), key
                torch.testing.assert_close(scope["probabilities"].sum(-1), torch.ones(1))
            with torch.no_grad():
                outputs[key] = model.eval()(**inputs).logits.contiguous()
        save_file(outputs, "outputs.safetensors")
    """, cwd=tmp_path, timeout=400)
    got = load_file(tmp_path / "outputs.safetensors")
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=key)


def _lora_adapter_job(hub, tmp_path, batch, expected) -> tuple:
    """A LoRA adapter on a Hub base: its card loads the base by id and the adapter with PeftModel, as printed."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    base = modeling.build_model("mlp", "regression", size="tiny").eval()
    base_repo = f"{hub.user}/card-snippet-lora-base"
    push_model(make_run_dir(tmp_path / "lora-base", "regression", model=base, size="tiny", overrides={}), base_repo)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=modeling.get_lora_target_modules(base),
                                                 modules_to_save=modeling.get_head_modules(base),
                                                 init_lora_weights=False))
    peft_model.peft_config["default"].base_model_name_or_path = base_repo
    run = make_run_dir(tmp_path / "lora-adapter", "regression", mode="lora", model=peft_model, size="tiny",
                       overrides={})
    repo = f"{hub.user}/card-snippet-lora-adapter"
    push_model(run, repo)
    code = python_block(open(hf_hub_download(repo, "README.md")).read())
    assert f'"{base_repo}"' in code and f'"{repo}"' in code
    with torch.no_grad():
        expected["lora"] = peft_model.eval()(**batch).logits
    return ("lora", code, "PeftModel", "regression")


@pytest.mark.slow
def test_onnx_section_runs_as_printed_after_the_load_snippet(hub, tmp_path):
    """With model.onnx in the folder the card describes it, and its onnxruntime block (after the load block, which
    defines `batch`) runs as printed in a clean interpreter against the Hub and matches the PyTorch output."""
    pytest.importorskip("onnxruntime")
    from huggingface_hub import HfApi

    from modeling.export import write_onnx_export

    torch.manual_seed(0)
    run = make_run_dir(tmp_path / "run", "regression", model=modeling.build_model("mlp", "regression", size="tiny"),
                       size="tiny", overrides={})
    write_onnx_export(str(run), run)
    repo = f"{hub.user}/card-snippet-onnx"
    push_model(run, repo)
    HfApi().upload_file(path_or_fileobj=run / "model.onnx", path_in_repo="model.onnx", repo_id=repo)
    blocks = re.findall(r"^```python\n(.*?)^```$", open(hf_hub_download(repo, "README.md")).read(), flags=re.S | re.M)
    assert len(blocks) == 2 and "onnxruntime" in blocks[1] and f'"{repo}"' in blocks[1]
    run_isolated(blocks[0] + blocks[1] + """
torch.testing.assert_close(torch.from_numpy(outputs["predictions"]), e_avail_gev, rtol=1e-3, atol=1e-4)
""", cwd=tmp_path)
