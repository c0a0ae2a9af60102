"""Upload a converted-dataset folder (Parquet shards, dataset card, manifest, plots) to a Hub dataset repo."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from dataset_builder import schema
from minerva_common.checksum import file_sha256

UPLOAD_PATTERNS = ["data/*/*.parquet", "README.md", "manifest.json", "plots/*.png"]


def schema_version(dataset_dir: Path) -> str:
    """Manifest `schema_version` if given, else the first 10 hex of sha1 of the Parquet schema text the manifest
    records (the converter writes `PARQUET_SCHEMA.to_string(show_schema_metadata=False)`), else of schema.py's."""
    manifest_path = Path(dataset_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest.get("schema_version") is not None:
        return "v" + str(manifest["schema_version"])
    text = manifest.get("schema") or schema.PARQUET_SCHEMA.to_string(show_schema_metadata=False)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def schema_tag(dataset_dir: Path) -> str:
    """Git tag naming the schema version, e.g. `schema-3f2a9c81d0` (or `schema-v2` from an explicit version)."""
    return "schema-" + re.sub(r"[^A-Za-z0-9._-]", "-", schema_version(dataset_dir))


def check_shards(dataset_dir: Path | str) -> int:
    """Compare every shard the manifest lists with its recorded sha256; ValueError naming the first bad or missing
    one (a truncated or corrupted shard is never summarised or uploaded). Returns the number checked."""
    dataset_dir = Path(dataset_dir)
    manifest_path = dataset_dir / "manifest.json"
    if not manifest_path.is_file():
        return 0
    shards = [s for s in json.loads(manifest_path.read_text()).get("shards") or [] if s.get("sha256")]
    for shard in shards:
        path = dataset_dir / shard["path"]
        if not path.is_file():
            raise ValueError(f"{path}: listed in {manifest_path.name} but missing; rerun `minerva-fm convert`")
        if file_sha256(path) != shard["sha256"]:
            raise ValueError(f"{path}: sha256 differs from the one recorded in {manifest_path.name} (corrupted or "
                             "truncated shard); rerun `minerva-fm convert` with the same inputs to rewrite it")
    return len(shards)


def push_dataset(dataset_dir: Path | str, repo_id: str, private: bool = False, revision: str | None = None,
                 token: str | None = None) -> str:
    """Create the repo (exist_ok), upload shards + card + manifest + plots, tag the schema version; return the sha."""
    from huggingface_hub import HfApi, get_token

    dataset_dir = Path(dataset_dir)
    token = token or get_token()
    if not token:
        raise PermissionError(f"no Hugging Face token to push {dataset_dir} to {repo_id}: set HF_TOKEN, run "
                              "`hf auth login`, or pass token=")
    if not list(dataset_dir.glob("data/*/*.parquet")):
        raise FileNotFoundError(f"{dataset_dir}: no Parquet shards under data/<split>/ "
                                "— run `minerva-fm convert` first")
    check_shards(dataset_dir)
    if not (dataset_dir / "README.md").exists():
        from dataset_builder.dataset_card import write_dataset_card

        write_dataset_card(dataset_dir)  # the card carries the split configs; without it the splits are guessed
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    commit = api.upload_folder(folder_path=dataset_dir, repo_id=repo_id, repo_type="dataset", revision=revision,
                               allow_patterns=UPLOAD_PATTERNS, delete_patterns=["data/*/*.parquet", "plots/*.png"],
                               commit_message=f"Upload converted MINERvA dataset ({schema_tag(dataset_dir)})")
    tag = schema_tag(dataset_dir)
    existing = {t.name: t.target_commit for t in api.list_repo_refs(repo_id, repo_type="dataset").tags}
    if tag in existing and existing[tag] != commit.oid:
        api.delete_tag(repo_id, tag=tag, repo_type="dataset")
    if existing.get(tag) != commit.oid:
        api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="dataset",
                       tag_message=f"converted-dataset schema {schema_version(dataset_dir)}")
    return commit.oid


def run_push_dataset_cli(args) -> int:
    """`minerva-fm push-dataset DIR REPO_ID [--private] [--revision R]`; a refused upload is a PermissionError or
    ConnectionError naming the repo and the HTTP status (never the token)."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError

    try:
        sha = push_dataset(args.dataset_dir, args.repo_id, private=args.private, revision=args.revision)
    except HfHubHTTPError as err:
        raise _upload_error(err, args.dataset_dir, args.repo_id, get_token()) from None
    print(f"pushed {args.dataset_dir} to datasets/{args.repo_id} @ {sha} (tag {schema_tag(Path(args.dataset_dir))})")
    return 0


def _upload_error(err, dataset_dir, repo_id: str, token: str | None) -> OSError:
    """One-line error of a failed upload: the repo, the HTTP status and the server's reason, the token redacted."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    reason = next((line.strip() for line in reversed(str(err).splitlines()) if line.strip()), type(err).__name__)
    reason = reason.replace(token, "***") if token else reason
    where = f"upload of {dataset_dir} to datasets/{repo_id} failed (HTTP {status}: {reason})"
    if status in (401, 403):
        return PermissionError(f"{where}; the Hugging Face token was refused: set HF_TOKEN or run `hf auth login`")
    return ConnectionError(where)
