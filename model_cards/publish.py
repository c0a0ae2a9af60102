"""Publish a run/export folder as a Hub model repo (weights, config, remote code, eval results, plots, ONNX export,
TensorBoard logs, card), and the event-explorer folder as a Gradio Space.

`push_model` takes a model folder (`RUN/model`, `RUN/adapter`, any save_pretrained folder with eval_results.json)
or a training run folder `RUN` (then `RUN/model` is the repo root, or `RUN/adapter` for an unmerged LoRA run). The
run's TensorBoard event files (`RUN/logs`) go under `logs/` so the Hub's training-metrics view shows them; a LoRA
run's adapter goes under `adapter/` next to the merged model. Only regular files whose real location is inside the
run folder are uploaded: an absolute, `..` or symlinked entry pointing elsewhere is refused, naming it.

Uploads are one explicit commit each (history kept on re-push). Failures raise `PublishError` whose message never
contains the token; the local folder is only touched to (re)write its rendered README.md (and, with onnx=True,
model.onnx + onnx_export.json).
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from model_cards.render import EVAL_RESULTS_FILE, TRAIN_CONFIG_FILE, load_eval_results, write_model_card

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")
CONFIG_FILES = ("config.json", "adapter_config.json", EVAL_RESULTS_FILE, TRAIN_CONFIG_FILE)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
ONNX_FILES = ("model.onnx", "onnx_export.json")
LOG_DIR = "logs"
TENSORBOARD_GLOB = "*tfevents*"
SPACE_REQUIRED_FILES = ("app.py", "requirements.txt", "README.md")
SPACE_IGNORE = ["__pycache__/*", "*/__pycache__/*", "*.pyc", ".*"]
SPACE_SHARED_PACKAGES = ("minerva_common",)  # contracts the Space reads (results, transfer study), beside app.py


class PublishError(RuntimeError):
    """An upload could not be prepared or failed; the message is safe to log (no token)."""


@dataclass(frozen=True)
class RunLayout:
    """Where the repo's files come from: `model_dir` is the repo root, `root` bounds every uploaded file."""

    model_dir: Path
    root: Path
    adapter_dir: Path | None = None  # a LoRA run's adapter, uploaded under adapter/ next to the merged model
    logs_dir: Path | None = None
    pretrained: bool = False  # a pretraining run's backbone folder (pretraining card, no eval results)


def resolve_token(token: str | None) -> str:
    """The explicit token, else the one huggingface_hub finds (HF_TOKEN / stored login); clear error when none."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PublishError("no Hugging Face token: pass token=..., set HF_TOKEN, or run `hf auth login`")
    return token


def _redact(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def _is_training_run(folder: Path) -> bool:
    return (folder / TRAIN_CONFIG_FILE).is_file() and any((folder / sub).is_dir() for sub in ("model", "adapter"))


def locate_run(path: str | Path) -> RunLayout:
    """The layout of a model folder (RUN/model, RUN/adapter, a save_pretrained folder) or a training run folder."""
    from model_cards.pretrain_card import pretrain_folder

    path = Path(path)
    if not path.is_dir():
        raise PublishError(f"{path}: not a folder")
    backbone = pretrain_folder(path)
    if backbone is not None:
        logs = path / LOG_DIR
        return RunLayout(backbone, path, None, logs if logs.is_dir() else None, pretrained=True)
    if (path / EVAL_RESULTS_FILE).is_file() or not _is_training_run(path):
        root = path.parent if path.name in ("model", "adapter") and _is_training_run(path.parent) else path
        model_dir = path
    else:
        candidates = [path / sub for sub in ("model", "adapter") if (path / sub / EVAL_RESULTS_FILE).is_file()]
        if not candidates:
            raise PublishError(f"{path}: a training run without {EVAL_RESULTS_FILE} in model/ or adapter/; run "
                               f"`minerva-fm evaluate --model {path / 'model'}` (or adapter/) before publishing")
        root, model_dir = path, candidates[0]
    adapter = root / "adapter"
    adapter_dir = adapter if model_dir.name == "model" and root != model_dir and adapter.is_dir() else None
    logs = root / LOG_DIR
    return RunLayout(model_dir, root, adapter_dir, logs if logs.is_dir() else None)


def _inside(root: Path, path: Path, what: str) -> Path:
    """The real path of `path` when it is a regular file inside `root`; else PublishError naming it."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise PublishError(f"{path}: {what} resolves to {real}, outside the run folder {root}; "
                           "only files inside the run folder are uploaded")
    if not real.is_file():
        raise PublishError(f"{path}: {what} is not a regular file")
    return real


