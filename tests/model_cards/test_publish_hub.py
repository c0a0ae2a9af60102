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


# ------------------------------------------------------------------ trust: nothing from outside the run folder
def _cli(argv, capsys) -> tuple[int, str]:
    from recipes.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err


def _with_plots(run, plots):
    results = json.loads((run / "eval_results.json").read_text())
    (run / "eval_results.json").write_text(json.dumps({**results, "plots": plots}))
    return run


@pytest.mark.parametrize("how", ["absolute", "symlink", "dotdot", "symlinked-log", "symlinked-code"])
def test_files_outside_the_run_folder_are_never_uploaded(hub, tmp_path, capsys, how):
    secret = "hf_stored_login_token_must_stay_home"
    token_file = tmp_path / "hf_home" / "token"
    token_file.parent.mkdir()
    token_file.write_text(secret)
    run = make_run_dir(tmp_path / "run", "regression")
    if how == "absolute":
        _with_plots(run, ["plots/summary.png", str(token_file)])
    elif how == "symlink":
        (run / "plots" / "loss.png").symlink_to(token_file)
        _with_plots(run, ["plots/summary.png", "plots/loss.png"])
    elif how == "dotdot":
        _with_plots(run, ["plots/summary.png", "../hf_home/token"])
    elif how == "symlinked-log":
        (run / "logs").mkdir()
        (run / "logs" / "events.out.tfevents.1.host").symlink_to(token_file)
    else:
        (run / "helpers.py").symlink_to(token_file)
    repo = f"{hub.user}/outside-{how}"
    rc, err = _cli(["push-model", str(run), repo], capsys)
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("minerva-fm push-model: error: ")
    assert ("../hf_home/token" in err) if how == "dotdot" else ("outside the run folder" in err)
    assert secret not in err
    assert not HfApi().repo_exists(repo)  # refused before anything was sent


def test_symlinks_that_stay_inside_the_run_folder_are_uploaded(hub, tmp_path):
    run = make_run_dir(tmp_path / "run", "regression")
    (run / "plots" / "alias.png").symlink_to(run / "plots" / "summary.png")
    _with_plots(run, ["plots/summary.png", "plots/alias.png"])
    repo = f"{hub.user}/inside-symlink"
    push_model(run, repo)
    alias = HfApi().hf_hub_download(repo, "plots/alias.png")
    assert open(alias, "rb").read() == (run / "plots" / "summary.png").read_bytes()


