"""Render a model card (README.md) for a run/export folder from its evaluation results and saved training files.

Nothing in the card is typed by hand: every number comes from ``eval_results.json`` (read through the results
contract, minerva_common/results.py), every recipe detail from ``train_config.json``, ``train_summary.json``,
``config.json`` / ``adapter_config.json``; papers and the load line come from the backbone registry (modeling).

Folder layout read here (``run_dir``; ``train_summary.json`` may sit one level up, in the training output folder)::

    config.json + model.safetensors + *.py     full model saved with save_pretrained (remote code copied flat), or
    adapter_config.json + adapter_model.safetensors   a PEFT (LoRA) adapter
    eval_results.json                          the evaluation results (minerva_common.results); required
    train_config.json / train_summary.json     resolved training config / steps, FLOPs, parameter counts; optional
    plots/*.png, model.onnx (+ onnx_export.json), logs/   described when present
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

import modeling
from minerva_common.atomic import write_text_atomic
from minerva_common.checksum import file_sha256
from minerva_common.results import (
    LOW_Q3_MAX, RESULTS_FILE, SIGNAL_LABELS, EvalResults, ResultsError, load_results,
)

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
EVAL_RESULTS_FILE = RESULTS_FILE
TRAIN_CONFIG_FILE = "train_config.json"
TRAIN_SUMMARY_FILE = "train_summary.json"
ONNX_FILE, ONNX_INFO_FILE = "model.onnx", "onnx_export.json"
PAPER_ARXIV = "2604.12364"
REPO_PLACEHOLDER = "<user>/<repo>"
LOW_Q3_MAX_GEV = LOW_Q3_MAX  # kept for callers of the old name

EvalResultsError = ResultsError  # the old name; load errors are the contract's one-line ResultsError

MODE_DESCRIPTIONS = {
    "full": "full fine-tuning of a pre-trained backbone",
    "frozen": "frozen pre-trained backbone, only the task head trained",
    "lora": "LoRA adapters on a frozen pre-trained backbone (PEFT)",
    "rw": "same architecture trained from random weights (no pre-training)",
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
BIN_UNITS = {"w": "GeV", "pion_energy": "GeV", "pion_theta": "rad"}  # TPR binning variables of the results
SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---------------------------------------------------------------------------------------------------- reading
def load_eval_results(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/eval_results.json`` validated by the results contract, as a plain dict (ResultsError otherwise)."""
    return load_results(run_dir).to_dict()


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file ({} when absent); a one-line ValueError naming the file when unreadable."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ResultsError(f"{path}: field <top level>: expected a JSON object, got {type(value).__name__}")
    return value


def load_train_config(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/train_config.json`` ({} when absent)."""
    return _read_json(Path(run_dir) / TRAIN_CONFIG_FILE)


def load_train_summary(run_dir: str | Path) -> dict[str, Any]:
    """train_summary.json of the run that exported ``run_dir`` (the folder itself or its training output folder)."""
    run_dir = Path(run_dir).resolve()
    for path in (run_dir / TRAIN_SUMMARY_FILE, run_dir.parent / TRAIN_SUMMARY_FILE):
        summary = _read_json(path)
        exported = [summary.get(k) for k in ("model_dir", "adapter_dir") if summary.get(k)]
        if summary and (path.parent == run_dir or any(Path(p).name == run_dir.name for p in exported)):
            return summary
    return {}


def _lookup(config: dict[str, Any], *dotted: str) -> Any:
    """The first non-empty value among dotted paths (``model.backbone``) in a nested config."""
    for path in dotted:
        node: Any = config
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node not in (None, "", {}):
            return node
    return None


# ---------------------------------------------------------------------------------------------------- formatting
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any, digits: int = 3) -> str:
    """A table cell: "–" for missing, thousands separators for counts, `digits` decimals for values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"


def _with_error(value: Any, error: Any = None, digits: int = 3) -> str:
    """``0.201 ± 0.004`` (bootstrap standard deviation) or the bare value."""
    if not _is_number(value):
        return "–"
    return f"{value:.{digits}f} ± {error:.{digits}f}" if _is_number(error) else f"{value:.{digits}f}"


def _with_interval(value: Any, interval: Any = None, digits: int = 3) -> str:
    """``0.636 [0.601, 0.670]`` (Clopper–Pearson interval) or the bare value."""
    if not _is_number(value):
        return "–"
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(_is_number, interval)):
        return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return f"{value:.{digits}f}"


