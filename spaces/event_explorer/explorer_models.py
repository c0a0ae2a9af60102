"""Models of the explorer: load allow-listed Hub repos (their own code, or PEFT adapters on an allow-listed base),
predict one event, and fetch a repo's evaluation results/plots for the summary tab.

Security: a model repo's code runs in the Space process, so only ids on the allow-list load: the project's published
models, $MINERVA_EXPLORER_MODELS and the ids the Space owner passes to `build_demo`. A visitor's id (typed, or
`?models=`) that is not on it is refused before anything is downloaded; local paths are never model ids.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from explorer_data import REPO_ID_PATTERN, UserInputError, hub_repo_info
from explorer_schema import (LOW_Q3_MAX, NUM_EVENT_FEATURES, NUM_OBJECT_FEATURES, PID_NAMES, RESULTS_FILE,
                             SIGNAL_CLASSES, SIGNAL_LABELS, TOPOLOGY_NAMES)
from minerva_common.results import EvalResults, ResultsError

MODELS_ENV = "MINERVA_EXPLORER_MODELS"  # comma-separated "ns/name[@revision]"
PUBLISHED_MODELS = ("minerva-fm/minerva-mlp-e-avail", "minerva-fm/minerva-mlp-topology")
_REVISION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$")
_owner_models: set[str] = set()


def default_model_ids() -> list[str]:
    """Model repos offered by default: $MINERVA_EXPLORER_MODELS, else the project's published ones."""
    return _env_model_ids() or list(PUBLISHED_MODELS)


def _env_model_ids() -> list[str]:
    return [v.strip() for v in os.environ.get(MODELS_ENV, "").split(",") if v.strip()]


def allow_models(model_ids) -> None:
    """Add the Space owner's model ids (build_demo's `model_ids`) to the allow-list of this process."""
    _owner_models.update(m.strip() for m in model_ids if m and m.strip())


def allowed_model_ids() -> list[str]:
    """Every id that may load: published, $MINERVA_EXPLORER_MODELS and the owner's (`repo` or `repo@revision`)."""
    return list(dict.fromkeys([*PUBLISHED_MODELS, *_env_model_ids(), *sorted(_owner_models)]))


def split_revision(model_id: str) -> tuple[str, str | None]:
    """'ns/name@rev' -> ('ns/name', 'rev')."""
    repo, _, revision = (model_id or "").partition("@")
    return repo.strip(), (revision.strip() or None)


def checked_model_id(model_id: str) -> tuple[str, str | None]:
    """(repo, revision) of an allow-listed Hub model id; a UserInputError for anything else (paths included)."""
    repo, revision = split_revision(model_id)
    if ".." in repo or not REPO_ID_PATTERN.match(repo) or (revision and not _REVISION_PATTERN.match(revision)):
        raise UserInputError(f"model id must be a Hub repo id 'namespace/name[@revision]', got {model_id!r}")
    allowed = allowed_model_ids()
    if repo not in allowed and f"{repo}@{revision}" not in allowed:
        raise UserInputError(f"model {model_id!r} is not on this Space's allow-list (its code would run here); "
                             f"choose one of {allowed}, or ask the Space owner to add it to ${MODELS_ENV}")
    return repo, revision


def _repo_files(repo: str, revision: str | None) -> set[str]:
    """The file names of a Hub model repo (empty in offline mode), failing fast when the Hub is unreachable."""
    info = hub_repo_info(repo, "model", revision)
    return {s.rfilename for s in (info.siblings or [])} if info is not None else set()


def _read_repo_json(repo: str, filename: str, revision: str | None, files: set[str] | None = None) -> dict | None:
    """A JSON file of a Hub model repo, None when the repo has no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    if files is not None and filename not in files:
        return None
    try:
        path = Path(hf_hub_download(repo, filename, revision=revision))
    except EntryNotFoundError:
        return None
    except LocalEntryNotFoundError as err:
        raise UserInputError(f"{repo}: {filename} is neither reachable on the Hub nor cached ({err})") from None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserInputError(f"{repo}: {filename} is not valid JSON ({err})") from None


def model_class(config: dict, repo: str, revision: str | None):
    """The class that loads this checkpoint with its head: the config's `auto_map` entry naming its architecture.

    Resolved from `auto_map` directly rather than through an Auto class: in a process where the minerva-fm package
    registered its classes, an `AutoModelFor...` would map a config type to one fixed head. Runs the repo's code:
    call only for allow-listed repos.
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    architecture = (config.get("architectures") or [None])[0]
    auto_map = {k: v for k, v in (config.get("auto_map") or {}).items() if k != "AutoConfig" and isinstance(v, str)}
    ref = next((v for v in auto_map.values() if v.split(".")[-1] == architecture), None)
    ref = ref or auto_map.get("AutoModelForSequenceClassification")
    if ref is None:
        raise UserInputError(f"{repo}: config.json has no auto_map class for architecture {architecture!r}; "
                             "is it a minerva-fm model?")
    return get_class_from_dynamic_module(ref, repo, revision=revision)


