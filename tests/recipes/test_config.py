"""Config loading: YAML with `base:` chains, dotted overrides, validation errors, save/load round trip."""

from __future__ import annotations

import json

import pytest
import yaml

from recipes.config import (ConfigError, DataConfig, FinetuneConfig, OptimConfig, TrainConfig, load_config,
                            load_typed_config, save_config)
from recipes.finetune import flops_per_token

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[2] / "recipes" / "configs"


def test_yaml_base_chain_and_overrides():
    cfg = load_config(CONFIGS / "tiny_omnilearned_cpu.yaml",
                      ["--optim.lr=3e-4", "--model.mode", "lora", "--model.init=some/model", "--data.max_eval_events=null",
                       "--train.cpu=false", "--model.overrides.num_hidden_layers=3"])
    assert cfg.model.backbone == "omnilearned" and cfg.model.overrides["hidden_size"] == 32  # from the variant
    assert cfg.data.batch_size == 32 and cfg.train.max_steps == 20  # from the base file
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.model.mode == "lora"
    assert cfg.data.max_eval_events is None and cfg.train.cpu is False
    assert cfg.model.overrides["num_hidden_layers"] == 3 and cfg.model.overrides["num_neighbors"] == 4  # merged


def test_yaml_1_1_float_strings_are_numbers(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-4\n  class_weights: [1, 2, 3, 4, 5]\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.class_weights == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_unknown_key_names_close_match(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*'optim.lr'"):
        load_config(None, ["--optim.lrr=1"])
    (tmp_path / "c.yaml").write_text("data:\n  batch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'data.batch_sise'.*'data.batch_size'"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("text, message", [
    ("base: b.yaml\n", "config base chain loops: .*c.yaml -> .*b.yaml -> .*c.yaml"),
    ("data: [1, 2]\n", "data must be a mapping"),
    ("optim:\n  lr: [1\n", "c.yaml: line [23] not valid YAML"),
    ("- 1\n", "the top level must be a mapping"),
    ("base: missing.yaml\n", "config file not found: .*missing.yaml"),
])
def test_broken_files_give_one_line_config_errors(tmp_path, text, message):
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(tmp_path / "c.yaml")
    assert "\n" not in str(err.value)


def test_mode_needs_init_and_rw_refuses_one():
    with pytest.raises(ConfigError, match="model.mode=full needs model.init.*use mode: rw"):
        load_config(None, ["--model.mode=full"])
    for mode in ("frozen", "lora"):
        with pytest.raises(ConfigError, match=f"model.mode={mode} needs model.init"):
            load_config(None, [f"--model.mode={mode}"])
    with pytest.raises(ConfigError, match="mode=rw trains from random weights"):
        load_config(None, ["--model.mode=rw", "--model.init=x/y"])
    assert load_config(None, ["--model.mode=full", "--model.init=x/y"]).model.init == "x/y"


def test_load_typed_config_serves_any_dataclass(tmp_path):
    from dataclasses import dataclass, field

    @dataclass
    class PretrainLike:
        data: DataConfig = field(default_factory=DataConfig)
        optim: OptimConfig = field(default_factory=OptimConfig)
        train: TrainConfig = field(default_factory=TrainConfig)
        mask_fraction: float = 0.5  # fraction of objects masked

    (tmp_path / "base.yaml").write_text("optim:\n  lr: 2e-3\nmask_fraction: 0.3\n")
    (tmp_path / "p.yaml").write_text("base: base.yaml\ntrain:\n  max_steps: 7\n")
    cfg = load_typed_config(PretrainLike, tmp_path / "p.yaml", ["--mask_fraction=0.75", "--data.batch_size", "8"])
    assert isinstance(cfg, PretrainLike) and cfg.mask_fraction == 0.75 and cfg.optim.lr == pytest.approx(2e-3)
    assert cfg.train.max_steps == 7 and cfg.data.batch_size == 8
    save_config(cfg, tmp_path / "out")
    assert load_typed_config(PretrainLike, tmp_path / "out" / "train_config.json") == cfg
    with pytest.raises(ConfigError, match="close matches: \\['mask_fraction'\\]"):
        load_typed_config(PretrainLike, None, ["--mask_fractoin=1"])


@pytest.mark.parametrize("override, message", [
    ("--model.mode=half", "model.mode must be one of"),
    ("--model.backbone=resnet", "model.backbone must be one of"),
    ("--optim.mixed_precision=fp8", "optim.mixed_precision must be one of"),
    ("--data.batch_size=0", "data.batch_size must be >= 1"),
    ("--optim.class_weights=inverse", "optim.class_weights must be 'auto'"),
    ("--train.max_steps=abc", "train.max_steps.*Couldn't parse 'abc' into an int"),
    ("--train.cpu=maybe", "train.cpu.*into a bool"),
    ("--train.tracker=wandb", "train.tracker must be one of"),
    ("--model.lora_r", "override '--model.lora_r' has no value"),
])
def test_invalid_values_raise_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "tiny_mlp_cpu.yaml", ["--optim.bin_weighting={column: q3, edges: [0, 1, 10]}",
                                                      "--optim.class_weights", "[1, 2, 3, 4, 5]"])
    save_config(cfg, tmp_path)
    saved = json.loads((tmp_path / "train_config.json").read_text())
    assert saved["model"]["backbone"] == "mlp" and saved["optim"]["bin_weighting"]["edges"] == [0.0, 1.0, 10.0]
    assert yaml.safe_load((tmp_path / "train_config.yaml").read_text()) == saved
    again = load_config(tmp_path / "train_config.json")
    assert again == cfg and isinstance(again, FinetuneConfig)
    assert load_config(tmp_path / "train_config.yaml") == cfg


OTHER_RECIPES = ("pretrain_", "transfer_study_")  # configs of recipes/pretrain.py and recipes/transfer_study.py


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith(OTHER_RECIPES)),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.name and (cfg.model.init is None) == (cfg.model.mode == "rw")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("transfer_study_*.yaml")), ids=lambda p: p.name)
def test_every_transfer_study_config_loads(path):
    from recipes.transfer_study import load_study_config

    assert load_study_config(path) is not None


def test_flops_estimate_by_mode():
    assert flops_per_token("full", 100, 100) == 600
    assert flops_per_token("frozen", 100, 10) == 240
    assert flops_per_token("lora", 100, 10) == 420
