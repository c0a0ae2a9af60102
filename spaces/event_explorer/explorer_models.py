"""Models of the explorer: load Hub repos (remote code, or PEFT adapters on a remote-code base), predict one event,
and fetch a repo's evaluation results/plots for the summary tab."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from explorer_data import UserInputError
from explorer_schema import NUM_EVENT_FEATURES, NUM_OBJECT_FEATURES, SIGNAL_CLASSES, TOPOLOGY_NAMES

MODELS_ENV = "MINERVA_EXPLORER_MODELS"  # comma-separated "ns/name[@revision]"
DEFAULT_MODELS = ("minerva-fm/minerva-mlp-e-avail", "minerva-fm/minerva-mlp-topology")


def default_model_ids() -> list[str]:
    """Model repos offered by default: $MINERVA_EXPLORER_MODELS, else the project's published ones."""
    value = os.environ.get(MODELS_ENV, "")
    ids = [v.strip() for v in value.split(",") if v.strip()]
    return ids or list(DEFAULT_MODELS)


def split_revision(model_id: str) -> tuple[str, str | None]:
    """'ns/name@rev' -> ('ns/name', 'rev')."""
    repo, _, revision = model_id.partition("@")
    return repo.strip(), (revision.strip() or None)


def _read_repo_json(repo: str, filename: str, revision: str | None) -> dict | None:
    """A JSON file of a local folder or Hub model repo, None when the repo has no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    if Path(repo).is_dir():
        path = Path(repo) / filename
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    try:
        return json.loads(Path(hf_hub_download(repo, filename, revision=revision)).read_text(encoding="utf-8"))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def _load_remote_code_model(repo: str, revision: str | None):
    """The saved architecture from the repo's own code (config.json auto_map), as trust_remote_code=True loads it.

    The class is resolved from `auto_map` directly rather than through an Auto class: in a process where the
    minerva-fm package registered its classes, `AutoModelFor...` would map a config type to one fixed head.
    """
    import transformers
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config = _read_repo_json(repo, "config.json", revision)
    if config is None:
        raise UserInputError(f"{repo}: no config.json or adapter_config.json; is it a minerva-fm model?")
    auto_name = _auto_class_name(config)
    ref = (config.get("auto_map") or {}).get(auto_name)
    if ref is None:  # no remote code: a class transformers knows
        return getattr(transformers, auto_name).from_pretrained(repo, revision=revision, trust_remote_code=True)
    model_class = get_class_from_dynamic_module(ref, repo, revision=revision)
    return model_class.from_pretrained(repo, revision=revision, trust_remote_code=True)


def _auto_class_name(config: dict) -> str:
    """The Auto class whose auto_map entry is the saved architecture (AutoModel when not registered)."""
    auto_map = config.get("auto_map") or {}
    architectures = config.get("architectures") or []
    for auto_name, ref in auto_map.items():
        if isinstance(ref, str) and architectures and ref.split(".")[-1] == architectures[0]:
            return auto_name
    model_entries = [name for name in auto_map if name != "AutoConfig"]
    return model_entries[0] if model_entries else "AutoModel"


@functools.lru_cache(maxsize=8)
def load_model(model_id: str):
    """A model ready for inference from 'ns/name[@revision]' (or a local folder); clear error when it fails."""
    repo, revision = split_revision(model_id)
    try:
        adapter = _read_repo_json(repo, "adapter_config.json", revision)
        if adapter:
            from peft import PeftModel

            base = load_model(adapter["base_model_name_or_path"])
            model = PeftModel.from_pretrained(base, repo, revision=revision)
        else:
            model = _load_remote_code_model(repo, revision)
    except UserInputError:
        raise
    except Exception as err:  # noqa: BLE001 - shown to the user
        raise UserInputError(f"could not load model {model_id!r}: {type(err).__name__}: {err}") from None
    return model.eval()


def event_batch(table: pa.Table, index: int) -> dict:
    """The model batch (docs/tensor-layout.md) of one event: the project's collator when installed."""
    try:
        from dataset_builder.collator import MinervaCollator
    except ImportError:
        return _single_event_batch(table.slice(index, 1).to_pylist()[0])
    return MinervaCollator().collate_arrow(table.slice(index, 1))


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
            "event_features": torch.from_numpy(np.asarray(row["event_features"], np.float32).reshape(1, NUM_EVENT_FEATURES))}


