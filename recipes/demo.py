"""`minerva-fm demo`: the whole chain on a synthetic sample, on CPU, in one run folder.

Steps: synthetic AnaTuples (30k events + a 10 % shifted 1B-like file) -> Parquet (dataset_builder.convert) + dataset
card with plots -> a small masked-object pretraining of PET on the demo's own training events without labels
(recipes/pretrain.py; skipped with --init) -> per task, the event MLP and four PET runs: rw (random weights), full,
frozen and LoRA from the pretrained backbone (CPU-sized preset tiny_omnilearned_cpu.yaml unless --paper-sizes) ->
evaluation of every PET run against the calorimetric / cut baselines and the MLP on the whole test split and on the
shifted split (out of distribution) -> comparison plots -> model cards (the LoRA adapter folder gets its own).
Headline numbers: regression IQR of E_pred/E_true overall and at low q3 (0, 1.2] GeV (MPV as a bias check);
classification TPR at the cut tagger's FPR; summary.json puts pretrained and rw side by side.

Run folder layout (`--out`, default runs/demo)::

    root/                       synthetic AnaTuple ROOT files (…run0011000x… nominal, …run0011100x… shifted)
    dataset/                    converted dataset (a Hub dataset repo): data/{train,validation,test,shifted}/*.parquet,
                                manifest.json, README.md (dataset card), plots/
    pretrain/                   masked-object pretraining run; pretrain/backbone/ is the backbone the PET runs start from
    runs/<task>/mlp/            event-MLP baseline run: metrics.jsonl, logs/, best/, model/, train_summary.json
    runs/<task>/pet-<mode>/     PET runs, mode rw / full / frozen / lora: same, and model/ holds eval_results.json,
                                plots/, README.md card and eval/shifted/eval_results.json
    runs/<task>/pet-lora/       also adapter/ (peft adapter + its own card, loads on base/) and base/; model/ is merged
    plots/                      comparisons: <task>_resolution_vs_q3.png, <task>_tpr_<signal>_vs_<var>.png,
                                <task>_val_loss_vs_steps.png, <task>_val_loss_vs_flops.png
    summary.json                headline numbers of every model and baseline per task and split, pretrained vs rw,
                                timings
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dataset_builder.convert import ConvertOptions, convert
from dataset_builder.dataset_card import write_dataset_card
from dataset_builder.synthetic import write_anatuples
from minerva_common.atomic import write_text_atomic
from recipes import plots
from recipes.config import load_config
from recipes.evaluate import SPLITS_DIR, evaluate, headline, write_card
from recipes.finetune import train

# PET runs of the demo: (name, mode); the MLP baseline is added per task. rw needs no init, the others start from the
# pretrained backbone (or --init).
PET_RUNS = (("pet-rw", "rw"), ("pet-full", "full"), ("pet-frozen", "frozen"), ("pet-lora", "lora"))
OOD_SPLIT = "shifted"  # the 1B-like sample with shifted detector response

CONFIGS = Path(__file__).parent / "configs"
# Defaults of the README job (`minerva-fm demo --out runs/demo`): sized for about ten minutes on 2 CPU cores.
DEFAULT_EVENTS = 30_000
# CPU-sized PET optimisation per task: (optimizer steps, batch, peak lr); the paper presets keep their YAML values.
# Regression needs more, smaller steps to resolve the low-q3 region (30k events, tiny PET, rw, IQR of E_pred/E_true:
# 800 x 128 @ 5e-3 -> 0.268, 1600 x 64 @ 1e-2 -> 0.208, 3000 x 64 @ 1e-2 -> 0.192; calorimetric 0.237).
TINY_PET_RUNS = {"regression": (1500, 64, 1e-2), "classification": (500, 128, 5e-3)}
DEFAULT_STEPS = None  # None: the per-task steps above; an int overrides them for every PET run
MLP_STEPS, MLP_BATCH, MLP_LR = 1000, 256, 1e-2  # the event MLP is ~15x cheaper per event and converges by then
# LoRA at the tiny size (hidden 32): rank 4 is the rank-to-width ratio of r = 16 at the paper's hidden 128; the adapters
# are ~3 % of the base parameters, the task head (trained in full) ~68 % (train_summary.json "lora" has the counts).
TINY_LORA = ("--model.lora_r=4", "--model.lora_alpha=8")
PRETRAIN_STEPS, PRETRAIN_BATCH = 300, 64  # masked-object pretraining of the tiny PET on the demo's training events
WARMUP_FRACTION = 0.05
# torch threads of the tiny CPU runs when OMP_NUM_THREADS is unset. Measured on a 2-core machine, tiny PET, batch 64:
# idle, 2 threads ~30 optimizer steps/s, 1 thread 0.041 s per forward+backward (~24/s); with other processes on the
# cores, 2 threads collapse to 1-3 s per step (spinning threads) while 1 thread stays at 0.04 s.
TINY_THREADS = 1
VALIDATION_EVENTS = 2048  # events per validation pass during training (the final evaluation uses the whole split)


def demo_config(task: str, backbone_yaml: str, out: Path, data: Path, steps: int, mode: str, name: str,
                init: str | None, extra: list[str] = ()):
    """The run config of one demo fine-tuning run (YAML preset + demo cadence + overrides)."""
    eval_every = max(steps // 5, 1)
    overrides = [f"--data.path={data}", f"--train.output_dir={out}", f"--train.max_steps={steps}",
                 f"--train.eval_every={eval_every}", "--train.save_every=0", f"--train.log_every={eval_every}",
                 f"--model.task={task}", f"--model.mode={mode}", f"--name={name}",
                 f"--optim.warmup_steps={max(round(WARMUP_FRACTION * steps), 1)}",
                 f"--data.max_eval_events={VALIDATION_EVENTS}", *extra,
                 f"--model.init={init if init and mode != 'rw' else 'null'}"]
    if backbone_yaml.startswith("tiny_"):
        overrides.append(f"--train.num_threads={tiny_threads()}")
    return load_config(CONFIGS / backbone_yaml, overrides)


def tiny_threads() -> str:
    """`train.num_threads` of the tiny runs: OMP_NUM_THREADS when set (null lets finetune read it), else 1."""
    return "null" if os.environ.get("OMP_NUM_THREADS", "").isdigit() else str(TINY_THREADS)


def _pet_schedule(task: str, steps: int | None, paper_sizes: bool) -> tuple[int, list[str]]:
    """PET optimizer steps and batch/lr overrides of one task (the paper presets keep their YAML batch and lr)."""
    default_steps, batch, lr = TINY_PET_RUNS[task]
    steps = steps or default_steps
    return steps, ([] if paper_sizes else [f"--data.batch_size={batch}", f"--optim.lr={lr}"])


def run_demo(out: str | Path = "runs/demo", n_events: int = DEFAULT_EVENTS, steps: int | None = DEFAULT_STEPS,
             paper_sizes: bool = False, tasks: tuple[str, ...] = ("regression", "classification"), seed: int = 0,
             init: str | None = None, pretrain_steps: int | None = None) -> dict:
    """Generate -> convert -> pretrain -> fine-tune (PET rw/full/frozen/LoRA + MLP) -> evaluate (test, shifted) ->
    plots -> cards; returns the summary (also written to `out`/summary.json).

    Without `init` the full, frozen and LoRA runs start from the demo's own masked-object pretraining
    (`pretrain/backbone`); with it, from those weights (no pretraining).
    """
    out = Path(out)
    t0 = time.time()
    timings = {}
    data = prepare_dataset(out, n_events, seed)
    timings["generate_convert_s"] = round(time.time() - t0, 1)
    if init is None:
        t_pre = time.time()
        init = str(pretrain_backbone(out / "pretrain", data, pretrain_steps or PRETRAIN_STEPS, paper_sizes))
        timings["pretrain_s"] = round(time.time() - t_pre, 1)
        init_label = "pretrain/backbone (masked-object pretraining on the demo's training events)"
    else:
        init_label = f"--init {init}"
    summary = {"events": n_events, "steps": steps, "paper_sizes": paper_sizes, "init": init_label,
               "headline_metric": "regression: IQR of E_pred/E_true overall and at low q3 (0, 1.2] GeV (MPV = bias "
                                  "check); classification: TPR at the cut tagger's FPR",
               "tasks": {}, OOD_SPLIT: {}, "pretrained_vs_rw": {}}
    for task in tasks:
        t_task = time.time()
        runs = train_task(out / "runs" / task, task, data, init, steps, paper_sizes)
        timings[f"{task}_train_s"] = round(time.time() - t_task, 1)
        t_eval = time.time()
        results = evaluate_task(out, task, data, runs, init_label)
        summary["tasks"][task], summary[OOD_SPLIT][task] = results["test"], results[OOD_SPLIT]
        summary["pretrained_vs_rw"][task] = side_by_side(task, results["test"], results[OOD_SPLIT])
        timings[f"{task}_evaluate_s"] = round(time.time() - t_eval, 1)
    summary["timings"] = {**timings, "total_s": round(time.time() - t0, 1)}
    path = write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(format_side_by_side(summary["pretrained_vs_rw"]))
    print(f"demo: wrote {out} (summary {path}, {summary['timings']['total_s']:.0f} s)")
    return summary


def prepare_dataset(out: Path, n_events: int, seed: int) -> Path:
    """Synthetic AnaTuples (2 nominal files + 1 shifted) -> out/dataset (Parquet, manifest, card with plots)."""
    nominal = write_anatuples(out / "root", n_events=n_events, seed=seed, n_files=2)
    shifted = write_anatuples(out / "root", n_events=max(n_events // 10, 10), seed=seed + 1, shifted=True)
    data = out / "dataset"
    convert(nominal + shifted, data, ConvertOptions(shifted_globs=tuple(p.name for p in shifted)), workers=1,
            progress=False)
    write_dataset_card(data, plots=True)
    return data


def pretrain_backbone(out: Path, data: Path, steps: int, paper_sizes: bool) -> Path:
    """Masked-object pretraining of PET on the training events (no labels); returns the backbone folder."""
    from recipes.pretrain import run_pretraining

    record = run_pretraining(pretrain_config(out, data, steps, paper_sizes))
    return Path(record["output_dir"])


def pretrain_config(out: Path, data: Path, steps: int, paper_sizes: bool):
    """The demo's pretraining config: pretrain_pet_minerva_mom_tiny.yaml (the tiny fine-tuning architecture) or, with
    --paper-sizes, the same objective on the paper's small PET."""
    from recipes.pretrain import load_pretrain_config

    overrides = [f"--data.path={data}", f"--train.output_dir={out}", f"--train.max_steps={steps}",
                 f"--train.eval_every={max(steps // 5, 1)}", f"--train.log_every={max(steps // 5, 1)}",
                 "--train.save_every=0", f"--train.num_threads={'null' if paper_sizes else tiny_threads()}",
                 f"--data.max_eval_events={VALIDATION_EVENTS}",
                 f"--optim.warmup_steps={max(round(WARMUP_FRACTION * steps), 1)}", "--name=pretrain-mom",
                 "--model.overrides.zeroed_event_features=[2]"]  # as in the fine-tuning runs
    if paper_sizes:
        return load_pretrain_config(None, overrides + [
            "--model.backbone=omnilearned", "--model.size=small", "--objectives.masked_particles=0",
            "--objectives.masked_objects=1", "--objectives.mask_fraction=0.75"])
    return load_pretrain_config(CONFIGS / "pretrain_pet_minerva_mom_tiny.yaml",
                                overrides + [f"--data.batch_size={PRETRAIN_BATCH}"])


