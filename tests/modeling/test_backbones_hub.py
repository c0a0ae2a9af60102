"""push_to_hub every backbone x task to the loopback Hub and load each back, by commit, in ONE clean interpreter with
the exact line a model card prints (`modeling.usage_snippet`): the right class, the saved head, the same outputs."""

from __future__ import annotations

import json

import pytest
import torch
from backbone_helpers import ALL_BACKBONES, TASKS, build_tiny, main_output, make_batch, run_isolated
from safetensors.torch import load_file, save_file

import modeling


@pytest.mark.slow
def test_card_snippet_loads_every_backbone_and_task_from_the_hub(hub, tmp_path):
    """All 12 checkpoints in one process: no Auto-class collision between a backbone's regression and classification
    checkpoints, every config.json names AutoConfig/AutoModel/AutoModelForSequenceClassification, outputs match."""
    from huggingface_hub import HfApi

    api = HfApi()
    batch = make_batch(seed=5)
    save_file(batch, tmp_path / "inputs.safetensors")
    jobs, expected = [], {}
    for backbone in ALL_BACKBONES:
        spec = modeling.BACKBONES[backbone]
        for task in TASKS:
            model = build_tiny(backbone, task, seed=2)
            repo_id = f"{hub.user}/minerva-{backbone.replace('_', '-')}-{task}-{tmp_path.name[-10:]}"
            model.push_to_hub(repo_id)
            sha = api.model_info(repo_id).sha
            config = json.loads(open(api.hf_hub_download(repo_id, "config.json", revision=sha)).read())
            assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification"}
            assert config["auto_map"]["AutoModelForSequenceClassification"].endswith(spec.head_class)
            key = f"{backbone}-{task}"
            expected[key] = main_output(model(**batch)).detach()
            jobs.append((key, modeling.usage_snippet(repo_id, sha, task), type(model).__name__,
                         "predictions" if task == "regression" else ""))
    run_isolated(f"""
        import torch
        from safetensors.torch import load_file, save_file
        inputs, outputs = load_file("inputs.safetensors"), {{}}
        for key, snippet, class_name, extra in {jobs!r}:
            scope = {{}}
            exec(snippet, scope)  # the card's line, as printed
            model = scope["model"].eval()
            assert type(model).__name__ == class_name, (key, type(model).__name__)
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            with torch.no_grad():
                out = model(**inputs)
            outputs[key] = (out.logits if getattr(out, "logits", None) is not None else out.pooler_output).contiguous()
            if extra:
                assert out.predictions.shape == (inputs["event_features"].shape[0],), key
        save_file(outputs, "outputs.safetensors")
    """, cwd=tmp_path, timeout=400)
    got = load_file(tmp_path / "outputs.safetensors")
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=key)
