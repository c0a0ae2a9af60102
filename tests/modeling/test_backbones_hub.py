"""push_to_hub each backbone to the loopback Hub and load it back, by commit, in a clean process."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import ALL_BACKBONES, build_tiny, main_output, make_batch, run_isolated
from safetensors.torch import load_file, save_file


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_push_to_hub_and_load_with_remote_code_in_a_clean_process(backbone, hub, tmp_path):
    """The pushed repo holds code + safetensors; AutoModelForSequenceClassification(trust_remote_code) reproduces it."""
    from huggingface_hub import HfApi

    model = build_tiny(backbone, "classification", seed=2)
    repo_id = f"{hub.user}/minerva-{backbone.replace('_', '-')}-{tmp_path.name[-12:]}"
    model.push_to_hub(repo_id)
    api = HfApi()
    info = api.model_info(repo_id)
    files = {s.rfilename for s in info.siblings}
    assert {"config.json", "model.safetensors"} <= files and any(f.startswith("modeling_") for f in files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth"))]

    batch = {k: v for k, v in make_batch(seed=5).items()}
    save_file(batch, tmp_path / "inputs.safetensors")
    run_isolated(f"""
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained(
            {repo_id!r}, revision={info.sha!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            save_file({{"logits": model(**load_file("inputs.safetensors")).logits}}, "outputs.safetensors")
    """, cwd=tmp_path)
    expected = main_output(model(**batch)).detach()
    torch.testing.assert_close(load_file(tmp_path / "outputs.safetensors")["logits"], expected, rtol=0, atol=1e-6)
