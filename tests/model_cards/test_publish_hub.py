"""push_model / push-model against the loopback Hub: card validation, remote-code load in a fresh process,
history on re-push, token handling, PEFT adapters."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import save_file

from card_run_helpers import make_run_dir, random_batch, run_fresh_python, tiny_model
from model_cards.publish import PublishError, push_model

LOAD_AND_PREDICT = """
import importlib.util, json, sys
import torch
from safetensors.torch import load_file
import transformers
from huggingface_hub import hf_hub_download
repo, revision, attr = sys.argv[1] if len(sys.argv) > 1 else {repo!r}, {revision!r}, {attr!r}
config = json.load(open(hf_hub_download(repo, "config.json", revision=revision)))
auto = [k for k, v in config["auto_map"].items() if v.endswith(config["architectures"][0])][0]
model = getattr(transformers, auto).from_pretrained(repo, revision=revision, trust_remote_code=True).eval()
{adapter}
batch = load_file("batch.safetensors")
with torch.no_grad():
    out = getattr(model(**batch), attr)
print(json.dumps(out.reshape(-1).tolist()))
"""


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fresh_predictions(tmp_path, repo, attr, revision=None, adapter_repo=None) -> torch.Tensor:
    adapter = ("from peft import PeftModel\nmodel = PeftModel.from_pretrained(model, %r).eval()" % adapter_repo
               if adapter_repo else "")
    code = LOAD_AND_PREDICT.format(repo=repo, revision=revision, attr=attr, adapter=adapter)
    return torch.tensor(json.loads(run_fresh_python(code, tmp_path).strip().splitlines()[-1]))


def test_push_then_load_in_fresh_process_and_card_round_trips(hub, tmp_path):
    run = make_run_dir(tmp_path / "run", "regression")
    repo = f"{hub.user}/tiny-mlp-e-avail"
    url = push_model(run, repo)
    assert repo in url
    files = set(HfApi().list_repo_files(repo))
    assert {"model.safetensors", "config.json", "configuration_minerva_event_mlp.py", "modeling_minerva_event_mlp.py",
            "eval_results.json", "train_config.json", "plots/summary.png", "README.md"} <= files
    assert "optimizer.bin" not in files
    card = ModelCard.load(repo)
    card.validate()  # POST /api/validate-yaml on the loopback Hub
    local = ModelCard.load(run / "README.md")
    assert [(r.metric_config, r.metric_value) for r in card.data.eval_results] == \
           [(r.metric_config, r.metric_value) for r in local.data.eval_results] != []
    batch = random_batch(8, seed=5)
    save_file(batch, tmp_path / "batch.safetensors")
    model = tiny_model("regression")  # same seed as the saved run
    with torch.no_grad():
        expected = model(**batch).predictions
    torch.testing.assert_close(_fresh_predictions(tmp_path, repo, "predictions"), expected, atol=1e-6, rtol=1e-5)


def test_repush_keeps_history(hub, tmp_path):
    repo = f"{hub.user}/tiny-mlp-history"
    api = HfApi()
    push_model(make_run_dir(tmp_path / "v1", "classification", seed=1), repo, commit_message="first")
    first_eval = json.loads(open(api.hf_hub_download(repo, "eval_results.json")).read())
    push_model(make_run_dir(tmp_path / "v2", "classification", seed=2), repo, commit_message="second")
    commits = api.list_repo_commits(repo)
    titles = [c.title for c in commits]
    assert titles[:2] == ["second", "first"]
    old = json.loads(open(api.hf_hub_download(repo, "eval_results.json", revision=commits[1].commit_id)).read())
    assert old == first_eval
    batch = random_batch(4, seed=9)
    save_file(batch, tmp_path / "batch.safetensors")
    with torch.no_grad():
        v1 = tiny_model("classification", seed=1)(**batch).logits.reshape(-1)
    torch.testing.assert_close(_fresh_predictions(tmp_path, repo, "logits", revision=commits[1].commit_id), v1,
                               atol=1e-6, rtol=1e-5)


def test_missing_token_is_a_clear_error(hub, tmp_path, monkeypatch):
    run = make_run_dir(tmp_path / "run", "regression")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token-here"))
    before = {p.name: _sha256(p) for p in run.iterdir() if p.is_file()}
    with pytest.raises(PublishError, match="no Hugging Face token"):
        push_model(run, f"{hub.user}/never-created")
    assert {p.name: _sha256(p) for p in run.iterdir() if p.is_file()} == before
    assert not HfApi().repo_exists(f"{hub.user}/never-created")


def test_failed_upload_keeps_files_and_never_shows_the_token(hub, tmp_path, caplog, capsys):
    run = make_run_dir(tmp_path / "run", "regression")
    weights = _sha256(run / "model.safetensors")
    secret = "hf_wrong_secret_token_123456"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PublishError) as info:
        push_model(run, f"{hub.user}/rejected", token=secret)
    message = str(info.value)
    assert "rejected" in message and "failed" in message and "401" in message
    assert secret not in message and secret not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is not None  # chain suppressed in tracebacks
    captured = capsys.readouterr()
    assert secret not in caplog.text and secret not in captured.out and secret not in captured.err
    assert _sha256(run / "model.safetensors") == weights and (run / "eval_results.json").is_file()


def test_lora_adapter_push_loads_with_peft_in_fresh_process(hub, tmp_path):
    from peft import LoraConfig, get_peft_model

    from modeling import get_lora_target_modules

    base_repo = f"{hub.user}/tiny-mlp-base"
    push_model(make_run_dir(tmp_path / "base", "regression", seed=3), base_repo)
    # the local class: in-process Auto classes map the MLP config to the classification head (see report)
    base = type(tiny_model("regression")).from_pretrained(base_repo).eval()
    batch = random_batch(6, seed=11)
    with torch.no_grad():
        plain = base(**batch).predictions  # before get_peft_model wraps the base in place
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=get_lora_target_modules(base),
                                                 init_lora_weights=False))  # non-zero B: the adapter matters
    run = make_run_dir(tmp_path / "lora", "regression", mode="lora", model=peft_model)
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == base_repo
    adapter_repo = f"{hub.user}/tiny-mlp-lora"
    push_model(run, adapter_repo)
    files = set(HfApi().list_repo_files(adapter_repo))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "eval_results.json"} <= files
    assert "model.safetensors" not in files
    card = ModelCard.load(adapter_repo)
    assert card.data.library_name == "peft" and card.data.base_model == base_repo
    save_file(batch, tmp_path / "batch.safetensors")
    with torch.no_grad():
        expected = peft_model(**batch).predictions
    assert not torch.allclose(expected, plain)
    got = _fresh_predictions(tmp_path, base_repo, "predictions", adapter_repo=adapter_repo)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_cli_push_model(hub, tmp_path, capsys):
    from recipes.cli import main

    run = make_run_dir(tmp_path / "run", "classification")
    repo = f"{hub.user}/tiny-mlp-cli"
    assert main(["push-model", str(run), repo, "--message", "from the CLI"]) == 0
    assert repo in capsys.readouterr().out
    assert HfApi().list_repo_commits(repo)[0].title == "from the CLI"
    env_token = os.environ["HF_TOKEN"]
    assert env_token not in (run / "README.md").read_text()
