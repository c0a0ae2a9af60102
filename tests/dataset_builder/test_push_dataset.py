"""push_dataset / `minerva-fm push-dataset` against the loopback Hub."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from dataset_builder import schema
from dataset_builder.cli import register
from dataset_builder.hub import push_dataset, schema_tag


@pytest.fixture
def dataset_dir(fake_dataset_dir, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(fake_dataset_dir, root)
    (root / "scratch.log").write_text("not for upload")
    return root


def test_push_uploads_card_shards_plots_and_tags(hub, dataset_dir, capsys):
    repo_id = f"{hub.user}/minerva-push"
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["push-dataset", str(dataset_dir), repo_id])
    assert args.func(args) == 0
    assert repo_id in capsys.readouterr().out
    api = HfApi()
    files = set(api.list_repo_files(repo_id, repo_type="dataset"))
    shards = {str(p.relative_to(dataset_dir)) for p in dataset_dir.glob("data/*/*.parquet")}
    assert len(shards) == 8 and shards <= files
    assert {"README.md", "manifest.json", "plots/e_avail.png"} <= files and "scratch.log" not in files
    info = api.dataset_info(repo_id, files_metadata=True)
    assert all(s.lfs is not None for s in info.siblings if s.rfilename.endswith(".parquet"))
    assert info.card_data["configs"][0]["data_files"][0] == {"split": "train", "path": "data/train/*.parquet"}
    tags = api.list_repo_refs(repo_id, repo_type="dataset").tags
    expected_tag = "schema-" + hashlib.sha1(schema.PARQUET_SCHEMA.to_string(show_schema_metadata=False).encode()).hexdigest()[:10]
    assert schema_tag(dataset_dir) == expected_tag
    assert [(t.name, t.target_commit) for t in tags] == [(expected_tag, info.sha)]

    (dataset_dir / "data/shifted/part-00001.parquet").unlink()  # re-push: stale shard removed, tag moves
    sha = push_dataset(dataset_dir, repo_id)
    files = set(api.list_repo_files(repo_id, repo_type="dataset"))
    assert "data/shifted/part-00001.parquet" not in files and "data/shifted/part-00000.parquet" in files
    assert api.list_repo_refs(repo_id, repo_type="dataset").tags[0].target_commit == sha
    old = api.list_repo_files(repo_id, repo_type="dataset", revision=info.sha)
    assert "data/shifted/part-00001.parquet" in old  # history kept


def test_private_push_and_token_errors(hub, dataset_dir, monkeypatch):
    repo_id = f"{hub.user}/minerva-private"
    push_dataset(dataset_dir, repo_id, private=True)
    assert HfApi().dataset_info(repo_id).private
    with pytest.raises(HfHubHTTPError) as err:
        push_dataset(dataset_dir, f"{hub.user}/minerva-wrong-token", token="hf_wrong")
    assert err.value.response.status_code == 401
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(PermissionError, match="no Hugging Face token"):
        push_dataset(dataset_dir, f"{hub.user}/minerva-no-token")
    assert not HfApi(token=hub.token).repo_exists(f"{hub.user}/minerva-no-token", repo_type="dataset")


def test_explicit_schema_version_tag(tmp_path, fake_dataset_dir):
    root = tmp_path / "ds"
    shutil.copytree(fake_dataset_dir, root)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "schema_version": "2"}))
    assert schema_tag(root) == "schema-v2"


def test_push_to_branch(hub, dataset_dir):
    repo_id = f"{hub.user}/minerva-branch"
    sha = push_dataset(dataset_dir, repo_id, revision="dev")
    api = HfApi()
    assert "manifest.json" in api.list_repo_files(repo_id, repo_type="dataset", revision="dev")
    assert api.list_repo_files(repo_id, repo_type="dataset") == [".gitattributes"]  # main untouched
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    assert {b.name: b.target_commit for b in refs.branches}["dev"] == sha == refs.tags[0].target_commit
