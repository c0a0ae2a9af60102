"""Publish a run/export folder as a Hub model repo (weights, config, remote code, eval results, plots, card),
and the event-explorer folder as a Gradio Space.

Uploads are one explicit commit each (history kept on re-push). Failures raise `PublishError` whose message never
contains the token; the local folder is only touched to (re)write its rendered README.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from model_cards.render import EVAL_RESULTS_FILE, TRAIN_CONFIG_FILE, load_eval_results, write_model_card

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")
CONFIG_FILES = ("config.json", "adapter_config.json", EVAL_RESULTS_FILE, TRAIN_CONFIG_FILE)
SPACE_REQUIRED_FILES = ("app.py", "requirements.txt", "README.md")
SPACE_IGNORE = ["__pycache__/*", "*/__pycache__/*", "*.pyc", ".*"]


class PublishError(RuntimeError):
    """An upload could not be prepared or failed; the message is safe to log (no token)."""


def resolve_token(token: str | None) -> str:
    """The explicit token, else the one huggingface_hub finds (HF_TOKEN / stored login); clear error when none."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PublishError("no Hugging Face token: pass token=..., set HF_TOKEN, or run `hf auth login`")
    return token


def _redact(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def model_files(run_dir: Path) -> list[Path]:
    """The files of a run folder that belong in its model repo (relative paths), checked for completeness."""
    if not (run_dir / EVAL_RESULTS_FILE).is_file():
        raise PublishError(f"{run_dir}: no {EVAL_RESULTS_FILE}; evaluate the run before publishing it")
    weights = [Path(name) for name in WEIGHT_FILES if (run_dir / name).is_file()]
    sharded = sorted(p.relative_to(run_dir) for p in run_dir.glob("model-*-of-*.safetensors"))
    if sharded:
        weights += sharded + [Path("model.safetensors.index.json")]
    if not weights:
        raise PublishError(f"{run_dir}: no model.safetensors or adapter_model.safetensors to publish "
                           f"(files: {sorted(p.name for p in run_dir.iterdir())})")
    configs = [Path(name) for name in CONFIG_FILES if (run_dir / name).is_file()]
    if Path("model.safetensors") in weights and Path("config.json") not in configs:
        raise PublishError(f"{run_dir}: model.safetensors without config.json")
    if Path("adapter_model.safetensors") in weights and Path("adapter_config.json") not in configs:
        raise PublishError(f"{run_dir}: adapter_model.safetensors without adapter_config.json")
    code = _remote_code_files(run_dir)
    plots = [Path(p) for p in load_eval_results(run_dir).get("plots") or [] if (run_dir / p).is_file()]
    return weights + configs + code + plots + [Path("README.md")]


def _remote_code_files(run_dir: Path) -> list[Path]:
    """The `.py` files save_pretrained copied (every module named in config.json's auto_map must be present)."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        return []
    auto_map = json.loads(config_path.read_text(encoding="utf-8")).get("auto_map") or {}
    modules = {ref.split("--")[-1].split(".")[0] for ref in auto_map.values() if isinstance(ref, str)}
    missing = sorted(m for m in modules if not (run_dir / f"{m}.py").is_file())
    if missing:
        raise PublishError(f"{run_dir}: config.json auto_map names {missing} but the .py files are missing; "
                           "save the model with save_pretrained after register_for_auto_class")
    return sorted(p.relative_to(run_dir) for p in run_dir.glob("*.py")) if modules else []


def push_model(run_dir: str | Path, repo_id: str, token: str | None = None, private: bool = False,
               commit_message: str | None = None, dataset_id: str | None = None, endpoint: str | None = None) -> str:
    """Render the card and upload a run folder to the model repo ``repo_id`` in one commit; return the commit url."""
    from huggingface_hub import CommitOperationAdd, HfApi

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"{run_dir}: not a folder")
    token = resolve_token(token)
    from model_cards.pretrain_card import pretrain_files, pretrain_folder, write_pretrain_card

    pretrained = pretrain_folder(run_dir)  # a pretraining run: its backbone folder with the pretraining card
    if pretrained is not None:
        run_dir = pretrained
        write_pretrain_card(run_dir, repo_id=repo_id)
        files = pretrain_files(run_dir)
    else:
        write_model_card(run_dir, repo_id=repo_id, dataset_id=dataset_id)
        files = model_files(run_dir)
    operations = [CommitOperationAdd(path_in_repo=p.as_posix(), path_or_fileobj=str(run_dir / p)) for p in files]
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations=operations,
                                 commit_message=commit_message or f"Upload {run_dir.resolve().name} with minerva-fm")
    except Exception as err:  # noqa: BLE001 - re-raised without the token and without the original chain
        raise PublishError(f"upload of {run_dir} to model repo {repo_id!r} failed "
                           f"({type(err).__name__}: {_redact(str(err), token)}); the local files are kept") from None
    logger.info("pushed %d files from %s to %s", len(files), run_dir, info.commit_url)
    return info.commit_url


def push_space(space_repo_id: str, app_dir: str | Path = "spaces/event_explorer", token: str | None = None,
               private: bool = False, commit_message: str | None = None, endpoint: str | None = None) -> str:
    """Upload the Gradio app folder to the Space ``space_repo_id`` in one commit; return the commit url."""
    from huggingface_hub import HfApi

    app_dir = Path(app_dir)
    missing = [name for name in SPACE_REQUIRED_FILES if not (app_dir / name).is_file()]
    if missing:
        raise PublishError(f"{app_dir}: not a Space folder, missing {missing}")
    if not (app_dir / "README.md").read_text(encoding="utf-8").startswith("---"):
        raise PublishError(f"{app_dir / 'README.md'}: needs the Space YAML header (sdk, sdk_version, app_file)")
    token = resolve_token(token)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(space_repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=space_repo_id, repo_type="space", folder_path=app_dir,
                                 ignore_patterns=SPACE_IGNORE,
                                 commit_message=commit_message or "Upload the minerva-fm event explorer")
    except Exception as err:  # noqa: BLE001
        raise PublishError(f"upload of {app_dir} to Space {space_repo_id!r} failed "
                           f"({type(err).__name__}: {_redact(str(err), token)})") from None
    logger.info("pushed %s to %s", app_dir, info.commit_url)
    return info.commit_url


__all__ = ["push_model", "push_space", "model_files", "PublishError"]
