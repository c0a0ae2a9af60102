"""`minerva-fm demo`: the whole chain on a synthetic sample, on CPU, in one run folder.

Steps: synthetic AnaTuples (plus a shifted 1B-like file) -> Parquet (dataset_builder.convert) -> fine-tune OmniLearned
PET (CPU-sized preset unless --paper-sizes) in full and LoRA mode plus the event MLP, per task -> evaluate each PET
run against the calorimetric / cut baselines (and the MLP) on the test split -> comparison plots -> model cards.

Run folder layout (`--out`, default runs/demo)::

    root/                       synthetic AnaTuple ROOT files (…run0011000x… nominal, …run0011100x… shifted)
    data/                       converted Parquet: data/{train,validation,test,shifted}/*.parquet + manifest.json
    runs/<task>/<name>/         one fine-tuning run each (see recipes/finetune.py): metrics.jsonl, logs/, model/
                                (save_pretrained + train_config + eval_results.json + plots/ + README.md card),
                                adapter/ for LoRA
    plots/                      comparisons: <task>_resolution_vs_q3.png, <task>_tpr_<signal>_vs_<var>.png,
                                <task>_val_loss_vs_steps.png, <task>_val_loss_vs_flops.png
    summary.json                headline numbers of every model and baseline per task (+ timings)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from recipes.config import load_config

CONFIGS = Path(__file__).parent / "configs"
# PET runs of the demo: (name, mode); the MLP baseline is added per task.
PET_RUNS = (("pet-full", "full"), ("pet-lora", "lora"))


def demo_config(task: str, backbone_yaml: str, out: Path, data: Path, steps: int, mode: str, name: str,
                init: str | None, extra: list[str] = ()):
    """The run config of one demo fine-tuning run (tiny CPU base + overrides)."""
    eval_every = max(steps // 5, 1)
    overrides = [f"--data.path={data}", f"--train.output_dir={out}", f"--train.max_steps={steps}",
                 f"--train.eval_every={eval_every}", "--train.save_every=0", f"--train.log_every={eval_every}",
                 f"--model.task={task}", f"--model.mode={mode}", f"--name={name}", "--data.batch_size=64",
                 "--optim.warmup_steps=20", *extra]
    overrides.append(f"--model.init={init if init and mode != 'rw' else 'null'}")
    return load_config(CONFIGS / backbone_yaml, overrides)


def run_demo(out: str | Path = "runs/demo", n_events: int = 6000, steps: int = 300, paper_sizes: bool = False,
             tasks: tuple[str, ...] = ("regression", "classification"), seed: int = 0, init: str | None = None) -> dict:
    """Generate -> convert -> fine-tune (PET full/LoRA + MLP) -> evaluate -> plots -> cards; returns the summary."""
    from dataset_builder.convert import ConvertOptions, convert
    from dataset_builder.synthetic import write_anatuples
    from recipes import plots
    from recipes.evaluate import evaluate, headline
    from recipes.finetune import train

    out = Path(out)
    timings, summary = {}, {"events": n_events, "steps": steps, "paper_sizes": paper_sizes, "tasks": {}}
    t0 = time.time()
    nominal = write_anatuples(out / "root", n_events=n_events, seed=seed, n_files=2)
    shifted = write_anatuples(out / "root", n_events=max(n_events // 10, 10), seed=seed + 1, shifted=True)
    data = out / "data"
    convert(nominal + shifted, data, ConvertOptions(shifted_globs=tuple(p.name for p in shifted)), workers=1,
            progress=False)
    _dataset_card(data)
    timings["generate_convert_s"] = round(time.time() - t0, 1)

    pet_yaml = "omnilearned_small_full.yaml" if paper_sizes else "tiny_omnilearned_cpu.yaml"
    for task in tasks:
        t_task = time.time()
        runs = out / "runs" / task
        mlp_cfg = demo_config(task, "tiny_mlp_cpu.yaml", runs / "mlp", data, steps, "full", "mlp", None)
        train(mlp_cfg)
        task_results, metrics_files = {}, {"mlp": runs / "mlp" / "metrics.jsonl"}
        for name, mode in PET_RUNS:
            extra = ["--optim.lr=1e-3"] if not paper_sizes else []
            cfg = demo_config(task, pet_yaml, runs / name, data, steps, mode, name, init, extra)
            train(cfg)
            metrics_files[name] = runs / name / "metrics.jsonl"
            results = evaluate(str(runs / name / "model"), str(data), "test", mlp=str(runs / "mlp" / "model"),
                               data_origin="synthetic")
            task_results[name] = results
            _model_card(runs / name / "model")
        summary["tasks"][task] = _task_summary(task, task_results, headline)
        _comparison_plots(task, task_results, metrics_files, out / "plots", plots)
        timings[f"{task}_s"] = round(time.time() - t_task, 1)
    summary["timings"] = {**timings, "total_s": round(time.time() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


def _task_summary(task: str, task_results: dict, headline) -> dict:
    """Headline numbers per estimator (PET runs, MLP, baselines) of one task."""
    merged = {}
    for results in task_results.values():
        merged.update(headline(results))
    return merged


def _comparison_plots(task: str, task_results: dict, metrics_files: dict, plot_dir: Path, plots) -> None:
    entries = {}
    for results in task_results.values():
        for group in ("models", "baselines"):
            for name, entry in results[group].items():
                entries.setdefault(name, entry[task])
    if task == "regression":
        plots.plot_resolution_vs_q3(entries, plot_dir / f"{task}_resolution_vs_q3.png", "synthetic test")
    else:
        models = {n: e for n, e in entries.items() if n != "cut"}
        first = next(iter(models.values()))
        for signal, block in first.items():
            for variable in block.get("bins_by_variable", {}):
                plots.plot_tpr_bins(models, signal, variable, plot_dir / f"{task}_tpr_{signal}_vs_{variable}.png")
    plots.plot_training_curves(metrics_files, plot_dir / f"{task}_val_loss_vs_steps.png")
    plots.plot_training_curves(metrics_files, plot_dir / f"{task}_val_loss_vs_flops.png", x="compute/flops")


def _dataset_card(data: Path) -> None:
    try:
        from dataset_builder.dataset_card import write_dataset_card
    except ImportError:
        return
    write_dataset_card(data, plots=False)


def _model_card(model_dir: Path) -> None:
    try:
        from model_cards.render import write_model_card
    except ImportError:
        return
    write_model_card(model_dir)


__all__ = ["run_demo", "demo_config"]
