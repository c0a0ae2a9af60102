"""Event sources of the explorer: a Hub dataset split or an uploaded Parquet/ROOT file, validated, plus filters."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from explorer_schema import NUM_EVENT_FEATURES, NUM_OBJECT_FEATURES, REQUIRED_COLUMNS, TOPOLOGY_NAMES, TRUTH_FIELDS

MAX_UPLOAD_MB = float(os.environ.get("MINERVA_EXPLORER_MAX_UPLOAD_MB", "50"))
MAX_EVENTS = int(os.environ.get("MINERVA_EXPLORER_MAX_EVENTS", "5000"))
MAX_DECODED_MB = float(os.environ.get("MINERVA_EXPLORER_MAX_DECODED_MB", "256"))  # in-memory size of a loaded sample
ALL_CHANNELS = "all"
ID_COLUMNS = ("run", "subrun", "gate")
# Hub repo ids only ("namespace/name"): no absolute, relative or home paths, no URLs.
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
HUB_TIMEOUT_S = 10.0  # one quick metadata request decides whether the Hub is reachable (no ~23 s of retries)
_LEAF_BYTES = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8, "INT96": 12}


class UserInputError(ValueError):
    """Bad user input (file, dataset id, filter); its message is shown in the app as is."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """The events loaded into a session and how many the source holds (None: unknown, e.g. a streamed split)."""

    table: pa.Table
    total_events: int | None


def check_repo_id(repo_id: str, kind: str = "dataset") -> str:
    """`repo_id` if it is a Hub id 'namespace/name' (never a local path); else a UserInputError."""
    repo_id = (repo_id or "").strip()
    if ".." in repo_id or not REPO_ID_PATTERN.match(repo_id):
        raise UserInputError(f"{kind} id must be a Hub repo id 'namespace/name' (not a path or URL), got {repo_id!r}")
    return repo_id


def hub_repo_info(repo_id: str, repo_type: str, revision: str | None = None):
    """The repo's Hub metadata from one request that fails fast with the reason; None in offline mode (cache only)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        return HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision, timeout=HUB_TIMEOUT_S)
    except RevisionNotFoundError:
        raise UserInputError(f"{repo_type} {repo_id!r} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise UserInputError(f"{repo_type} repo {repo_id!r} not found on {constants.ENDPOINT}") from None
    except Exception as err:  # noqa: BLE001 - network errors of any HTTP backend
        raise UserInputError(f"could not reach the Hub ({constants.ENDPOINT}) for {repo_type} {repo_id!r}: "
                             f"{type(err).__name__}: {err}") from None


def read_upload(path: str | Path, max_events: int = MAX_EVENTS) -> Sample:
    """Read and validate an uploaded Parquet file (or a ROOT AnaTuple when the converter is importable)."""
    path = Path(path)
    size_mb = path.stat().st_size / 2**20
    if size_mb > MAX_UPLOAD_MB:
        raise UserInputError(f"{path.name}: {size_mb:.1f} MB is over the {MAX_UPLOAD_MB:g} MB upload limit")
    suffix = path.suffix.lower()
    if suffix == ".root":
        return _convert_root(path, max_events)
    if suffix != ".parquet":
        raise UserInputError(f"{path.name}: expected a .parquet file (converted dataset) or a .root AnaTuple")
    return read_parquet(path, max_events, path.name)


def read_parquet(path: Path, max_events: int, source: str) -> Sample:
    """The first `max_events` events of a converted-events Parquet file, size-checked from its footer, validated."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise UserInputError(f"{source}: not a readable Parquet file ({err})") from None
    schema = parquet.schema_arrow
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise UserInputError(_missing_message(source, missing, schema.names))
    check_column_types(schema, source)
    columns = [c for c in _display_columns() if c in schema.names]
    total = parquet.metadata.num_rows
    rows = min(total, max_events)
    groups = _row_groups_for(parquet, rows)
    check_decoded_size(parquet, groups, columns, source)
    try:
        table = parquet.read_row_groups(groups, columns=columns).slice(0, rows)
    except (pa.ArrowException, OSError) as err:  # corrupt pages, bad compression, wrong lengths
        raise UserInputError(f"{source}: Parquet data could not be decoded ({type(err).__name__}: {err})") from None
    return Sample(validate_table(table, source), total)


def _display_columns() -> list[str]:
    """The columns the explorer shows or feeds to models (nothing else is decoded)."""
    return list(dict.fromkeys([*REQUIRED_COLUMNS, *ID_COLUMNS, *(c for c, _, _ in TRUTH_FIELDS)]))


def check_column_types(schema: pa.Schema, source: str) -> None:
    """Refuse model-input or truth columns of the wrong type before anything is decoded."""
    expected = {"n_objects": (pa.types.is_integer, "an integer"),
                "object_pid": (lambda t: _is_list_of(t, pa.types.is_integer), "a list of integers"),
                "object_features": (lambda t: _is_list_of(t, lambda v: _is_list_of(v, pa.types.is_floating)),
                                    "a list of float lists"),
                "event_features": (lambda t: _is_list_of(t, pa.types.is_floating), "a list of floats")}
    numeric = (lambda t: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t), "a number")
    for name in _display_columns():
        if name not in schema.names:
            continue
        check, what = expected.get(name, numeric)
        column_type = schema.field(name).type
        if not check(column_type):
            raise UserInputError(f"{source}: column {name!r} has type {column_type}, expected {what}")


def _is_list_of(arrow_type: pa.DataType, check) -> bool:
    is_list = pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or \
        pa.types.is_fixed_size_list(arrow_type)
    return is_list and check(arrow_type.value_type)


def check_decoded_size(parquet: pq.ParquetFile, groups: list[int], columns: list[str], source: str) -> None:
    """Refuse a file whose decoded columns would exceed MAX_DECODED_MB (leaf value counts from the footer).

    Compressed and even "uncompressed" page sizes hide run-length and dictionary encoding (a few kB can decode to
    hundreds of MB); the per-chunk count of leaf values does not.
    """
    wanted = set(columns)
    total = 0
    for i in groups:
        group = parquet.metadata.row_group(i)
        for j in range(group.num_columns):
            chunk = group.column(j)
            if chunk.path_in_schema.split(".")[0] in wanted:  # + 1 byte per value for the def/rep levels
                total += chunk.num_values * (_LEAF_BYTES.get(chunk.physical_type, 8) + 1)
    if total > MAX_DECODED_MB * 2**20:
        raise UserInputError(f"{source}: the events to load would take {total / 2**20:.0f} MB in memory, over the "
                             f"{MAX_DECODED_MB:g} MB limit of this Space (lower 'max events' or split the file)")


def _row_groups_for(parquet: pq.ParquetFile, rows: int) -> list[int]:
    groups, total = [], 0
    for i in range(parquet.num_row_groups):
        if total >= rows and groups:
            break
        groups.append(i)
        total += parquet.metadata.row_group(i).num_rows
    return groups


def _convert_root(path: Path, max_events: int) -> Sample:
    """Convert an AnaTuple ROOT file with the project's converter (rows in entry order), read like an upload."""
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
        samples = []
        for shard in shards:
            loaded = sum(s.table.num_rows for s in samples)
            if loaded >= max_events:
                break
            samples.append(read_parquet(shard, max_events - loaded, path.name))
        total = sum(pq.ParquetFile(shard).metadata.num_rows for shard in shards)
        return Sample(pa.concat_tables([s.table for s in samples]).combine_chunks(), total)


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
    check_column_types(table.schema, source)
    for name in REQUIRED_COLUMNS:
        column = table[name]
        nested_nulls = pc.list_flatten(column).null_count if name != "n_objects" else 0
        if column.null_count or nested_nulls:
            nulls = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
            where = f" (first: event {int(nulls[0])})" if len(nulls) else " (inside the lists)"
            raise UserInputError(f"{source}: column {name!r} has null values in {column.null_count or nested_nulls} "
                                 f"events{where}; every event needs its model inputs")
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


def load_hub_split(dataset_id: str, split: str, max_events: int = MAX_EVENTS, revision: str | None = None) -> Sample:
    """The first ``max_events`` events of a Hub dataset split, streamed (no full download, bounded memory)."""
    from datasets import load_dataset

    dataset_id = check_repo_id(dataset_id, "dataset")
    if os.path.exists(dataset_id):  # `datasets` would read a local folder of that name
        raise UserInputError(f"dataset id {dataset_id!r} names a local path; only Hub datasets can be loaded")
    hub_repo_info(dataset_id, "dataset", revision)
    try:
        stream = load_dataset(dataset_id, split=split, streaming=True, revision=revision)
        total = _split_size(stream, split)
        batches = stream.with_format("arrow").iter(batch_size=max(1, min(max_events, 1000)))
        tables, rows, size = [], 0, 0
        for table in batches:
            table = table.select([c for c in _display_columns() if c in table.schema.names])
            tables.append(table)
            rows, size = rows + table.num_rows, size + table.nbytes
            if size > MAX_DECODED_MB * 2**20:
                raise UserInputError(f"{dataset_id}:{split}: the first {rows} events take {size / 2**20:.0f} MB, over "
                                     f"the {MAX_DECODED_MB:g} MB limit of this Space; lower 'max events'")
            if rows >= max_events:
                break
    except UserInputError:
        raise
    except Exception as err:  # noqa: BLE001 - any Hub/dataset failure becomes a message for the user
        raise UserInputError(f"could not load split {split!r} of dataset {dataset_id!r}: "
                             f"{type(err).__name__}: {err}") from None
    if not tables:
        raise UserInputError(f"split {split!r} of dataset {dataset_id!r} has no events")
    table = pa.concat_tables(tables).slice(0, max_events)
    if total is None and rows < max_events:  # the stream ended: every event is loaded
        total = table.num_rows
    return Sample(validate_table(table, f"{dataset_id}:{split}"), total)


def _split_size(stream, split: str) -> int | None:
    splits = getattr(getattr(stream, "info", None), "splits", None) or {}
    info = splits.get(split) if hasattr(splits, "get") else None
    return getattr(info, "num_examples", None) or None


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
        raise UserInputError(f"event {index} is out of range: this sample has {table.num_rows} events "
                             f"(0..{table.num_rows - 1})")
    return table.slice(index, 1).to_pylist()[0]
