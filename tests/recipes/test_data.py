"""Streaming, shuffling and sharding of the training split: every event once per epoch across ranks, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.data import (EpochIterator, bin_weights, column_values, inverse_frequency_class_weights, iter_tables,
                          load_split, split_files, training_stream)


def _entries(tables) -> np.ndarray:
    return np.concatenate([t.column("entry").to_numpy() for t in tables])


def test_split_lookup_and_missing_split_error(tiny_dataset):
    assert len(split_files(tiny_dataset, "train")) == 1 and split_files(tiny_dataset, "nope") == []
    with pytest.raises(FileNotFoundError, match="no Parquet files for split 'nope'"):
        load_split(str(tiny_dataset), "nope")
    with pytest.raises(FileNotFoundError, match="neither a folder nor a Hub dataset repo id"):
        load_split(str(tiny_dataset / "missing"), "train")


@pytest.mark.parametrize("files", [1, 4])
def test_two_ranks_see_every_event_once_per_epoch(tmp_path, files):
    from recipes_test_helpers import write_dataset

    root = write_dataset(tmp_path, {"train": 200}, files_per_split=files)
    ds = load_split(str(root), "train")
    all_ids = set(_entries(iter_tables(ds, 64)).tolist())
    orders = []
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):
            stream = training_stream(ds, seed=3, shuffle_buffer=50, rank=rank, world_size=2)
            per_rank.append(_entries(iter_tables(stream, 16, epoch=epoch)))
        both = np.concatenate(per_rank)
        assert len(both) == 200 and set(both.tolist()) == all_ids  # none twice, none skipped
        orders.append(per_rank[0])
    assert not np.array_equal(orders[0], orders[1])  # reshuffled per epoch


def test_epoch_iterator_resume_replays_the_same_batches(tiny_dataset):
    ds = training_stream(load_split(str(tiny_dataset), "train"), seed=1, shuffle_buffer=64, rank=0, world_size=1)
    full = EpochIterator(ds, 48)
    reference = [next(full).column("entry").to_numpy() for _ in range(9)]  # 256 events -> 6 batches/epoch
    assert full.position() == (1, 3)
    again = EpochIterator(training_stream(load_split(str(tiny_dataset), "train"), 1, 64, 0, 1), 48, start=(0, 4))
    resumed = [next(again).column("entry").to_numpy() for _ in range(5)]
    for a, b in zip(reference[4:], resumed):
        np.testing.assert_array_equal(a, b)


def test_class_and_bin_weights(tiny_dataset):
    # 10 events: classes 0,0,0,0,0,1,1,3,3,4 -> N/N_c = 2, 5, 0 (absent), 5, 10
    assert inverse_frequency_class_weights(np.array([0, 0, 0, 0, 0, 1, 1, 3, 3, 4])) == [2.0, 5.0, 0.0, 5.0, 10.0]
    # bins [0,1) has 3, [1,2) has 1 -> N/(2 N_b) = 4/6, 4/2
    np.testing.assert_allclose(bin_weights(np.array([0.1, 0.2, 0.3, 1.5]), [0.0, 1.0, 2.0]), [2 / 3, 2.0])
    topology = column_values(load_split(str(tiny_dataset), "train"), "topology")
    assert len(topology) == 256


@pytest.mark.parametrize(("files", "world_size"), [(4, 1), (1, 1), (2, 2)])
def test_dataloader_workers_see_every_event_once_per_epoch(tmp_path, files, world_size):
    """Issue 10 §5: 2 DataLoader workers (per process) over 4 files, over 1 file (resharded per row group: datasets
    caps workers at the shard count) and under 2 processes: every event exactly once per epoch, reshuffled."""
    import pyarrow.parquet as pq

    from dataset_builder.collator import MinervaCollator
    from recipes.data import batch_loader
    from recipes_test_helpers import write_dataset

    root = write_dataset(tmp_path, {"train": 240}, files_per_split=files)
    for path in (root / "data" / "train").glob("*.parquet"):  # 4+ row groups per file: reshardable
        pq.write_table(pq.read_table(path), path, row_group_size=30)
    all_ids = set(_entries(iter_tables(load_split(str(root), "train"), 100)).tolist())
    orders = []
    for epoch in (0, 1):
        seen = []
        for rank in range(world_size):
            stream = training_stream(load_split(str(root), "train"), seed=3, shuffle_buffer=40, rank=rank,
                                     world_size=world_size, num_workers=2)
            assert stream.num_shards >= 2
            loader = batch_loader(stream, 16, MinervaCollator(task="regression"), num_workers=2, epoch=epoch,
                                  keep_columns=("entry",))
            batches = list(loader)
            assert all(b["labels"].shape == b["entry"].shape for b in batches)
            seen.append(np.concatenate([b["entry"].numpy() for b in batches]))
        both = np.concatenate(seen)
        assert len(both) == 240 and set(both.tolist()) == all_ids  # none twice, none skipped
        orders.append(both)
    assert not np.array_equal(orders[0], orders[1])