def load_model(model_id: str):
    """A model ready for inference from an allow-listed 'ns/name[@revision]'; a clear error when it fails."""
    return _load_checked(*checked_model_id(model_id))


@functools.lru_cache(maxsize=8)
def _load_checked(repo: str, revision: str | None):
    try:
        files = _repo_files(repo, revision)
        adapter = _read_repo_json(repo, "adapter_config.json", revision, files or None)
        if adapter:
            from peft import PeftModel

            base_id = str(adapter.get("base_model_name_or_path") or "")
            try:
                base = load_model(base_id)
            except UserInputError as err:
                raise UserInputError(f"{repo}: the adapter's base model cannot be loaded: {err}") from None
            model = PeftModel.from_pretrained(base, repo, revision=revision)
        else:
            config = _read_repo_json(repo, "config.json", revision, files or None)
            if config is None:
                raise UserInputError(f"{repo}: no config.json or adapter_config.json; is it a minerva-fm model?")
            model = model_class(config, repo, revision).from_pretrained(repo, revision=revision)
    except UserInputError:
        raise
    except Exception as err:  # noqa: BLE001 - shown to the user
        raise UserInputError(f"could not load model {repo!r}: {type(err).__name__}: {err}") from None
    return model.eval()


def event_batch(table: pa.Table, index: int) -> dict:
    """The model batch (docs/tensor-layout.md) of one event: the project's collator when installed."""
    try:
        from dataset_builder.collator import MinervaCollator
    except ImportError:
        return _single_event_batch(table.slice(index, 1).to_pylist()[0])
    return MinervaCollator().collate_arrow(table.slice(index, 1))


def check_model_inputs(row: dict, index: int) -> None:
    """Refuse object types outside the schema's PID codes (real objects: 1..8) before a model sees them."""
    pid = np.asarray(row["object_pid"], np.int64).reshape(-1)
    bad = pid[(pid < 1) | (pid >= len(PID_NAMES))]
    if bad.size:
        raise UserInputError(f"event {index}: object_pid {int(bad[0])} is not an object type of the schema "
                             f"(1..{len(PID_NAMES) - 1}: {', '.join(PID_NAMES[1:])})")


def _single_event_batch(row: dict) -> dict:
    """B = 1 batch without padding (every slot is a real object), as the collator builds it."""
    import torch

    features = np.asarray(row["object_features"], np.float32).reshape(1, -1, NUM_OBJECT_FEATURES)
    pid = np.asarray(row["object_pid"], np.int64).reshape(1, -1)
    if pid.shape[1] == 0:  # the collator keeps one (masked) slot for an empty event
        features, pid = np.zeros((1, 1, NUM_OBJECT_FEATURES), np.float32), np.zeros((1, 1), np.int64)
        mask = np.zeros((1, 1), bool)
    else:
        mask = np.ones(pid.shape, bool)
    return {"object_features": torch.from_numpy(features), "object_pid": torch.from_numpy(pid),
            "attention_mask": torch.from_numpy(mask),
            "event_features": torch.from_numpy(np.asarray(row["event_features"], np.float32)
                                               .reshape(1, NUM_EVENT_FEATURES))}