def _bold(text: str, flag: bool) -> str:
    return f"**{text}**" if flag and text != "–" else text


def _q3_label(lo: float, hi: float) -> str:
    return f"({float(lo):g}, {float(hi):g}]"


def _duration(seconds: Any) -> str:
    if not _is_number(seconds):
        return "–"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.2f} h"


# ---------------------------------------------------------------------------------------------------- the run
def describe_run(run_dir: str | Path, train_config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Backbone, size, mode, initial weights, parameter counts and recipe facts from the saved files."""
    run_dir = Path(run_dir)
    model_config = _read_json(run_dir / "config.json")
    adapter_config = _read_json(run_dir / "adapter_config.json")
    mode = "lora" if adapter_config else _lookup(train_config, "model.mode")
    mode = str(mode).lower() if mode else None
    backbone = _lookup(train_config, "model.backbone") or _backbone_of(model_config)
    init = (adapter_config.get("base_model_name_or_path") if adapter_config else None) or \
        _lookup(train_config, "model.init")
    architecture = model_config or _base_config(init) or _configured_architecture(backbone, train_config)
    n_params, n_trainable = summary.get("n_params"), summary.get("n_trainable")
    return {
        "backbone": backbone,
        "size": describe_size(backbone, architecture, _lookup(train_config, "model.size")),
        "architectures": architecture.get("architectures") or ([modeling.BACKBONES[backbone].head_class]
                                                               if backbone in modeling.BACKBONES else []),
        "mode": mode,
        "mode_description": MODE_DESCRIPTIONS.get(mode) if mode else None,
        "init": describe_init(mode, init, _lookup(train_config, "model.revision"), _lookup(train_config, "train.seed"),
                              summary.get("init") or {}),
        "base_model": init if mode != "rw" and _is_hub_id(init) else None,
        "is_adapter": bool(adapter_config),
        "lora": _lora(adapter_config, train_config, mode),
        "n_params": n_params if _is_number(n_params) else _count_parameters(run_dir),
        "n_trainable": n_trainable if _is_number(n_trainable) else None,
        "optim": _lookup(train_config, "optim") or {},
        "train": {k: v for k, v in (_lookup(train_config, "train") or {}).items() if k != "output_dir"},
    }


def _backbone_of(model_config: dict[str, Any]) -> str | None:
    """The registry name whose classes appear in config.json `architectures`."""
    names = set(model_config.get("architectures") or [])
    return next((spec.name for spec in modeling.BACKBONES.values() if names & set(spec.class_names)), None)


def _is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_HUB_ID.match(value)) and not Path(value).exists()


def _base_config(init: Any) -> dict[str, Any]:
    """config.json of a local base-model folder ({} for Hub ids or when absent)."""
    return _read_json(Path(init) / "config.json") if isinstance(init, str) and Path(init).is_dir() else {}


def _configured_architecture(backbone: str | None, train_config: dict[str, Any]) -> dict[str, Any]:
    """The model config the training config asks for (preset + overrides; an `init` checkpoint must match it)."""
    size = _lookup(train_config, "model.size")
    if backbone not in modeling.BACKBONES or not size:
        return {}
    config_cls, _, _ = modeling.load_backbone_classes(backbone)
    try:
        return config_cls.from_preset(size, **(_lookup(train_config, "model.overrides") or {})).to_dict()
    except (TypeError, ValueError):
        return {}


def describe_size(backbone: str | None, config: dict[str, Any], configured: str | None) -> dict[str, Any]:
    """{"preset": name or None, "fields": {hidden_size: ...}}: the registry preset whose size fields the saved
    config matches exactly, else the size fields themselves (a preset with overrides is no longer that preset)."""
    fields = {k: config[k] for k in SIZE_FIELDS if k in config}
    if backbone not in modeling.BACKBONES or not config:
        return {"preset": None, "fields": fields, "configured": configured}
    config_cls, _, _ = modeling.load_backbone_classes(backbone)
    presets = {name: config_cls.from_preset(name).to_dict() for name in modeling.BACKBONES[backbone].presets}
    size_keys = {k for k in set().union(*presets.values()) if len({json.dumps(p.get(k)) for p in presets.values()}) > 1}
    match = next((name for name, p in presets.items()
                  if all(json.dumps(p.get(k)) == json.dumps(config.get(k)) for k in size_keys)), None)
    return {"preset": match, "fields": fields, "configured": configured}


def describe_init(mode: str | None, init: Any, revision: Any, seed: Any, report: dict[str, Any]) -> str:
    """One sentence: exactly what the weights started from."""
    if mode is None and not init:
        return "not recorded (no training config saved with this run)"
    if mode == "rw" or not init:
        return f"random initialisation (rw){f', seed {seed}' if seed is not None else ''}"
    loaded = f"; {report['loaded']} tensors loaded, {len(report.get('reinitialised') or [])} re-initialised " \
             "(task head / new input layers)" if report.get("loaded") is not None else ""
    if _is_hub_id(init):
        pinned = f"revision `{revision}`" if revision else "its default branch at training time (no revision pinned)"
        return f"the Hub model [`{init}`](https://huggingface.co/{init}), {pinned}{loaded}"
    return f"{describe_local_checkpoint(Path(str(init)))}{loaded}"


def describe_local_checkpoint(folder: Path) -> str:
    """A local (unpublished) checkpoint described by what it is and its weights' sha256, never by its path."""
    weights = sorted(folder.glob("model*.safetensors")) if folder.is_dir() else []
    if not weights:
        return "a local checkpoint that is not published (no longer readable when this card was written)"
    config = _read_json(folder / TRAIN_CONFIG_FILE)
    what = " ".join(str(v) for v in (_lookup(config, "model.backbone"), _lookup(config, "model.task"),
                                     f"model trained with mode `{_lookup(config, 'model.mode')}`"
                                     if _lookup(config, "model.mode") else "checkpoint") if v)
    digests = ", ".join(f"`{w.name}` sha256 `{file_sha256(w)}`" for w in weights)
    return f"a local {what or 'checkpoint'} that is not published ({digests})"


def _lora(adapter_config: dict[str, Any], train_config: dict[str, Any], mode: str | None) -> dict[str, Any] | None:
    """The LoRA settings: adapter_config.json, else the `model.lora_*` fields of a LoRA run's config."""
    if adapter_config:
        return {k: adapter_config.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")}
    model = train_config.get("model") if isinstance(train_config.get("model"), dict) else {}
    fields = {k.removeprefix("lora_"): v for k, v in model.items() if k.startswith("lora_") and v is not None}
    return fields if mode == "lora" and fields else None


def _count_parameters(run_dir: Path) -> int | None:
    """Parameters in the folder's model*.safetensors (from the headers only)."""
    from safetensors import safe_open

    files = sorted(run_dir.glob("model*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="np") as handle:
            total += sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys())
    return total


# ---------------------------------------------------------------------------------------------------- the data
def describe_dataset(results: EvalResults, dataset_id: str | None) -> dict[str, Any]:
    """{"id": Hub id or None, "text": how the card names the data}: a Hub id when known, else a description."""
    hub_id = dataset_id or (results.dataset if _is_hub_id(results.dataset) else None)
    if hub_id:
        revision = f" @ `{results.dataset_revision}`" if results.dataset_revision else ""
        return {"id": hub_id, "text": f"[`{hub_id}`](https://huggingface.co/datasets/{hub_id}){revision}",
                "short": hub_id}
    generator = _generator_of(Path(results.dataset))
    if generator or results.data_origin == "synthetic":
        seeds = sorted({g.get("seed") for g in generator if g.get("seed") is not None})
        seed = f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})" if seeds else ""
        return {"id": None, "short": "synthetic-minerva-like",
                "text": f"a synthetic MINERvA-like sample generated with `minerva-fm generate`{seed} and converted "
                        "with `minerva-fm convert` (not published)"}
    return {"id": None, "short": "local-minerva-events",
            "text": f"a local converted MINERvA dataset (not published; origin: {results.data_origin or 'unknown'})"}


def _generator_of(dataset_dir: Path) -> list[dict[str, Any]]:
    """The `generator` records of a local converted folder's manifest (synthetic inputs), [] when none/unreadable."""
    try:
        manifest = json.loads((dataset_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [s["generator"] for s in manifest.get("source_files") or [] if isinstance(s, dict) and s.get("generator")]


# ---------------------------------------------------------------------------------------------------- tables
def _estimators(results: EvalResults) -> list[tuple[str, dict[str, Any]]]:
    """(display name, task block) of every model (primary first) and baseline."""
    task = results.task
    names = [results.primary] + [n for n in results.models if n != results.primary]
    out = [(f"{n} (this model)" if n == results.primary else n, results.models[n][task]) for n in names]
    return out + [(f"{n} (baseline)", b[task]) for n, b in results.baselines.items() if task in b]


def low_q3_max(reg: dict[str, Any] | None) -> float:
    """Upper q3 edge (GeV) of the low-q3 region: `low_q3_range` of the results when given, else the contract's."""
    bounds = (reg or {}).get("low_q3_range")
    return float(bounds[1]) if isinstance(bounds, (list, tuple)) and len(bounds) == 2 else LOW_Q3_MAX


def regression_table(results: EvalResults) -> dict[str, Any]:
    """IQR ± bootstrap error per q3 bin (+ low-q3 and all-events rows), one column per estimator, lowest in bold."""
    estimators = _estimators(results)
    primary = estimators[0][1]
    q3_max = low_q3_max(primary)
    rows = []
    for i, (lo, hi) in enumerate(primary["q3_bins"]):
        same_bins = [reg if reg["q3_bins"] == primary["q3_bins"] else {} for _, reg in estimators]
        label = _q3_label(lo, hi) + (" · low q3" if hi <= q3_max + 1e-9 else "")
        cells = [(_at(reg, "iqr", i), _at(reg, "iqr_err", i)) for reg in same_bins]
        rows.append(_iqr_row(label, primary["n"][i], cells))
    for label, part in ((f"low q3 {_q3_label(0, q3_max)}", "low_q3"), ("all selected events", "overall")):
        rows.append(_iqr_row(label, primary[part].get("n"),
                             [(reg[part].get("iqr"), reg[part].get("iqr_err")) for _, reg in estimators]))
    details = [{"name": name, "rows": _resolution_rows(reg)} for name, reg in estimators]
    return {"names": [name for name, _ in estimators], "rows": rows, "details": details, "low_q3_max": q3_max}


def _resolution_rows(reg: dict[str, Any]) -> list[dict[str, str]]:
    """IQR, MPV, IQR/MPV (± bootstrap), RMS and events per q3 bin of one estimator."""
    return [{"q3": _q3_label(lo, hi), "rms": _with_error(_at(reg, "rms", i)), "n": _fmt(_at(reg, "n", i)),
             **{k: _with_error(_at(reg, k, i), _at(reg, f"{k}_err", i)) for k in ("iqr", "mpv", "iqr_over_mpv")}}
            for i, (lo, hi) in enumerate(reg["q3_bins"])]


def _at(block: dict[str, Any], key: str, i: int) -> Any:
    """Entry `i` of a per-bin list of the results (None when the list is absent)."""
    values = block.get(key) or []
    return values[i] if i < len(values) else None


def _iqr_row(label: str, n: Any, cells: list[tuple[Any, Any]]) -> dict[str, Any]:
    """One row of the IQR table; the lowest IQR of the row in bold when several estimators have one."""
    values = [v for v, _ in cells if _is_number(v)]
    best = min(values) if len(values) > 1 else None
    return {"q3": label, "n": _fmt(n),
            "cells": [_bold(_with_error(v, e), _is_number(v) and v == best) for v, e in cells]}


def classification_tables(results: EvalResults) -> list[dict[str, Any]]:
    """Per model: one row per tagging task, TPR of the cut and of the model at the cut's FPR, the higher in bold."""
    return [{"name": name, "rows": [_tagging_row(signal, m) for signal, m in block.items()]}
            for name, block in _estimators(results) if not name.endswith("(baseline)")]


def _tagging_row(signal: str, m: dict[str, Any]) -> dict[str, Any]:
    model, cut = _better(m.get("tpr_model"), m.get("tpr_cut"))
    return {"signal": SIGNAL_LABELS.get(signal, signal), "fpr_cut": _fmt(m.get("fpr_cut"), 4),
            "tpr_cut": _bold(_with_interval(m.get("tpr_cut"), m.get("tpr_cut_interval")), cut),
            "tpr_model": _bold(_with_interval(m.get("tpr_model"), m.get("tpr_model_interval")), model),
            "auroc": _fmt(m.get("auroc")), "n_signal": _fmt(m.get("n_signal")),
            "bins": [_bins_table(variable, b) for variable, b in _binnings(m).items()]}


def _better(model: Any, cut: Any) -> tuple[bool, bool]:
    """(model TPR is higher, cut TPR is higher); both False on a tie or a missing value."""
    if not (_is_number(model) and _is_number(cut)):
        return False, False
    return model > cut, cut > model


def _binnings(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return m.get("bins_by_variable") or ({m["bins"].get("variable", "w"): m["bins"]} if m.get("bins") else {})


def _bins_table(variable: str, b: dict[str, Any]) -> dict[str, Any]:
    """Per-bin TPRs (with intervals, the better of model/cut in bold) + the unplotted overflow bin when recorded."""
    n = len(b["edges"]) - 1
    column = lambda key: b.get(key) or [None] * n  # noqa: E731
    rows = []
    for i in range(n):
        model, cut = column("tpr_model")[i], column("tpr_cut")[i]
        model_wins, cut_wins = _better(model, cut)
        rows.append({"range": f"[{float(b['edges'][i]):g}, {float(b['edges'][i + 1]):g})",
                     "tpr_model": _bold(_with_interval(model, [column("tpr_model_lo")[i], column("tpr_model_hi")[i]]),
                                        model_wins),
                     "tpr_cut": _bold(_with_interval(cut, [column("tpr_cut_lo")[i], column("tpr_cut_hi")[i]]),
                                      cut_wins),
                     "n_signal": _fmt(column("n_signal")[i])})
    overflow = b.get("overflow")
    if isinstance(overflow, dict) and overflow.get("n_signal"):
        rows.append({"range": f"> {float(overflow['lo']):g} (not plotted)", "n_signal": _fmt(overflow["n_signal"]),
                     "tpr_model": _fmt(overflow.get("tpr_model")), "tpr_cut": _fmt(overflow.get("tpr_cut"))})
    unit = BIN_UNITS.get(variable)
    return {"variable": variable, "label": f"{variable} ({unit})" if unit else variable, "rows": rows}


def build_eval_results(results: EvalResults, dataset: dict[str, Any]) -> list[EvalResult]:
    """The primary model's metrics as Hub ``EvalResult``s (IQR per q3 bin, or TPR at the cut's FPR + AUROC)."""
    task = results.task
    metrics = results.models[results.primary][task]
    common = dict(task_type=f"tabular-{task}", task_name=f"MINERvA event {task}",
                  dataset_type=dataset["id"] or dataset["short"],
                  dataset_name=f"MINERvA-like neutrino events ({dataset['id'] or dataset['short']})",
                  dataset_split=results.split, dataset_revision=results.dataset_revision if dataset["id"] else None)
    out: list[EvalResult] = []
    if task == "regression":
        q3_max = low_q3_max(metrics)
        if _is_number(metrics["low_q3"].get("iqr")):
            out.append(EvalResult(**common, metric_type="iqr", metric_value=float(metrics["low_q3"]["iqr"]),
                                  metric_name=f"IQR of E_pred/E_true, low q3 (0, {q3_max:g}] GeV",
                                  metric_config="low_q3"))
        for (lo, hi), iqr in zip(metrics["q3_bins"], metrics["iqr"]):
            if _is_number(iqr):
                flag = " (low q3)" if hi <= q3_max + 1e-9 else ""
                out.append(EvalResult(**common, metric_type="iqr", metric_value=float(iqr),
                                      metric_name=f"IQR of E_pred/E_true, q3 in {_q3_label(lo, hi)} GeV{flag}",
                                      metric_config=f"q3_{lo:g}_{hi:g}"))
        return out
    for signal, m in metrics.items():
        label = SIGNAL_LABELS.get(signal, signal)
        if _is_number(m.get("tpr_model")):
            out.append(EvalResult(**common, metric_type="tpr_at_cut_fpr", metric_value=float(m["tpr_model"]),
                                  metric_name=f"TPR at the cut tagger's FPR={_fmt(m.get('fpr_cut'), 4)} ({label})",
                                  metric_config=signal))
        if _is_number(m.get("auroc")):
            out.append(EvalResult(**common, metric_type="roc_auc", metric_value=float(m["auroc"]),
                                  metric_name=f"AUROC ({label})", metric_config=signal))
    return out


# ---------------------------------------------------------------------------------------------------- sections
def _existing_plots(run_dir: Path, plots: list[str]) -> list[dict[str, str]]:
    """The listed plots that exist as files inside `run_dir` (others are left out of the card)."""
    root = run_dir.resolve()
    shown = []
    for rel in plots or []:
        path = (run_dir / rel).resolve()
        if path.is_file() and path.is_relative_to(root):
            shown.append({"path": Path(rel).as_posix(), "title": Path(rel).stem.replace("_", " ")})
    return shown


def compute_rows(summary: dict[str, Any], run: dict[str, Any], results: EvalResults) -> list[tuple[str, str]]:
    """(label, value) rows of the Compute table: training FLOPs, time, steps, parameters, evaluation."""
    rows = []
    if _is_number(summary.get("compute/flops")):
        rows.append(("training FLOPs (estimate)", f"{summary['compute/flops']:.3g}"))
    if _is_number(summary.get("compute/wall_hours")):
        rows.append(("training wall time", _duration(summary["compute/wall_hours"] * 3600)))
    if summary.get("step") is not None:
        rows.append(("optimizer steps", _fmt(summary["step"])))
    if summary.get("processes") is not None:
        threads = summary.get("torch_num_threads")
        rows.append(("processes × torch threads", f"{summary['processes']} × {threads if threads else '–'}"))
    if _is_number(run["n_params"]):
        rows.append(("parameters (total)", _fmt(int(run["n_params"]))))
    if _is_number(run["n_trainable"]):
        rows.append(("parameters (trainable)", f"{int(run['n_trainable']):,} ({trainable_percent(run)} %)"))
    compute = results.compute
    if compute.get("eval_seconds") is not None:
        on = f" on {compute['device']}" if compute.get("device") else ""
        rows.append(("evaluation time", f"{_duration(compute['eval_seconds'])} for {_fmt(compute.get('eval_events'))} "
                                        f"events{on}"))
    return rows


def trainable_percent(run: dict[str, Any]) -> str:
    """Trainable share of the parameters in percent (2 significant digits below 10 %), "–" when unknown."""
    if not (_is_number(run["n_params"]) and _is_number(run["n_trainable"]) and run["n_params"]):
        return "–"
    share = 100 * run["n_trainable"] / run["n_params"]
    return f"{share:.0f}" if share >= 10 else f"{share:.2g}"


def snippet(repo_id: str, revision: str, task: str, run: dict[str, Any]) -> str:
    """The python block of the card: the registry's load line and a one-event call in the collator's layout."""
    if run["is_adapter"]:
        base = run["base_model"] or "<base model id>"
        load = (f"{modeling.usage_snippet(base, 'main', task).replace('model = ', 'base = ')}\n"
                f'from peft import PeftModel; model = PeftModel.from_pretrained(base, "{repo_id}", '
                f'revision="{revision}")')
    else:
        load = modeling.usage_snippet(repo_id, revision, task)
    output = ('e_avail_gev = outputs.predictions  # (B,) GeV' if task == "regression" else
              'probabilities = outputs.logits.softmax(-1)  # (B, 5): CC1pi_charged, CCNpi_charged, CC1pi0, CC_other, '
              'NC')
    return "\n".join([
        "import torch", load, "",
        "# one event with 4 objects in the minerva-fm collator's layout (docs/tensor-layout.md): muon, blob, 2 prongs",
        'batch = {"object_features": torch.randn(1, 4, 9), "object_pid": torch.tensor([[1, 3, 4, 6]]),',
        '         "attention_mask": torch.ones(1, 4, dtype=torch.bool), "event_features": torch.randn(1, 16)}',
        "with torch.no_grad():", "    outputs = model.eval()(**batch)", output])


def onnx_section(run_dir: Path) -> dict[str, Any] | None:
    """What model.onnx holds (from onnx_export.json when present), or None when the folder has no ONNX file."""
    if not (run_dir / ONNX_FILE).is_file():
        return None
    info = _read_json(run_dir / ONNX_INFO_FILE)
    return {"file": ONNX_FILE, "inputs": info.get("inputs") or ["object_features", "object_pid", "attention_mask",
                                                                "event_features"],
            "outputs": info.get("outputs") or [], "opset": info.get("opset"), "max_objects": info.get("max_objects")}


def logs_section(run_dir: Path, logs: str | None) -> str | None:
    """Repo folder of the TensorBoard logs: `logs` when the publisher uploads them, else a local logs/ with events."""
    if logs:
        return logs.strip("/")
    folder = run_dir / "logs"
    return "logs" if folder.is_dir() and any(folder.rglob("*tfevents*")) else None


def _citations(backbone: str | None) -> list[str]:
    spec = modeling.BACKBONES.get(str(backbone))
    return [CITATIONS["paper"]] + ([CITATIONS[spec.paper]] if spec and spec.paper in CITATIONS else [])


# ---------------------------------------------------------------------------------------------------- the card
def build_card(run_dir: str | Path, repo_id: str | None = None, dataset_id: str | None = None,
               revision: str = "main", logs: str | None = None) -> ModelCard:
    """The rendered ``ModelCard`` for a run folder (not written); `logs`: repo folder of pushed TensorBoard logs."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    train_config = load_train_config(run_dir)
    summary = load_train_summary(run_dir)
    run = describe_run(run_dir, train_config, summary)
    dataset = describe_dataset(results, dataset_id)
    model_name = model_title(repo_id, train_config, run_dir)
    card_data = ModelCardData(
        model_name=model_name,
        eval_results=build_eval_results(results, dataset) or None,
        license="mit",
        library_name="peft" if run["is_adapter"] else "transformers",
        pipeline_tag=f"tabular-{results.task}",
        tags=[t for t in ("minerva-fm", "particle-physics", "neutrino", "minerva", "custom_code", results.task,
                          run["backbone"], run["mode"], "synthetic-data" if dataset["id"] is None and
                          "synthetic" in dataset["short"] else None, "onnx" if onnx_section(run_dir) else None) if t],
        datasets=[dataset["id"]] if dataset["id"] else None,
        base_model=run["base_model"],
        metrics=["iqr"] if results.task == "regression" else ["tpr_at_cut_fpr", "roc_auc"],
    )
    context = {
        "model_name": model_name, "repo_id": repo_id or REPO_PLACEHOLDER, "revision": revision, "task": results.task,
        "results": results, "dataset": dataset, "run": run, "trainable_percent": trainable_percent(run),
        "snippet": snippet(repo_id or REPO_PLACEHOLDER, revision, results.task, run),
        "regression": regression_table(results) if results.task == "regression" else None,
        "classification": classification_tables(results) if results.task == "classification" else None,
        "plots": _existing_plots(run_dir, results.plots), "compute": compute_rows(summary, run, results),
        "onnx": onnx_section(run_dir), "logs": logs_section(run_dir, logs),
        "train_config_json": json.dumps(_public_config(train_config), indent=2, sort_keys=True) if train_config else "",
        "citations": _citations(run["backbone"]), "paper_arxiv": PAPER_ARXIV, "fmt": _fmt,
    }
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
                             trim_blocks=True, lstrip_blocks=True)
    content = env.from_string(TEMPLATE_PATH.read_text(encoding="utf-8")).render(card_data=card_data.to_yaml(),
                                                                                 **context)
    return ModelCard(content)


def model_title(repo_id: str | None, train_config: dict[str, Any], run_dir: Path) -> str:
    """The model's name: the repo name, else the run's configured name, else its folder (never a bare "model")."""
    if repo_id:
        return repo_id.split("/")[-1]
    name = _lookup(train_config, "name")
    if name:
        return f"{name}-{_lookup(train_config, 'model.task')}" if _lookup(train_config, "model.task") else str(name)
    folder = run_dir.resolve()
    return folder.parent.name if folder.name in ("model", "adapter") else folder.name


def _public_config(train_config: dict[str, Any]) -> dict[str, Any]:
    """The training config with local paths (data, output folder, local init) replaced by what they are."""
    config = json.loads(json.dumps(train_config))
    for section, key in (("data", "path"), ("train", "output_dir"), ("model", "init")):
        value = (config.get(section) or {}).get(key) if isinstance(config.get(section), dict) else None
        if isinstance(value, str) and not _is_hub_id(value):
            config[section][key] = "<local path, not published>"
    return config


def write_model_card(run_dir: str | Path, repo_id: str | None = None, dataset_id: str | None = None,
                     revision: str = "main", logs: str | None = None) -> Path:
    """Render ``run_dir/README.md`` (atomic write); return its path."""
    card = build_card(run_dir, repo_id=repo_id, dataset_id=dataset_id, revision=revision, logs=logs)
    return write_text_atomic(Path(run_dir) / "README.md", str(card))


__all__ = ["write_model_card", "build_card", "load_eval_results", "build_eval_results", "EvalResultsError",
           "REPO_PLACEHOLDER"]