def train_task(runs: Path, task: str, data: Path, init: str, steps: int | None, paper_sizes: bool) -> dict:
    """The MLP and the PET runs of one task; {name: run folder}."""
    pet_yaml = "omnilearned_small_full.yaml" if paper_sizes else "tiny_omnilearned_cpu.yaml"
    mlp_extra = ([] if paper_sizes else [f"--data.batch_size={MLP_BATCH}", f"--optim.lr={MLP_LR}"]) + \
        (["--model.overrides.zeroed_event_features=[2]"] if paper_sizes else [])
    mlp_steps = min(steps, MLP_STEPS) if steps else MLP_STEPS
    train(demo_config(task, "tiny_mlp_cpu.yaml", runs / "mlp", data, mlp_steps, "rw", "mlp", None, mlp_extra))
    pet_steps, pet_extra = _pet_schedule(task, steps, paper_sizes)
    for name, mode in PET_RUNS:
        extra = pet_extra + (list(TINY_LORA) if mode == "lora" and not paper_sizes else [])
        train(demo_config(task, pet_yaml, runs / name, data, pet_steps, mode, name, init, extra))
    return {"mlp": runs / "mlp", **{name: runs / name for name, _ in PET_RUNS}}


def evaluate_task(out: Path, task: str, data: Path, runs: dict, init_label: str) -> dict:
    """Evaluate every PET run (test with plots + card, shifted into model/eval/shifted), the LoRA adapter folder,
    the comparison plots; {"test": headline, "shifted": headline} with each run's init."""
    mlp = str(runs["mlp"] / "model")
    test, ood, metrics_files = {}, {}, {"mlp": runs["mlp"] / "metrics.jsonl"}
    for name, mode in PET_RUNS:
        model = runs[name] / "model"
        metrics_files[name] = runs[name] / "metrics.jsonl"
        test[name] = evaluate(str(model), str(data), "test", out_dir=str(model), mlp=mlp, data_origin="synthetic")
        ood[name] = evaluate(str(model), str(data), OOD_SPLIT, out_dir=str(model / SPLITS_DIR / OOD_SPLIT), mlp=mlp,
                             data_origin="synthetic", make_plots=False)
        write_card(model)
    adapter = runs["pet-lora"] / "adapter"  # loads on pet-lora/base; its own card (README.md) replaces PEFT's
    evaluate(str(adapter), str(data), "test", out_dir=str(adapter), mlp=mlp, data_origin="synthetic")
    write_card(adapter)
    _comparison_plots(task, test, metrics_files, out / "plots")
    summary = {}
    for split, results in (("test", test), (OOD_SPLIT, ood)):
        summary[split] = merged_headline(results)
        for name, mode in PET_RUNS:
            summary[split][name]["init"] = "random (rw)" if mode == "rw" else init_label
    return summary


