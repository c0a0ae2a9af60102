"""Evaluate a fine-tuned model on a split against the calorimetric and cut-based baselines; write `eval_results.json`.

    python recipes/evaluate.py --model runs/x/model --data converted/ --split test [--mlp runs/mlp/model] [--out DIR]
    minerva-fm evaluate --model user/minerva-pet-small --data user/minerva-me-fhc --split test

`--model` / `--mlp` are save_pretrained folders (with config.json; a LoRA adapter folder is loaded on its base) or Hub
model ids; `--data` a converted Parquet folder or a Hub dataset id. The results go to `--out` (default: the model
folder when local), as `eval_results.json` plus `plots/*.png`: the files model_cards/render.py and the Space read.

`eval_results.json` schema (JSON; NaN written as null; GeV throughout)::

    {
      "schema_version": 1,
      "task": "regression" | "classification",
      "split": "test", "dataset": "<--data>", "dataset_revision": null | "<rev>",
      "data_origin": "synthetic" | "simulation" | "data" | null,
      "primary_model": "<name of --model>",
      "models": {                                   # the model, and the MLP when --mlp is given
        "<name>": {
          "source": "<path or repo id>", "backbone": "...", "mode": "...", "size": "...",
          "regression": {                           # task == regression
            "q3_bins": [[0.0, 0.6], ..., [2.4, 3.0]],   # the paper's 5 plotted q3 bins, membership (lo, hi]
            "iqr": [...], "mpv": [...], "iqr_over_mpv": [...], "rms": [...], "n": [...],   # of r = E_pred/E_true
            "overall": {"iqr", "mpv", "iqr_over_mpv", "rms", "n"},   # every selected event
            "low_q3": {...same...},                  # q3 in (0, 1.2] GeV, the region the paper highlights
            "low_q3_range": [0.0, 1.2],              # the (lo, hi] q3 range of "low_q3" (GeV)
            "overflow": {...same...}                 # q3 in (3, 100] (not plotted)
          },
          "classification": {                       # task == classification; one entry per tagging task
            "<signal>": {                            # cc1pi_charged | ccnpi_charged | cc1pi0 (schema.SIGNAL_CLASSES)
              "fpr_cut": x, "tpr_cut": y,            # the cut tagger's working point on this split
              "tpr_model": z, "fpr_model": x', "threshold": t,   # model at the largest FPR <= fpr_cut (global ROC)
              "auroc": a, "n_signal": n, "n_background": m,
              "bins": {"variable": "w", "edges": [...], "tpr_model": [...], "tpr_cut": [...], "n_signal": [...]},
              "bins_by_variable": {"w": {...same...}, "pion_energy": {...}, "pion_theta": {...}}
            }
          }
        }
      },
      "baselines": {"calorimetric": {"regression": {...}}}  |  {"cut": {"classification": {<signal>: {fpr_cut,
                    tpr_cut, bins, bins_by_variable}}}},
      "selection": {"passes_cc_inclusive": true, "e_true_min": 0.05, "pred_zero_below": 0.01},
      "plots": ["plots/resolution_vs_q3.png", ...],   # relative to the results folder
      "compute": {"eval_events": N, "eval_seconds": s, "device": "cpu"}
    }

Binning: q3 (lo, hi]; W edges 0, 0.5, ..., 4.0 GeV and equal-frequency pion energy / angle bins on true signal with a
pion, membership [lo, hi) with the last bin closed (recipes/metrics.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python recipes/evaluate.py` / `accelerate launch recipes/evaluate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minerva_common.atomic import write_text_atomic  # noqa: E402
from dataset_builder.schema import SIGNAL_CLASSES  # noqa: E402
from recipes import metrics  # noqa: E402

RESULTS_FILE = "eval_results.json"
SCHEMA_VERSION = 1
REGRESSION_COLUMNS = ("e_avail", "q3", "passes_cc_inclusive", "calo_e_avail")
CLASSIFICATION_COLUMNS = ("topology", "w", "pion_energy", "pion_theta",
                          *(f"tag_{signal}" for signal in SIGNAL_CLASSES))
PION_TASKS = ("cc1pi_charged", "cc1pi0")  # tasks with one pion whose energy / angle is binned


# ------------------------------------------------------------------------------------------------- model loading
def resolve_model_dir(path_or_repo: str, revision: str | None = None) -> Path:
    """A local folder as is, else `snapshot_download` of a Hub model id."""
    if Path(path_or_repo).is_dir():
        return Path(path_or_repo)
    if Path(path_or_repo).exists() or path_or_repo.count("/") != 1:
        raise FileNotFoundError(f"model {path_or_repo!r} is neither a folder nor a Hub model id (namespace/name)")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(path_or_repo, revision=revision))


def model_class_for(architecture: str):
    """(backbone, modeling class) for `architecture` (config.json "architectures"), old head names included."""
    from modeling import model_class_for_architecture

    return model_class_for_architecture(architecture)


def load_model(path_or_repo: str, revision: str | None = None):
    """(model in eval mode, info dict) from a save_pretrained folder, a LoRA adapter folder or a Hub id."""
    folder = resolve_model_dir(path_or_repo, revision)
    train_config = _read_json(folder / "train_config.json")
    info = {"source": str(path_or_repo), **{k: train_config.get("model", {}).get(k)
                                             for k in ("backbone", "size", "mode", "task")},
            "name": train_config.get("name") or Path(str(path_or_repo).rstrip("/")).name}
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        model = _load_adapter(folder)
    else:
        config = _read_json(folder / "config.json")
        if not config.get("architectures"):
            raise FileNotFoundError(f"{folder}/config.json is missing or names no 'architectures'")
        backbone, cls = model_class_for(config["architectures"][0])
        info["backbone"] = info["backbone"] or backbone
        model = cls.from_pretrained(str(folder))
    is_regression = getattr(_base(model).config, "problem_type", None) == "regression"  # the one head's task
    info["task"] = info["task"] or ("regression" if is_regression else "classification")
    return model.eval(), info


def _load_adapter(folder: Path):
    from peft import PeftModel

    adapter = _read_json(folder / "adapter_config.json")
    base_ref = adapter.get("base_model_name_or_path")
    if not base_ref:
        raise ValueError(f"{folder}/adapter_config.json has no base_model_name_or_path to load the adapter onto")
    base, _ = load_model(base_ref, adapter.get("revision"))
    return PeftModel.from_pretrained(base, str(folder))


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ------------------------------------------------------------------------------------------------------ prediction
def predict(model, tables, collator, device="cpu", autocast=None) -> dict[str, np.ndarray]:
    """Run `model` over Arrow batches: {"prediction": (N,) GeV} (regression) or {"probabilities": (N, 5)}, plus
    every truth/baseline column of REGRESSION_COLUMNS / CLASSIFICATION_COLUMNS present in the tables.

    With a task collator (labels in the batch) the model's loss is summed too: "loss_sum" (sum of batch-mean loss x
    batch size) and "n_events".
    """
    import contextlib

    import torch

    wanted = REGRESSION_COLUMNS + CLASSIFICATION_COLUMNS
    outputs, columns = [], {}
    regression, loss_sum, n_events = None, 0.0, 0
    with torch.no_grad():
        for table in tables:
            batch = {k: v.to(device) for k, v in collator.collate_arrow(table).items()}
            with autocast() if autocast else contextlib.nullcontext():
                out = model(**batch)
            if out.loss is not None:
                loss_sum += float(out.loss) * table.num_rows
            n_events += table.num_rows
            regression = getattr(out, "predictions", None) is not None
            values = out.predictions if regression else torch.softmax(out.logits.float(), dim=-1)
            outputs.append(values.float().cpu().numpy())
            for name in wanted:
                if name in table.schema.names:
                    columns.setdefault(name, []).append(_column_numpy(table, name))
    if not outputs:
        return {"loss_sum": np.float64(0.0), "n_events": np.int64(0)}
    result = {name: np.concatenate(parts) for name, parts in columns.items()}
    result["prediction" if regression else "probabilities"] = np.concatenate(outputs)
    result.update(loss_sum=np.float64(loss_sum), n_events=np.int64(n_events))
    return result


def _column_numpy(table, name: str) -> np.ndarray:
    column = table.column(name)
    values = column.to_numpy(zero_copy_only=False)
    if column.null_count:
        values = np.where(column.is_null().to_numpy(zero_copy_only=False), np.nan, values.astype(np.float64))
    return values


# ------------------------------------------------------------------------------------------------- result entries
def regression_entry(e_pred: np.ndarray, arrays: dict, use_selection: bool = True) -> dict:
    """The `regression` block of eval_results.json for one estimator (schema in the module docstring)."""
    passes = arrays.get("passes_cc_inclusive") if use_selection else None
    out = metrics.binned_resolution(e_pred, arrays["e_avail"], arrays["q3"], metrics.Q3_EDGES, passes)
    plotted, overflow = out["bins"][:-1], out["bins"][-1]
    entry = {"q3_bins": [[b["lo"], b["hi"]] for b in plotted]}
    for key in ("iqr", "mpv", "iqr_over_mpv", "rms", "n"):
        entry[key] = [b[key] for b in plotted]
    entry.update(overall=out["overall"], low_q3=out["low_q3"], low_q3_range=[0.0, metrics.LOW_Q3_MAX],
                 overflow={k: v for k, v in overflow.items() if k not in ("lo", "hi", "overflow")})
    return entry


def bin_edges_for(arrays: dict, signal: str) -> dict[str, list[float]]:
    """Binning variables of one tagging task: W always; pion energy and angle (equal-frequency on signal) if it has one."""
    edges = {"w": list(metrics.W_EDGES)}
    if signal in PION_TASKS and "pion_energy" in arrays:
        y = metrics.is_signal(arrays["topology"], signal) & (arrays["pion_energy"] > 0)
        if y.sum() >= metrics.N_EQUAL_FREQUENCY_BINS:
            edges["pion_energy"] = metrics.equal_frequency_edges(arrays["pion_energy"][y])
            edges["pion_theta"] = metrics.equal_frequency_edges(arrays["pion_theta"][y])
    return edges


def classification_entries(probabilities: np.ndarray | None, arrays: dict) -> tuple[dict, dict]:
    """(model `classification` block, cut-baseline `classification` block) over every tagging task."""
    model_block, cut_block = {}, {}
    for signal in SIGNAL_CLASSES:
        tag = np.asarray(arrays[f"tag_{signal}"], dtype=bool)
        edges = bin_edges_for(arrays, signal)
        variables = {name: (arrays[name], e) for name, e in edges.items()}
        y = metrics.is_signal(arrays["topology"], signal)
        if not y.any() or y.all():
            continue
        cut_tpr, cut_fpr = metrics.tag_rates(tag, y)
        cut_bins = {name: metrics.binned_tpr(y, tag, values, e) for name, (values, e) in variables.items()}
        cut_block[signal] = {"fpr_cut": cut_fpr, "tpr_cut": cut_tpr, "n_signal": int(y.sum()),
                             "n_background": int((~y).sum()), **_bins_blocks(edges, cut_bins, None)}
        if probabilities is None:
            continue
        score = metrics.signal_score(probabilities, signal)
        res = metrics.tagging_metrics(score, tag, arrays["topology"], signal, variables)
        model_block[signal] = {
            "fpr_cut": cut_fpr, "tpr_cut": cut_tpr, "tpr_model": res["model"]["tpr"], "fpr_model": res["model"]["fpr"],
            "threshold": res["model"]["threshold"], "auroc": res["model"]["auroc"], "n_signal": res["n_signal"],
            "n_background": res["n_background"], **_bins_blocks(edges, res["cut"]["bins"], res["model"]["bins"])}
    return model_block, cut_block


def _bins_blocks(edges: dict, cut_bins: dict, model_bins: dict | None) -> dict:
    by_variable = {}
    for name, e in edges.items():
        block = {"variable": name, "edges": list(map(float, e)), "tpr_cut": [b["tpr"] for b in cut_bins[name]],
                 "n_signal": [b["n_signal"] for b in cut_bins[name]]}
        if model_bins is not None:
            block["tpr_model"] = [b["tpr"] for b in model_bins[name]]
        by_variable[name] = block
    return {"bins": by_variable["w"], "bins_by_variable": by_variable}


def model_entry(task: str, predictions: dict, use_selection: bool = True) -> dict:
    """The task block of one model from `predict` output."""
    if task == "regression":
        return {"regression": regression_entry(predictions["prediction"], predictions, use_selection)}
    return {"classification": classification_entries(predictions["probabilities"], predictions)[0]}


def baseline_entries(task: str, arrays: dict, use_selection: bool = True) -> dict:
    """The calorimetric (regression) or cut-tagger (classification) baseline blocks from the Parquet columns."""
    if task == "regression":
        return {"calorimetric": {"regression": regression_entry(arrays["calo_e_avail"], arrays, use_selection)}}
    return {"cut": {"classification": classification_entries(None, arrays)[1]}}


def summary_metrics(task: str, predictions: dict, use_selection: bool = True) -> dict:
    """A few scalars for logging during training: overall / low-q3 IQR/MPV, or per-task TPR at the cut's FPR."""
    entry = model_entry(task, predictions, use_selection)[task]
    if task == "regression":
        return {"iqr_over_mpv": entry["overall"]["iqr_over_mpv"], "iqr": entry["overall"]["iqr"],
                "mpv": entry["overall"]["mpv"], "low_q3_iqr_over_mpv": entry["low_q3"]["iqr_over_mpv"]}
    out = {}
    for signal, block in entry.items():
        out[f"{signal}_tpr_at_cut_fpr"] = block["tpr_model"]
        out[f"{signal}_tpr_cut"] = block["tpr_cut"]
        out[f"{signal}_auroc"] = block["auroc"]
    return out


