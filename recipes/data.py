"""Streaming the converted events with `datasets`: split lookup, seeded shuffling, per-process sharding, resumable
epoch iteration and the class / bin statistics the losses need.

A data source is a local folder of Parquet shards or a Hub dataset repo id, loaded through the one path of
`dataset_builder.hf_dataset.load_events` (the packaged Parquet builder of `datasets`, typed features; a folder with
a dataset card loads exactly as the Hub repo would). Batches come out as `pyarrow.Table`s (`iter_tables`, the fast
path, hf-integration.md §3) and are turned into model tensors by `dataset_builder.collator`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from dataset_builder.hf_dataset import iter_tables, load_events, skip_arrow_shutdown_sleep, split_files
from dataset_builder.schema import NUM_TOPOLOGIES


def load_split(path: str, split: str, revision: str | None = None, streaming: bool = True):
    """The `split` of a local Parquet folder or Hub dataset repo as a typed (streaming) `datasets` dataset."""
    return load_events(path, split, revision=revision, streaming=streaming)


def training_stream(dataset, seed: int, shuffle_buffer: int, rank: int, world_size: int, num_workers: int = 0):
    """Shuffle (seeded, buffer) then shard across processes; iterate epoch e with `iter_tables(..., epoch=e)`.

    Shuffling before `split_dataset_by_node` keeps the ranks disjoint: with one shard every rank sees the same
    shuffled stream and keeps every world_size-th example; with n_shards % world_size == 0 each rank gets whole shards.
    With `num_workers` DataLoader workers per process (`batch_loader`) a stream of fewer than world_size x
    num_workers shards is first resharded per Parquet row group, so no worker idles (docs/data-loading.md).
    """
    from datasets.distributed import split_dataset_by_node

    wanted = world_size * max(num_workers, 1)
    if num_workers > 1 and getattr(dataset, "num_shards", wanted) < wanted and hasattr(dataset, "reshard"):
        dataset = dataset.reshard()
    if shuffle_buffer > 0:
        dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    return dataset


def eval_stream(dataset, rank: int, world_size: int):
    """Unshuffled shard of `dataset` for this process (each event on exactly one rank)."""
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(dataset, rank=rank, world_size=world_size) if world_size > 1 else dataset


class EpochIterator:
    """Endless batches over a `training_stream`, epoch after epoch, with a resumable position.

    `position()` = (epoch, batches already drawn in that epoch); `EpochIterator(..., start=position)` replays the epoch's
    order (`set_epoch`) and drops the batches already used, so a resumed run sees exactly the batches an uninterrupted
    run would have seen.
    """

    def __init__(self, dataset, batch_size: int, start: tuple[int, int] = (0, 0)):
        self.dataset, self.batch_size = dataset, batch_size
        self.epoch, self.batches_in_epoch = start
        self._iterator = self._open(skip=self.batches_in_epoch)

    def _open(self, skip: int) -> Iterator[pa.Table]:
        iterator = iter_tables(self.dataset, self.batch_size, epoch=self.epoch)
        for _ in range(skip):
            if next(iterator, None) is None:
                raise ValueError(f"cannot resume at batch {skip} of epoch {self.epoch}: the epoch has fewer batches")
        return iterator

    def position(self) -> tuple[int, int]:
        """(epoch, batches drawn in this epoch)."""
        return self.epoch, self.batches_in_epoch

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> pa.Table:
        table = next(self._iterator, None)
        if table is None:
            if self.batches_in_epoch == 0:
                raise ValueError("the training split yielded no events for this process")
            self.epoch, self.batches_in_epoch = self.epoch + 1, 0
            self._iterator = self._open(skip=0)
            table = next(self._iterator)
        self.batches_in_epoch += 1
        return table


class CollatedStream(torch.utils.data.IterableDataset):
    """Collated model batches of a `datasets` stream for a torch `DataLoader` with workers (`batch_loader`).

    `datasets` splits a stream across DataLoader workers only in its row-by-row `__iter__`; the Arrow fast path
    (`iter_tables`) does not, so every worker would replay the whole stream. Here each worker takes shards
    `worker_id::num_workers` explicitly (after the per-process split of `training_stream`), so every event is seen
    exactly once per epoch over all processes and workers. Workers beyond the number of shards get nothing
    (datasets #5984): `training_stream(..., num_workers=W)` reshards a Parquet stream per row group first when it has
    fewer than processes x workers shards.
    `keep_columns` passes numeric columns through as tensors (e.g. "entry", to identify the events).
    """

    def __init__(self, dataset, batch_size: int, collator, epoch: int = 0, keep_columns: tuple[str, ...] = ()):
        self.dataset, self.batch_size, self.collator = dataset, batch_size, collator
        self.epoch, self.keep_columns = epoch, tuple(keep_columns)

    def set_epoch(self, epoch: int) -> None:
        """Shuffle order of the next iteration (the DataLoader re-creates its workers each epoch)."""
        self.epoch = epoch

    def __iter__(self):
        dataset, info = self.dataset, torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            if info.id >= dataset.num_shards:
                return
            dataset = dataset.shard(num_shards=info.num_workers, index=info.id, contiguous=False)
        for table in iter_tables(dataset, self.batch_size, epoch=self.epoch):
            batch = self.collator.collate_arrow(table)
            for name in self.keep_columns:
                batch[name] = torch.from_numpy(np.array(table.column(name).to_numpy(zero_copy_only=False)))
            yield batch


def batch_loader(dataset, batch_size: int, collator, num_workers: int = 0, epoch: int = 0,
                 keep_columns: tuple[str, ...] = (), **loader_kwargs):
    """A torch `DataLoader` of collated batches (`CollatedStream`) read by `num_workers` worker processes."""
    stream = CollatedStream(dataset, batch_size, collator, epoch, keep_columns)
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers, **loader_kwargs)


def column_values(dataset, column: str, batch_size: int = 65_536) -> np.ndarray:
    """All values of one column of a (streaming) split as a numpy array (one pass, arrow batches)."""
    if column not in (dataset.column_names or [column]):
        raise KeyError(f"column {column!r} not in the dataset; columns: {dataset.column_names}")
    parts = [t.column(column).to_numpy(zero_copy_only=False)
             for t in dataset.select_columns([column]).with_format("arrow").iter(batch_size=batch_size)]
    return np.concatenate(parts) if parts else np.empty(0)


def inverse_frequency_class_weights(topology: np.ndarray, num_classes: int = NUM_TOPOLOGIES) -> list[float]:
    """Class weights N_total / N_class (not renormalised, as the reference); a class absent from train gets 0."""
    topology = np.asarray(topology)
    topology = topology[topology >= 0]
    counts = np.bincount(topology.astype(np.int64), minlength=num_classes)[:num_classes]
    total = counts.sum()
    return [float(total / c) if c > 0 else 0.0 for c in counts]


def bin_weights(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Per-bin loss weights N_total / (n_nonempty_bins x N_bin) for bins [lo, hi) (outside: clamped to end bins)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    idx = bin_of(values, edges)
    counts = np.bincount(idx, minlength=len(edges) - 1).astype(np.float64)
    nonempty = max(int((counts > 0).sum()), 1)
    return np.where(counts > 0, counts.sum() / (nonempty * np.maximum(counts, 1)), 0.0)


def bin_of(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin index of [lo, hi) bins, values outside the edges clamped into the first / last bin (NaN -> 0)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=edges[0])
    return np.clip(np.searchsorted(np.asarray(edges), values, side="right") - 1, 0, len(edges) - 2)


__all__ = ["split_files", "skip_arrow_shutdown_sleep", "load_split", "training_stream", "eval_stream", "iter_tables",
           "EpochIterator", "CollatedStream", "batch_loader", "column_values", "inverse_frequency_class_weights", "bin_weights", "bin_of"]
