"""Evaluate a fine-tuned model on a split against the calorimetric and cut-based baselines; write `eval_results.json`.

    python recipes/evaluate.py --model runs/x/model --data converted/ --split test [--mlp runs/mlp/model] [--out DIR]
    minerva-fm evaluate --model user/minerva-pet-small --data user/minerva-me-fhc --split test

`--model` / `--mlp` are save_pretrained folders (with config.json; a LoRA adapter folder is loaded on its base) or Hub
model ids; `--data` a converted Parquet folder or a Hub dataset id. The results go to `--out` (default: the model
folder when local, `<model>/eval/<split>/` when the model folder already holds the results of another split), as
`eval_results.json` plus `plots/*.png`: the files model_cards/render.py and the Space read. Replacing an existing
`eval_results.json` is reported on the last printed line; its comparison model is evaluated again unless `--mlp`
names another one (or `none`), and an existing model card (README.md) is re-rendered, with a table of the other
splits under `eval/`.

From Python, `evaluate(model, data, split="test", out_dir=None, mlp=None, **options)` takes the other `EvalConfig`
fields as keywords (`run_evaluation(EvalConfig(...))` is the same); the model runs on accelerate's device.

The `eval_results.json` layout, its version and its reader (`load_results`) live in minerva_common/results.py (the
results contract); this module only writes it (`minerva_common.results.dump`).

Event weights: the Parquet column `event_weight` (MC central-value weight; null on data) weights every metric when
present (`--no-weights` turns it off); what was used is recorded under "weights". Statistical uncertainties: bootstrap
on IQR / MPV (`--n-bootstrap`, seeded) and Clopper-Pearson intervals on every TPR, recorded under "uncertainties".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python recipes/evaluate.py` / `accelerate launch recipes/evaluate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minerva_common import results as contract  # noqa: E402
from minerva_common.atomic import write_text_atomic  # noqa: E402
from minerva_common.results import RESULTS_FILE, SIGNAL_CLASSES, WEIGHT_COLUMN, json_safe  # noqa: E402
from recipes import metrics  # noqa: E402

SCHEMA_VERSION = contract.RESULTS_SCHEMA_VERSION
REGRESSION_COLUMNS = ("e_avail", "q3", "passes_cc_inclusive", "calo_e_avail")
CLASSIFICATION_COLUMNS = ("topology", "w", "pion_energy", "pion_theta",
                          *(f"tag_{signal}" for signal in SIGNAL_CLASSES))
PION_TASKS = ("cc1pi_charged", "cc1pi0")  # tasks with one pion whose energy / angle is binned
SPLITS_DIR = "eval"  # <model>/eval/<split>/: results of splits other than the one the card reports
PION_ENERGY_CAP_QUANTILE = 0.95  # pion-energy bins stop here (the high tail is the unplotted "overflow" entry)


@dataclass
class EvalConfig:
    """Everything one evaluation needs (the CLI options of `minerva-fm evaluate`, one field each)."""

    model: str
    data: str
    split: str = "test"
    out_dir: str | None = None  # default: the model folder when local, else eval/<repo id>
    mlp: str | None = None  # a comparison model (the event MLP) evaluated on the same events
    revision: str | None = None  # Hub revision of `model`
    data_revision: str | None = None
    batch_size: int = 4096
    max_events: int | None = None
    use_selection: bool = True  # the CC-inclusive selection of the regression metrics
    use_weights: bool = True  # weight the metrics with the `event_weight` column when present
    n_bootstrap: int = metrics.N_BOOTSTRAP  # bootstrap replicas of the IQR / MPV uncertainties (0: none)
    seed: int = 0  # bootstrap seed
    data_origin: str | None = None
    make_plots: bool = True
    device: str | None = None  # default: accelerate's device for this process (GPU when there is one)

    @property
    def output_dir(self) -> Path:
        """Where eval_results.json and plots/ go: `out_dir`; else a local model folder unless its eval_results.json
        is of another split (then <model>/eval/<split>/, so the card's results stay); else eval/<repo id>."""
        if self.out_dir:
            return Path(self.out_dir)
        if not Path(self.model).is_dir():
            return Path("eval") / self.model.replace("/", "__")
        existing = _read_json(Path(self.model) / RESULTS_FILE)
        if existing and existing.get("split") != self.split:
            return Path(self.model) / SPLITS_DIR / self.split
        return Path(self.model)


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
    from recipes.finetune import quiet_transformers

    with quiet_transformers():
        return _load_model(path_or_repo, revision)


def _load_model(path_or_repo: str, revision: str | None = None):
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
    if not Path(base_ref).is_dir() and (folder.parent / "base").is_dir() and Path(base_ref).is_absolute():
        base_ref = str(folder.parent / "base")  # a moved run folder: the base saved next to the adapter
    base, _ = _load_model(base_ref, adapter.get("revision"))
    return PeftModel.from_pretrained(base, str(folder))


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ------------------------------------------------------------------------------------------------------ prediction
def predict(model, tables, collator, device="cpu", autocast=None) -> dict[str, np.ndarray]:
    """Run `model` over Arrow batches: {"prediction": (N,) GeV} (regression) or {"probabilities": (N, 5)}, plus
    every truth/baseline column of REGRESSION_COLUMNS / CLASSIFICATION_COLUMNS and the event weight present in the
    tables (nulls as NaN).

    With a task collator (labels in the batch) the model's loss is summed too: "loss_sum" (sum of batch-mean loss x
    batch size) and "n_events".
    """
    import contextlib

    import torch

    wanted = REGRESSION_COLUMNS + CLASSIFICATION_COLUMNS + (WEIGHT_COLUMN,)
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


# ----------------------------------------------------------------------------------------------------- event weights
def event_weights(arrays: dict, use_weights: bool = True) -> tuple[np.ndarray | None, dict]:
    """(weights or None, the "weights" record): the `event_weight` column when present, non-null and wanted."""
    record = {"column": WEIGHT_COLUMN, "used": False}
    if WEIGHT_COLUMN not in arrays:
        return None, {**record, "reason": f"no {WEIGHT_COLUMN} column in the data"}
    if not use_weights:
        return None, {**record, "reason": "turned off (--no-weights)"}
    w = np.asarray(arrays[WEIGHT_COLUMN], dtype=np.float64)
    missing = ~np.isfinite(w)
    if missing.all():
        return None, {**record, "reason": f"{WEIGHT_COLUMN} is null for every event (data carry no MC weight)"}
    if missing.any():
        raise ValueError(f"column {WEIGHT_COLUMN}: {int(missing.sum())} of {w.size} events have a null weight "
                         "(expected all set on MC or all null on data); rerun with --no-weights to ignore it")
    return w, {**record, "used": True, "sum": float(w.sum()), "mean": float(w.mean())}


# ------------------------------------------------------------------------------------------------- result entries
def regression_entry(e_pred: np.ndarray, arrays: dict, use_selection: bool = True, weights: np.ndarray | None = None,
                     n_bootstrap: int = 0, seed: int = 0) -> dict:
    """The `regression` block of eval_results.json for one estimator (layout in minerva_common/results.py)."""
    passes = arrays.get("passes_cc_inclusive") if use_selection else None
    out = metrics.binned_resolution(e_pred, arrays["e_avail"], arrays["q3"], contract.Q3_EDGES, passes, weights,
                                    n_bootstrap, seed)
    plotted, overflow = out["bins"][:-1], out["bins"][-1]
    entry = {"q3_bins": [[b["lo"], b["hi"]] for b in plotted]}
    keys = ("iqr", "mpv", "iqr_over_mpv", "rms", "n", "sum_weights") + \
        (("iqr_err", "mpv_err", "iqr_over_mpv_err") if n_bootstrap else ())
    for key in keys:
        entry[key] = [b[key] for b in plotted]
    entry.update(overall=out["overall"], low_q3=out["low_q3"], low_q3_range=[0.0, contract.LOW_Q3_MAX],
                 overflow={k: v for k, v in overflow.items() if k not in ("lo", "hi", "overflow")})
    return entry


def bin_edges_for(arrays: dict, signal: str) -> dict[str, list[float]]:
    """Binning variables of one tagging task: W always; pion energy and angle (equal-frequency on signal) if it has one.

    Pion-energy bins cover the signal's pion energies up to their 95th percentile; the tail above is the "overflow"
    entry, so the last plotted bin does not stretch over the sparse high-energy tail.
    """
    edges = {"w": list(metrics.W_EDGES)}
    if signal in PION_TASKS and "pion_energy" in arrays:
        y = metrics.is_signal(arrays["topology"], signal) & (arrays["pion_energy"] > 0)
        if y.sum() >= metrics.N_EQUAL_FREQUENCY_BINS:
            energy = np.asarray(arrays["pion_energy"], dtype=np.float64)[y]
            cap = float(np.quantile(energy, PION_ENERGY_CAP_QUANTILE))
            edges["pion_energy"] = metrics.equal_frequency_edges(energy[energy <= cap])
            edges["pion_theta"] = metrics.equal_frequency_edges(arrays["pion_theta"][y])
    return edges


def classification_entries(probabilities: np.ndarray | None, arrays: dict, weights: np.ndarray | None = None
                           ) -> tuple[dict, dict]:
    """(model `classification` block, cut-baseline `classification` block) over every tagging task."""
    model_block, cut_block = {}, {}
    for signal in SIGNAL_CLASSES:
        y = metrics.is_signal(arrays["topology"], signal)
        if not y.any() or y.all():
            continue
        tag = np.asarray(arrays[f"tag_{signal}"], dtype=bool)
        edges = bin_edges_for(arrays, signal)
        variables = {name: (arrays[name], e) for name, e in edges.items()}
        score = metrics.signal_score(probabilities, signal) if probabilities is not None else np.zeros(y.size)
        res = metrics.tagging_metrics(score, tag, arrays["topology"], signal, variables, weights)
        selected = score >= res["model"]["threshold"]
        cut = {"fpr_cut": res["cut"]["fpr"], "tpr_cut": res["cut"]["tpr"],
               "tpr_cut_interval": res["cut"]["tpr_interval"],
               "n_signal": res["n_signal"], "n_background": res["n_background"],
               "sum_weights_signal": res["sum_weights_signal"], "sum_weights_background": res["sum_weights_background"]}
        with_model = probabilities is not None
        blocks = _bins_blocks(edges, res, arrays, y, tag, selected if with_model else None, weights)
        cut_block[signal] = {**cut, **blocks}
        if with_model:
            model_block[signal] = {**cut, "tpr_model": res["model"]["tpr"], "fpr_model": res["model"]["fpr"],
                                   "threshold": res["model"]["threshold"], "auroc": res["model"]["auroc"],
                                   "tpr_model_interval": res["model"]["tpr_interval"], **blocks}
    return model_block, cut_block


def _bins_blocks(edges: dict, res: dict, arrays: dict, y, tag, selected, weights) -> dict:
    by_variable = {}
    for name, e in edges.items():
        cut_bins = res["cut"]["bins"][name]
        block = {"variable": name, "edges": list(map(float, e)), "tpr_cut": [b["tpr"] for b in cut_bins],
                 "tpr_cut_lo": [b["tpr_lo"] for b in cut_bins], "tpr_cut_hi": [b["tpr_hi"] for b in cut_bins],
                 "n_signal": [b["n_signal"] for b in cut_bins]}
        if selected is not None:
            model_bins = res["model"]["bins"][name]
            block.update(tpr_model=[b["tpr"] for b in model_bins], tpr_model_lo=[b["tpr_lo"] for b in model_bins],
                         tpr_model_hi=[b["tpr_hi"] for b in model_bins])
        block["overflow"] = _overflow(arrays[name], e[-1], y, tag, selected, weights) if name == "pion_energy" else None
        by_variable[name] = block
    return {"bins": by_variable["w"], "bins_by_variable": by_variable}


def _overflow(values, cap: float, y, tag, selected, weights) -> dict:
    """TPRs of the signal events above the last plotted pion-energy edge."""
    values = np.asarray(values, dtype=np.float64)
    above = y & (values > cap)
    w = np.ones(y.size) if weights is None else weights
    out = {"lo": float(cap), "hi": float(values[above].max()) if above.any() else float(cap),
           "n_signal": int(above.sum()), "tpr_cut": metrics._tpr.efficiency(tag, above, w)["value"]}
    if selected is not None:
        out["tpr_model"] = metrics._tpr.efficiency(selected, above, w)["value"]
    return out


def model_entry(task: str, predictions: dict, use_selection: bool = True, weights: np.ndarray | None = None,
                n_bootstrap: int = 0, seed: int = 0) -> dict:
    """The task block of one model from `predict` output."""
    if task == "regression":
        return {"regression": regression_entry(predictions["prediction"], predictions, use_selection, weights,
                                               n_bootstrap, seed)}
    return {"classification": classification_entries(predictions["probabilities"], predictions, weights)[0]}


def baseline_entries(task: str, arrays: dict, use_selection: bool = True, weights: np.ndarray | None = None,
                     n_bootstrap: int = 0, seed: int = 0) -> dict:
    """The calorimetric (regression) or cut-tagger (classification) baseline blocks from the Parquet columns."""
    if task == "regression":
        return {"calorimetric": {"regression": regression_entry(arrays["calo_e_avail"], arrays, use_selection,
                                                                weights, n_bootstrap, seed)}}
    return {"cut": {"classification": classification_entries(None, arrays, weights)[1]}}


def summary_metrics(task: str, predictions: dict, use_selection: bool = True) -> dict:
    """A few scalars for logging during training: overall / low-q3 IQR/MPV, or per-task TPR at the cut's FPR
    (event-weighted when the data carry weights; no bootstrap)."""
    weights, _ = event_weights(predictions)
    entry = model_entry(task, predictions, use_selection, weights)[task]
    if task == "regression":
        return {"iqr_over_mpv": entry["overall"]["iqr_over_mpv"], "iqr": entry["overall"]["iqr"],
                "mpv": entry["overall"]["mpv"], "low_q3_iqr_over_mpv": entry["low_q3"]["iqr_over_mpv"]}
    out = {}
    for signal, block in entry.items():
        out[f"{signal}_tpr_at_cut_fpr"] = block["tpr_model"]
        out[f"{signal}_tpr_cut"] = block["tpr_cut"]
        out[f"{signal}_auroc"] = block["auroc"]
    return out


def selection_record(task: str, arrays: dict, use_selection: bool) -> dict:
    """What was actually applied: the CC-inclusive cuts only on regression and only when the column exists."""
    applied = task == "regression" and use_selection and "passes_cc_inclusive" in arrays
    n_events = int(arrays["n_events"])
    if task == "regression":
        n_selected = int(metrics.regression_selection(arrays["e_avail"], arrays.get("passes_cc_inclusive")
                                                      if applied else None).sum())
    else:
        n_selected = n_events
    return {"passes_cc_inclusive": applied, "e_true_min": metrics.TRUE_MIN if task == "regression" else None,
            "pred_zero_below": metrics.PRED_ZERO_BELOW if task == "regression" else None,
            "n_events": n_events, "n_selected": n_selected}


# ------------------------------------------------------------------------------------------------------- evaluate
def evaluate(model: str, data: str, split: str = "test", out_dir: str | None = None, mlp: str | None = None,
             **options) -> dict:
    """Predict `split` with the model (and MLP), add the baselines, write eval_results.json (+ plots); return it.

    `options` are the other `EvalConfig` fields (keywords only), e.g. `use_weights=False, n_bootstrap=0`.
    """
    return run_evaluation(EvalConfig(model=model, data=data, split=split, out_dir=out_dir, mlp=mlp, **options))


def run_evaluation(cfg: EvalConfig) -> dict:
    """`evaluate` from a config: the results dict (also written to cfg.output_dir / eval_results.json)."""
    from dataset_builder.collator import MinervaCollator
    from recipes.data import iter_tables, load_split

    start = time.time()
    device = cfg.device or _accelerator_device()
    dataset = load_split(cfg.data, cfg.split, cfg.data_revision)
    collator = MinervaCollator(task=None)
    out = cfg.output_dir
    results: dict = {"schema_version": SCHEMA_VERSION, "split": cfg.split, "dataset": str(cfg.data),
                     "dataset_revision": cfg.data_revision, "data_origin": cfg.data_origin, "models": {}}
    predictions, weights = None, None
    for index, source in enumerate([cfg.model] + ([cfg.mlp] if cfg.mlp else [])):
        net, info = load_model(source, cfg.revision if index == 0 else None)
        predictions = predict(net.to(device), iter_tables(dataset, cfg.batch_size, cfg.max_events), collator, device)
        if not predictions["n_events"]:
            raise ValueError(f"split {cfg.split!r} of {cfg.data} has no events")
        weights, results["weights"] = event_weights(predictions, cfg.use_weights)
        name = info["name"] if info["name"] not in results["models"] else f"{info['name']}-{index}"
        results.setdefault("task", info["task"])
        results.setdefault("primary_model", name)
        if info["task"] != results["task"]:
            raise ValueError(f"{source} is a {info['task']} model but {cfg.model} is {results['task']}")
        results["models"][name] = {**{k: info.get(k) for k in ("source", "backbone", "size", "mode")},
                                   **model_entry(info["task"], predictions, cfg.use_selection, weights,
                                                 cfg.n_bootstrap, cfg.seed)}
    task = results["task"]
    results["baselines"] = baseline_entries(task, predictions, cfg.use_selection, weights, cfg.n_bootstrap, cfg.seed)
    results["selection"] = selection_record(task, predictions, cfg.use_selection)
    results["uncertainties"] = {"tpr": "clopper-pearson", "confidence_level": metrics.CONFIDENCE_LEVEL,
                                "iqr_mpv": "bootstrap" if cfg.n_bootstrap else None, "n_bootstrap": cfg.n_bootstrap,
                                "seed": cfg.seed}
    results["compute"] = {"eval_events": int(predictions["n_events"]), "eval_seconds": round(time.time() - start, 2),
                          "device": str(device)}
    results["plots"] = []
    if cfg.make_plots:
        from recipes import plots

        results["plots"] = plots.plot_eval_results(results, out / "plots", relative_to=out)
    write_results(results, out / RESULTS_FILE)
    return json_safe(results)


def _accelerator_device():
    """The device accelerate gives this process (CUDA/MPS when present unless ACCELERATE_USE_CPU is set)."""
    from accelerate import PartialState

    return PartialState().device


def write_results(results: dict, path: Path) -> Path:
    """Validate against the results contract and atomically write strict JSON (NaN/inf -> null)."""
    return contract.dump(results, path)


# ---------------------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The evaluate command-line options (shared by this script and `minerva-fm evaluate`)."""
    add = parser.add_argument
    add("--model", required=True, help="save_pretrained/adapter folder or Hub model id (required)")
    add("--data", required=True, help="converted Parquet folder or Hub dataset id (required)")
    add("--split", default="test", help="dataset split to evaluate, e.g. test or shifted (default: %(default)s)")
    add("--out", default=None, help="results folder (default: a local model folder, or <model>/eval/<split> when "
                                    "the model folder's eval_results.json is of another split; eval/<repo id> for "
                                    "a Hub model); an eval_results.json there is replaced, the replacement reported "
                                    "and the model card re-rendered")
    add("--mlp", default=None, help="comparison (event-MLP) model evaluated on the same events (default: the "
                                    "comparison model of the eval_results.json being replaced, if any; 'none': no "
                                    "comparison)")
    add("--revision", default=None, help="Hub revision of --model (default: main)")
    add("--data-revision", default=None, help="Hub revision of --data (default: main)")
    add("--batch-size", type=int, default=4096, help="events per forward pass (default: %(default)s)")
    add("--max-events", type=int, default=None, help="evaluate only the first N events (default: all)")
    add("--no-selection", action="store_true",
        help="skip the CC-inclusive selection of the regression metrics (default: applied)")
    add("--no-weights", action="store_true",
        help=f"ignore the {WEIGHT_COLUMN} column (default: weight the metrics when the data carry it)")
    add("--n-bootstrap", type=int, default=metrics.N_BOOTSTRAP,
        help="bootstrap replicas for the IQR/MPV uncertainties, 0 for none (default: %(default)s)")
    add("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    add("--data-origin", choices=("synthetic", "simulation", "data"), default=None,
        help="what the data are, shown in the card's limitations (default: unset)")
    add("--device", default=None, help="torch device (default: accelerate's device, the GPU when there is one)")
    add("--no-plots", action="store_true", help="skip the plots (default: written to <out>/plots)")
    add("--push-to-hub", "--push_to_hub", dest="push_to_hub", metavar="REPO_ID", default=None,
        help="after evaluating a local model folder, render its card and push it to this model repo (default: no push)")
    return parser


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig of parsed command-line options."""
    return EvalConfig(model=args.model, data=args.data, split=args.split, out_dir=args.out, mlp=args.mlp,
                      revision=args.revision, data_revision=args.data_revision, batch_size=args.batch_size,
                      max_events=args.max_events, use_selection=not args.no_selection,
                      use_weights=not args.no_weights, n_bootstrap=args.n_bootstrap, seed=args.seed,
                      data_origin=args.data_origin, make_plots=not args.no_plots, device=args.device)


def previous_comparison(cfg: EvalConfig) -> tuple[str | None, dict | None]:
    """(comparison model source to carry over, the results about to be replaced or None): the comparison comes from
    the eval_results.json being replaced, else from the model folder's own."""
    path = cfg.output_dir / RESULTS_FILE
    source = path if path.is_file() else Path(cfg.model) / RESULTS_FILE
    if not source.is_file():
        return None, None
    try:
        previous = contract.load_results(source)
    except contract.ResultsError:
        return None, {"models": {}} if source == path else None
    others = [m.get("source") for n, m in previous.models.items() if n != previous.primary and m.get("source")]
    return (others[0] if others else None), (previous.to_dict() if source == path else None)


def run_from_args(args: argparse.Namespace) -> dict:
    """Run `evaluate` from parsed arguments; print the headline numbers and one line saying what was written."""
    cfg = config_from_args(args)
    carried, previous = previous_comparison(cfg)
    if cfg.mlp is None and carried:
        if Path(carried).exists() or carried.count("/") == 1 and not carried.startswith((".", "/")):
            cfg.mlp = carried
            print(f"keeping the comparison with {carried} from the {RESULTS_FILE} being replaced (--mlp none drops it)")
        else:
            print(f"warning: the replaced {RESULTS_FILE} compared with {carried}, which no longer exists; "
                  "the comparison is dropped (pass --mlp to keep one)")
    elif cfg.mlp and cfg.mlp.lower() == "none":
        cfg.mlp = None
    results = run_evaluation(cfg)
    print(json.dumps(headline(results), indent=2))
    card = rerender_card(cfg.output_dir)
    print(written_line(cfg, results, previous, card))
    if args.push_to_hub:
        push_evaluated_model(args, results)
    return results


def rerender_card(folder: Path) -> Path | None:
    """Re-render the model card (README.md) that shows `folder`'s results (the model folder's card for
    <model>/eval/<split>/) when it already has one, so it shows the new numbers."""
    model_dir = folder.parents[1] if folder.parent.name == SPLITS_DIR else folder
    if not (model_dir / "README.md").is_file():
        return None
    return write_card(model_dir)


def write_card(model_dir: Path) -> Path:
    """Render the model card of `model_dir` (model_cards.render) plus a table of its other evaluated splits."""
    from model_cards import render  # downstream of evaluation: imported on demand

    card, section = str(render.build_card(model_dir)), other_splits_section(model_dir)
    return write_text_atomic(model_dir / "README.md", card.rstrip("\n") + "\n\n" + section if section else card)


def other_splits_section(model_dir: Path) -> str:
    """Markdown: the headline numbers of every <model>/eval/<split>/eval_results.json (e.g. the shifted 1B-like
    sample: out-of-distribution), or "" when there are none."""
    blocks = []
    for path in sorted((model_dir / SPLITS_DIR).glob(f"*/{RESULTS_FILE}")):
        results = contract.load_results(path).to_dict()
        rows = headline(results)
        if results["task"] == "regression":
            table = ["| estimator | IQR of E_pred/E_true | IQR, low q3 | MPV | events |", "|---|---|---|---|---|"]
            table += [f"| {name} | {_num(v['iqr'])} | {_num(v['low_q3_iqr'])} | {_num(v['mpv'])} | {v['n']} |"
                      for name, v in rows.items()]
        else:
            table = ["| estimator | signal | TPR at the cut's FPR | cut TPR | AUROC |", "|---|---|---|---|---|"]
            table += [f"| {name} | {signal} | {_num(b.get('tpr_model'))} | {_num(b.get('tpr_cut'))} | "
                      f"{_num(b.get('auroc'))} |" for name, v in rows.items() if name != "cut" for signal, b in v.items()]
        blocks.append(f"### Split `{results['split']}` ({path.parent.relative_to(model_dir).as_posix()}/"
                      f"{RESULTS_FILE})\n\n" + "\n".join(table))
    if not blocks:
        return ""
    return ("## Other evaluated splits\n\nThe same model on other splits of the dataset; `shifted` is the 1B-like "
            "sample with shifted detector response (out of distribution for a model trained on the nominal "
            "sample).\n\n" + "\n\n".join(blocks) + "\n")


def _num(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def written_line(cfg: EvalConfig, results: dict, previous: dict | None, card: Path | None) -> str:
    """One line: what was written where, and what it replaced."""
    out = cfg.output_dir
    parts = [f"wrote {out / RESULTS_FILE} ({results['task']}, split {cfg.split}, models: "
             f"{', '.join(results['models'])}; {len(results['plots'])} plots in {out / 'plots'})"]
    if previous is not None:
        parts.append(f"replacing the previous one (models: {', '.join(previous.get('models', {})) or 'unreadable'})")
    if card is not None:
        parts.append(f"re-rendered {card}")
    return "; ".join(parts)


def push_evaluated_model(args: argparse.Namespace, results: dict) -> str:
    """Push the evaluated local model folder (weights, code, eval JSON, plots, rendered card) to `args.push_to_hub`."""
    from model_cards.publish import push_model  # the publishing step, downstream of evaluation: imported on demand

    folder = Path(args.out or args.model)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise ValueError(f"--push-to-hub needs the results next to a local model folder; {folder} holds no model "
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