# ------------------------------------------------------------------------------------------------------- evaluate
def evaluate(model: str, data: str, split: str = "test", out_dir: str | None = None, mlp: str | None = None,
             revision: str | None = None, data_revision: str | None = None, batch_size: int = 4096,
             max_events: int | None = None, use_selection: bool = True, data_origin: str | None = None,
             make_plots: bool = True) -> dict:
    """Predict `split` with the model (and MLP), add the baselines, write eval_results.json (+ plots); return it."""
    from dataset_builder.collator import MinervaCollator
    from recipes.data import iter_tables, load_split

    start = time.time()
    dataset = load_split(data, split, data_revision)
    collator = MinervaCollator(task=None)
    out = Path(out_dir) if out_dir else (Path(model) if Path(model).is_dir() else Path("eval") / model.replace("/", "__"))
    results: dict = {"schema_version": SCHEMA_VERSION, "split": split, "dataset": str(data),
                     "dataset_revision": data_revision, "data_origin": data_origin, "models": {}}
    predictions = None
    for index, source in enumerate([model] + ([mlp] if mlp else [])):
        net, info = load_model(source, revision if index == 0 else None)
        predictions = predict(net, iter_tables(dataset, batch_size, max_events), collator)
        if not predictions["n_events"]:
            raise ValueError(f"split {split!r} of {data} has no events")
        name = info["name"] if info["name"] not in results["models"] else f"{info['name']}-{index}"
        results.setdefault("task", info["task"])
        results.setdefault("primary_model", name)
        if info["task"] != results["task"]:
            raise ValueError(f"{source} is a {info['task']} model but {model} is {results['task']}")
        results["models"][name] = {**{k: info.get(k) for k in ("source", "backbone", "size", "mode")},
                                   **model_entry(info["task"], predictions, use_selection)}
    results["baselines"] = baseline_entries(results["task"], predictions, use_selection)
    results["selection"] = {"passes_cc_inclusive": use_selection, "e_true_min": metrics.TRUE_MIN,
                            "pred_zero_below": metrics.PRED_ZERO_BELOW}
    results["compute"] = {"eval_events": int(predictions["n_events"]), "eval_seconds": round(time.time() - start, 2), "device": "cpu"}
    results["plots"] = []
    if make_plots:
        from recipes import plots

        results["plots"] = plots.plot_eval_results(results, out / "plots", relative_to=out)
    write_results(results, out / RESULTS_FILE)
    return results