def _plot_files(model_dir: Path) -> list[Path]:
    """The `plots` entries of eval_results.json that exist: relative paths without `..`, else PublishError."""
    plots = load_eval_results(model_dir).get("plots") or []
    for entry in plots:
        if not isinstance(entry, str) or not entry or Path(entry).is_absolute() or ".." in Path(entry).parts:
            raise PublishError(f"{model_dir / EVAL_RESULTS_FILE}: plots entry {entry!r} points outside the run "
                               "folder (plots are paths relative to it, without '..'); nothing was uploaded")
    return [Path(p) for p in plots if (model_dir / p).is_file()]


def _weight_files(run_dir: Path) -> list[Path]:
    weights = [Path(name) for name in WEIGHT_FILES if (run_dir / name).is_file()]
    sharded = sorted(p.relative_to(run_dir) for p in run_dir.glob("model-*-of-*.safetensors"))
    if sharded:
        weights += sharded + [Path("model.safetensors.index.json")]
    if not weights:
        raise PublishError(f"{run_dir}: no model.safetensors or adapter_model.safetensors to publish "
                           f"(files: {sorted(p.name for p in run_dir.iterdir())})")
    return weights


def model_files(run_dir: Path) -> list[Path]:
    """The files of a model folder that belong in its model repo (relative paths), checked for completeness."""
    if not (run_dir / EVAL_RESULTS_FILE).is_file():
        raise PublishError(f"{run_dir}: no {EVAL_RESULTS_FILE}; evaluate the run before publishing it")
    weights = _weight_files(run_dir)
    configs = [Path(name) for name in CONFIG_FILES if (run_dir / name).is_file()]
    if Path("model.safetensors") in weights and Path("config.json") not in configs:
        raise PublishError(f"{run_dir}: model.safetensors without config.json")
    if Path("adapter_model.safetensors") in weights and Path("adapter_config.json") not in configs:
        raise PublishError(f"{run_dir}: adapter_model.safetensors without adapter_config.json")
    onnx = _onnx_files(run_dir)
    return weights + configs + _remote_code_files(run_dir) + onnx + _plot_files(run_dir) + [Path("README.md")]


def _onnx_files(run_dir: Path) -> list[Path]:
    """model.onnx (+ onnx_export.json) when present; an export older than the weights is refused as stale."""
    onnx = run_dir / ONNX_FILES[0]
    if not onnx.is_file():
        return []
    weights = run_dir / "model.safetensors"
    if weights.is_file() and onnx.stat().st_mtime < weights.stat().st_mtime:
        raise PublishError(f"{onnx}: older than {weights.name}, so it may be another model's export; re-export it "
                           "(push-model --onnx, or minerva-fm export-onnx) or delete it")
    return [Path(name) for name in ONNX_FILES if (run_dir / name).is_file()]


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


def extra_files(layout: RunLayout) -> dict[str, Path]:
    """{path in repo: local path} of the run's files outside the model folder: adapter/ and TensorBoard logs/."""
    extras = {}
    if layout.adapter_dir is not None:
        extras.update({f"adapter/{name}": layout.adapter_dir / name for name in ADAPTER_FILES
                       if (layout.adapter_dir / name).is_file()})
    if layout.logs_dir is not None:
        extras.update({f"{LOG_DIR}/{p.relative_to(layout.logs_dir).as_posix()}": p
                       for p in sorted(layout.logs_dir.rglob(TENSORBOARD_GLOB)) if p.is_file() or p.is_symlink()})
    return extras


def export_onnx_for_push(model_dir: Path) -> Path:
    """Write model_dir/model.onnx (+ onnx_export.json) and check it against PyTorch with onnxruntime."""
    if not (model_dir / "config.json").is_file():
        raise PublishError(f"{model_dir}: --onnx needs a full model (config.json + model.safetensors); an adapter "
                           "exports after merging (train.merge_lora writes RUN/model)")
    from modeling.export import load_saved_model, onnx_parity, write_onnx_export  # only when exporting

    try:
        path = write_onnx_export(str(model_dir), model_dir)
        onnx_parity(load_saved_model(str(model_dir)), path)
    except (ValueError, AssertionError) as err:
        raise PublishError(f"{model_dir}: ONNX export failed ({str(err).splitlines()[0]})") from None
    except OSError as err:
        raise PublishError(f"{model_dir / 'model.onnx'}: cannot write the ONNX export: {err.strerror or err} "
                           f"(errno {err.errno})") from None
    return path


def _render_card(model_dir: Path, repo_id: str, dataset_id: str | None, uploads: list[str]) -> None:
    """write_model_card; when the logs go up it is told their repo folder so the card links them."""
    logs = LOG_DIR if any(name.startswith(f"{LOG_DIR}/") for name in uploads) else None
    try:
        write_model_card(model_dir, repo_id=repo_id, dataset_id=dataset_id, logs=logs)
    except OSError as err:  # read-only folder, full disk: nothing was uploaded
        raise PublishError(f"{model_dir / 'README.md'}: cannot write the model card: {err.strerror or err} "
                           f"(errno {err.errno}); nothing was uploaded") from None


