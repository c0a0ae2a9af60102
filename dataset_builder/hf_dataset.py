"""The converted MINERvA events through the packaged Parquet builder of `datasets`, with typed features.

    from dataset_builder.hf_dataset import load_events, iter_tables
    stream = load_events("converted/", "train")                  # IterableDataset, typed features (int32 kept)
    stream = load_events("ns/name", "test", revision="v1")       # a Hub dataset repo (streamed, HTTP range reads)
    ds = load_events("converted/", "validation", streaming=False)  # map-style, Arrow cache
    for table in iter_tables(stream, 4096): ...                    # pyarrow.Table batches (the fast path)

This is the one loading path: `datasets.load_dataset` on the folder or repo when it has a dataset card with
`configs:` (as `datasets.load_dataset(DIR)` / `load_dataset("ns/name")` do for a user, see `dataset_card.py`), else
`load_dataset("parquet", data_files=..., features=features())` on the split's files; `features=` is always passed,
so the column types are the contract's (`schema.PARQUET_SCHEMA`), never inferred. Layout: `DIR/data/<split>/*.parquet`
(bare folders may also use `<split>/*.parquet`, `<split>-*.parquet`, `<split>_*.parquet`), `DIR/manifest.json`.

`guard_stream_shutdown()` (called by `load_events` and on importing the collator) fixes the interpreter-exit abort
`terminate called without an active exception` of a stream left half-read (issue 14; see its docstring).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import re
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from dataset_builder import schema

DESCRIPTION = "MINERvA medium-energy FHC neutrino events (MasterAnaDev AnaTuples) converted to one row per event."
EXIT_DRAIN_SECONDS = 0.1  # >> one local row-group read; measured 0 aborts in 20 runs (vs ~1 in 4 without)
_GUARDED = False


def split_pattern(split: str) -> str:
    """Glob (relative to the dataset root) of a split's Parquet shards."""
    return f"data/{split}/*.parquet"


def _feature_for(arrow_type: pa.DataType) -> datasets.features.FeatureType:
    """The `datasets` feature for one column type of `schema.PARQUET_SCHEMA` (lists stay `List`, not `Sequence`)."""
    if pa.types.is_fixed_size_list(arrow_type):
        return datasets.List(_feature_for(arrow_type.value_type), length=arrow_type.list_size)
    if pa.types.is_list(arrow_type):
        return datasets.List(_feature_for(arrow_type.value_type))
    return datasets.Value(str(arrow_type) if arrow_type != pa.string() else "string")


def features(columns: list[str] | None = None) -> datasets.Features:
    """Typed `datasets.Features` mirroring `schema.PARQUET_SCHEMA` column by column (only `columns` if given)."""
    full = datasets.Features({field.name: _feature_for(field.type) for field in schema.PARQUET_SCHEMA})
    unknown = sorted(set(columns or ()) - set(full))
    if unknown:
        raise ValueError(f"unknown columns {unknown}; the converted dataset has {list(full)}")
    return datasets.Features({k: v for k, v in full.items() if k in columns}) if columns else full


dataset_features = features


# ------------------------------------------------------------------------------------------------- shutdown guard
def _drain_streams_at_exit() -> None:
    gc.collect()  # close half-read stream generators now, while the interpreter can still run their `finally`
    time.sleep(EXIT_DRAIN_SECONDS)  # let Arrow finish the row-group fetch they had in flight


def guard_stream_shutdown() -> None:
    """Make a half-read Parquet stream safe at interpreter exit (once per process).

    Cause (gdb, datasets 5.2 / pyarrow 26): `next(iter(stream))` leaves the stream's generators suspended in a
    reference cycle, with Arrow already fetching the next row group on its own thread. The cycle is only collected
    during interpreter finalization; when that fetch completes, Arrow's thread drops the last reference to the
    Python file object `datasets` opened and must take the GIL, which a finalizing interpreter refuses by
    `pthread_exit`; the forced unwind through a noexcept destructor calls `std::terminate` (rc 134, about 1 run in
    4). An atexit hook runs before finalization: it collects the cycle (datasets then closes the readers) and waits
    for the in-flight fetch. It also makes `datasets`' 5 s sleep after every closed stream unnecessary, so that is
    turned off (`skip_arrow_shutdown_sleep`).
    """
    global _GUARDED
    if not _GUARDED:
        atexit.register(_drain_streams_at_exit)
        skip_arrow_shutdown_sleep()
        _GUARDED = True