def write_results(results: dict, path: Path) -> Path:
    """Atomically write results as strict JSON (NaN/inf -> null)."""
    return write_text_atomic(path, json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n")


def json_safe(value):
    """Nested structure with numpy scalars converted and NaN/inf replaced by None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The evaluate command-line options (shared by this script and `minerva-fm evaluate`)."""
    parser.add_argument("--model", required=True, help="save_pretrained/adapter folder or Hub model id")
    parser.add_argument("--data", required=True, help="converted Parquet folder or Hub dataset id")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=None, help="results folder (default: the model folder)")
    parser.add_argument("--mlp", default=None, help="also evaluate this (MLP) model for comparison")
    parser.add_argument("--revision", default=None, help="Hub revision of --model")
    parser.add_argument("--data-revision", default=None)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--max-events", type=int, default=None)
    parser.add_argument("--no-selection", action="store_true", help="skip the CC-inclusive regression selection")
    parser.add_argument("--data-origin", choices=("synthetic", "simulation", "data"), default=None)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--push_to_hub", "--push-to-hub", metavar="REPO_ID", default=None,
                        help="after evaluating a local model folder, render its card and push it to this model repo")
    return parser


def run_from_args(args: argparse.Namespace) -> dict:
    """Run `evaluate` from parsed arguments and print the headline numbers."""
    results = evaluate(args.model, args.data, args.split, args.out, args.mlp, args.revision, args.data_revision,
                       args.batch_size, args.max_events, not args.no_selection, args.data_origin, not args.no_plots)
    print(json.dumps(headline(results), indent=2))
    if args.push_to_hub:
        push_evaluated_model(args, results)
    return results