def upload_plan(layout: RunLayout) -> dict[str, Path]:
    """{path in repo: real local path} of every file to upload but the card, each checked to lie inside the run."""
    from model_cards.pretrain_card import pretrain_files

    files = pretrain_files(layout.model_dir) if layout.pretrained else model_files(layout.model_dir)
    plan = {p.as_posix(): layout.model_dir / p for p in files if p.name != "README.md"}
    plan.update(extra_files(layout))
    return {name: _inside(layout.root, local, name) for name, local in plan.items()}


def push_model(run_dir: str | Path, repo_id: str, token: str | None = None, private: bool = False,
               commit_message: str | None = None, dataset_id: str | None = None, endpoint: str | None = None,
               onnx: bool = False) -> str:
    """Render the card and upload a run folder to the model repo ``repo_id`` in one commit; return the commit url.

    With ``onnx=True`` model.onnx is (re)exported and parity-checked first; without, an up-to-date one is uploaded.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    layout = locate_run(run_dir)
    token = resolve_token(token)
    if onnx:
        export_onnx_for_push(layout.model_dir)
    plan = upload_plan(layout)  # outside files are refused before anything is written or sent
    from model_cards.pretrain_card import write_pretrain_card

    if layout.pretrained:
        write_pretrain_card(layout.model_dir, repo_id=repo_id)
    else:
        _render_card(layout.model_dir, repo_id, dataset_id, sorted(plan))
    plan["README.md"] = _inside(layout.root, layout.model_dir / "README.md", "README.md")
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(local)) for name, local in plan.items()]
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations=operations, commit_message=commit_message
                                 or f"Upload {layout.root.resolve().name} with minerva-fm")
    except Exception as err:  # noqa: BLE001 - re-raised without the token and without the original chain
        raise PublishError(f"upload of {layout.model_dir} to model repo {repo_id!r} failed "
                           f"({type(err).__name__}: {_redact(str(err), token)}); the local files are kept") from None
    logger.info("pushed %d files from %s to %s", len(plan), layout.model_dir, info.commit_url)
    return info.commit_url


def space_files(app_dir: str | Path) -> dict[str, Path]:
    """What a Space repo holds: the app folder's files and the shared contract packages (path in repo -> file)."""
    from fnmatch import fnmatch

    app_dir = Path(app_dir)
    files = {p.relative_to(app_dir).as_posix(): p for p in sorted(app_dir.rglob("*")) if p.is_file()}
    for package in SPACE_SHARED_PACKAGES:
        source = Path(importlib.import_module(package).__file__).parent
        files.update({f"{package}/{p.relative_to(source).as_posix()}": p for p in sorted(source.rglob("*.py"))})
    return {name: path for name, path in files.items() if not any(fnmatch(name, pat) for pat in SPACE_IGNORE)}


def push_space(space_repo_id: str, app_dir: str | Path = "spaces/event_explorer", token: str | None = None,
               private: bool = False, commit_message: str | None = None, endpoint: str | None = None) -> str:
    """Upload the Gradio app folder to the Space ``space_repo_id`` in one commit; return the commit url."""
    from huggingface_hub import CommitOperationAdd, HfApi

    app_dir = Path(app_dir)
    missing = [name for name in SPACE_REQUIRED_FILES if not (app_dir / name).is_file()]
    if missing:
        raise PublishError(f"{app_dir}: not a Space folder, missing {missing}")
    if not (app_dir / "README.md").read_text(encoding="utf-8").startswith("---"):
        raise PublishError(f"{app_dir / 'README.md'}: needs the Space YAML header (sdk, sdk_version, app_file)")
    token = resolve_token(token)
    api = HfApi(endpoint=endpoint, token=token)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
                  for name, path in space_files(app_dir).items()]
    try:
        api.create_repo(space_repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        info = api.create_commit(repo_id=space_repo_id, repo_type="space", operations=operations,
                                 commit_message=commit_message or "Upload the minerva-fm event explorer")
    except Exception as err:  # noqa: BLE001
        raise PublishError(f"upload of {app_dir} to Space {space_repo_id!r} failed "
                           f"({type(err).__name__}: {_redact(str(err), token)})") from None
    logger.info("pushed %s to %s", app_dir, info.commit_url)
    return info.commit_url


__all__ = ["push_model", "push_space", "space_files", "model_files", "locate_run", "upload_plan", "PublishError"]