def skip_arrow_shutdown_sleep() -> None:
    """Drop `datasets`' 5 s sleep after every closed multi-shard Parquet stream (every epoch, every capped
    validation pass cost 5 s; apache/arrow#45214): the exit guard above covers the case the sleep was for."""
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0


# ------------------------------------------------------------------------------------------------- loading
def split_files(path: str | Path, split: str) -> list[str]:
    """Parquet files of `split` in a bare local folder (sorted); empty if the folder has none."""
    root = Path(path)
    pattern = re.compile(rf"(^|/){re.escape(split)}(/|[-_.][^/]*$)")
    return [str(p) for p in sorted(root.rglob("*.parquet")) if pattern.search(p.relative_to(root).as_posix())]


def has_card_configs(root: Path) -> bool:
    """True when `root/README.md` is a dataset card with `configs:` (then `load_dataset(root)` finds the splits)."""
    card = root / "README.md"
    return card.is_file() and "configs:" in card.read_text(encoding="utf-8", errors="replace")


def check_shards(files: list[str], columns: list[str] | None = None) -> None:
    """Raise naming the file and the columns when a local shard does not carry the converted-dataset schema."""
    expected = features(columns).arrow_schema
    for path in files:
        found = pq.read_schema(path)
        missing = [name for name in expected.names if name not in found.names]
        wrong = [f"{f.name}: {found.field(f.name).type} (expected {f.type})" for f in expected
                 if f.name in found.names and found.field(f.name).type != f.type]
        if missing or wrong:
            raise ValueError(f"{path}: not a converted MINERvA shard; missing columns {missing}, wrong types {wrong}")


def load_events(path: str, split: str, revision: str | None = None, streaming: bool = True,
                columns: list[str] | None = None, cache_dir: str | None = None):
    """The `split` of a converted folder or Hub dataset repo as a typed (streaming) `datasets` dataset."""
    from datasets import load_dataset

    guard_stream_shutdown()
    typed = {"features": features(columns), "columns": columns, "cache_dir": cache_dir}
    root = Path(path)
    if root.is_dir():
        files = [str(p) for p in sorted(root.glob(split_pattern(split)))] or split_files(root, split)
        if not files:
            found = sorted({p.relative_to(root).as_posix() for p in root.rglob("*.parquet")})[:10]
            raise FileNotFoundError(f"no Parquet files for split {split!r} under {root} (looked for {split}/*.parquet, "
                                    f"{split}-*.parquet, {split}_*.parquet); found: {found}")
        check_shards(files, columns)
        if has_card_configs(root):
            return load_dataset(str(root), split=split, streaming=streaming, **typed)
        return load_dataset("parquet", data_files={split: files}, split=split, streaming=streaming, **typed)
    if root.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
        raise FileNotFoundError(f"data path {path!r} is neither a folder nor a Hub dataset repo id (namespace/name)")
    return load_dataset(str(path), split=split, revision=revision, streaming=streaming, **typed)


def iter_tables(dataset, batch_size: int, max_events: int | None = None, epoch: int | None = None,
                drop_last_batch: bool = False) -> Iterator[pa.Table]:
    """Arrow batches of up to `batch_size` events (the last may be smaller), stopping after `max_events`.

    Pass the shuffling `epoch` here rather than calling `set_epoch` before: `with_format` returns a copy whose epoch
    is back at 0 (datasets 5.2), which would replay epoch 0's order every epoch. Default: the dataset's own epoch.
    The underlying stream is closed when this generator ends or is closed (no half-read reader left behind).
    """
    arrow = dataset.with_format("arrow")
    if hasattr(arrow, "set_epoch"):  # IterableDataset; a map-style Dataset has no epoch (shuffle it explicitly)
        arrow.set_epoch(getattr(dataset, "epoch", 0) if epoch is None else epoch)
    seen = 0
    with contextlib.closing(iter(arrow.iter(batch_size=batch_size, drop_last_batch=drop_last_batch))) as batches:
        for table in batches:
            if max_events is not None:
                if seen >= max_events:
                    return
                table = table.slice(0, max_events - seen)
            seen += table.num_rows
            yield table


__all__ = ["DESCRIPTION", "split_pattern", "features", "dataset_features", "guard_stream_shutdown",
           "skip_arrow_shutdown_sleep", "split_files", "has_card_configs", "check_shards", "load_events",
           "iter_tables"]
