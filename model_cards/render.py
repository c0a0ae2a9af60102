"""Render a model card (README.md) for a run/export folder from its evaluation results and resolved training config.

Nothing in the card is typed by hand: every number comes from ``eval_results.json``, every recipe detail from
``train_config.json`` (and ``config.json`` / ``adapter_config.json`` saved next to the weights).

Run/export folder layout read here (``run_dir``)::

    config.json + model.safetensors + *.py     full model saved with save_pretrained (remote code copied flat), or
    adapter_config.json + adapter_model.safetensors   a PEFT (LoRA) adapter
    train_config.json                          the resolved training config (recipes); optional
    eval_results.json                          the evaluation results below; required
    plots/*.png                                evaluation plots listed in eval_results["plots"]; optional

``eval_results.json`` (minimal contract agreed with recipes/evaluate.py; unknown extra keys are ignored)::

    {
      "task": "regression" | "classification",
      "split": "test",                          # dataset split evaluated
      "dataset": "ns/name",                     # Hub dataset id (or a local path)
      "dataset_revision": "<sha>" | null,       # optional
      "data_origin": "synthetic" | "simulation" | "data",   # optional; drives the limitations text
      "primary_model": "<name>",                # optional; default: the only / first entry of "models"
      "models": {
        "<name>": {
          "regression": {"q3_bins": [[lo, hi], ...],   # GeV, membership (lo, hi]
                         "iqr": [...], "mpv": [...], "rms": [...], "n": [...]}   # of r = E_pred / E_true per bin
          # or
          "classification": {"<signal>": {"fpr_cut": x,     # FPR of the cut tagger (its working point)
                                          "tpr_model": y,   # model TPR at that FPR
                                          "tpr_cut": z,     # TPR of the cut tagger
                                          "auroc": a,
                                          "bins": {"variable": "w", "edges": [...], "tpr_model": [...],
                                                   "tpr_cut": [...]}}}   # optional per-bin breakdown
        }
      },
      "baselines": {"<name>": {"regression": {...same shape...}} | {"classification": {...same shape...}}},
      "plots": ["plots/iqr_vs_q3.png", ...],    # relative to run_dir
      "compute": {"<key>": <value>, ...}        # optional (hardware, processes, wall time ...)
    }

Values may be null (empty bin); such entries are shown as "–" and left out of the Hub ``model-index``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from minerva_common.atomic import write_text_atomic

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
EVAL_RESULTS_FILE = "eval_results.json"
TRAIN_CONFIG_FILE = "train_config.json"
PAPER_ARXIV = "2604.12364"
try:  # the one definition of the low-q3 region lives with the metrics
    from recipes.metrics import LOW_Q3_MAX as LOW_Q3_MAX_GEV
except ImportError:  # pragma: no cover - model_cards used without recipes
    LOW_Q3_MAX_GEV = 1.2  # GeV, the paper's highlighted low-q3 region q3 in (0, 1.2]

SIGNAL_LABELS = {"cc1pi_charged": "CC1π±", "ccnpi_charged": "CCNπ± (N≥1)", "cc1pi0": "CC1π⁰", "ccnpi": "CCNπ (N>1)"}
MODE_DESCRIPTIONS = {
    "full": "full fine-tuning of a pre-trained backbone",
    "frozen": "frozen pre-trained backbone, only the task head trained",
    "lora": "LoRA adapters on a frozen pre-trained backbone (PEFT)",
    "rw": "same architecture trained from random weights (no pre-training)",
}
BACKBONE_PAPERS = {  # backbone name (modeling.BACKBONES) -> citation key in CITATIONS
    "omnilearned": "omnilearned", "particle_vit": "particlevit", "bert_projection": "bert", "mlp": None,
}
CITATIONS = {
    "paper": f"""@misc{{minerva_fm_{PAPER_ARXIV.replace('.', '_')},
  eprint        = "{PAPER_ARXIV}",
  archivePrefix = "arXiv",
  url           = "https://arxiv.org/abs/{PAPER_ARXIV}"
}}""",
    "omnilearned": """@article{Bhimji:2025isp,
  author        = "Bhimji, Wahid and Harris, Chris and Mikuni, Vinicius and Nachman, Benjamin",
  title         = "{OmniLearned: A Foundation Model Framework for All Tasks Involving Jet Physics}",
  eprint        = "2510.24066",
  archivePrefix = "arXiv",
  primaryClass  = "hep-ph",
  year          = "2025"
}""",
    "particlevit": """@misc{Uslu:particlevit,
  author = "Uslu, Jan-Lucas and Nachman, Benjamin and Re",
  title  = "{Predict before you train: scaling laws for particle physics foundation models}",
  note   = "ParticleViT / HyperScale; code: https://github.com/Jaluus/ParticleViT"
}""",
    "bert": """@inproceedings{devlin2019bert,
  author    = "Devlin, Jacob and Chang, Ming-Wei and Lee, Kenton and Toutanova, Kristina",
  title     = "{BERT}: Pre-training of Deep Bidirectional Transformers for Language Understanding",
  booktitle = "Proceedings of NAACL-HLT",
  year      = "2019",
  eprint    = "1810.04805"
}
@article{turc2019wellread,
  author  = "Turc, Iulia and Chang, Ming-Wei and Lee, Kenton and Toutanova, Kristina",
  title   = "Well-Read Students Learn Better: On the Importance of Pre-training Compact Models",
  eprint  = "1908.08962",
  year    = "2019"
}""",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class EvalResultsError(ValueError):
    """eval_results.json is missing or does not follow the contract in this module's docstring."""


