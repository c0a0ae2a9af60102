"""The loopback Hub against the real huggingface_hub client (uploads, history, LFS, Range, errors, auth)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError


@pytest.fixture
def folder(tmp_path):
    """A folder with a text file, a nested text file and a 300 kB binary (LFS) file."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "hello.txt").write_text("hello v1\n")
    (tmp_path / "sub" / "notes.md").write_text("# notes\n")
    (tmp_path / "weights.bin").write_bytes(os.urandom(300_000))
    return tmp_path


def test_environment_points_at_loopback(hub):
    from huggingface_hub import constants

    assert constants.ENDPOINT == hub.endpoint
    assert os.environ["HF_HUB_DISABLE_XET"] == "1"
    assert HfApi().whoami()["name"] == hub.user


def test_upload_history_and_lfs_roundtrip(hub, folder, tmp_path_factory):
    api = HfApi()
    repo_id = f"{hub.user}/roundtrip"
    url = api.create_repo(repo_id)
    assert url == f"{hub.endpoint}/{repo_id}"
    assert api.create_repo(repo_id, exist_ok=True) == url  # 409 with url
    first = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="v1")
    (folder / "hello.txt").write_text("hello v2\n")
    api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="v2")

    commits = api.list_repo_commits(repo_id)
    assert [c.title for c in commits] == ["v2", "v1", "initial commit"]
    assert commits[1].commit_id == first.oid
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "hello.txt", "sub/notes.md", "weights.bin"]

    old = hf_hub_download(repo_id, "hello.txt", revision=first.oid)
    new = hf_hub_download(repo_id, "hello.txt")
    assert open(old).read() == "hello v1\n" and open(new).read() == "hello v2\n"

    info = api.model_info(repo_id, files_metadata=True)
    lfs = {s.rfilename: s.lfs for s in info.siblings}
    assert lfs["weights.bin"] is not None and lfs["hello.txt"] is None
    assert lfs["weights.bin"].sha256 == hashlib.sha256((folder / "weights.bin").read_bytes()).hexdigest()
    assert info.sha == commits[0].commit_id and info.last_modified is not None

    snap = snapshot_download(repo_id, revision=first.oid, local_dir=tmp_path_factory.mktemp("snap"))
    assert (folder / "weights.bin").read_bytes() == open(os.path.join(snap, "weights.bin"), "rb").read()
    assert open(os.path.join(snap, "hello.txt")).read() == "hello v1\n"
    assert ("PUT", f"/lfs-upload/{lfs['weights.bin'].sha256}", 200) in hub.requests


def test_range_requests_and_redirect(hub, folder):
    api = HfApi()
    repo_id = f"{hub.user}/ranges"
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset")
    data = (folder / "weights.bin").read_bytes()
    with httpx.Client(follow_redirects=True) as client:
        resp = client.get(f"{hub.endpoint}/datasets/{repo_id}/resolve/main/weights.bin", headers={"Range": "bytes=10-19"})
        assert resp.status_code == 206 and resp.content == data[10:20]
        assert resp.headers["content-range"] == f"bytes 10-19/{len(data)}"
        resp = client.get(f"{hub.endpoint}/datasets/{repo_id}/resolve/main/hello.txt", headers={"Range": "bytes=-3"})
        assert resp.status_code == 206 and resp.content == b"v1\n"
        head = client.head(f"{hub.endpoint}/datasets/{repo_id}/resolve/main/weights.bin", follow_redirects=False)
        assert head.status_code == 302 and head.headers["location"].startswith("http://localhost:")
        assert "x-repo-commit" in head.headers and head.headers["x-linked-size"] == str(len(data))
        past = client.get(f"{hub.endpoint}/datasets/{repo_id}/resolve/main/hello.txt", headers={"Range": "bytes=999-"})
        assert past.status_code == 416


def test_hffilesystem_glob_and_tags(hub, folder):
    from huggingface_hub import HfFileSystem

    api = HfApi()
    repo_id = f"{hub.user}/fs"
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset")
    api.create_tag(repo_id, tag="v0.1", repo_type="dataset")
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    assert [t.name for t in refs.tags] == ["v0.1"] and refs.tags[0].target_commit == refs.branches[0].target_commit
    fs = HfFileSystem()
    assert fs.glob(f"datasets/{repo_id}/**/*.md") == [f"datasets/{repo_id}/sub/notes.md"]
    with fs.open(f"datasets/{repo_id}@v0.1/weights.bin", "rb") as fh:
        fh.seek(1000)
        assert fh.read(100) == (folder / "weights.bin").read_bytes()[1000:1100]


def test_errors_and_auth(hub, folder):
    api = HfApi()
    repo_id = f"{hub.user}/errors"
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio")
    assert api.space_info(repo_id).sdk == "gradio"
    assert not api.repo_exists(f"{hub.user}/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{hub.user}/does-not-exist", "x.txt")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.txt", repo_type="space")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(repo_id, repo_type="space", revision="no-such-branch")
    assert not api.file_exists(repo_id, "missing.txt", repo_type="space")

    anonymous = HfApi(token=False)
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.create_repo(f"{hub.user}/nope")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, repo_type="space")
    assert err.value.response.status_code == 401
    api.delete_repo(repo_id, repo_type="space")
    assert not api.repo_exists(repo_id, repo_type="space")


def test_private_repo_hidden_without_token(hub):
    api = HfApi()
    repo_id = f"{hub.user}/secret"
    api.create_repo(repo_id, private=True)
    api.upload_file(path_or_fileobj=b"s", path_in_repo="s.txt", repo_id=repo_id)
    assert api.model_info(repo_id).private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(repo_id)


def test_transformers_push_and_load_by_revision(hub, tmp_path):
    import torch
    from transformers import BertConfig, BertModel

    repo_id = f"{hub.user}/tiny-bert"
    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    torch.manual_seed(0)
    model = BertModel(config)
    model.push_to_hub(repo_id)
    sha = HfApi().model_info(repo_id).sha
    HfApi().upload_file(path_or_fileobj=b"later", path_in_repo="later.txt", repo_id=repo_id)
    loaded = BertModel.from_pretrained(repo_id, revision=sha)
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded(ids).last_hidden_state, model.eval()(ids).last_hidden_state)


def test_hf_cli_upload_download(hub, tmp_path):
    hf = shutil.which("hf", path=str(Path(sys.executable).parent))  # the venv's CLI, also when it is not on PATH
    assert hf, "huggingface_hub's hf CLI is missing from the environment"
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "app.py").write_text("print('hi')\n")
    repo_id = f"{hub.user}/cli-space"
    HfApi().create_repo(repo_id, repo_type="space", space_sdk="gradio")
    run = lambda *a: subprocess.run([hf, *a], capture_output=True, text=True, timeout=120)  # noqa: E731
    up = run("upload", repo_id, str(tmp_path / "up"), ".", "--repo-type", "space")
    assert up.returncode == 0, up.stderr
    down = run("download", repo_id, "--repo-type", "space", "--local-dir", str(tmp_path / "down"))
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "down" / "app.py").read_text() == "print('hi')\n"
