"""ParticleViT specifics: presets, HyperScale checkpoint conversion against an independent reference forward."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).parents[1]))
from backbone_helpers import make_batch  # noqa: E402

from modeling.particle_vit.configuration_minerva_particle_vit import PRESETS, MinervaParticleViTConfig  # noqa: E402
from modeling.particle_vit.convert_hyperscale_to_hf import convert_hyperscale_checkpoint  # noqa: E402
from modeling.particle_vit.modeling_minerva_particle_vit import (  # noqa: E402
    MinervaParticleViTForEventClassification, MinervaParticleViTModel)


def hyperscale_state_dict(d: int, depth: int, heads: int, hidden: int, classes: int = 10, seed: int = 0) -> dict:
    """Random tensors with exactly the names and shapes of a HyperScale ParticleVIT_Embedding state dict."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.1  # noqa: E731
    state = {"cls_token": r(1, 1, d), "norm.weight": 1 + r(d), "head.weight": r(classes, d), "head.bias": r(classes)}
    for name in ("kin_embed", "vertex_embed"):
        state[f"token_embed.{name}.weight"], state[f"token_embed.{name}.bias"] = r(d, 4), r(d)
    state["token_embed.pid_embed.weight"] = r(9, d)
    state["token_embed.pid_available_embed.weight"] = r(2, d)
    state["token_embed.vertex_available_embed.weight"] = r(2, d)
    for i in range(depth):
        p = f"blocks.{i}."
        state[p + "multihead_attn.packed_input_projection.weight"] = r(3 * d, d)
        state[p + "multihead_attn.output_projection.weight"] = r(d, d)
        state[p + "multihead_attn.q_norm.weight"] = 1 + r(d // heads)
        state[p + "multihead_attn.k_norm.weight"] = 1 + r(d // heads)
        state[p + "ffn.w13.weight"], state[p + "ffn.w2.weight"] = r(2 * hidden, d), r(d, hidden)
        for norm in ("pre_attn", "post_attn", "pre_ffn", "post_ffn"):
            state[p + f"{norm}_norm.weight"] = 1 + r(d)
    return state


def reference_cls_state(state: dict, X: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """HyperScale embedding-variant forward written from backbones.md §2.1 with explicit softmax attention.

    X is HyperScale's (B, N, 9) input: 4 kinematics, PID as float, 4 vertex features. Returns the normed CLS state.
    """
    rms = lambda x, w: F.rms_norm(x, (x.shape[-1],), w, eps=None)  # noqa: E731
    vertex_available = (X[..., 5:9] != 0).any(-1) & mask
    event_available = vertex_available.any(1, keepdim=True).expand_as(mask)
    x = (F.linear(X[..., :4], state["token_embed.kin_embed.weight"], state["token_embed.kin_embed.bias"])
         + state["token_embed.pid_embed.weight"][X[..., 4].long()]
         + F.linear(X[..., 5:9], state["token_embed.vertex_embed.weight"], state["token_embed.vertex_embed.bias"])
         + state["token_embed.pid_available_embed.weight"][event_available.long()]
         + state["token_embed.vertex_available_embed.weight"][vertex_available.long()]) * mask[..., None]
    B, d = X.shape[0], x.shape[-1]
    x = torch.cat([state["cls_token"].expand(B, 1, d), x], 1)
    m = torch.cat([torch.ones(B, 1, dtype=torch.bool), mask], 1)
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}."
        h = rms(x, state[p + "pre_attn_norm.weight"])
        q, k, v = F.linear(h, state[p + "multihead_attn.packed_input_projection.weight"]).view(
            B, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        q, k = rms(q, state[p + "multihead_attn.q_norm.weight"]), rms(k, state[p + "multihead_attn.k_norm.weight"])
        scores = (q @ k.transpose(-1, -2)) / (d // heads) ** 0.5
        attention = scores.masked_fill(~m[:, None, None, :], float("-inf")).softmax(-1) @ v
        attention = (attention * m[:, None, :, None]).transpose(1, 2).reshape(B, -1, d)
        x = x + rms(F.linear(attention, state[p + "multihead_attn.output_projection.weight"]),
                    state[p + "post_attn_norm.weight"])
        a, b = F.linear(rms(x, state[p + "pre_ffn_norm.weight"]), state[p + "ffn.w13.weight"]).chunk(2, -1)
        x = x + rms(F.linear(F.silu(a) * b, state[p + "ffn.w2.weight"]), state[p + "post_ffn_norm.weight"])
        x = x * m[..., None]
    return (rms(x, state["norm.weight"]) * m[..., None])[:, 0]


def to_hyperscale_input(batch: dict) -> torch.Tensor:
    """Our layout -> HyperScale's: PID into column 4, (log_dedx, x, y, z) into the vertex columns 5..8, t dropped."""
    f = batch["object_features"]
    return torch.cat([f[..., :4], batch["object_pid"][..., None].float(), f[..., 4:8]], -1)


@pytest.fixture
def hyperscale_run(tmp_path):
    """A HyperScale run dir: pvit_final.pth (torch.save of a bare state dict) and train_config.yaml."""
    d, depth, heads = 48, 2, 4
    hidden = int(d * 8 / 3)
    state = hyperscale_state_dict(d, depth, heads, hidden)
    torch.save(state, tmp_path / "pvit_final.pth")
    (tmp_path / "train_config.yaml").write_text(yaml.safe_dump({
        "model_type": "embedding", "model_params": {"embed_dim": d, "depth": depth, "num_heads": heads,
                                                    "mlp_ratio": 8 / 3}}))
    return tmp_path, state, heads


@pytest.mark.parametrize("use_train_config", [True, False])
def test_converted_checkpoint_matches_the_reference_forward(hyperscale_run, use_train_config, tmp_path):
    """Converted weights reproduce the reference HyperScale CLS state (event token off) at atol 1e-5."""
    run, state, heads = hyperscale_run
    out = tmp_path / "converted"
    convert_hyperscale_checkpoint(run / "pvit_final.pth", out, use_event_token=False,
                                  train_config=run / "train_config.yaml" if use_train_config else None)
    model = MinervaParticleViTModel.from_pretrained(out).eval()
    assert model.config.num_attention_heads == heads and model.config.intermediate_size == int(48 * 8 / 3)
    batch = make_batch(batch=6, objects=9, lengths=[9, 4, 1, 7, 2, 9])
    batch["event_features"][:, 2] = 0.0
    with torch.no_grad():
        ours = model(**batch).pooler_output
        reference = reference_cls_state(state, to_hyperscale_input(batch), batch["attention_mask"], heads)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_conversion_for_a_task_drops_the_jet_head_and_adds_the_event_token(hyperscale_run, tmp_path):
    """task=regression: every backbone tensor is loaded, head and global_proj are new; the event token is used."""
    run, state, _ = hyperscale_run
    model = convert_hyperscale_checkpoint(run / "pvit_final.pth", tmp_path / "reg", task="regression")
    assert isinstance(model, MinervaParticleViTForEventClassification) and model.config.problem_type == "regression"
    backbone_state = model.particle_vit.state_dict()
    for key, tensor in state.items():
        if not key.startswith("head."):
            torch.testing.assert_close(backbone_state[key], tensor, rtol=0, atol=0, msg=key)
    assert model.head.weight.shape == (1, 48)
    batch = make_batch()
    changed = dict(batch, event_features=batch["event_features"] + 1.0)
    assert not torch.allclose(model(**batch).logits, model(**changed).logits)


def test_conversion_rejects_a_checkpoint_that_does_not_fit(hyperscale_run, tmp_path):
    """A train_config.yaml with another width, or a foreign key, raises ValueError naming the problem."""
    run, state, _ = hyperscale_run
    (run / "bad.yaml").write_text(yaml.safe_dump({"model_type": "embedding",
                                                  "model_params": {"embed_dim": 64, "depth": 2, "num_heads": 4}}))
    with pytest.raises((ValueError, RuntimeError)):
        convert_hyperscale_checkpoint(run / "pvit_final.pth", tmp_path / "x", train_config=run / "bad.yaml")
    torch.save({**state, "mystery.weight": torch.zeros(3)}, run / "odd.pth")
    with pytest.raises(ValueError, match="mystery.weight"):
        convert_hyperscale_checkpoint(run / "odd.pth", tmp_path / "y")
    (run / "pool.yaml").write_text(yaml.safe_dump({"model_type": "pool", "model_params": {}}))
    with pytest.raises(ValueError, match="embedding"):
        convert_hyperscale_checkpoint(run / "pvit_final.pth", tmp_path / "z", train_config=run / "pool.yaml")


def test_time_extension_starts_as_a_no_op_and_can_learn(hyperscale_run, tmp_path):
    """use_time_feature adds a zero-initialised path: same outputs at conversion, t matters once it is trained."""
    run, _, _ = hyperscale_run
    plain = convert_hyperscale_checkpoint(run / "pvit_final.pth", tmp_path / "a").eval()
    timed = convert_hyperscale_checkpoint(run / "pvit_final.pth", tmp_path / "b", use_time_feature=True).eval()
    timed.global_proj.load_state_dict(plain.global_proj.state_dict())
    batch = make_batch()
    torch.testing.assert_close(timed(**batch).pooler_output, plain(**batch).pooler_output)
    with torch.no_grad():
        timed.token_embed.time_embed.weight.normal_()
    assert not torch.allclose(timed(**batch).pooler_output, plain(**batch).pooler_output)


def test_presets_have_the_paper_sizes():
    """small = embedding/4/448, medium = 5/512, 8 heads, SwiGLU width int(d*8/3) (1194, 1365)."""
    small, medium = (MinervaParticleViTConfig.from_preset(name) for name in ("small", "medium"))
    assert (small.hidden_size, small.num_hidden_layers, small.intermediate_size) == (448, 4, 1194)
    assert (medium.hidden_size, medium.num_hidden_layers, medium.intermediate_size) == (512, 5, 1365)
    assert set(PRESETS) == {"tiny", "small", "medium"}  # tiny: tests and smoke runs
    with pytest.raises(ValueError, match="preset"):
        MinervaParticleViTConfig.from_preset("huge")
    with pytest.raises(ValueError, match="not divisible"):
        MinervaParticleViTConfig(hidden_size=30, num_attention_heads=4)
    assert MinervaParticleViTModel(small).norm.eps is None  # machine epsilon of the dtype, as HyperScale


def test_cli_converts_a_run_directory(hyperscale_run, tmp_path):
    """`minerva-fm convert-particle-vit` writes a loadable classification checkpoint."""
    from recipes.cli import main

    run, state, _ = hyperscale_run
    out = tmp_path / "cli"
    assert main(["convert-particle-vit", str(run / "pvit_final.pth"), str(out), "--train-config",
                 str(run / "train_config.yaml"), "--task", "classification"]) == 0
    from modeling.particle_vit.modeling_minerva_particle_vit import MinervaParticleViTForEventClassification

    model = MinervaParticleViTForEventClassification.from_pretrained(out)
    torch.testing.assert_close(model.particle_vit.cls_token, state["cls_token"], rtol=0, atol=0)
    assert model.head.out_features == 5
