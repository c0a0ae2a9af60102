"""Helpers of the card/publish tests: run folders with a tiny saved model (modeling.build_model), its eval_results.json computed
with recipes.metrics on random events, a resolved train config and one matplotlib plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from dataset_builder import schema
from isolated_python import isolated_code

TINY = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1)


def random_batch(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """A model batch of `n` events (docs/tensor-layout.md) with 5 objects each."""
    g = torch.Generator().manual_seed(seed)
    return {"object_features": torch.randn(n, 5, schema.NUM_OBJECT_FEATURES, generator=g),
            "object_pid": torch.randint(1, schema.PID_VOCAB_SIZE, (n, 5), generator=g),
            "attention_mask": torch.ones(n, 5, dtype=torch.bool),
            "event_features": torch.randn(n, schema.NUM_EVENT_FEATURES, generator=g)}


def tiny_model(task: str, seed: int = 0):
    """A 1-layer event MLP for `task` with random weights."""
    from modeling import build_model

    torch.manual_seed(seed)
    return build_model("mlp", task, **TINY).eval()


def evaluation(model, task: str, seed: int = 1) -> dict:
    """eval_results.json content computed with recipes.metrics from the model's outputs on random events."""
    from recipes import metrics

    rng = np.random.default_rng(seed)
    batch = random_batch(400, seed)
    with torch.no_grad():
        out = model(**batch)
    base = {"task": task, "split": "test", "dataset": "tester/minerva-synthetic", "data_origin": "synthetic",
            "plots": ["plots/summary.png"], "compute": {"hardware": "cpu", "num_processes": 1}}
    if task == "regression":
        e_true = rng.uniform(0.05, 3.0, 400)
        q3 = rng.uniform(0.0, 3.5, 400)
        calo = e_true * rng.normal(0.8, 0.3, 400)
        return {**base, "models": {"tiny-mlp": {"regression": metrics.binned_resolution(
                    out.predictions.numpy(), e_true, q3)}},
                "baselines": {"calorimetric": {"regression": metrics.binned_resolution(calo, e_true, q3)}}}
    topology = rng.integers(0, schema.NUM_TOPOLOGIES, 400)
    probabilities = metrics.softmax(out.logits.numpy())
    classification = {}
    for signal in schema.SIGNAL_CLASSES:
        score = metrics.signal_score(probabilities, signal)
        tag = rng.random(400) < 0.3
        m = metrics.tagging_metrics(score, tag, topology, signal,
                                    {"w": (rng.uniform(0, 4, 400), list(metrics.W_EDGES))})
        classification[signal] = m
    return {**base, "models": {"tiny-mlp": {"classification": classification}}}


def write_plot(path: Path) -> None:
    """A small PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def make_run_dir(path: Path, task: str = "regression", seed: int = 0, mode: str = "rw", model=None) -> Path:
    """Save a tiny model (or `model`, e.g. a PEFT model) + eval results + train config + plot into `path`."""
    model = model if model is not None else tiny_model(task, seed)
    model.save_pretrained(path)
    (path / "eval_results.json").write_text(json.dumps(evaluation(model, task)), encoding="utf-8")
    (path / "train_config.json").write_text(json.dumps({
        "model": {"backbone": "mlp", "task": task, "mode": mode, **TINY},
        "optim": {"lr": 1e-4, "weight_decay": 0.01}, "train": {"max_steps": 3, "batch_size": 8, "seed": seed}}))
    write_plot(path / "plots" / "summary.png")
    (path / "optimizer.bin").write_bytes(b"not for the hub")  # training state that must not be uploaded
    return path


def run_fresh_python(code: str, cwd: Path) -> str:
    """Run `code` in a new isolated interpreter (-I: the project is not importable), return stdout."""
    proc = subprocess.run([sys.executable, "-I", "-c", isolated_code(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout
