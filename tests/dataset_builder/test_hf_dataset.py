"""The `datasets` side: typed features, `load_events` (the packaged Parquet builder) on folders with and without a
dataset card and on the loopback Hub, a clean interpreter exit after a half-read stream."""

from __future__ import annotations

import shutil

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_builder import schema
from dataset_builder.hf_dataset import features, iter_tables, load_events


@pytest.fixture(scope="module")
def carded_dir(fake_dataset_dir, tmp_path_factory):
    """A copy of the fake dataset with its dataset card (no plots, for speed)."""
    from dataset_builder.dataset_card import write_dataset_card

    root = tmp_path_factory.mktemp("carded") / "ds"
    shutil.copytree(fake_dataset_dir, root)
    write_dataset_card(root, plots=False)
    return root


def assert_typed(feats: datasets.Features) -> None:
    """Features equal to the contract (int32 stays int32, nested lists typed, no strings inferred)."""
    assert feats == features()
    assert feats["run"] == datasets.Value("int32") and feats["entry"] == datasets.Value("int64")
    assert feats["object_features"] == datasets.List(datasets.List(datasets.Value("float32"), length=9))
    assert feats["object_pid"] == datasets.List(datasets.Value("int32"))


def test_features_mirror_parquet_schema():
    feats = features()
    assert feats.arrow_schema.equals(schema.PARQUET_SCHEMA)
    assert list(feats) == schema.PARQUET_SCHEMA.names
    assert_typed(feats)


@pytest.mark.parametrize("with_card", [False, True])
def test_load_events_streams_every_split_typed(fake_dataset_dir, carded_dir, with_card):
    root = carded_dir if with_card else fake_dataset_dir
    for split, n in {"train": 240, "validation": 60, "test": 60, "shifted": 40}.items():
        stream = load_events(str(root), split)
        assert_typed(stream.features)
        tables = list(iter_tables(stream, 50))
        assert sum(t.num_rows for t in tables) == n
        assert tables[0].schema == schema.PARQUET_SCHEMA  # int32 stays int32, nested lists typed
    first = next(iter(load_events(str(root), "train")))
    expected = pq.read_table(fake_dataset_dir / "data/train/part-00000.parquet").slice(0, 1).to_pylist()[0]
    assert first == expected


def test_load_events_column_subset_and_max_events(fake_dataset_dir):
    from dataset_builder.collator import MinervaCollator

    columns = MinervaCollator(task="classification").columns
    stream = load_events(str(fake_dataset_dir), "test", columns=columns)
    assert sorted(stream.features) == sorted(columns)
    tables = list(iter_tables(stream, 25, max_events=55))
    assert [t.num_rows for t in tables] == [25, 25, 5] and sorted(tables[0].schema.names) == sorted(columns)
    with pytest.raises(ValueError, match="unknown columns.*'label'"):
        load_events(str(fake_dataset_dir), "test", columns=["label"])


def test_map_style_and_bad_shard(tmp_path, fake_dataset_dir):
    ds = load_events(str(fake_dataset_dir), "validation", streaming=False, cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 60 and ds.features == features()
    bad = tmp_path / "bad"
    (bad / "data" / "train").mkdir(parents=True)
    pq.write_table(pa.table({"run": pa.array([1], pa.int64())}), bad / "data/train/part-0.parquet")
    with pytest.raises(ValueError, match=r"part-0.parquet: not a converted MINERvA shard.*missing columns"):
        load_events(str(bad), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no Parquet files for split 'train'"):
        load_events(str(tmp_path / "empty"), "train")


HALF_READ = """
import sys
{opener}
print(next(iter(ds))["entry"])
"""


@pytest.mark.parametrize("opener", [
    "from recipes.data import load_split\nds = load_split(sys.argv[1], 'train')",
    # the dataset card's snippet: plain load_dataset, then the collator import
    "from datasets import load_dataset\nds = load_dataset(sys.argv[1], streaming=True)['train']\n"
    "from dataset_builder.collator import MinervaCollator",
])
def test_half_read_stream_exits_cleanly(carded_dir, tmp_path, opener):
    """Issue 14: a stream left after its first event aborted at exit (rc 134, ~1 run in 4) before the guard."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "half_read.py"
    script.write_text(HALF_READ.format(opener=opener))
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HOME": str(tmp_path / "hf")}
    env.pop("OMP_NUM_THREADS")  # Arrow's default thread pools, as a user has them (the abort needs a pool thread)
    for _ in range(6):
        run = subprocess.run([sys.executable, str(script), str(carded_dir)], env=env, capture_output=True, timeout=120)
        assert run.returncode == 0, run.stderr.decode()[-1500:]
        assert run.stdout.decode().strip() == "0"


@pytest.mark.parametrize("streaming", [False, True])
def test_load_dataset_folder_uses_card_configs(carded_dir, tmp_path, streaming):
    ds = datasets.load_dataset(str(carded_dir), streaming=streaming, cache_dir=str(tmp_path))
    assert list(ds) == list(schema.SPLITS)
    for split in ds:
        assert_typed(ds[split].features)
    n = ds["shifted"].num_rows if not streaming else sum(1 for _ in ds["shifted"])
    assert n == 40


def test_load_from_loopback_hub(hub, carded_dir, tmp_path):
    from huggingface_hub import HfApi

    from dataset_builder.hub import push_dataset

    repo_id = f"{hub.user}/minerva-load"
    sha = push_dataset(carded_dir, repo_id)
    ds = datasets.load_dataset(repo_id, cache_dir=str(tmp_path / "c1"))
    assert {s: ds[s].num_rows for s in ds} == {"train": 240, "validation": 60, "test": 60, "shifted": 40}
    assert_typed(ds["train"].features)
    stream = datasets.load_dataset(repo_id, split="test", streaming=True)
    assert_typed(stream.features)
    assert sum(1 for _ in stream) == 60
    assert any(status == 206 for _, _, status in hub.requests)  # streaming used Range reads

    pinned = datasets.load_dataset("parquet", data_files=f"hf://datasets/{repo_id}@{sha}/data/validation/*.parquet",
                                   split="train", streaming=True, features=features())
    assert sum(1 for _ in pinned) == 60
    ours = load_events(repo_id, "shifted", revision=sha)
    assert_typed(ours.features)
    assert sum(t.num_rows for t in iter_tables(ours, 16)) == 40
    assert HfApi().list_repo_commits(repo_id, repo_type="dataset")[0].commit_id == sha
