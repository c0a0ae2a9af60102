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


def evaluation(model, task: str, seed: int = 1, n_bootstrap: int = 20) -> dict:
    """eval_results.json content (the contract of minerva_common/results.py) computed by recipes.evaluate's own entry
    builders from the model's outputs on random events, with bootstrap errors and Clopper-Pearson intervals."""
    from minerva_common.results import json_safe, validate
    from recipes import metrics
    from recipes.evaluate import baseline_entries, model_entry

    rng = np.random.default_rng(seed)
    n = 400
    with torch.no_grad():
        out = model(**random_batch(n, seed))
    e_true = rng.uniform(0.05, 3.0, n)
    arrays = {"n_events": n, "e_avail": e_true, "q3": rng.uniform(0.0, 3.5, n),
              "calo_e_avail": e_true * rng.normal(0.8, 0.3, n), "topology": rng.integers(0, schema.NUM_TOPOLOGIES, n),
              "w": rng.uniform(0, 4, n), "pion_energy": rng.exponential(0.6, n) + 0.14,
              "pion_theta": rng.uniform(0, np.pi, n),
              **{f"tag_{s}": rng.random(n) < 0.3 for s in schema.SIGNAL_CLASSES}}
    if task == "regression":
        arrays["prediction"] = out.predictions.numpy()
    else:
        arrays["probabilities"] = metrics.softmax(out.logits.numpy())
    results = {"schema_version": 1, "task": task, "split": "test", "dataset": "tester/minerva-synthetic",
               "data_origin": "synthetic", "primary_model": "tiny-mlp",
               "models": {"tiny-mlp": model_entry(task, arrays, False, None, n_bootstrap, seed)},
               "baselines": baseline_entries(task, arrays, False, None, n_bootstrap, seed),
               "selection": {"passes_cc_inclusive": False, "n_events": n, "n_selected": n},
               "weights": {"column": "event_weight", "used": False, "reason": "no event_weight column in the data"},
               "uncertainties": {"tpr": "clopper-pearson", "confidence_level": metrics.CONFIDENCE_LEVEL,
                                 "iqr_mpv": "bootstrap", "n_bootstrap": n_bootstrap, "seed": seed},
               "plots": ["plots/summary.png"], "compute": {"eval_events": n, "eval_seconds": 1.25, "device": "cpu"}}
    results = json_safe(results)
    validate(results, "card_run_helpers")
    return results


def train_summary(model, mode: str) -> dict:
    """train_summary.json as recipes/finetune.py writes it (parameter counts of `model`, compute accounting)."""
    params = list(model.parameters())
    return {"step": 3, "best_val_loss": 0.5, "best_step": 3, "n_params": sum(p.numel() for p in params),
            "n_trainable": sum(p.numel() for p in params if p.requires_grad), "compute/flops": 1.5e9,
            "compute/wall_hours": 0.01, "processes": 1, "torch_num_threads": 2, "mode": mode}


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


def make_run_dir(path: Path, task: str = "regression", seed: int = 0, mode: str = "rw", model=None,
                 backbone: str = "mlp", size: str = "small", overrides: dict | None = None) -> Path:
    """Save a tiny model (or `model`, e.g. a PEFT model, of `backbone` at `size` + `overrides`) + eval results +
    train config + train summary + plot into `path`."""
    model = model if model is not None else tiny_model(task, seed)
    model.save_pretrained(path)
    (path / "eval_results.json").write_text(json.dumps(evaluation(model, task)), encoding="utf-8")
    (path / "train_summary.json").write_text(json.dumps(train_summary(model, mode)))
    (path / "train_config.json").write_text(json.dumps({
        "name": "tiny-mlp", "data": {"path": str(path.parent / "data")},
        "model": {"backbone": backbone, "task": task, "mode": mode, "size": size,
                  "overrides": TINY if overrides is None else overrides},
        "optim": {"lr": 1e-4, "weight_decay": 0.01},
        "train": {"max_steps": 3, "batch_size": 8, "seed": seed, "output_dir": str(path)}}))
    write_plot(path / "plots" / "summary.png")
    (path / "optimizer.bin").write_bytes(b"not for the hub")  # training state that must not be uploaded
    return path


def run_fresh_python(code: str, cwd: Path) -> str:
    """Run `code` in a new isolated interpreter (-I: the project is not importable), return stdout."""
    proc = subprocess.run([sys.executable, "-I", "-c", isolated_code(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout
