"""MinervaCollator: exact padding on hand-built events, row path == Arrow path, errors, iter_batches + DDP split."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch
from fake_data import fake_table
from datasets.distributed import split_dataset_by_node

from dataset_builder import schema
from dataset_builder.collator import MinervaCollator, iter_batches


def hand_events() -> pa.Table:
    """Three events with 2, 0 and 3 objects: every output value can be written down."""
    table = fake_table(3, seed=1)
    offsets = pa.array([0, 2, 2, 5], pa.int32())
    pids = pa.array([1, 3, 2, 3, 8], pa.int32())
    feats = np.arange(5 * 9, dtype=np.float32).reshape(5, 9) + 1
    table = table.set_column(table.schema.get_field_index("object_pid"), "object_pid",
                             pa.ListArray.from_arrays(offsets, pids))
    table = table.set_column(table.schema.get_field_index("object_features"), "object_features",
                             pa.ListArray.from_arrays(offsets, pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()), 9)))
    return table.cast(schema.PARQUET_SCHEMA)


def test_hand_built_batch_exact():
    table = hand_events()
    batch = MinervaCollator(task="classification").collate_arrow(table)
    feats = np.arange(45, dtype=np.float32).reshape(5, 9) + 1
    assert batch["object_features"].shape == (3, 3, 9) and batch["object_features"].dtype == torch.float32
    expected = np.zeros((3, 3, 9), np.float32)
    expected[0, :2], expected[2, :3] = feats[:2], feats[2:]
    np.testing.assert_array_equal(batch["object_features"].numpy(), expected)
    assert batch["object_pid"].tolist() == [[1, 3, 0], [0, 0, 0], [2, 3, 8]]
    assert batch["object_pid"].dtype == torch.int64
    assert batch["attention_mask"].tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    np.testing.assert_array_equal(batch["event_features"].numpy(),
                                  np.asarray(table["event_features"].to_pylist(), np.float32))
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == table["topology"].to_pylist()
    regression = MinervaCollator(task="regression").collate_arrow(table)
    assert regression["labels"].dtype == torch.float32
    np.testing.assert_array_equal(regression["labels"].numpy(), table["e_avail"].to_numpy())
    assert "labels" not in MinervaCollator().collate_arrow(table)


def test_sliced_batch_and_truncation():
    table = hand_events()
    tail = MinervaCollator().collate_arrow(table.to_batches()[0].slice(1, 2))  # Arrow offset != 0
    assert tail["object_pid"].tolist() == [[0, 0, 0], [2, 3, 8]]
    short = MinervaCollator(max_objects=2).collate_arrow(table)
    assert short["object_pid"].tolist() == [[1, 3], [0, 0], [2, 3]]


@pytest.mark.parametrize("fmt", [None, "numpy", "torch"])
def test_row_path_matches_arrow_path(fmt):
    table = pa.concat_tables([fake_table(20, seed=2), fake_table(17, seed=3)])  # two chunks
    ds = datasets.Dataset(table.combine_chunks())
    rows = list(ds.with_format(fmt)) if fmt else list(ds)
    collator = MinervaCollator(task="regression")
    from_rows, from_arrow = collator(rows), collator.collate_arrow(table)
    assert from_rows.keys() == from_arrow.keys()
    for key in from_rows:
        assert from_rows[key].dtype == from_arrow[key].dtype, key
        torch.testing.assert_close(from_rows[key], from_arrow[key], rtol=0, atol=0)
    assert from_arrow["object_pid"].shape[1] == max(len(r["object_pid"]) for r in rows)


def test_null_targets_rejected():
    data_rows = fake_table(5, seed=4, source_file="data_run.root", with_truth=False)
    assert "labels" not in MinervaCollator().collate_arrow(data_rows)
    with pytest.raises(ValueError, match="null 'e_avail'.*data_run.root"):
        MinervaCollator(task="regression").collate_arrow(data_rows)
    with pytest.raises(ValueError, match="null 'topology'.*data_run.root"):
        MinervaCollator(task="classification")(data_rows.to_pylist())
    with pytest.raises(ValueError, match="task must be"):
        MinervaCollator(task="tagging")


def test_iter_batches_streaming(fake_dataset_dir):
    from dataset_builder.hf_dataset import load_events

    stream = load_events(str(fake_dataset_dir), "train")
    batches = list(iter_batches(stream, 64, MinervaCollator(task="classification")))
    assert [b["labels"].shape[0] for b in batches] == [64, 64, 64, 48]
    assert all(b["object_pid"][~b["attention_mask"]].eq(0).all() for b in batches)
    assert all(b["object_pid"][b["attention_mask"]].gt(0).all() for b in batches)


def test_iter_batches_epoch_reshuffles(fake_dataset_dir):
    """Epoch 1 of a shuffled stream comes out in another order than epoch 0 (same events), via `epoch=` or
    `set_epoch` (which `with_format` alone would reset to 0)."""
    from dataset_builder.hf_dataset import load_events

    stream = load_events(str(fake_dataset_dir), "train")
    stream = stream.shuffle(seed=0, buffer_size=64)

    def order(**kwargs):
        return [tuple(row) for b in iter_batches(stream, 32, MinervaCollator(), **kwargs)
                for row in b["event_features"][:, :2].tolist()]

    epoch0, epoch1 = order(epoch=0), order(epoch=1)
    assert sorted(epoch0) == sorted(epoch1) and len(set(epoch0)) == len(epoch0)
    assert epoch0 != epoch1
    assert order(epoch=1) == epoch1  # deterministic per epoch
    stream.set_epoch(1)
    assert order() == epoch1


@pytest.mark.parametrize(("n_files", "streaming"), [(1, True), (4, True), (2, False)])
def test_split_by_node_union_is_everything(tmp_path, n_files, streaming):
    import pyarrow.parquet as pq

    (tmp_path / "data" / "train").mkdir(parents=True)
    for i in range(n_files):
        pq.write_table(fake_table(96 // n_files, seed=10 + i), tmp_path / "data" / "train" / f"part-{i}.parquet",
                       row_group_size=16)
    stream = datasets.load_dataset("parquet", data_files=str(tmp_path / "data/train/*.parquet"), split="train",
                                   streaming=streaming, cache_dir=str(tmp_path / "cache"))
    ids = []
    for rank in range(2):
        shard = split_dataset_by_node(stream, rank=rank, world_size=2)
        rank_ids = [tuple(row) for b in iter_batches(shard, 10, MinervaCollator()) for row in b["event_features"][:, :2].tolist()]
        assert 40 <= len(rank_ids) <= 56, f"rank {rank} got {len(rank_ids)} of 96 events"
        ids += rank_ids
    assert len(ids) == 96 and len(set(ids)) == 96


def _with_object_values(table: pa.Table, feats: np.ndarray, pids: np.ndarray) -> pa.Table:
    offsets = pa.array([0, 2, 2, 5], pa.int32())
    table = table.set_column(table.schema.get_field_index("object_pid"), "object_pid",
                             pa.ListArray.from_arrays(offsets, pa.array(pids, pa.int32())))
    values = pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()), 9)  # float64 when feats is
    return table.set_column(table.schema.get_field_index("object_features"), "object_features",
                            pa.ListArray.from_arrays(offsets, values))


@pytest.mark.parametrize("rows", [False, True])
def test_values_checked_once_with_column_and_row(rows):
    """NaN/Inf features, PIDs outside 1..8 and float64 overflow are refused naming column, feature and row."""
    base = hand_events()  # 3 events with 2, 0, 3 objects
    entries = base.column("entry").to_pylist()

    def collate(table, task=None):
        collator = MinervaCollator(task=task)
        return collator(table.to_pylist()) if rows else collator.collate_arrow(table)

    feats = np.arange(45, dtype=np.float64).reshape(5, 9)
    feats[3, 4] = np.nan  # event 2 (third row), its second object, log_dedx
    with pytest.raises(ValueError, match=rf"'object_features': 1 object\(s\) have NaN/Inf \(first: batch row 2, "
                                         rf".*entry={entries[2]}, object 1, feature 'log_dedx' = nan"):
        collate(_with_object_values(base, feats, np.array([1, 3, 2, 3, 8])))
    feats[3, 4] = 1e300  # finite in float64, inf after the float32 cast
    with pytest.raises(ValueError, match=r"'object_features'.*feature 'log_dedx' = inf"):
        collate(_with_object_values(base, feats, np.array([1, 3, 2, 3, 8])))
    feats[3, 4] = 0.5
    cast = collate(_with_object_values(base, feats, np.array([1, 3, 2, 3, 8])))
    assert cast["object_features"].dtype == torch.float32
    np.testing.assert_array_equal(cast["object_features"][2, :3].numpy(), feats[2:].astype(np.float32))
    for bad_pid in (9, 0):
        with pytest.raises(ValueError, match=rf"'object_pid': 1 object\(s\) have a PID index outside 1..8 .*"
                                             rf"batch row 0, .*entry={entries[0]}, value {bad_pid}"):
            collate(_with_object_values(base, feats, np.array([1, bad_pid, 2, 3, 8])))
    event = np.asarray(base["event_features"].to_pylist(), np.float32)
    event[1, 6] = np.inf
    bad_event = base.set_column(base.schema.get_field_index("event_features"), "event_features",
                                pa.FixedSizeListArray.from_arrays(pa.array(event.ravel()), 16))
    with pytest.raises(ValueError, match=r"'event_features': 1 row\(s\) have NaN/Inf \(first: batch row 1.*"
                                         r"feature 'n_michel' = inf"):
        collate(bad_event)
    topology = base.set_column(base.schema.get_field_index("topology"), "topology", pa.array([0, 7, 1], pa.int32()))
    with pytest.raises(ValueError, match=r"'topology': 1 row\(s\) have a classification target outside 0..4 "
                                         r"\(first: batch row 1"):
        collate(topology, task="classification")
    assert MinervaCollator(validate=False).collate_arrow(bad_event)["event_features"][1, 6] == float("inf")