def merged_headline(task_results: dict) -> dict:
    """Headline numbers per estimator (PET runs, MLP, baselines) of one task and split."""
    merged = {}
    for results in task_results.values():
        merged.update(headline(results))
    return merged


def side_by_side(task: str, test: dict, ood: dict) -> dict:
    """The headline metric of each PET run (and baselines) on test and shifted: pretrained inits next to rw."""
    names = [n for n, _ in PET_RUNS] + ["mlp"] + (["calorimetric"] if task == "regression" else ["cut"])

    def metric(entry: dict) -> dict:
        if task == "regression":
            return {"iqr": entry["iqr"], "low_q3_iqr": entry["low_q3_iqr"]}
        return {f"{s}_tpr": b.get("tpr_model", b.get("tpr_cut")) for s, b in entry.items() if isinstance(b, dict)}

    return {split: {n: metric(block[n]) for n in names if n in block} for split, block in (("test", test),
                                                                                          (OOD_SPLIT, ood))}


def format_side_by_side(table: dict) -> str:
    """The side-by-side table as text, one line per task, split and estimator."""
    lines = []
    for task, splits in table.items():
        for split, rows in splits.items():
            for name, values in rows.items():
                shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} -" for k, v in values.items())
                lines.append(f"{task:14s} {split:8s} {name:13s} {shown}")
    return "\n".join(lines)


def _comparison_plots(task: str, task_results: dict, metrics_files: dict, plot_dir: Path) -> None:
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


__all__ = ["run_demo", "demo_config", "DEFAULT_EVENTS", "DEFAULT_STEPS", "PET_RUNS"]