def predict(model, batch: dict, working_points: dict | None = None) -> dict:
    """{'task': 'regression', 'e_avail': GeV} or {'task': 'classification', 'probabilities', 'scores', 'decisions'}.

    `decisions` maps each signal with a working point (eval_results.json threshold) to score >= threshold.
    """
    import torch

    with torch.no_grad():
        outputs = model(**batch)
    predictions = getattr(outputs, "predictions", None)
    values = predictions if predictions is not None else (outputs.logits if hasattr(outputs, "logits") else outputs[0])
    if not bool(torch.isfinite(values).all()):
        raise UserInputError("the model returned a non-finite (NaN/Inf) output for this event")
    if predictions is not None:
        return {"task": "regression", "e_avail": float(predictions.reshape(-1)[0])}
    logits = values
    probabilities = torch.softmax(logits.float(), dim=-1).reshape(-1).tolist()
    if len(probabilities) != len(TOPOLOGY_NAMES):
        raise UserInputError(f"model returned {len(probabilities)} classes, expected {len(TOPOLOGY_NAMES)} topologies")
    scores = {signal: float(sum(probabilities[c] for c in classes)) for signal, classes in SIGNAL_CLASSES.items()}
    decisions = {signal: scores[signal] >= point["threshold"] for signal, point in (working_points or {}).items()
                 if signal in scores}
    return {"task": "classification", "probabilities": dict(zip(TOPOLOGY_NAMES, probabilities)), "scores": scores,
            "decisions": decisions}


def format_prediction(model_id: str, result: dict, row: dict, working_points: dict | None = None) -> str:
    """The prediction next to the truth and baseline: one line per model, plus one per tagging task (the model's
    decision at its working point)."""
    if result["task"] == "regression":
        truth, calo = row.get("e_avail"), row.get("calo_e_avail")
        return (f"{model_id}: E_avail = {result['e_avail']:.4f} GeV"
                f" | truth {_num(truth)} GeV | calorimetric {_num(calo)} GeV")
    probs = ", ".join(f"{name} {p:.4f}" for name, p in result["probabilities"].items())
    tags = []
    for signal, score in result["scores"].items():
        point = (working_points or {}).get(signal)
        decision = ("no working point (no eval_results.json threshold)" if point is None else
                    f"{'TAGGED' if result['decisions'][signal] else 'not tagged'} at threshold {point['threshold']:.4f}"
                    f" (FPR {_num(point.get('fpr_model'))} ≤ cut's {_num(point.get('fpr_cut'))})")
        truth = _truth_signal(row, signal)
        tags.append(f"    {SIGNAL_LABELS.get(signal, signal)}: score {score:.4f} → {decision}; cut tagger "
                    f"{_tag(row.get('tag_' + signal))}; truth {truth}")
    return "\n".join([f"{model_id}: P = [{probs}]", *tags])


def _truth_signal(row: dict, signal: str) -> str:
    topology = row.get("topology")
    if topology is None:
        return "n/a"
    return "signal" if int(topology) in SIGNAL_CLASSES[signal] else "background"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _tag(value) -> str:
    return "n/a" if value is None else ("pass" if value else "fail")


@functools.lru_cache(maxsize=16)
def eval_results(model_id: str) -> EvalResults | None:
    """The repo's eval_results.json read through minerva_common.results (the one layout), None when absent."""
    repo, revision = checked_model_id(model_id)
    data = _read_repo_json(repo, RESULTS_FILE, revision)
    return None if data is None else parse_results(model_id, data)


def parse_results(model_id: str, data) -> EvalResults:
    """`EvalResults.from_dict` with its one-line error (file and field) as a message for the visitor."""
    try:
        return EvalResults.from_dict(data, f"{model_id}: {RESULTS_FILE}")
    except ResultsError as err:
        raise UserInputError(str(err)) from None


def primary_entry(results: EvalResults) -> dict:
    """The entry of the model the results describe (`primary_model`, else the first of `models`)."""
    return results.models[results.primary]


def working_points(model_id: str) -> dict:
    """{signal: {threshold, fpr_model, fpr_cut, tpr_model}} of a classifier from its eval_results.json ({} if none)."""
    results = eval_results(model_id)
    if results is None or results.task != "classification":
        return {}
    blocks = primary_entry(results)["classification"]
    return {signal: {k: block.get(k) for k in ("threshold", "fpr_model", "fpr_cut", "tpr_model")}
            for signal, block in blocks.items() if isinstance(block.get("threshold"), (int, float))}


def model_summary(model_id: str) -> tuple[str, list[str]]:
    """(markdown of the repo's eval_results.json headline numbers with uncertainties, local paths of its plots)."""
    from huggingface_hub import hf_hub_download

    repo, revision = checked_model_id(model_id)
    try:
        results = eval_results(model_id)
    except UserInputError:
        raise
    except Exception as err:  # noqa: BLE001
        raise UserInputError(f"could not read {RESULTS_FILE} of {model_id!r}: {type(err).__name__}: {err}") from None
    if results is None:
        return f"**{model_id}** has no `{RESULTS_FILE}`.", []
    plots = []
    for rel in results.plots:
        if rel.startswith("/") or ".." in rel.split("/"):
            continue  # plots are files of the repo, named relative to it
        try:
            plots.append(hf_hub_download(repo, rel, revision=revision))
        except Exception:  # noqa: BLE001 - a missing plot is skipped, the table still shows
            continue
    return summary_markdown(model_id, results), plots