def predict(model, batch: dict) -> dict:
    """{'task': 'regression', 'e_avail': GeV} or {'task': 'classification', 'probabilities': {class: p}, 'scores'}."""
    import torch

    with torch.no_grad():
        outputs = model(**batch)
    predictions = getattr(outputs, "predictions", None)
    if predictions is not None:
        return {"task": "regression", "e_avail": float(predictions.reshape(-1)[0])}
    logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]
    probabilities = torch.softmax(logits.float(), dim=-1).reshape(-1).tolist()
    if len(probabilities) != len(TOPOLOGY_NAMES):
        raise UserInputError(f"model returned {len(probabilities)} classes, expected {len(TOPOLOGY_NAMES)} topologies")
    scores = {signal: float(sum(probabilities[c] for c in classes)) for signal, classes in SIGNAL_CLASSES.items()}
    return {"task": "classification", "probabilities": dict(zip(TOPOLOGY_NAMES, probabilities)), "scores": scores}


def format_prediction(model_id: str, result: dict, row: dict) -> str:
    """One line per model: the prediction next to the truth and the event's baseline."""
    if result["task"] == "regression":
        truth, calo = row.get("e_avail"), row.get("calo_e_avail")
        return (f"{model_id}: E_avail = {result['e_avail']:.4f} GeV"
                f" | truth {_num(truth)} GeV | calorimetric {_num(calo)} GeV")
    probs = ", ".join(f"{name} {p:.4f}" for name, p in result["probabilities"].items())
    tags = ", ".join(f"{signal} score {score:.4f} vs cut {_tag(row.get('tag_' + signal))}"
                     for signal, score in result["scores"].items())
    return f"{model_id}: P = [{probs}] | {tags}"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _tag(value) -> str:
    return "n/a" if value is None else ("pass" if value else "fail")


def model_summary(model_id: str) -> tuple[str, list[str]]:
    """(markdown of the repo's eval_results.json headline numbers, local paths of its plots)."""
    from huggingface_hub import hf_hub_download

    repo, revision = split_revision(model_id)
    try:
        results = _read_repo_json(repo, "eval_results.json", revision)
    except Exception as err:  # noqa: BLE001
        raise UserInputError(f"could not read eval_results.json of {model_id!r}: {type(err).__name__}: {err}") from None
    if results is None:
        return f"**{model_id}** has no `eval_results.json`.", []
    plots = []
    for rel in results.get("plots") or []:
        try:
            plots.append(str(Path(repo) / rel) if Path(repo).is_dir() else hf_hub_download(repo, rel, revision=revision))
        except Exception:  # noqa: BLE001 - a missing plot is skipped, the table still shows
            continue
    return _summary_markdown(model_id, results), plots


def _summary_markdown(model_id: str, results: dict) -> str:
    lines = [f"### {model_id}", f"task **{results.get('task')}**, dataset `{results.get('dataset')}`, "
                                f"split `{results.get('split')}`", ""]
    for name, entry in {**results.get("models", {}), **{f"{k} (baseline)": v for k, v in
                                                         (results.get("baselines") or {}).items()}}.items():
        if "regression" in entry:
            reg = entry["regression"]
            bins = reg.get("q3_bins") or [[b["lo"], b["hi"]] for b in reg.get("bins", []) if not b.get("overflow")]
            iqrs = reg.get("iqr") or [b.get("iqr") for b in reg.get("bins", []) if not b.get("overflow")]
            cells = " | ".join(f"q3 ({lo:g}, {hi:g}]: {_num(v)}" for (lo, hi), v in zip(bins, iqrs))
            lines.append(f"* **{name}** IQR of E_pred/E_true: {cells}")
        for signal, m in (entry.get("classification") or {}).items():
            tpr = m.get("tpr_model", (m.get("model") or {}).get("tpr"))
            fpr = m.get("fpr_cut", (m.get("cut") or {}).get("fpr"))
            lines.append(f"* **{name}** {signal}: TPR {_num(tpr)} at the cut's FPR {_num(fpr)}")
    return "\n".join(lines)
