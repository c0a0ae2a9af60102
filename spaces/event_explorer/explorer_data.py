"""Event sources of the explorer: a Hub dataset split or an uploaded Parquet/ROOT file, validated, plus filters."""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from explorer_schema import NUM_EVENT_FEATURES, NUM_OBJECT_FEATURES, REQUIRED_COLUMNS, TOPOLOGY_NAMES

MAX_UPLOAD_MB = float(os.environ.get("MINERVA_EXPLORER_MAX_UPLOAD_MB", "50"))
MAX_EVENTS = int(os.environ.get("MINERVA_EXPLORER_MAX_EVENTS", "5000"))
ALL_CHANNELS = "all"


class UserInputError(ValueError):
    """Bad user input (file, dataset id, filter); its message is shown in the app as is."""


def read_upload(path: str | Path, max_events: int = MAX_EVENTS) -> pa.Table:
    """Read and validate an uploaded Parquet file (or a ROOT AnaTuple when the converter is importable)."""
    path = Path(path)
    size_mb = path.stat().st_size / 2**20
    if size_mb > MAX_UPLOAD_MB:
        raise UserInputError(f"{path.name}: {size_mb:.1f} MB is over the {MAX_UPLOAD_MB:g} MB upload limit")
    suffix = path.suffix.lower()
    if suffix == ".root":
        return validate_table(_convert_root(path), path.name).slice(0, max_events)
    if suffix != ".parquet":
        raise UserInputError(f"{path.name}: expected a .parquet file (converted dataset) or a .root AnaTuple")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise UserInputError(f"{path.name}: not a readable Parquet file ({err})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in parquet.schema_arrow.names]
    if missing:
        raise UserInputError(_missing_message(path.name, missing, parquet.schema_arrow.names))
    rows = min(parquet.metadata.num_rows, max_events)
    table = parquet.read_row_groups(_row_groups_for(parquet, rows)).slice(0, rows)
    return validate_table(table, path.name)


def _row_groups_for(parquet: pq.ParquetFile, rows: int) -> list[int]:
    groups, total = [], 0
    for i in range(parquet.num_row_groups):
        if total >= rows and groups:
            break
        groups.append(i)
        total += parquet.metadata.row_group(i).num_rows
    return groups


def _convert_root(path: Path) -> pa.Table:
    """Convert an AnaTuple ROOT file with the project's converter (all rows kept, in entry order)."""
    try:
        from dataset_builder.convert import ConversionError, ConvertOptions, convert_file
    except ImportError:
        raise UserInputError(f"{path.name}: ROOT upload needs the minerva-fm converter installed "
                             "(pip install minerva-fm); upload a converted .parquet file instead") from None
    with tempfile.TemporaryDirectory(prefix="explorer-convert-") as out:
        try:  # shifted=True routes every row to one split instead of hashing them into train/validation/test
            convert_file(path, out, shifted=True, options=ConvertOptions())
        except ConversionError as err:  # its message names the file, tree and branch
            raise UserInputError(f"{path.name}: could not convert the ROOT file ({err})") from None
        shards = sorted(Path(out).rglob("*.parquet"))
        if not shards:
            raise UserInputError(f"{path.name}: the converter produced no events")
        return pa.concat_tables([pq.read_table(shard) for shard in shards]).combine_chunks()


def _missing_message(source: str, missing: list[str], names: list[str]) -> str:
    hints = {m: difflib.get_close_matches(m, names, n=3) for m in missing}
    hint = "; ".join(f"{m}: close matches {h}" for m, h in hints.items() if h)
    return f"{source}: missing required column(s) {missing}{' (' + hint + ')' if hint else ''}"


def validate_table(table: pa.Table, source: str) -> pa.Table:
    """Check the model-input columns (presence, widths, object counts) of a converted-events table."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.schema.names]
    if missing:
        raise UserInputError(_missing_message(source, missing, table.schema.names))
    if table.num_rows == 0:
        raise UserInputError(f"{source}: no events")
    try:
        n_pid = pc.list_value_length(table["object_pid"])
        n_feat = pc.list_value_length(table["object_features"])
        feat_width = pc.list_value_length(pc.list_flatten(table["object_features"]))
        event_width = pc.list_value_length(table["event_features"])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError) as err:
        raise UserInputError(f"{source}: object/event feature columns are not lists ({err})") from None
    if not pc.all(pc.equal(n_pid, n_feat)).as_py() or not pc.all(pc.equal(n_pid, table["n_objects"])).as_py():
        raise UserInputError(f"{source}: n_objects, object_pid and object_features disagree on the object count")
    if len(feat_width) and not pc.all(pc.equal(feat_width, NUM_OBJECT_FEATURES)).as_py():
        raise UserInputError(f"{source}: object_features must hold {NUM_OBJECT_FEATURES} values per object")
    if not pc.all(pc.equal(event_width, NUM_EVENT_FEATURES)).as_py():
        raise UserInputError(f"{source}: event_features must hold {NUM_EVENT_FEATURES} values per event")
    return table


def load_hub_split(dataset_id: str, split: str, max_events: int = MAX_EVENTS, revision: str | None = None) -> pa.Table:
    """The first ``max_events`` events of a Hub dataset split, streamed (no full download)."""
    from datasets import load_dataset

    if not dataset_id or "/" not in dataset_id:
        raise UserInputError(f"dataset id must look like 'namespace/name', got {dataset_id!r}")
    try:
        stream = load_dataset(dataset_id, split=split, streaming=True, revision=revision)
        batches = stream.with_format("arrow").iter(batch_size=max(1, min(max_events, 1000)))
        tables, total = [], 0
        for table in batches:
            tables.append(table)
            total += table.num_rows
            if total >= max_events:
                break
    except Exception as err:  # noqa: BLE001 - any Hub/dataset failure becomes a message for the user
        raise UserInputError(f"could not load split {split!r} of dataset {dataset_id!r}: "
                             f"{type(err).__name__}: {err}") from None
    if not tables:
        raise UserInputError(f"split {split!r} of dataset {dataset_id!r} has no events")
    return validate_table(pa.concat_tables(tables).slice(0, max_events), f"{dataset_id}:{split}")


def filter_events(table: pa.Table, channel: str = ALL_CHANNELS, q3_range: tuple[float, float] | None = None,
                  w_range: tuple[float, float] | None = None) -> np.ndarray:
    """Row indices passing the channel (topology name or 'all'), q3 and W (GeV, inclusive) filters."""
    keep = np.ones(table.num_rows, dtype=bool)
    if channel and channel != ALL_CHANNELS:
        if "topology" not in table.schema.names:
            raise UserInputError("this sample has no 'topology' truth column to filter on")
        if channel not in TOPOLOGY_NAMES:
            raise UserInputError(f"unknown channel {channel!r}; choose one of {list(TOPOLOGY_NAMES)}")
        keep &= _column(table, "topology", -1) == TOPOLOGY_NAMES.index(channel)
    for name, bounds in (("q3", q3_range), ("w", w_range)):
        if bounds is None or all(b is None for b in bounds):
            continue
        if name not in table.schema.names:
            raise UserInputError(f"this sample has no {name!r} truth column to filter on")
        values = _column(table, name, np.nan)
        lo, hi = (-np.inf if bounds[0] is None else bounds[0]), (np.inf if bounds[1] is None else bounds[1])
        keep &= (values >= lo) & (values <= hi)
    return np.flatnonzero(keep)


def _column(table: pa.Table, name: str, null_value: float) -> np.ndarray:
    return table[name].to_numpy(zero_copy_only=False).astype(np.float64) if table[name].null_count == 0 else \
        pc.fill_null(table[name], null_value).to_numpy(zero_copy_only=False).astype(np.float64)


def event_row(table: pa.Table, index: int) -> dict:
    """One event as a dict of Python values."""
    if not 0 <= index < table.num_rows:
        raise UserInputError(f"event {index} is out of range: this sample has {table.num_rows} events (0..{table.num_rows - 1})")
    return table.slice(index, 1).to_pylist()[0]