def summary_markdown(model_id: str, results: EvalResults) -> str:
    """Headline numbers of eval_results.json as tables, each value with its uncertainty."""
    selection, weights = results.selection, results.weights
    lines = [f"### {model_id}",
             f"task **{results.task}**, dataset `{results.dataset}`, split `{results.split}`"
             + (f", {selection['n_selected']} of {selection['n_events']} events in the metrics"
                if selection.get("n_selected") is not None and selection.get("n_events") is not None else "")
             + (f", weighted by `{weights.get('column')}`" if weights.get("used") else ""), ""]
    entries = {**results.models, **{f"{k} (baseline)": v for k, v in results.baselines.items()}}
    if results.task == "regression":
        lines += _regression_tables(entries)
    else:
        lines += _classification_table(entries)
    lines += ["", _uncertainty_note(results)]
    return "\n".join(lines)


def _regression_tables(entries: dict) -> list[str]:
    """IQR and MPV of E_pred/E_true per q3 bin, low q3 and overall (± bootstrap standard deviation when stored)."""
    bins = next(iter(entries.values()))["regression"]["q3_bins"]
    header = ["estimator", *(f"q3 ({lo:g}, {hi:g}]" for lo, hi in bins), f"q3 ≤ {LOW_Q3_MAX:g} GeV", "all q3"]
    out = []
    for key, title in (("iqr", "IQR of E_pred/E_true"), ("mpv", "MPV of E_pred/E_true")):
        out += [f"**{title}** (q3 in GeV)", "", _row(header), _row(["---"] * len(header))]
        for name, entry in entries.items():
            reg = entry["regression"]
            errors = reg.get(f"{key}_err") or [None] * len(reg[key])
            cells = [_pm(v, e) for v, e in zip(reg[key], errors)]
            cells += [_pm(reg[part].get(key), reg[part].get(f"{key}_err")) for part in ("low_q3", "overall")]
            out.append(_row([f"**{name}**", *cells]))
        out.append("")
    return out


def _classification_table(entries: dict) -> list[str]:
    """Per tagging task: TPR [interval] at the cut tagger's FPR for every model and the cut tagger, with AUROC."""
    out = ["**TPR at the cut tagger's FPR** (interval: Clopper–Pearson)", "",
           _row(["signal", "estimator", "TPR", "FPR", "AUROC", "n signal"]), _row(["---"] * 6)]
    signals = dict.fromkeys(s for entry in entries.values() for s in entry["classification"])
    for signal in signals:
        label = SIGNAL_LABELS.get(signal, signal)
        for name, entry in entries.items():
            m = entry["classification"].get(signal)
            if m is None:
                continue
            model = "tpr_model" in m
            tpr = m["tpr_model"] if model else m["tpr_cut"]
            interval = m.get("tpr_model_interval" if model else "tpr_cut_interval")
            out.append(_row([label, f"**{name}**", _interval(tpr, interval),
                             _num(m.get("fpr_model") if model else m.get("fpr_cut")),
                             _num(m.get("auroc")) if model else "", str(m.get("n_signal", ""))]))
    return out


def _uncertainty_note(results: EvalResults) -> str:
    u = results.uncertainties
    if not u:
        return "<sub>No uncertainties recorded in this eval_results.json.</sub>"
    if results.task == "classification":
        level = u.get("confidence_level")
        return (f"<sub>TPR intervals: {u.get('tpr') or 'none'}"
                + (f" at {100 * level:.2f} % CL" if level else "") + ".</sub>")
    return (f"<sub>±: {u['iqr_mpv']} standard deviation ({u.get('n_bootstrap')} replicas).</sub>" if u.get("iqr_mpv")
            else "<sub>No bootstrap uncertainties on IQR/MPV in this eval_results.json.</sub>")


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _pm(value, error) -> str:
    return _num(value) if error is None or value is None else f"{value:.3f} ± {error:.3f}"


def _interval(value, interval) -> str:
    if value is None or not interval or None in interval:
        return _num(value)
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
