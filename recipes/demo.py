"""`minerva-fm demo`: the whole chain on a synthetic sample, on CPU, in one run folder.

Steps: synthetic AnaTuples (30k events + a 10 % shifted 1B-like file) -> Parquet (dataset_builder.convert) -> per
task, the event MLP and a full fine-tuning of OmniLearned PET (CPU-sized preset tiny_omnilearned_cpu.yaml unless
--paper-sizes) -> per task, a LoRA run on the other task's pet-full backbone (or on --init weights) -> evaluation of
each PET run against the calorimetric / cut baselines and the MLP on the whole test split -> comparison plots ->
model cards. Headline numbers: regression IQR of E_pred/E_true overall and at low q3 (0, 1.2] GeV (MPV as a bias
check); classification TPR at the cut tagger's FPR.

Run folder layout (`--out`, default runs/demo)::

    root/                       synthetic AnaTuple ROOT files (…run0011000x… nominal, …run0011100x… shifted)
    data/                       converted Parquet: data/data/{train,validation,test,shifted}/*.parquet, manifest.json,
                                README.md dataset card
    runs/<task>/mlp/            event-MLP baseline run: metrics.jsonl, logs/, best/, model/, train_summary.json
    runs/<task>/pet-full/       PET full fine-tuning: same, and model/ holds eval_results.json, plots/, README.md card
    runs/<task>/pet-lora/       PET LoRA: same, plus adapter/ (peft adapter); model/ is the merged model
    plots/                      comparisons: <task>_resolution_vs_q3.png, <task>_tpr_<signal>_vs_<var>.png,
                                <task>_val_loss_vs_steps.png, <task>_val_loss_vs_flops.png
    summary.json                headline numbers of every model and baseline per task (+ timings)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from recipes.config import load_config

# PET runs of the demo: (name, mode); the MLP baseline is added per task.
PET_RUNS = (("pet-full", "full"), ("pet-lora", "lora"))

CONFIGS = Path(__file__).parent / "configs"
# Defaults of the README job (`minerva-fm demo --out runs/demo`): sized for a few minutes on 2 CPU cores.
DEFAULT_EVENTS = 30_000
# CPU-sized PET optimisation per task: (optimizer steps, batch, peak lr); the paper presets keep their YAML values.
# Regression needs more, smaller steps to resolve the low-q3 region (30k events, tiny PET, IQR of E_pred/E_true:
# 800 x 128 @ 5e-3 -> 0.268, 1600 x 64 @ 1e-2 -> 0.208, 3000 x 64 @ 1e-2 -> 0.192; calorimetric 0.237).
TINY_PET_RUNS = {"regression": (3000, 64, 1e-2), "classification": (800, 128, 5e-3)}
DEFAULT_STEPS = None  # None: the per-task steps above; an int overrides them for every PET run
MLP_STEPS, MLP_BATCH, MLP_LR = 1000, 256, 1e-2  # the event MLP is ~15x cheaper per event and converges by then
WARMUP_FRACTION = 0.05
VALIDATION_EVENTS = 2048  # events per validation pass during training (the final evaluation uses the whole split)


def demo_config(task: str, backbone_yaml: str, out: Path, data: Path, steps: int, mode: str, name: str,
                init: str | None, extra: list[str] = ()):
    """The run config of one demo fine-tuning run (YAML preset + demo cadence + overrides)."""
    mode = "rw" if mode == "full" and not init else mode  # no pretrained weights: mode full needs init, so rw
    eval_every = max(steps // 5, 1)
    overrides = [f"--data.path={data}", f"--train.output_dir={out}", f"--train.max_steps={steps}",
                 f"--train.eval_every={eval_every}", "--train.save_every=0", f"--train.log_every={eval_every}",
                 f"--model.task={task}", f"--model.mode={mode}", f"--name={name}",
                 f"--optim.warmup_steps={max(round(WARMUP_FRACTION * steps), 1)}",
                 f"--data.max_eval_events={VALIDATION_EVENTS}", *extra]
    overrides.append(f"--model.init={init if init and mode != 'rw' else 'null'}")
    return load_config(CONFIGS / backbone_yaml, overrides)


def _pet_schedule(task: str, steps: int | None, paper_sizes: bool) -> tuple[int, list[str]]:
    """PET optimizer steps and batch/lr overrides of one task (the paper presets keep their YAML batch and lr)."""
    default_steps, batch, lr = TINY_PET_RUNS[task]
    steps = steps or default_steps
    return steps, ([] if paper_sizes else [f"--data.batch_size={batch}", f"--optim.lr={lr}"])


def run_demo(out: str | Path = "runs/demo", n_events: int = DEFAULT_EVENTS, steps: int | None = DEFAULT_STEPS,
             paper_sizes: bool = False, tasks: tuple[str, ...] = ("regression", "classification"), seed: int = 0,
             init: str | None = None) -> dict:
    """Generate -> convert -> fine-tune (PET full/LoRA + MLP) -> evaluate -> plots -> cards; returns the summary.

    Without `init` the full runs start from random weights and each LoRA run starts from the *other* task's pet-full
    export (the demo's stand-in for a pre-trained backbone; its own task's run when only one task is asked for).
    """
    from dataset_builder.convert import ConvertOptions, convert
    from dataset_builder.synthetic import write_anatuples
    from recipes import plots
    from recipes.evaluate import evaluate, headline
    from recipes.finetune import train

    out = Path(out)
    timings = {}
    summary = {"events": n_events, "steps": steps, "paper_sizes": paper_sizes, "headline_metric":
               "regression: IQR of E_pred/E_true overall and at low q3 (0, 1.2] GeV (MPV = bias check); "
               "classification: TPR at the cut tagger's FPR", "tasks": {}}
    t0 = time.time()
    nominal = write_anatuples(out / "root", n_events=n_events, seed=seed, n_files=2)
    shifted = write_anatuples(out / "root", n_events=max(n_events // 10, 10), seed=seed + 1, shifted=True)
    data = out / "data"
    convert(nominal + shifted, data, ConvertOptions(shifted_globs=tuple(p.name for p in shifted)), workers=1,
            progress=False)
    _dataset_card(data)
    timings["generate_convert_s"] = round(time.time() - t0, 1)

    pet_yaml = "omnilearned_small_full.yaml" if paper_sizes else "tiny_omnilearned_cpu.yaml"
    mlp_extra = ([] if paper_sizes else [f"--data.batch_size={MLP_BATCH}", f"--optim.lr={MLP_LR}"]) + \
        (["--model.overrides.zeroed_event_features=[2]"] if paper_sizes else [])
    mlp_steps = min(steps, MLP_STEPS) if steps else MLP_STEPS
    for task in tasks:  # phase 1: MLP + full fine-tuning per task
        t_task = time.time()
        runs = out / "runs" / task
        train(demo_config(task, "tiny_mlp_cpu.yaml", runs / "mlp", data, mlp_steps, "full", "mlp", None, mlp_extra))
        pet_steps, pet_extra = _pet_schedule(task, steps, paper_sizes)
        train(demo_config(task, pet_yaml, runs / "pet-full", data, pet_steps, "full", "pet-full", init, pet_extra))
        timings[f"{task}_train_full_s"] = round(time.time() - t_task, 1)
    for task in tasks:  # phase 2: LoRA, evaluation, plots, cards
        t_task = time.time()
        runs = out / "runs" / task
        lora_init = init or str(out / "runs" / _other_task(task, tasks) / "pet-full" / "model")
        pet_steps, pet_extra = _pet_schedule(task, steps, paper_sizes)
        train(demo_config(task, pet_yaml, runs / "pet-lora", data, pet_steps, "lora", "pet-lora", lora_init, pet_extra))
        task_results, metrics_files = {}, {"mlp": runs / "mlp" / "metrics.jsonl"}
        for name, _ in PET_RUNS:
            metrics_files[name] = runs / name / "metrics.jsonl"
            task_results[name] = evaluate(str(runs / name / "model"), str(data), "test",
                                          mlp=str(runs / "mlp" / "model"), data_origin="synthetic")
            _model_card(runs / name / "model")
        summary["tasks"][task] = _task_summary(task, task_results, headline)
        summary["tasks"][task]["pet-lora"]["init"] = "given --init" if init else \
            f"runs/{_other_task(task, tasks)}/pet-full/model"
        _comparison_plots(task, task_results, metrics_files, out / "plots", plots)
        timings[f"{task}_lora_eval_s"] = round(time.time() - t_task, 1)
    summary["timings"] = {**timings, "total_s": round(time.time() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


def _other_task(task: str, tasks: tuple[str, ...]) -> str:
    """The task whose pet-full export seeds this task's LoRA run (itself when it is the only task)."""
    others = [t for t in tasks if t != task]
    return others[0] if others else task


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


__all__ = ["run_demo", "demo_config", "DEFAULT_EVENTS", "DEFAULT_STEPS"]