def test_malformed_eval_json_is_a_one_line_error(hub, tmp_path, capsys):
    """(read-only and full disks: tests/dataset_builder/test_trust_cli_errors.py, push-model among the commands)"""
    run = make_run_dir(tmp_path / "run", "regression")
    (run / "eval_results.json").write_text("{not json")
    rc, err = _cli(["push-model", str(run), f"{hub.user}/malformed"], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "eval_results.json: not valid JSON" in err, err
    assert not HfApi().repo_exists(f"{hub.user}/malformed")


# ---------------------------------------------------------- a real LoRA training run: model, adapter, ONNX, logs
LORA_RUN_CHECK = """
import json, sys
import numpy as np, onnxruntime, torch
from huggingface_hub import hf_hub_download
from peft import PeftModel
from safetensors.torch import load_file
import transformers
repo, base = sys.argv[1], sys.argv[2]
config = json.load(open(hf_hub_download(repo, "config.json")))
auto = [k for k, v in config["auto_map"].items() if v.endswith(config["architectures"][0])][0]
merged = getattr(transformers, auto).from_pretrained(repo, trust_remote_code=True).eval()
batch = load_file("batch.safetensors")
base_model = getattr(transformers, auto).from_pretrained(base, trust_remote_code=True)
adapted = PeftModel.from_pretrained(base_model, repo, subfolder="adapter").eval()
session = onnxruntime.InferenceSession(hf_hub_download(repo, "model.onnx"), providers=["CPUExecutionProvider"])
feeds = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
with torch.no_grad():
    out = {"merged": merged(**batch).predictions.tolist(), "adapter": adapted(**batch).predictions.tolist(),
           "onnx": session.run(["predictions"], feeds)[0].tolist()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A real `recipes.finetune` LoRA run (tiny event MLP, TensorBoard tracker) evaluated on its test split."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
    from recipes_test_helpers import REPO_ROOT, write_dataset

    import modeling
    from recipes.config import load_config
    from recipes.evaluate import evaluate
    from recipes.finetune import train

    root = tmp_path_factory.mktemp("lora_run")
    data = write_dataset(root / "data", {"train": 128, "validation": 64, "test": 64})
    torch.manual_seed(7)
    init = root / "init"
    modeling.build_model("mlp", "regression", "small", zeroed_event_features=[2]).save_pretrained(str(init))
    run = root / "run"
    train(load_config(REPO_ROOT / "recipes" / "configs" / "tiny_mlp_cpu.yaml", [
        f"--data.path={data}", f"--train.output_dir={run}", "--train.tracker=tensorboard", "--train.progress=false",
        "--model.mode=lora", f"--model.init={init}", "--train.max_steps=4", "--train.eval_every=2",
        "--train.save_every=0", "--train.log_every=1"]))
    evaluate(str(run / "model"), str(data), "test", n_bootstrap=0)
    return run, init


def test_lora_run_folder_uploads_a_loadable_model_adapter_onnx_and_logs(hub, lora_run, tmp_path, capsys):
    run, init = lora_run
    assert (run / "adapter" / "adapter_config.json").is_file() and not (run / "model" / "model.onnx").exists()
    repo = f"{hub.user}/tiny-mlp-lora-run"
    rc, err = _cli(["push-model", str(run), repo, "--onnx"], capsys)
    assert rc == 0, err
    files = set(HfApi().list_repo_files(repo))
    events = sorted(p.relative_to(run).as_posix() for p in (run / "logs").rglob("*tfevents*"))
    assert events and set(events) <= files  # logs/<project>/events.out.tfevents.*: the Hub's training metrics
    assert {"model.safetensors", "config.json", "model.onnx", "onnx_export.json", "eval_results.json", "README.md",
            "adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= files
    assert not any(name.startswith(("checkpoints/", "best/")) or name.endswith(".bin") for name in files)
    for name in events:
        assert open(HfApi().hf_hub_download(repo, name), "rb").read() == (run / name).read_bytes()
    import inspect

    from model_cards.render import write_model_card

    if "logs" in inspect.signature(write_model_card).parameters:  # the card sections of model_cards/render.py
        card = ModelCard.load(repo).text
        assert "### ONNX" in card and "TensorBoard logs are in [`logs/`]" in card
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {tag for name in events for tag in EventAccumulator(HfApi().hf_hub_download(repo, name)).Reload()
            .Tags()["scalars"]}
    assert {"train/loss", "val/loss"} <= tags
    batch = random_batch(6, seed=4)
    save_file(batch, tmp_path / "batch.safetensors")
    from modeling.export import load_saved_model

    with torch.no_grad():
        expected = load_saved_model(str(run / "model"))(**batch).predictions
    import subprocess
    import sys

    from isolated_python import isolated_code

    proc = subprocess.run([sys.executable, "-I", "-c", isolated_code(LORA_RUN_CHECK), repo, str(init)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("merged", "adapter", "onnx"):
        torch.testing.assert_close(torch.tensor(got[name]).reshape(-1), expected.reshape(-1), atol=1e-4, rtol=1e-3)


def test_model_folder_inside_a_run_takes_the_run_logs_and_a_stale_onnx_is_refused(hub, lora_run, tmp_path, capsys):
    import shutil

    run = shutil.copytree(lora_run[0], tmp_path / "run", symlinks=True)
    model_dir = run / "model"
    if not (model_dir / "model.onnx").exists():  # the --onnx push of the test above writes it into the run
        from modeling.export import write_onnx_export

        write_onnx_export(str(model_dir), model_dir)
    repo = f"{hub.user}/tiny-mlp-lora-model-folder"
    push_model(model_dir, repo)  # no --onnx: the up-to-date export in the folder goes up as it is
    files = set(HfApi().list_repo_files(repo))
    assert any(name.startswith("logs/") and "tfevents" in name for name in files)
    assert {"adapter/adapter_model.safetensors", "model.safetensors", "model.onnx", "onnx_export.json"} <= files
    assert HfApi().model_info(repo).sha and open(HfApi().hf_hub_download(repo, "model.onnx"), "rb").read() == \
        (model_dir / "model.onnx").read_bytes()
    (model_dir / "model.onnx").write_bytes(b"an export of earlier weights")
    os.utime(model_dir / "model.onnx", (1, 1))
    rc, err = _cli(["push-model", str(model_dir), f"{hub.user}/stale-onnx"], capsys)
    assert rc == 1 and "model.onnx: older than model.safetensors" in err, err
    assert not HfApi().repo_exists(f"{hub.user}/stale-onnx")
