"""Fine-tuning runs on tiny Parquet data: every mode, classification with class/bin weights, resume after SIGKILL,
and a real 2-process (torchrun, gloo) run against a 1-process run with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipes_test_helpers import REPO_ROOT, free_port
from recipes.config import load_config
from recipes.finetune import build_finetune_model, train

CONFIGS = REPO_ROOT / "recipes" / "configs"
FINETUNE = REPO_ROOT / "recipes" / "finetune.py"


def _cfg(name: str, data: Path, out: Path, *overrides: str):
    return load_config(CONFIGS / name, [f"--data.path={data}", f"--train.output_dir={out}", "--train.tracker=none",
                                        "--train.progress=false", *overrides])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def mlp_init(tmp_path_factory) -> Path:
    """A save_pretrained event-MLP regression checkpoint (random weights, seed 123): the `model.init` of the tests."""
    import modeling

    torch.manual_seed(123)
    folder = tmp_path_factory.mktemp("mlp_init")
    modeling.build_model("mlp", "regression", "small", zeroed_event_features=[2]).save_pretrained(str(folder))
    return folder


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}


@pytest.mark.parametrize("mode", ["full", "frozen", "lora", "rw"])
def test_each_mode_trains_and_exports(tiny_dataset, mlp_init, tmp_path, mode):
    from accelerate.utils import set_seed

    init = [] if mode == "rw" else [f"--model.init={mlp_init}"]
    cfg = _cfg("tiny_mlp_cpu.yaml", tiny_dataset, tmp_path, f"--model.mode={mode}", *init, "--train.max_steps=6",
               "--train.eval_every=3", "--train.save_every=0")
    set_seed(cfg.train.seed)
    initial = _weights(mlp_init) if init else \
        {k: v.clone() for k, v in build_finetune_model(load_config(None, ["--model.backbone=mlp"]).model)
         .state_dict().items()}
    summary = train(cfg)
    if init:  # every tensor came from the checkpoint (same task: nothing re-initialised)
        assert summary["init"]["loaded"] == len(initial) and summary["init"]["reinitialised"] == []
    assert summary["torch_num_threads"] == 1 and summary["torch_num_threads_source"] == "OMP_NUM_THREADS"
    exported = _weights(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "train_config.json").read_text())["model"]["mode"] == mode
    trunk = [k for k in exported if k.startswith("event_mlp.")]
    changed = {k for k in trunk if not torch.equal(exported[k], initial[k])}
    assert not torch.equal(exported["head.weight"], initial["head.weight"])  # the head trains in every mode
    if mode == "frozen":
        assert not changed and summary["n_trainable"] < summary["n_params"]
    elif mode == "lora":
        assert (tmp_path / "adapter" / "adapter_config.json").is_file()
        adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
        assert adapter["r"] == cfg.model.lora_r and adapter["modules_to_save"] == ["head"]
        # merged LoRA changes exactly the target Linear weights, never the norms
        assert changed and all(k.endswith(".weight") and "norm" not in k for k in changed)
        assert summary["n_trainable"] < summary["n_params"] / 5
    else:
        assert len(changed) == len(trunk)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val/loss" in r] == [3, 6]
    assert rows[-1]["compute/flops"] > 0 and rows[-1]["compute/events"] == 6 * 32


def test_classification_with_class_and_bin_weights(tiny_dataset, tmp_path):
    cfg = _cfg("tiny_mlp_cpu.yaml", tiny_dataset, tmp_path, "--model.task=classification", "--train.max_steps=4",
               "--train.eval_every=4", "--train.save_every=0",
               "--optim.bin_weighting={column: e_avail, edges: [0, 0.5, 1, 2, 100]}")
    train(cfg)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert len(config["class_weights"]) == 5 and min(config["class_weights"]) > 1.0  # N_total / N_class
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= last["val/cc1pi_charged_auroc"] <= 1.0 and "val/ccnpi_charged_tpr_at_cut_fpr" in last


def test_resume_after_sigkill_equals_uninterrupted_run(tiny_dataset, tmp_path):
    common = ["--train.max_steps=40", "--train.save_every=10", "--train.eval_every=20", "--data.shuffle_buffer=64"]
    killed = tmp_path / "killed"
    args = [sys.executable, str(FINETUNE), "--config", str(CONFIGS / "tiny_omnilearned_cpu.yaml"),
            f"--data.path={tiny_dataset}", f"--train.output_dir={killed}", "--train.tracker=none",
            "--train.progress=false", *common]
    proc = subprocess.Popen(args, env=_env(), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = killed / "checkpoints" / "step-10" / "train_state.json"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill: {err.decode()[-2000:]}"
    assert not (killed / "model").exists()
    resumed = subprocess.run([*args, "--resume"], env=_env(), cwd=REPO_ROOT, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert b"resumed from" in resumed.stdout + resumed.stderr

    reference = tmp_path / "reference"
    train(_cfg("tiny_omnilearned_cpu.yaml", tiny_dataset, reference, *common))
    got, want = _weights(killed / "model"), _weights(reference / "model")
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
    val = [[json.loads(r)["val/loss"] for r in (d / "metrics.jsonl").read_text().splitlines() if "val/loss" in r]
           for d in (killed, reference)]
    assert val[0] == pytest.approx(val[1], rel=1e-5) and len(val[1]) == 2


def test_two_process_ddp_matches_one_process_with_same_global_batch(tiny_dataset, tmp_path):
    common = ["--train.max_steps=6", "--train.eval_every=3", "--train.save_every=3", "--train.log_every=3",
              "--data.shuffle_buffer=64", "--train.tracker=none", "--train.progress=false",
              f"--data.path={tiny_dataset}"]
    base = ["--config", str(CONFIGS / "tiny_mlp_cpu.yaml"), *common]
    ddp = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", str(free_port()), str(FINETUNE),
                          *base, f"--train.output_dir={tmp_path / 'ddp'}", "--data.batch_size=16"],
                         env=_env(), cwd=REPO_ROOT, capture_output=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr.decode()[-3000:]
    single = tmp_path / "single"
    train(_cfg("tiny_mlp_cpu.yaml", tiny_dataset, single, *common[:5], "--data.batch_size=32"))
    # both ranks wrote their data position; each saw half the events
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints" / "step-3").glob("data_state_*.json")) == \
        ["data_state_0.json", "data_state_1.json"]
    rows = {name: [json.loads(r) for r in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("ddp", "single")}
    assert [r["compute/events"] for r in rows["ddp"] if "val/loss" in r] == [96, 192]
    assert [r["val/events"] for r in rows["ddp"] if "val/loss" in r] == [128, 128]
    ddp_val = [r["val/loss"] for r in rows["ddp"] if "val/loss" in r]
    single_val = [r["val/loss"] for r in rows["single"] if "val/loss" in r]
    assert ddp_val == pytest.approx(single_val, rel=1e-4)
    got, want = _weights(tmp_path / "ddp" / "model"), _weights(single / "model")
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5, msg=key)


def test_lora_trains_the_reinitialised_input_layers_and_counts_no_head_twice():
    """A transferred backbone's new input layers (config.new_parameter_names) train in full under LoRA, are saved in the
    adapter, and peft's frozen head copy is not counted as a model parameter."""
    from peft import get_peft_model_state_dict

    import modeling
    from recipes.config import ModelConfig
    from recipes.finetune import parameter_counts, wrap_lora

    new = ["pid_embedding.weight", "event_embedding.fc1.weight", "event_embedding.fc1.bias"]
    model = modeling.build_model("omnilearned", "classification", size="tiny", new_parameter_names=new)
    n_model = sum(p.numel() for p in model.parameters())
    cfg = ModelConfig(backbone="omnilearned", size="tiny", task="classification", mode="lora", init="x", lora_r=2)
    peft_model = wrap_lora(model, cfg)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    for name in new:
        module, _, leaf = name.rpartition(".")
        assert any(n.endswith(f"pet.{module}.modules_to_save.default.{leaf}") for n in trainable), name
    assert not any(n.endswith("pet.pid_embedding.original_module.weight") for n in trainable)
    assert parameter_counts(peft_model)[0] == n_model + sum(p.numel() for n, p in peft_model.named_parameters()
                                                            if "lora_" in n)
    assert any("pid_embedding" in k for k in get_peft_model_state_dict(peft_model)), "the adapter must carry the re-initialised PID table"
