"""Rows of the converted dataset -> the model batch dict of docs/tensor-layout.md.

Two entry points producing identical batches:
* `MinervaCollator()(rows)`: a list of row dicts (default `datasets` format, or numpy/torch-formatted rows), for a
  torch `DataLoader(collate_fn=...)`;
* `MinervaCollator().collate_arrow(table)`: a `pyarrow.Table`/`RecordBatch` slice, flattened through the list offsets
  with numpy (no per-row Python). `iter_batches(dataset, batch_size, collator)` feeds it from
  `dataset.with_format("arrow").iter(batch_size)` — ~40x faster than per-row formatting of nested lists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from dataset_builder import schema
from dataset_builder.hf_dataset import guard_stream_shutdown, iter_tables

guard_stream_shutdown()  # the dataset card's snippet opens its stream with plain `load_dataset`, then imports this

TASK_LABEL_COLUMNS = {"regression": ("e_avail", np.float32), "classification": ("topology", np.int64)}
INPUT_COLUMNS = ("object_pid", "object_features", "event_features")


class MinervaCollator:
    """Pads events to the longest in the batch (at most `max_objects`); adds `labels` when `task` is set.

    With `validate=True` (default) the values are checked once here, vectorised, so the models' forward checks
    shapes only (no GPU->CPU sync per step): finite object / event features (after the float32 cast, so float64
    values beyond float32 range are caught), PID indices of real objects in 1..PID_VOCAB_SIZE-1, finite labels and
    topology in 0..NUM_TOPOLOGIES-1. Errors name the column, the feature and the first bad row (source_file, entry).
    """

    def __init__(self, task: str | None = None, max_objects: int = schema.MAX_OBJECTS, validate: bool = True):
        if task not in (None, *TASK_LABEL_COLUMNS):
            raise ValueError(f"task must be None, 'regression' or 'classification', got {task!r}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        self.task, self.max_objects, self.validate = task, max_objects, validate

    @property
    def columns(self) -> list[str]:
        """Columns this collator reads (select these to stream less)."""
        return [*INPUT_COLUMNS, *([TASK_LABEL_COLUMNS[self.task][0]] if self.task else [])]

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate a list of row dicts."""
        if not rows:
            raise ValueError("cannot collate an empty list of rows")
        for name in self.columns:
            if name not in rows[0]:
                raise KeyError(f"row is missing column {name!r} (has {sorted(rows[0])})")
        pids = [_as_numpy(row["object_pid"], np.int64).reshape(-1) for row in rows]
        feats = [_as_numpy(row["object_features"], np.float32).reshape(-1, schema.NUM_OBJECT_FEATURES) for row in rows]
        counts = np.fromiter((len(p) for p in pids), np.int64, len(rows))
        if not np.array_equal(counts, [len(f) for f in feats]):
            raise ValueError("object_pid and object_features disagree on the number of objects in a row")
        event = np.stack([_as_numpy(row["event_features"], np.float32).reshape(-1) for row in rows])
        pids, feats = np.concatenate(pids), np.concatenate(feats)

        def where(row: int) -> dict:
            return {k: rows[row][k] for k in ("source_file", "entry") if k in rows[row]}

        if self.validate:
            check_inputs(pids, feats, counts, event, where)
        batch = self._assemble(pids, feats, counts, event)
        if self.task:
            name, dtype = TASK_LABEL_COLUMNS[self.task]
            values = [row[name] for row in rows]
            bad = [i for i, v in enumerate(values)
                   if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v))]
            if bad:
                raise ValueError(_null_label_message(name, self.task, len(bad), rows[bad[0]]))
            labels = np.asarray([_as_numpy(v, dtype) for v in values], dtype=dtype)
            if self.validate:
                check_labels(labels, self.task, where)
            batch["labels"] = torch.from_numpy(labels)
        return batch

    def collate_arrow(self, data: pa.Table | pa.RecordBatch) -> dict[str, torch.Tensor]:
        """Collate an Arrow table/record batch through its list offsets (vectorised)."""
        for name in self.columns:
            if name not in data.schema.names:
                raise KeyError(f"Arrow data is missing column {name!r} (has {data.schema.names})")
        pid_col, feat_col, event_col = (_combined(data.column(name), name) for name in INPUT_COLUMNS)
        pid_offsets, pid_values = _list_parts(pid_col)
        feat_offsets, feat_values = _list_parts(feat_col)
        if not np.array_equal(pid_offsets, feat_offsets):
            raise ValueError("object_pid and object_features disagree on the number of objects in a row")
        pids = pid_values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        feats = _fixed_size_values(feat_values, schema.NUM_OBJECT_FEATURES, "object_features")
        event = _fixed_size_values(event_col, schema.NUM_EVENT_FEATURES, "event_features")
        counts = np.diff(pid_offsets)

        def where(row: int) -> dict:
            return {k: data.column(k)[row].as_py() for k in ("source_file", "entry") if k in data.schema.names}

        if self.validate:
            check_inputs(pids, feats, counts, event, where)
        batch = self._assemble(pids, feats, counts, event)
        if self.task:
            name, dtype = TASK_LABEL_COLUMNS[self.task]
            labels = _combined(data.column(name), name)
            if labels.null_count:
                first = int(np.flatnonzero(labels.is_null().to_numpy(zero_copy_only=False))[0])
                raise ValueError(_null_label_message(name, self.task, labels.null_count, where(first)))
            labels = labels.to_numpy(zero_copy_only=False).astype(dtype)
            if self.validate:
                check_labels(labels, self.task, where)
            batch["labels"] = torch.from_numpy(labels)
        return batch

    def _assemble(self, pids: np.ndarray, feats: np.ndarray, counts: np.ndarray, event: np.ndarray) -> dict:
        """Scatter the flat object arrays into zero-padded (B, N, ...) tensors."""
        batch_size = len(counts)
        n_max = int(min(max(counts.max(initial=0), 1), self.max_objects))
        # flat slot of each object in the (B * N) padded layout: row * N + position within its event
        starts = np.cumsum(counts) - counts
        slot = np.arange(len(pids)) + np.repeat(np.arange(batch_size) * n_max - starts, counts)
        if counts.max(initial=0) > n_max:  # events longer than max_objects are cut (the converter caps at 33)
            keep = slot - np.repeat(np.arange(batch_size) * n_max, counts) < n_max
            slot, pids, feats = slot[keep], pids[keep], feats[keep]
        object_features = np.zeros((batch_size * n_max, schema.NUM_OBJECT_FEATURES), np.float32)
        object_pid = np.zeros(batch_size * n_max, np.int64)
        mask = np.zeros(batch_size * n_max, bool)
        object_features[slot] = feats
        object_pid[slot] = pids
        mask[slot] = True
        if event.shape != (batch_size, schema.NUM_EVENT_FEATURES):
            raise ValueError(f"event_features has shape {event.shape}, "
                             f"expected ({batch_size}, {schema.NUM_EVENT_FEATURES})")
        return {
            "object_features": torch.from_numpy(object_features.reshape(batch_size, n_max, -1)),
            "object_pid": torch.from_numpy(object_pid.reshape(batch_size, n_max)),
            "attention_mask": torch.from_numpy(mask.reshape(batch_size, n_max)),
            "event_features": torch.from_numpy(np.array(event, dtype=np.float32)),  # a copy: Arrow memory is read-only
        }