def push_evaluated_model(args: argparse.Namespace, results: dict) -> str:
    """Push the evaluated local model folder (weights, code, eval JSON, plots, rendered card) to `args.push_to_hub`."""
    from model_cards.publish import push_model  # the publishing step, downstream of evaluation: imported on demand

    folder = Path(args.out or args.model)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise ValueError(f"--push_to_hub needs the results next to a local model folder; {folder} holds no model "
                         "(evaluate without --out, or push the folder later with `minerva-fm push-model`)")
    dataset_id = args.data if not Path(args.data).exists() else None
    url = push_model(folder, args.push_to_hub, dataset_id=dataset_id)
    print(f"pushed {folder} -> {url}")
    return url


def headline(results: dict) -> dict:
    """Short summary: overall and low-q3 IQR of E_pred/E_true (the paper's headline; MPV and IQR/MPV as bias checks)
    per estimator, or TPR at the cut's FPR per task."""
    out = {}
    for group in ("models", "baselines"):
        for name, entry in results.get(group, {}).items():
            if "regression" in entry:
                reg = entry["regression"]
                out[name] = {"iqr": reg["overall"]["iqr"], "low_q3_iqr": reg["low_q3"]["iqr"],
                             "mpv": reg["overall"]["mpv"], "low_q3_mpv": reg["low_q3"]["mpv"],
                             "iqr_over_mpv": reg["overall"]["iqr_over_mpv"],
                             "low_q3_iqr_over_mpv": reg["low_q3"]["iqr_over_mpv"], "n": reg["overall"]["n"]}
            elif "classification" in entry:
                out[name] = {s: {k: b.get(k) for k in ("fpr_cut", "tpr_cut", "tpr_model", "auroc") if k in b}
                             for s, b in entry["classification"].items()}
    return json_safe(out)


def main(argv: list[str] | None = None) -> int:
    """`python recipes/evaluate.py --model ... --data ... --split test`."""
    run_from_args(add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
