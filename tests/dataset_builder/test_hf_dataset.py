"""The `datasets` side: typed features, the MinervaEvents builder, load_dataset on a folder and on the loopback Hub."""

from __future__ import annotations

import shutil

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_builder import schema
from dataset_builder.hf_dataset import MinervaEvents, features


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


def test_builder_streams_all_splits(fake_dataset_dir):
    streams = MinervaEvents(data_dir=str(fake_dataset_dir)).as_streaming_dataset()
    assert list(streams) == list(schema.SPLITS)
    for split, n in {"train": 240, "validation": 60, "test": 60, "shifted": 40}.items():
        assert_typed(streams[split].features)
        tables = list(streams[split].with_format("arrow").iter(batch_size=50))
        assert sum(t.num_rows for t in tables) == n
        assert tables[0].schema.field("object_features").type == schema.PARQUET_SCHEMA.field("object_features").type
    first = next(iter(streams["train"]))
    expected = pq.read_table(fake_dataset_dir / "data/train/part-00000.parquet").slice(0, 1).to_pylist()[0]
    assert first == expected


def test_builder_column_subset(fake_dataset_dir):
    from dataset_builder.collator import MinervaCollator

    columns = MinervaCollator(task="classification").columns
    stream = MinervaEvents(data_dir=str(fake_dataset_dir), columns=columns).as_streaming_dataset(split="test")
    assert list(stream.features) == [c for c in schema.PARQUET_SCHEMA.names if c in columns]
    table = next(stream.with_format("arrow").iter(batch_size=60))
    assert table.schema.names == list(stream.features) and table.num_rows == 60
    with pytest.raises(ValueError, match="unknown columns.*'label'"):
        MinervaEvents(data_dir=str(fake_dataset_dir), columns=["label"])


def test_builder_map_style_and_bad_shard(tmp_path, fake_dataset_dir):
    builder = MinervaEvents(data_dir=str(fake_dataset_dir), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    ds = builder.as_dataset(split="validation")
    assert ds.num_rows == 60 and ds.features == features()
    bad = tmp_path / "bad"
    (bad / "data" / "train").mkdir(parents=True)
    pq.write_table(pa.table({"run": pa.array([1], pa.int64())}), bad / "data/train/part-0.parquet")
    with pytest.raises(ValueError, match=r"part-0.parquet: not a converted MINERvA shard.*missing columns"):
        list(MinervaEvents(data_dir=str(bad)).as_streaming_dataset(split="train"))
    with pytest.raises(FileNotFoundError, match="no Parquet shards"):
        MinervaEvents(data_dir=str(tmp_path / "empty")).as_streaming_dataset()


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
    builder_stream = MinervaEvents(data_dir=f"hf://datasets/{repo_id}").as_streaming_dataset(split="shifted")
    assert_typed(builder_stream.features)
    assert sum(t.num_rows for t in builder_stream.with_format("arrow").iter(batch_size=16)) == 40
    assert HfApi().list_repo_commits(repo_id, repo_type="dataset")[0].commit_id == sha
