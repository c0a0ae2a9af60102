"""Converter reruns and output folders: changed inputs, dropped inputs, copies, bad shards, foreign folders, locks,
killed parents; plus the central-value event weight."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from _anatuple import default_columns, write_anatuple

from dataset_builder.convert import ConvertOptions, OutputDirError, convert, output_lock

REPO = Path(__file__).resolve().parents[2]


def _mc(path: Path, n: int = 30, energy: float = 3000.0, weight: bool = False) -> Path:
    columns = default_columns(n)
    columns["mc_intType"] = np.full(n, 1)
    columns["mc_current"] = np.ones(n)
    columns["mc_incomingE"] = np.full(n, energy)
    columns["ev_gate"] = np.arange(n)
    if weight:
        columns["mc_cvweight_total"] = np.linspace(0.8, 1.2, n)
    return write_anatuple(path, columns)


def _run(sources, out, **kwargs):
    return convert(sources, out, ConvertOptions(step_size=10), workers=1, progress=False, **kwargs)


def _table(out: Path):
    return pads.dataset(out / "data", format="parquet").to_table()


def test_replaced_input_content_is_reconverted(tmp_path):
    source = _mc(tmp_path / "a.root", energy=3000.0)
    _run([source], tmp_path / "out")
    _mc(source, energy=5000.0)  # same name, new content
    manifest = _run([source], tmp_path / "out")
    assert set(_table(tmp_path / "out").column("enu").to_pylist()) == {5.0}
    assert manifest["source_files"][0]["sha256"] == __import__("hashlib").sha256(source.read_bytes()).hexdigest()


def test_shards_of_inputs_no_longer_listed_are_removed(tmp_path):
    a, b = _mc(tmp_path / "a.root"), _mc(tmp_path / "b.root")
    _run([a, b], tmp_path / "out")
    manifest = _run([a], tmp_path / "out")
    on_disk = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out" / "data").rglob("*.parquet"))
    assert on_disk == sorted(s["path"] for s in manifest["shards"]) and all("/a-" in p for p in on_disk)
    assert manifest["removed_stale_shards"] and all("/b-" in p for p in manifest["removed_stale_shards"])
    assert set(_table(tmp_path / "out").column("source_file").to_pylist()) == {"a.root"}


def test_identical_content_under_two_names_is_converted_once(tmp_path):
    a = _mc(tmp_path / "a.root")
    shutil.copy(a, tmp_path / "copy.root")
    (tmp_path / "link.root").symlink_to(a)
    manifest = _run([a, tmp_path / "copy.root", tmp_path / "link.root"], tmp_path / "out")
    assert [s["name"] for s in manifest["source_files"]] == ["a.root"]
    assert sorted((d["name"], d["reason"]) for d in manifest["duplicate_inputs"]) == [
        ("copy.root", "identical content"), ("link.root", "same file")]
    assert set(_table(tmp_path / "out").column("source_file").to_pylist()) == {"a.root"}
    assert sum(manifest["events_per_split"].values()) == 30


def test_a_corrupted_shard_is_rewritten_and_named(tmp_path, capsys):
    source = _mc(tmp_path / "a.root")
    first = _run([source], tmp_path / "out")
    victim = tmp_path / "out" / first["shards"][0]["path"]
    good_bytes = victim.read_bytes()
    victim.write_bytes(good_bytes[:-40] + b"\0" * 40)  # same size, damaged footer region
    second = _run([source], tmp_path / "out")
    assert victim.read_bytes() == good_bytes and second["shards"] == first["shards"]
    assert str(victim) in capsys.readouterr().err
    flipped = bytearray(good_bytes)
    flipped[100] ^= 0xFF  # still a readable file, but not what the manifest recorded
    victim.write_bytes(bytes(flipped))
    _run([source], tmp_path / "out")
    assert victim.read_bytes() == good_bytes
    assert "sha256 differs" in capsys.readouterr().err


def test_foreign_non_empty_folder_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    source = _mc(tmp_path / "a.root")
    with pytest.raises(OutputDirError, match=r"mine: folder is not empty \(notes.txt, ...\).*--overwrite"):
        _run([source], out)
    assert sorted(p.name for p in out.iterdir() if p.name != ".convert.lock") == ["notes.txt"]
    _run([source], out, overwrite=True)
    assert (out / "manifest.json").exists() and (out / "notes.txt").read_text() == "keep me"


def test_other_options_need_overwrite(tmp_path):
    source = _mc(tmp_path / "a.root")
    _run([source], tmp_path / "out")
    with pytest.raises(OutputDirError, match="other options"):
        convert([source], tmp_path / "out", ConvertOptions(step_size=7), workers=1, progress=False)
    manifest = convert([source], tmp_path / "out", ConvertOptions(step_size=7), workers=1, progress=False,
                       overwrite=True)
    assert manifest["options"]["step_size"] == 7 and len({s["chunk"] for s in manifest["shards"]}) == 5


def test_output_path_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    from dataset_builder import cli as data_cli
    import argparse

    target = tmp_path / "out.txt"
    target.write_text("x")
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(["convert", str(_mc(tmp_path / "a.root")), str(target), "--workers", "1",
                              "--no-progress"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert err == f"minerva-fm convert: error: {target}: the output path is a file, not a folder\n"


def test_a_second_converter_on_the_same_folder_is_refused(tmp_path):
    source = _mc(tmp_path / "a.root")
    with output_lock(tmp_path / "out"):
        with pytest.raises(OutputDirError, match="another minerva-fm convert is writing into this folder"):
            _run([source], tmp_path / "out")
    _run([source], tmp_path / "out")  # released


def test_temps_of_a_similar_name_are_left_alone(tmp_path):
    a, ab = _mc(tmp_path / "a.root"), _mc(tmp_path / "a-b.root")
    manifest = _run([a, ab], tmp_path / "out")
    assert {s["source_file"] for s in manifest["shards"]} == {"a.root", "a-b.root"}
    from dataset_builder.convert import _file_temps

    (tmp_path / "out" / "data" / "train" / ".a-b-00001.parquet.1.ab.tmp").write_bytes(b"x")
    assert _file_temps(tmp_path / "out", "a") == []
    assert len(_file_temps(tmp_path / "out", "a-b")) == 1


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
def test_killed_parent_takes_its_worker_pool_with_it(tmp_path):
    synthetic = pytest.importorskip("dataset_builder.synthetic")
    sources = synthetic.write_anatuples(tmp_path / "in", n_events=1200, seed=9, n_files=2)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "recipes.cli", "convert", *map(str, sources), str(out), "--workers", "2",
               "--step-size", "10", "--no-progress"]
    parent = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not list((out / "data").rglob("*-00002.parquet")) and time.monotonic() < deadline:
        assert parent.poll() is None, parent.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    workers = _descendants(parent.pid)
    assert len(workers) >= 2, "no worker pool to kill"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in workers if _alive(p)], "workers kept converting after the parent was killed"
    assert not (out / "manifest.json").exists()


# ------------------------------------------------------------------ event weight


def test_event_weight_from_the_cv_weight_branch_and_null_elsewhere(tmp_path):
    weighted = _mc(tmp_path / "weighted.root", weight=True)
    plain = _mc(tmp_path / "plain.root")
    data = write_anatuple(tmp_path / "data.root", default_columns(5, mc=False))
    manifest = _run([weighted, plain, data], tmp_path / "out", )
    table = _table(tmp_path / "out").sort_by([("source_file", "ascending"), ("entry", "ascending")])
    rows = table.to_pylist()
    got = [r["event_weight"] for r in rows if r["source_file"] == "weighted.root"]
    assert got == pytest.approx(np.linspace(0.8, 1.2, 30).astype(np.float32).tolist())
    assert all(r["event_weight"] is None for r in rows if r["source_file"] != "weighted.root")
    by_name = {s["name"]: s["event_weight_branch"] for s in manifest["source_files"]}
    assert by_name == {"weighted.root": "mc_cvweight_total", "plain.root": None, "data.root": None}
    assert manifest["event_weight"]["branch"] == "mc_cvweight_total"
    assert (manifest["event_weight"]["files_with_weight"], manifest["event_weight"]["files_without_weight"]) == (1, 2)


def test_synthetic_mc_carries_a_plausible_weight(tmp_path):
    synthetic = pytest.importorskip("dataset_builder.synthetic")
    [path] = synthetic.write_anatuples(tmp_path / "in", n_events=400, seed=2)
    manifest = _run([path], tmp_path / "out")
    weights = _table(tmp_path / "out").column("event_weight").to_numpy()
    assert manifest["event_weight"]["branch"] == "mc_cvweight_total"
    assert 0.9 < np.mean(weights) < 1.1 and 0.5 < weights.min() and weights.max() < 2.0 and weights.std() > 0.01