def iter_batches(dataset, batch_size: int, collator: MinervaCollator, drop_last_batch: bool = False,
                 epoch: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Model-ready batches from a `datasets` Dataset/IterableDataset: `hf_dataset.iter_tables` (Arrow batches; works
    after `split_dataset_by_node`, `shuffle`, `select_columns`; pass the shuffling `epoch` there) + `collate_arrow`."""
    for table in iter_tables(dataset, batch_size, epoch=epoch, drop_last_batch=drop_last_batch):
        yield collator.collate_arrow(table)


def check_inputs(pids: np.ndarray, feats: np.ndarray, counts: np.ndarray, event: np.ndarray, where) -> None:
    """Raise naming column, feature and first row when a value is not finite or a PID is out of range (vectorised).

    `pids` (n_objects,), `feats` (n_objects, 9) and `counts` (rows,) describe the flat objects; `event` (rows, 16);
    `where(row)` gives the row's identity (source_file, entry).
    """
    def row_of(obj: int) -> int:
        return int(np.searchsorted(np.cumsum(counts), obj, side="right"))

    bad_obj = ~np.isfinite(feats)
    if bad_obj.any():
        obj, feature = np.argwhere(bad_obj)[0]
        row = row_of(obj)
        raise ValueError(_value_message("object_features", int(bad_obj.any(1).sum()), "object(s) have NaN/Inf",
                                        row, where, f"object {obj - (np.cumsum(counts)[row] - counts[row])}, feature "
                                        f"{schema.OBJECT_FEATURE_NAMES[feature]!r} = {feats[obj, feature]}"))
    bad_event = ~np.isfinite(event)
    if bad_event.any():
        row, feature = np.argwhere(bad_event)[0]
        raise ValueError(_value_message("event_features", int(bad_event.any(1).sum()), "row(s) have NaN/Inf", row,
                                        where, f"feature {schema.EVENT_FEATURE_NAMES[feature]!r} = {event[row, feature]}"))
    bad_pid = (pids < 1) | (pids >= schema.PID_VOCAB_SIZE)
    if bad_pid.any():
        obj = int(np.flatnonzero(bad_pid)[0])
        raise ValueError(_value_message("object_pid", int(bad_pid.sum()),
                                        f"object(s) have a PID index outside 1..{schema.PID_VOCAB_SIZE - 1} "
                                        "(0 is padding)", row_of(obj), where, f"value {pids[obj]}"))


def check_labels(labels: np.ndarray, task: str, where) -> None:
    """Raise naming the first row when a regression target is not finite or a topology is out of range."""
    name = TASK_LABEL_COLUMNS[task][0]
    bad = ~np.isfinite(labels) if task == "regression" else (labels < 0) | (labels >= schema.NUM_TOPOLOGIES)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        rule = "not finite" if task == "regression" else f"outside 0..{schema.NUM_TOPOLOGIES - 1}"
        raise ValueError(_value_message(name, int(bad.sum()), f"row(s) have a {task} target {rule}", row, where,
                                        f"value {labels[row]}"))


def _value_message(column: str, n_bad: int, what: str, row: int, where, detail: str) -> str:
    identity = ", ".join(f"{k}={v!r}" for k, v in where(int(row)).items())
    return f"column {column!r}: {n_bad} {what} (first: batch row {int(row)}{', ' + identity if identity else ''}, {detail})"


def _as_numpy(value: Any, dtype) -> np.ndarray:
    """Row value (list, ndarray, object ndarray of arrays, tensor, scalar) -> ndarray of `dtype`."""
    if isinstance(value, torch.Tensor):
        return value.numpy().astype(dtype, copy=False)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return np.stack([np.asarray(v, dtype) for v in value]) if len(value) else np.zeros((0,), dtype)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (torch.Tensor, np.ndarray)):
        return np.stack([_as_numpy(v, dtype) for v in value])
    with np.errstate(over="ignore"):  # float64 beyond float32 range -> inf, refused by check_inputs
        return np.asarray(value, dtype)


def _combined(column: pa.ChunkedArray | pa.Array, name: str) -> pa.Array:
    """One contiguous Arrow array for a column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if column.null_count and name in INPUT_COLUMNS:
        raise ValueError(f"column {name!r} has {column.null_count} null rows; input columns must be non-null")
    return column


def _list_parts(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(offsets starting at 0, child values) of a possibly sliced list array."""
    offsets = array.offsets.to_numpy()
    return offsets - offsets[0], array.values.slice(offsets[0], offsets[-1] - offsets[0])


def _fixed_size_values(array: pa.Array, width: int, name: str) -> np.ndarray:
    """(rows, width) float32 view of a fixed_size_list<float32>[width] (or list<float32>) array."""
    if pa.types.is_fixed_size_list(array.type):
        values = array.flatten()
    elif pa.types.is_list(array.type):
        offsets, values = _list_parts(array)
        if np.any(np.diff(offsets) != width):
            raise ValueError(f"column {name!r}: every row must hold {width} values")
    else:
        raise TypeError(f"column {name!r} has Arrow type {array.type}, expected a list of {width} floats")
    with np.errstate(over="ignore"):  # float64 beyond float32 range -> inf, refused by check_inputs
        flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(-1, width)


def _null_label_message(column: str, task: str, n_null: int, row: dict) -> str:
    where = ", ".join(f"{k}={row[k]!r}" for k in ("source_file", "entry") if k in row)
    return (f"{n_null} row(s) have a null {column!r}, the {task} target (first: {where or 'unknown row'}); "
            f"data files have no truth: filter them out or use task=None")