def load_eval_results(run_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``run_dir/eval_results.json`` (contract in the module docstring)."""
    path = Path(run_dir) / EVAL_RESULTS_FILE
    if not path.is_file():
        raise EvalResultsError(f"{path}: not found; run the evaluation first (recipes/evaluate.py writes it)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EvalResultsError(f"{path}: not valid JSON ({err})") from err
    _validate_eval_results(results, path)
    return results


def _validate_eval_results(results: Any, path: Path) -> None:
    if not isinstance(results, dict):
        raise EvalResultsError(f"{path}: top level must be an object, got {type(results).__name__}")
    task = results.get("task")
    if task not in ("regression", "classification"):
        raise EvalResultsError(f"{path}: field 'task' must be 'regression' or 'classification', got {task!r}")
    models = results.get("models")
    if not isinstance(models, dict) or not models:
        raise EvalResultsError(f"{path}: field 'models' must be a non-empty object of model name -> metrics")
    for name, entry in {**models, **(results.get("baselines") or {})}.items():
        if not isinstance(entry, dict) or not ({"regression", "classification"} & set(entry)):
            raise EvalResultsError(f"{path}: entry {name!r} needs a 'regression' or 'classification' object")
        try:
            if "regression" in entry:
                normalise_regression(entry["regression"])
            if "classification" in entry:
                normalise_classification(entry["classification"])
        except (KeyError, TypeError, ValueError) as err:
            raise EvalResultsError(f"{path}: entry {name!r} does not follow the contract: {err}") from err
    primary = results.get("primary_model")
    if primary is not None and primary not in models:
        raise EvalResultsError(f"{path}: primary_model {primary!r} not in models {sorted(models)}")
    if task not in models[primary_model_name(results)]:
        raise EvalResultsError(f"{path}: task is {task!r} but model {primary_model_name(results)!r} has no {task!r}")


def normalise_regression(reg: dict[str, Any]) -> dict[str, Any]:
    """Per-q3-bin rows [{lo, hi, iqr, mpv, rms, n}] (+ optional overall / low_q3 summaries) from either layout.

    Accepts the column layout of the contract ({"q3_bins": [[lo, hi]], "iqr": [...], ...}) and the row layout of
    `recipes.metrics.binned_resolution` ({"bins": [{lo, hi, iqr, ...}], "overall": {...}, "low_q3": {...}});
    overflow bins (flagged ``overflow``) are dropped as in the paper's figure.
    """
    if "q3_bins" in reg:
        bins = reg["q3_bins"]
        if not all(isinstance(b, (list, tuple)) and len(b) == 2 for b in bins):
            raise ValueError("'q3_bins' must be a list of [lo, hi] pairs")
        for key in ("iqr", "mpv", "rms", "n"):
            if key in reg and len(reg[key]) != len(bins):
                raise ValueError(f"{key!r} has {len(reg[key])} values for {len(bins)} q3 bins")
        if "iqr" not in reg:
            raise ValueError("missing 'iqr'")
        rows = [{"lo": lo, "hi": hi, **{k: reg[k][i] for k in ("iqr", "mpv", "rms", "n") if k in reg}}
                for i, (lo, hi) in enumerate(bins)]
    elif isinstance(reg.get("bins"), list):
        rows = [dict(b) for b in reg["bins"] if not b.get("overflow")]
        if any("lo" not in b or "hi" not in b or "iqr" not in b for b in rows):
            raise ValueError("every q3 bin needs 'lo', 'hi' and 'iqr'")
    else:
        raise ValueError("regression metrics need 'q3_bins' (+ 'iqr', ...) or 'bins'")
    return {"bins": rows, "overall": reg.get("overall"), "low_q3": reg.get("low_q3")}


def normalise_classification(cls: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per signal {fpr_cut, tpr_cut, tpr_model, auroc, bins: [{variable, rows: [{lo, hi, tpr_model, tpr_cut}]}]}.

    Accepts the flat layout of the contract and the nested layout of `recipes.metrics.tagging_metrics`
    ({"cut": {tpr, fpr, bins}, "model": {tpr, auroc, bins}}).
    """
    out = {}
    for signal, m in cls.items():
        if "model" in m and "cut" in m:
            cut, model = m["cut"], m["model"]
            bins = [{"variable": name, "rows": [
                {"lo": mb["lo"], "hi": mb["hi"], "tpr_model": mb.get("tpr"), "tpr_cut": cb.get("tpr"),
                 "n_signal": mb.get("n_signal")} for mb, cb in zip(rows, cut.get("bins", {}).get(name, []))]}
                for name, rows in (model.get("bins") or {}).items()]
            out[signal] = {"fpr_cut": cut.get("fpr"), "tpr_cut": cut.get("tpr"), "tpr_model": model.get("tpr"),
                           "auroc": model.get("auroc"), "bins": bins}
        elif "tpr_model" in m or "fpr_cut" in m or "tpr" in m:
            by_variable = m.get("bins_by_variable") or ({"": m["bins"]} if isinstance(m.get("bins"), dict) else {})
            bins = [_column_bins(variable, b) for variable, b in by_variable.items() if "edges" in b]
            out[signal] = {"fpr_cut": m.get("fpr_cut", m.get("fpr")), "tpr_cut": m.get("tpr_cut", m.get("tpr")),
                           "tpr_model": m.get("tpr_model"), "auroc": m.get("auroc"), "bins": bins}
        else:
            raise ValueError(f"signal {signal!r} needs 'fpr_cut'/'tpr_model' or 'cut'/'model'")
    return out


def _column_bins(variable: str, bins: dict[str, Any]) -> dict[str, Any]:
    """{"edges", "tpr_model", "tpr_cut"} columns -> {"variable", "rows": [{lo, hi, tpr_model, tpr_cut}]}."""
    edges, n = bins["edges"], len(bins["edges"]) - 1
    model, cut = bins.get("tpr_model") or [None] * n, bins.get("tpr_cut") or [None] * n
    if len(model) != n or len(cut) != n:
        raise ValueError(f"bins of {variable or bins.get('variable')!r}: {n} bins but {len(model)}/{len(cut)} TPRs")
    return {"variable": bins.get("variable") or variable or "bin",
            "rows": [{"lo": edges[i], "hi": edges[i + 1], "tpr_model": model[i], "tpr_cut": cut[i]} for i in range(n)]}


def primary_model_name(results: dict[str, Any]) -> str:
    """The model the card describes: ``primary_model`` or the first entry of ``models``."""
    return results.get("primary_model") or next(iter(results["models"]))


def load_train_config(run_dir: str | Path) -> dict[str, Any]:
    """Read ``run_dir/train_config.json`` ({} when absent)."""
    path = Path(run_dir) / TRAIN_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _lookup(config: dict[str, Any], *dotted: str) -> Any:
    """The first non-empty value among dotted paths (``model.backbone``) in a nested config."""
    for path in dotted:
        node: Any = config
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node not in (None, "", {}):
            return node
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"


def _fmt_metric(value: Any, digits: int = 3) -> str:
    return _fmt(float(value), digits) if _is_number(value) else _fmt(value, digits)


def _signal_label(signal: str) -> str:
    return SIGNAL_LABELS.get(signal, signal)


def _q3_label(lo: float, hi: float) -> str:
    return f"({float(lo):g}, {float(hi):g}]"


def describe_run(run_dir: str | Path, train_config: dict[str, Any]) -> dict[str, Any]:
    """Backbone, preset, fine-tuning mode, base model and recipe facts from the saved files and config."""
    run_dir = Path(run_dir)
    model_config = _read_json(run_dir / "config.json")
    adapter_config = _read_json(run_dir / "adapter_config.json")
    mode = "lora" if adapter_config else _lookup(train_config, "model.mode", "train.mode", "mode", "finetune.mode")
    base_model = (adapter_config.get("base_model_name_or_path") if adapter_config else None) or _lookup(
        train_config, "model.init", "model.base_model", "model.pretrained", "model.pretrained_model_name_or_path",
        "base_model")
    return {
        "backbone": _lookup(train_config, "model.backbone", "model.name", "backbone") or model_config.get("model_type"),
        "preset": _lookup(train_config, "model.preset", "model.size", "preset"),
        "architectures": model_config.get("architectures") or [],
        "model_type": model_config.get("model_type"),
        "mode": str(mode).lower() if mode else None,
        "mode_description": MODE_DESCRIPTIONS.get(str(mode).lower(), None) if mode else None,
        "base_model": base_model,
        "is_adapter": bool(adapter_config),
        "lora": {k: adapter_config.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")}
        if adapter_config else _lookup(train_config, "model.lora", "lora") or _lora_fields(train_config, mode),
        "optim": _lookup(train_config, "optim", "optimizer") or {},
        "train": _lookup(train_config, "train", "training") or {},
        "data": _lookup(train_config, "data") or {},
    }


def _lora_fields(train_config: dict[str, Any], mode: Any) -> dict[str, Any] | None:
    """The flat `model.lora_*` fields of the recipes config, when the run used LoRA."""
    model = train_config.get("model") if isinstance(train_config.get("model"), dict) else {}
    fields = {k: v for k, v in model.items() if k.startswith("lora_")}
    return fields if str(mode).lower() == "lora" and fields else None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def low_q3_max(reg: dict[str, Any] | None) -> float:
    """Upper q3 edge (GeV) of the low-q3 region: `low_q3_range` of the eval results when given, else 1.2 (metrics)."""
    bounds = (reg or {}).get("low_q3_range")
    return float(bounds[1]) if isinstance(bounds, (list, tuple)) and len(bounds) == 2 else LOW_Q3_MAX_GEV


def regression_rows(reg: dict[str, Any]) -> list[dict[str, Any]]:
    """One display row per q3 bin (formatted strings), the low-q3 bins flagged."""
    q3_max = low_q3_max(reg)
    rows = [{"q3": _q3_label(b["lo"], b["hi"]), "low_q3": b["hi"] <= q3_max + 1e-9,
             **{key: _fmt_metric(b.get(key)) for key in ("iqr", "mpv", "rms")}, "n": _fmt(b.get("n"))}
            for b in normalise_regression(reg)["bins"]]
    summaries = normalise_regression(reg)
    for label, summary, low in ((f"low q3, (0, {q3_max:g}]", summaries["low_q3"], True),
                                ("all q3", summaries["overall"], False)):
        if summary:
            rows.append({"q3": label, "low_q3": low, "n": _fmt(summary.get("n")),
                         **{key: _fmt_metric(summary.get(key)) for key in ("iqr", "mpv", "rms")}})
    return rows


def classification_rows(cls: dict[str, Any]) -> list[dict[str, Any]]:
    """One display row per signal: cut FPR/TPR, model TPR at the cut's FPR, AUROC (+ per-bin tables)."""
    return [{"signal": _signal_label(signal), "fpr_cut": _fmt_metric(m["fpr_cut"], 4),
             "tpr_cut": _fmt_metric(m["tpr_cut"]), "tpr_model": _fmt_metric(m["tpr_model"]),
             "auroc": _fmt_metric(m["auroc"]),
             "bins": [{"variable": b["variable"], "rows": [
                 {"range": f"[{float(r['lo']):g}, {float(r['hi']):g})", "tpr_model": _fmt_metric(r["tpr_model"]),
                  "tpr_cut": _fmt_metric(r["tpr_cut"])} for r in b["rows"]]} for b in m["bins"]]}
            for signal, m in normalise_classification(cls).items()]


def build_eval_results(results: dict[str, Any], dataset_id: str, dataset_name: str) -> list[EvalResult]:
    """The primary model's metrics as Hub ``EvalResult``s (IQR per q3 bin, or TPR at the cut's FPR + AUROC)."""
    task = results["task"]
    metrics = results["models"][primary_model_name(results)][task]
    common = dict(task_type=f"tabular-{task}", task_name=f"MINERvA event {task}", dataset_type=dataset_id,
                  dataset_name=dataset_name, dataset_split=results.get("split"),
                  dataset_revision=results.get("dataset_revision"))
    out: list[EvalResult] = []
    if task == "regression":
        reg = normalise_regression(metrics)
        q3_max = low_q3_max(metrics)
        low = reg.get("low_q3") or {}
        if _is_number(low.get("iqr")):
            out.append(EvalResult(**common, metric_type="iqr", metric_value=float(low["iqr"]),
                                  metric_name=f"IQR of E_pred/E_true, low q3 (0, {q3_max:g}] GeV",
                                  metric_config="low_q3"))
        for b in reg["bins"]:
            if _is_number(b.get("iqr")):
                flag = " (low q3)" if b["hi"] <= q3_max + 1e-9 else ""
                out.append(EvalResult(**common, metric_type="iqr", metric_value=float(b["iqr"]),
                                      metric_name=f"IQR of E_pred/E_true, q3 in {_q3_label(b['lo'], b['hi'])} GeV{flag}",
                                      metric_config=f"q3_{b['lo']:g}_{b['hi']:g}"))
        return out
    for signal, m in normalise_classification(metrics).items():
        if _is_number(m["tpr_model"]):
            out.append(EvalResult(**common, metric_type="tpr_at_cut_fpr", metric_value=float(m["tpr_model"]),
                                  metric_name=f"TPR at the cut tagger's FPR={_fmt_metric(m['fpr_cut'], 4)} "
                                              f"({_signal_label(signal)})",
                                  metric_config=signal))
        if _is_number(m["auroc"]):
            out.append(EvalResult(**common, metric_type="roc_auc", metric_value=float(m["auroc"]),
                                  metric_name=f"AUROC ({_signal_label(signal)})", metric_config=signal))
    return out


def _existing_plots(run_dir: Path, plots: list[str]) -> list[dict[str, str]]:
    root = run_dir.resolve()
    shown = []
    for rel in plots or []:
        path = (run_dir / rel).resolve()
        if path.is_file() and path.is_relative_to(root):
            shown.append({"path": Path(rel).as_posix(), "title": Path(rel).stem.replace("_", " ")})
    return shown


def build_card(run_dir: str | Path, repo_id: str | None = None, dataset_id: str | None = None) -> ModelCard:
    """The rendered ``ModelCard`` for a run folder (not written)."""
    run_dir = Path(run_dir)
    results = load_eval_results(run_dir)
    train_config = load_train_config(run_dir)
    run = describe_run(run_dir, train_config)
    dataset_id = dataset_id or results.get("dataset") or "unknown"
    dataset_name = f"MINERvA ME-FHC events ({dataset_id})"
    model_name = repo_id.split("/")[-1] if repo_id else run_dir.resolve().name
    task = results["task"]
    card_data = ModelCardData(
        model_name=model_name,
        eval_results=build_eval_results(results, dataset_id, dataset_name) or None,
        license="mit",
        library_name="peft" if run["is_adapter"] else "transformers",
        pipeline_tag=f"tabular-{task}",
        tags=[t for t in ("minerva-fm", "particle-physics", "neutrino", "minerva", "custom_code", task,
                          run["backbone"], run["mode"]) if t],
        datasets=[dataset_id] if _HUB_ID.match(dataset_id) else None,
        base_model=run["base_model"] if run["base_model"] and _HUB_ID.match(str(run["base_model"])) else None,
        metrics=["iqr"] if task == "regression" else ["tpr_at_cut_fpr", "roc_auc"],
    )
    context = _template_context(run_dir, results, train_config, run, repo_id, dataset_id, model_name)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    content = env.from_string(TEMPLATE_PATH.read_text(encoding="utf-8")).render(
        card_data=card_data.to_yaml(), **context)
    return ModelCard(content)


def _template_context(run_dir: Path, results: dict[str, Any], train_config: dict[str, Any], run: dict[str, Any],
                      repo_id: str | None, dataset_id: str, model_name: str) -> dict[str, Any]:
    task = results["task"]
    primary = primary_model_name(results)
    entries = {**{name: m for name, m in results["models"].items()},
               **{f"{name} (baseline)": m for name, m in (results.get("baselines") or {}).items()}}
    comparison = []
    for name, entry in entries.items():
        if task in entry:
            rows = regression_rows(entry[task]) if task == "regression" else classification_rows(entry[task])
            comparison.append({"name": name, "primary": name == primary, "rows": rows})
    citation_keys = ["paper"] + [k for k in [BACKBONE_PAPERS.get(str(run["backbone"]))] if k]
    return {
        "model_name": model_name, "repo_id": repo_id or model_name, "task": task, "primary": primary,
        "dataset_id": dataset_id, "split": results.get("split") or "–",
        "dataset_revision": results.get("dataset_revision"), "data_origin": results.get("data_origin"),
        "run": run, "comparison": comparison,
        "low_q3_max": low_q3_max(results["models"][primary].get(task) if task == "regression" else None),
        "plots": _existing_plots(run_dir, results.get("plots") or []),
        "compute": {**(_lookup(train_config, "compute") or {}), **(results.get("compute") or {})},
        "train_config_json": json.dumps(train_config, indent=2, sort_keys=True) if train_config else "",
        "citations": [CITATIONS[k] for k in citation_keys], "paper_arxiv": PAPER_ARXIV,
        "fmt": _fmt,
    }


def write_model_card(run_dir: str | Path, repo_id: str | None = None, dataset_id: str | None = None) -> Path:
    """Render ``run_dir/README.md`` from eval_results.json + train_config.json (atomic write); return its path."""
    card = build_card(run_dir, repo_id=repo_id, dataset_id=dataset_id)
    return write_text_atomic(Path(run_dir) / "README.md", str(card))


__all__ = ["write_model_card", "build_card", "load_eval_results", "build_eval_results", "EvalResultsError"]
