"""The model card (README.md) of a pretrained backbone, rendered from its `pretrain_record.json` with
`ModelCard.from_template`: what the weights started from (random init and seed, or the init's id + revision and the
sha256 of its weights), which corpus (our synthetic Pythia jets are never called JetClass), objectives, mask rate,
steps, tokens, compute and loss."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from minerva_common.atomic import write_text_atomic

TEMPLATE_PATH = Path(__file__).parent / "templates" / "pretrain_card.md"
RECORD_FILE = "pretrain_record.json"
OBJECTIVE_TEXT = {"jet_classification": "supervised jet classification (10 JetClass labels)",
                  "masked_particles": "masked particle modelling on jets",
                  "masked_objects": "masked-object modelling on MINERvA events (no labels)"}
VALIDATION_KEYS = ("classification", "classification_accuracy", "masked_features", "masked_pid",
                   "masked_pid_accuracy")
FINETUNE_CONFIGS = {"omnilearned": "omnilearned_small_full.yaml", "particle_vit": "particle_vit_small_full.yaml",
                    "bert_projection": "bert_tiny_full.yaml"}


def init_text(init: dict) -> str:
    """One sentence: random init with its seed, or the init checkpoint with revision and weight hashes."""
    if init.get("kind") == "random":
        return f"random initialisation (seed {init.get('seed')}), no pretrained weights"
    where = "a local backbone folder (not published)" if init.get("kind") == "local" else \
        f"`{init['init']}`" + (f" @ `{init['revision']}`" if init.get("revision") else "")
    hashes = ", ".join(f"{name} sha256 `{digest}`" for name, digest in (init.get("sha256") or {}).items())
    parent = init.get("init_record") or {}
    origin = f" (itself pretrained: {parent.get('name')}, {', '.join(parent.get('objectives') or {})})" \
        if parent.get("name") else ""
    return f"the backbone {where}{origin}" + (f"; {hashes}" if hashes else "")


def corpus_text(corpus: dict) -> str:
    """Sources of the corpus with their kind."""
    return "; ".join(f"{_source_name(s)}: {s['kind']}" for s in corpus["sources"]) + \
        f" (split `{corpus['train_split']}`)"


def _source_name(source: dict) -> str:
    """A Hub dataset id @ commit; a local folder is described, never shown as a path of the training machine."""
    if source.get("local", Path(source["path"]).is_absolute()):
        return "a local dataset (not published)"
    return f"`{source['path']}`" + (f" @ `{source['revision']}`" if source.get("revision") else "")


def loss_text(loss: dict | None) -> str:
    """First -> last logged training loss."""
    train = (loss or {}).get("train") or {}
    if not train:
        return "–"
    return f"{train['first']:.4g} (step {train['first_step']}) -> {train['last']:.4g} (step {train['last_step']})"


def render_pretrain_card(record: dict, repo_id: str | None = None) -> ModelCard:
    """The card of a backbone folder from its record."""
    domain = record["corpus"]["domain"]
    tags = ["minerva-fm", "particle-physics", "pretraining", record["backbone"],
            "jets" if domain == "jets" else "neutrino"]
    data = ModelCardData(library_name="transformers", license="mit", tags=tags,
                         base_model=record["init"]["init"] if record["init"].get("kind") == "hub" else None)
    objectives = ", ".join(OBJECTIVE_TEXT[k] for k in record["objectives"])
    validation = ((record.get("loss") or {}).get("validation") or [])[-5:]  # the last five evaluations
    keys = [k for k in VALIDATION_KEYS if validation and f"val/{k}" in validation[-1]]
    return ModelCard.from_template(
        data, template_path=str(TEMPLATE_PATH), name=record["name"], backbone=record["backbone"],
        size=record.get("size"), architecture=record.get("architecture") or {},
        finetune_config=FINETUNE_CONFIGS.get(record["backbone"], "<config>.yaml"), n_params=record["n_params"],
        objective_text=objectives, init_text=init_text(record["init"]),
        corpus_text=corpus_text(record["corpus"]), objectives=record["objectives"],
        mask_fraction=record.get("mask_fraction"), steps=record["steps"], global_batch=record["global_batch"],
        processes=record["processes"], events_seen=record["events_seen"], tokens_seen=record["tokens_seen"],
        train_flops=record["train_flops"], wall_seconds=record["wall_seconds"], loss_text=loss_text(record["loss"]),
        new_parameter_names=record.get("new_parameter_names") or [], seed=record.get("seed"), domain=domain,
        repo_id=repo_id or "<repo id>", plots=record.get("plots") or [], validation=validation,
        validation_keys=keys)


def write_pretrain_card(folder: str | Path, record: dict | None = None, repo_id: str | None = None) -> Path:
    """Render README.md into a backbone folder (from `record` or its pretrain_record.json); returns the path."""
    folder = Path(folder)
    record = record if record is not None else json.loads((folder / RECORD_FILE).read_text())
    path = folder / "README.md"
    write_text_atomic(path, str(render_pretrain_card(record, repo_id)))
    return path





# ------------------------------------------------------------------------------------------------------- publishing
def pretrain_folder(run_dir: str | Path) -> Path | None:
    """The backbone folder of a pretraining run (`run_dir/backbone` or `run_dir` itself), None for other runs."""
    run_dir = Path(run_dir)
    for folder in (run_dir / "backbone", run_dir):
        if (folder / RECORD_FILE).is_file() and (folder / "config.json").is_file():
            return folder
    return None


def pretrain_files(folder: Path) -> list[Path]:
    """Files of a backbone folder that belong in its model repo: weights, configs, remote code, record, card."""
    from model_cards.publish import PublishError, _remote_code_files

    if not (folder / "model.safetensors").is_file():
        raise PublishError(f"{folder}: no model.safetensors (files: {sorted(p.name for p in folder.iterdir())})")
    names = ["model.safetensors", "config.json", "train_config.json", "train_config.yaml", RECORD_FILE,
             "loss_curves.png"]
    return [Path(n) for n in names if (folder / n).is_file()] + _remote_code_files(folder) + [Path("README.md")]
__all__ = ["render_pretrain_card", "write_pretrain_card", "init_text", "corpus_text", "pretrain_folder",
           "pretrain_files"]
