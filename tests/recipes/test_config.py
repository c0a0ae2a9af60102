"""Config loading: YAML with `base:` chains, dotted overrides, validation errors, save/load round trip."""

from __future__ import annotations

import json

import pytest
import yaml

from recipes.config import FinetuneConfig, load_config, parse_overrides, save_config
from recipes.finetune import flops_per_token

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[2] / "recipes" / "configs"


def test_yaml_base_chain_and_overrides():
    cfg = load_config(CONFIGS / "tiny_omnilearned_cpu.yaml",
                      ["--optim.lr=3e-4", "--model.mode", "lora", "--data.max_eval_events=null", "--train.cpu=false"])
    assert cfg.model.backbone == "omnilearned" and cfg.model.overrides["hidden_size"] == 32  # from the variant
    assert cfg.data.batch_size == 32 and cfg.train.max_steps == 20  # from the base file
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.model.mode == "lora"
    assert cfg.data.max_eval_events is None and cfg.train.cpu is False


def test_yaml_1_1_float_strings_are_numbers(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-4\n  class_weights: [1, 2, 3, 4, 5]\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.class_weights == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_unknown_key_names_close_match():
    with pytest.raises(KeyError, match=r"unknown config key 'optim.lrr'.*'optim.lr'"):
        load_config(None, ["--optim.lrr=1"])


@pytest.mark.parametrize("override, message", [
    ("--model.mode=half", "model.mode must be one of"),
    ("--model.backbone=resnet", "model.backbone must be one of"),
    ("--optim.mixed_precision=fp8", "optim.mixed_precision must be one of"),
    ("--data.batch_size=0", "data.batch_size must be >= 1"),
    ("--optim.class_weights=inverse", "optim.class_weights must be 'auto'"),
    ("--train.max_steps=abc", "train.max_steps: expected an integer"),
])
def test_invalid_values_raise_naming_the_field(override, message):
    with pytest.raises((ValueError, TypeError), match=message):
        load_config(None, [override])


def test_override_parsing():
    assert parse_overrides(["--a.b=1", "--a.c", "[1, 2]", "--d=x"]) == {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    with pytest.raises(ValueError, match="has no value"):
        parse_overrides(["--a.b"])


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "tiny_mlp_cpu.yaml", ["--optim.bin_weighting={column: q3, edges: [0, 1, 10]}"])
    save_config(cfg, tmp_path)
    saved = json.loads((tmp_path / "train_config.json").read_text())
    assert saved["model"]["backbone"] == "mlp" and saved["optim"]["bin_weighting"]["edges"] == [0.0, 1.0, 10.0]
    assert yaml.safe_load((tmp_path / "train_config.yaml").read_text()) == saved
    again = load_config(tmp_path / "train_config.json")
    assert again == cfg and isinstance(again, FinetuneConfig)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.name


def test_flops_estimate_by_mode():
    assert flops_per_token("full", 100, 100) == 600
    assert flops_per_token("frozen", 100, 10) == 240
    assert flops_per_token("lora", 100, 10) == 420
