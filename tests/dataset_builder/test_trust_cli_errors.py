"""One-line errors of the data commands (issue 11): 0 events, a refused token, read-only output (errno 30) and a
full disk (errno 28) for convert / dataset-summary / generate, each run as a user would, with no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _anatuple import default_columns, write_anatuple
from huggingface_hub import HfApi

REPO = Path(__file__).resolve().parents[2]


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from recipes.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err


def _mc(path: Path, n: int = 40) -> Path:
    """An MC file whose events pass the default selection (as in test_convert_trust.py)."""
    import numpy as np

    columns = default_columns(n)
    columns.update(mc_intType=np.full(n, 1), mc_current=np.ones(n), mc_incomingE=np.full(n, 3000.0),
                   ev_gate=np.arange(n))
    return write_anatuple(path, columns)


def _one_line(rc: int, err: str, command: str) -> str:
    assert rc == 1 and "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"minerva-fm {command}: error: "), err[-3000:]
    return lines[0]


def test_zero_events_are_a_one_line_error_for_summary_and_push(hub, tmp_path, capsys):
    empty = write_anatuple(tmp_path / "empty.root", default_columns(0))
    out = tmp_path / "out"
    assert _cli(["convert", str(empty), str(out), "--workers", "1", "--no-progress"], capsys)[0] == 0
    for command in (["dataset-summary", str(out)], ["push-dataset", str(out), f"{hub.user}/no-events"]):
        line = _one_line(*_cli(command, capsys), command[0])
        assert f"{out}: 0 events in every split" in line
    assert not (out / "README.md").exists()
    assert not HfApi().repo_exists(f"{hub.user}/no-events", repo_type="dataset")


def test_a_corrupted_shard_is_named_and_never_summarised_or_pushed(hub, tmp_path, capsys):
    source = _mc(tmp_path / "a.root")
    out = tmp_path / "out"
    assert _cli(["convert", str(source), str(out), "--workers", "1", "--no-progress"], capsys)[0] == 0
    shard = sorted((out / "data").rglob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated copy
    repo = f"{hub.user}/corrupted-shard"
    for command in (["dataset-summary", str(out)], ["push-dataset", str(out), repo]):
        line = _one_line(*_cli(command, capsys), command[0])
        assert f"{shard}: sha256 differs" in line, line
    assert not HfApi().repo_exists(repo, repo_type="dataset") and not (out / "README.md").exists()


def test_summary_of_a_folder_without_shards_is_one_line(tmp_path, capsys):
    line = _one_line(*_cli(["dataset-summary", str(tmp_path)], capsys), "dataset-summary")
    assert f"{tmp_path}: no Parquet shards" in line


def test_push_dataset_with_a_refused_token_is_one_line_without_the_token(hub, fake_dataset_dir, tmp_path, capsys,
                                                                         monkeypatch):
    folder = shutil.copytree(fake_dataset_dir, tmp_path / "ds")
    secret = "hf_refused_token_0123456789"
    monkeypatch.setenv("HF_TOKEN", secret)
    repo = f"{hub.user}/refused-token"
    line = _one_line(*_cli(["push-dataset", str(folder), repo], capsys), "push-dataset")
    assert f"datasets/{repo} failed (HTTP 401" in line and "token was refused" in line and secret not in line
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert not HfApi().repo_exists(repo, repo_type="dataset")


DRIVER = """
import contextlib, io, json, sys, traceback
from recipes.cli import main
results = {}
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
        except BaseException:
            traceback.print_exc(file=err)
            rc = "raised"
    results[argv[0]] = [rc, err.getvalue()]
print(json.dumps(results))
"""


def _in_own_mount(kind: str, mountpoint: Path, commands: list[list[str]], populate: dict[str, Path]) -> dict:
    """Run the `minerva-fm` commands in one interpreter with a fresh tmpfs on `mountpoint` (user + mount namespace,
    no real root) holding copies of `populate` ({name: folder}); kind 'ro' remounts it read-only, 'full' fills it
    to the last byte. Returns {command: [exit status, stderr]}."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no user/mount namespaces here (unshare -rm)")
    mountpoint.mkdir(parents=True, exist_ok=True)
    steps = [f'mount -t tmpfs -o size=8m tmpfs "{mountpoint}"']
    steps += [f'cp -a "{source}" "{mountpoint}/{name}"' for name, source in populate.items()]
    steps.append(f'mount -o remount,ro "{mountpoint}"' if kind == "ro" else
                 f'(cat /dev/zero > "{mountpoint}/zz-fill" 2>/dev/null; true)')
    script = " && ".join(steps) + ' && exec "$@"'
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-c", DRIVER,
                           json.dumps(commands)], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("kind, errno", [("ro", 30), ("full", 28)])
def test_read_only_and_full_disk_are_one_line_errors_of_every_writing_command(hub, fake_dataset_dir, tmp_path,
                                                                              kind, errno):
    sys.path.insert(0, str(REPO / "tests" / "model_cards"))
    from card_run_helpers import make_run_dir

    run = make_run_dir(tmp_path / "run", "regression")
    source = write_anatuple(tmp_path / "a.root", default_columns(50))
    mnt = tmp_path / "mnt"
    commands = [["convert", str(source), str(mnt / "conv"), "--workers", "1", "--no-progress"],
                ["generate", str(mnt / "gen"), "--events", "200"],
                ["dataset-summary", str(mnt / "ds")],
                ["model-card", str(mnt / "run")],
                ["push-model", str(mnt / "run"), f"{hub.user}/disk-{kind}"],
                ["evaluate", "--model", str(run), "--data", str(fake_dataset_dir), "--out", str(mnt / "eval"),
                 "--n-bootstrap", "0"],
                ["export-onnx", str(run), str(mnt / "onnx"), "--no-check"]]
    results = _in_own_mount(kind, mnt, commands, {"ds": fake_dataset_dir, "run": run})
    for command, (rc, err) in results.items():
        assert rc not in (0, "raised") and "Traceback" not in err, (command, err[-3000:])
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"minerva-fm {command}: error: {mnt}") and f"(errno {errno})" in last, (command, last)
        assert ".tmp" not in last and ".partial" not in last, last
    assert not HfApi().repo_exists(f"{hub.user}/disk-{kind}")
