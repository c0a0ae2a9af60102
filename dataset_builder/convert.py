"""AnaTuple ROOT → Parquet converter: one row per MasterAnaDev entry, columns exactly `schema.PARQUET_SCHEMA`.

Layout of the output::

    OUTPUT_DIR/data/{train,validation,test,shifted}/<input-file-stem>-<chunk:05d>.parquet   (zstd)
    OUTPUT_DIR/manifest.json                                                                 (written last)

- Reading: one file at a time, in entry chunks of `step_size` (uproot's byte budget), with the explicit branch list
  of `branches.branch_names(mc=...)`; MC vs data is detected from the `mc_*` branches (data → truth columns null).
- Split: files matching a ``--shifted`` glob go whole to `shifted`; other rows get train/validation/test 80/10/10 from
  a hash of (source file name, entry) — independent of chunking and of the number of workers.
- Robustness: every shard is written to a temp name and renamed; a chunk whose shards all exist is skipped, so a
  rerun after a kill resumes and gives the same bytes. Per-chunk counters live in each shard's Parquet metadata so
  the manifest of a resumed run equals that of an uninterrupted one. A bad file raises a `ConversionError` subclass
  naming it; its own shards are removed, other files' shards stay, and no manifest is written.
- Parallelism: a process pool over files (default), or the same per-file function on a Dask cluster.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import fnmatch
import hashlib
import json
import multiprocessing
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import uproot

from . import physics
from minerva_common.atomic import atomic_path, write_text_atomic
from .branches import ALL_BRANCHES, META_TREE, RECO_TREE, Branch
from .schema import BASELINE_COLUMNS, PARQUET_SCHEMA, SPLITS, TRUTH_COLUMNS
from .selection import SelectionConfig, passes_cc_inclusive, row_mask
from .tokens import LayoutError, TokenConfig, TokenizedChunk, tokenize

CONVERTER_VERSION = "1.0.0"
CHUNK_STATS_KEY = b"minerva_fm.chunk_stats"
OPTIONS_MARKER = ".convert-options.json"
HASHED_SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


# --------------------------------------------------------------------------------------------------- errors


class ConversionError(Exception):
    """A file could not be converted; `path` names it, `detail` says why."""

    def __init__(self, path, detail: str):
        super().__init__(str(path), detail)  # args round-trip through pickle (process pool, Dask)
        self.path, self.detail = str(path), detail

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


class NotRootFileError(ConversionError):
    """The file is not a ROOT file (wrong magic bytes) or does not exist."""


class CorruptFileError(ConversionError):
    """A ROOT file that cannot be read: truncated, damaged baskets or directory."""


class MissingTreeError(ConversionError):
    """The MasterAnaDev tree is absent."""


class MissingBranchError(ConversionError):
    """An expected branch is absent (the message lists close matches)."""


class BranchTypeError(ConversionError):
    """A branch has the wrong element type or shape."""


class InconsistentCountsError(ConversionError):
    """Jagged branches that must share a counter disagree (or a prong vector is not of length 4)."""


class ConversionFailed(ConversionError):
    """Several files failed; the message lists each."""


# --------------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that determines the output bytes (saved in the manifest). Execution settings are not here."""

    step_size: str | int = "100 MB"
    row_group_size: int = 10_000
    shifted_globs: tuple[str, ...] = ()
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    tokens: TokenConfig = field(default_factory=TokenConfig)

    def to_dict(self) -> dict:
        """Plain-dict form for the manifest."""
        return {"step_size": self.step_size, "row_group_size": self.row_group_size,
                "shifted_globs": list(self.shifted_globs), "selection": self.selection.to_dict(),
                "tokens": dataclasses.asdict(self.tokens)}


# --------------------------------------------------------------------------------------------------- opening


def _reco_branch_specs(is_mc: bool) -> list[Branch]:
    return [b for b in ALL_BRANCHES if is_mc or not b.mc_only]


def open_reco_tree(path: Path):
    """Open `path` and return (file, MasterAnaDev tree, is_mc) after checking trees, branches and types."""
    if not path.is_file():
        raise NotRootFileError(path, "no such file")
    try:
        # Plain reads and no array cache: chunks are read once, and both the fsspec/mmap sources and the cache make
        # the resident memory grow with the file size (measured in benchmarks/bench_converter.py).
        root_file = uproot.open(path, array_cache=None, handler=uproot.source.file.MultithreadedFileSource)
    except ValueError as err:
        if "not a ROOT file" in str(err):
            raise NotRootFileError(path, "not a ROOT file (bad magic bytes)") from err
        raise CorruptFileError(path, f"cannot open: {err}") from err
    except Exception as err:  # uproot raises OSError/DeserializationError/... for truncated files
        raise CorruptFileError(path, f"cannot open (truncated or damaged?): {type(err).__name__}: {err}") from err
    names = root_file.keys(cycle=False)
    if RECO_TREE not in names:
        close = difflib.get_close_matches(RECO_TREE, names, n=5)
        raise MissingTreeError(path, f"no {RECO_TREE!r} tree; trees in file: {sorted(set(names))[:20]}; "
                                     f"close matches: {close}")
    try:
        tree = root_file[RECO_TREE]  # highest cycle only (never concatenate cycles, §1.4)
        keys = set(tree.keys())
    except Exception as err:
        raise CorruptFileError(path, f"cannot read the {RECO_TREE!r} tree: {type(err).__name__}: {err}") from err
    is_mc = any(b.name in keys for b in ALL_BRANCHES if b.mc_only)
    for spec in _reco_branch_specs(is_mc):
        if spec.name not in keys:
            close = difflib.get_close_matches(spec.name, sorted(keys), n=5, cutoff=0.6)
            kind = "MC file" if is_mc else "data file"
            raise MissingBranchError(path, f"branch {spec.name!r} not in {RECO_TREE!r} ({kind}); "
                                           f"close matches: {close}")
        _check_branch_type(path, tree[spec.name], spec)
    return root_file, tree, is_mc


def _leaf_dtype(interpretation) -> tuple[str, np.dtype | None]:
    """(layout, element dtype) of an uproot interpretation: layout is 'flat', 'jagged' or 'objects'."""
    if isinstance(interpretation, uproot.AsDtype):
        return "flat", interpretation.to_dtype
    if isinstance(interpretation, uproot.AsJagged) and isinstance(interpretation.content, uproot.AsDtype):
        return "jagged", interpretation.content.to_dtype
    return "objects", None


def _check_branch_type(path: Path, branch, spec: Branch) -> None:
    """Raise BranchTypeError unless the branch's ROOT type matches the contract in branches.py."""
    try:
        layout, dtype = _leaf_dtype(branch.interpretation)
    except Exception:  # UnknownInterpretation and friends
        layout, dtype = "objects", None
    kinds = "f" if spec.dtype == "f8" else "iu"
    element_ok = dtype is not None and dtype.base.kind in kinds
    if spec.shape == "scalar":
        ok = layout == "flat" and element_ok and dtype.shape == ()
    elif spec.shape.startswith("fixed["):
        ok = layout == "flat" and element_ok and dtype.shape == (int(spec.shape[6:-1]),)
    elif spec.shape.endswith("[4]"):  # vector<vector<double>> in real files, flattened var * f8 in synthetic ones
        nested = re.search(r"vector<\s*(std::)?vector<\s*(double|float)\s*>", branch.typename) is not None
        ok = (layout == "jagged" and element_ok and dtype.shape == ()) or (layout == "objects" and nested)
    else:
        ok = layout == "jagged" and element_ok and dtype.shape == ()
    if not ok:
        expected = {"f8": "floating point", "i4": "integer"}[spec.dtype]
        raise BranchTypeError(path, f"branch {spec.name!r} has type {branch.typename!r}; expected {expected} "
                                    f"elements with shape {spec.shape}")


def _read_pot(root_file) -> tuple[float | None, float | None]:
    """(POT_Used, POT_Total) summed over the Meta tree, or None where absent (data files may lack Meta)."""
    if META_TREE not in root_file.keys(cycle=False):
        return None, None
    meta = root_file[META_TREE]
    values = []
    for name in ("POT_Used", "POT_Total"):
        values.append(float(np.sum(meta[name].array(library="np"))) if name in meta.keys() else None)
    return values[0], values[1]


def chunk_ranges(tree, branches: list[str], step_size: str | int) -> list[tuple[int, int]]:
    """Entry ranges [start, stop) of the chunks: `step_size` entries (int) or a byte budget like "100 MB"."""
    n = tree.num_entries
    if isinstance(step_size, str) and step_size.strip().isdigit():
        step_size = int(step_size)
    step = step_size if isinstance(step_size, int) else tree.num_entries_for(step_size, filter_name=branches)
    step = max(int(step), 1)
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def read_chunk(path: Path, tree, branches: list[str], start: int, stop: int) -> ak.Array:
    """Entries [start, stop) of the listed branches as an awkward record array."""
    try:
        return tree.arrays(filter_name=branches, entry_start=start, entry_stop=stop, library="ak")
    except Exception as err:  # damaged baskets surface as many different uproot/zlib/struct errors
        raise CorruptFileError(path, f"cannot read entries {start}-{stop}: {type(err).__name__}: {err}") from err


# --------------------------------------------------------------------------------------------------- splits


def assign_splits(source_name: str, entries: np.ndarray) -> np.ndarray:
    """Split index per entry (0 train, 1 validation, 2 test) from a hash of (file name, entry): 80/10/10.

    splitmix64 of (entry + a per-file 64-bit seed from sha256(name)); deterministic on any machine.
    """
    seed = np.uint64(int.from_bytes(hashlib.sha256(source_name.encode()).digest()[:8], "little"))
    x = entries.astype(np.uint64) + seed
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    u = (x >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(np.cumsum(SPLIT_FRACTIONS)[:-1], u, side="right").astype(np.int8)


def is_shifted(path: Path, globs) -> bool:
    """Whether `path` (its name or full path) matches one of the --shifted globs."""
    return any(fnmatch.fnmatch(path.name, g) or fnmatch.fnmatch(str(path), g) for g in globs)


# --------------------------------------------------------------------------------------------------- columns


def _nullable(values: np.ndarray, arrow_type, valid: np.ndarray | None = None) -> pa.Array:
    """NumPy → Arrow with non-finite floats (and ~valid) as null."""
    mask = np.zeros(len(values), dtype=bool) if valid is None else ~valid
    if values.dtype.kind == "f":
        mask |= ~np.isfinite(values)
    return pa.array(values, type=arrow_type, mask=mask if mask.any() else None)


def truth_columns(chunk: ak.Array, tokens: TokenizedChunk) -> dict[str, np.ndarray]:
    """The MC truth columns of `schema.TRUTH_COLUMNS` for a chunk (GeV, GeV², rad; NaN = null)."""
    n_fs = np.asarray(ak.to_numpy(chunk["mc_nFSPart"]))
    for name in ("mc_FSPartPx", "mc_FSPartPy", "mc_FSPartPz", "mc_FSPartE", "mc_FSPartPDG"):
        if not np.array_equal(ak.to_numpy(ak.num(chunk[name], axis=1)), n_fs):
            raise LayoutError(f"branch {name!r}: per-event lengths differ from mc_nFSPart")
    fs = physics.FinalState.from_jagged(*(chunk[f"mc_FSPart{c}"] for c in ("PDG", "Px", "Py", "Pz", "E")))
    enu = np.asarray(ak.to_numpy(chunk["mc_incomingE"]), dtype=np.float64)
    current = np.asarray(ak.to_numpy(chunk["mc_current"]), dtype=np.int32)
    lepton = np.asarray(ak.to_numpy(chunk["mc_primFSLepton"]), dtype=np.float64)
    q0, q3, q2 = physics.true_momentum_transfer(enu, lepton)
    n_plus, n_minus, n_zero = physics.pion_counts(fs)
    label = physics.topology(current, n_plus, n_minus, n_zero)
    pion_e, pion_t, pion_theta = physics.binning_pion(current, fs)
    w_genie = np.asarray(ak.to_numpy(chunk["mc_w"]), dtype=np.float64)
    return {
        "enu": enu / 1e3,
        "e_avail": physics.available_energy(fs, "minerva") / 1e3,
        "e_avail_reference": physics.available_energy(fs, "reference") / 1e3,
        "q0": q0 / 1e3, "q3": q3 / 1e3,
        "q3_hybrid": physics.hybrid_q3(enu, tokens.muon_p4, tokens.has_muon) / 1e3,
        "q2": q2 / 1e6,
        "w": physics.hadronic_invariant_mass(fs) / 1e3,
        "w_genie": np.where(w_genie >= 0, w_genie, np.nan) / 1e3,
        "int_type": np.asarray(ak.to_numpy(chunk["mc_intType"]), dtype=np.int32),
        "current": current,
        "nu_pdg": np.asarray(ak.to_numpy(chunk["mc_incoming"]), dtype=np.int32),
        "lepton_pdg": np.asarray(ak.to_numpy(chunk["mc_primaryLepton"]), dtype=np.int32),
        "n_pi_plus": n_plus, "n_pi_minus": n_minus, "n_pi0": n_zero,
        "pion_energy": pion_e / 1e3, "pion_kinetic_energy": pion_t / 1e3, "pion_theta": pion_theta,
        "topology": label,
        **physics.topology_flags(label),
    }


def baseline_columns(chunk: ak.Array, tokens: TokenizedChunk, selection: SelectionConfig) -> dict[str, np.ndarray]:
    """Calorimetric E_avail (GeV, −1 = excluded), cut-based tags and the CC-inclusive flag."""
    blob_recoil = np.asarray(ak.to_numpy(chunk["blob_recoil_E"]), dtype=np.float64)
    calo = physics.calorimetric_e_avail(blob_recoil)
    n_michel = np.asarray(ak.to_numpy(chunk["improved_nmichel"]))
    tags = physics.cut_based_tags(tokens.has_muon, tokens.n_pi_prongs_raw, n_michel, tokens.n_photons,
                                  tokens.m_gammagamma)
    recoil = np.asarray(ak.to_numpy(chunk["MasterAnaDev_hadron_recoil_CCInc"]), dtype=np.float64)
    return {
        "calo_e_avail": np.where(calo > 0, calo / 1e3, -1.0),
        **tags,
        "passes_cc_inclusive": passes_cc_inclusive(tokens.muon_p4, tokens.has_muon, recoil, selection.cc_inclusive),
    }


def build_table(chunk: ak.Array, entries: np.ndarray, source_name: str, is_mc: bool,
                options: ConvertOptions) -> tuple[pa.Table, dict]:
    """One chunk → (Arrow table with exactly PARQUET_SCHEMA, after the row selection; per-chunk counters)."""
    tokens = tokenize(chunk, options.tokens)
    n = len(entries)
    columns: dict[str, pa.Array] = {
        "source_file": pa.array([source_name] * n, pa.string()) if n else pa.array([], pa.string()),
        "entry": pa.array(entries, pa.int64()),
        "run": pa.array(np.asarray(ak.to_numpy(chunk["ev_run"]), dtype=np.int32)),
        "subrun": pa.array(np.asarray(ak.to_numpy(chunk["ev_subrun"]), dtype=np.int32)),
        "gate": pa.array(np.asarray(ak.to_numpy(chunk["ev_gate"]), dtype=np.int32)),
        "n_objects": pa.array(np.diff(tokens.offsets).astype(np.int32)),
    }
    offsets = pa.array(tokens.offsets, pa.int32())
    columns["object_pid"] = pa.ListArray.from_arrays(offsets, pa.array(tokens.pid, pa.int32()))
    feature_values = pa.FixedSizeListArray.from_arrays(pa.array(tokens.features.ravel(), pa.float32()),
                                                       tokens.features.shape[1])
    columns["object_features"] = pa.ListArray.from_arrays(offsets, feature_values)
    columns["event_features"] = pa.FixedSizeListArray.from_arrays(
        pa.array(tokens.event_features.ravel(), pa.float32()), tokens.event_features.shape[1])
    columns["has_muon"] = pa.array(tokens.has_muon, pa.bool_())
    truth = truth_columns(chunk, tokens) if is_mc else {}
    for name, arrow_type in TRUTH_COLUMNS.items():
        columns[name] = _nullable(truth[name], arrow_type) if is_mc else pa.nulls(n, arrow_type)
    for name, values in baseline_columns(chunk, tokens, options.selection).items():
        columns[name] = pa.array(values, BASELINE_COLUMNS[name])
    table = pa.Table.from_arrays([columns[f.name].cast(f.type) for f in PARQUET_SCHEMA], schema=PARQUET_SCHEMA)

    keep, cut_counts = row_mask(truth.get("int_type"), options.selection)
    if keep is not None:
        table = table.filter(pa.array(keep))
    passes = table.column("passes_cc_inclusive").to_numpy(zero_copy_only=False)
    stats = {
        "selection": {"read": n, **cut_counts, "kept": table.num_rows,
                      "passes_cc_inclusive": int(np.count_nonzero(passes))},
        "truncation": tokens.truncation,
        "rejected": tokens.audit.counts,
    }
    return table, stats


# --------------------------------------------------------------------------------------------------- streaming


def iter_converted_tables(path: str | Path, options: ConvertOptions = ConvertOptions(),
                          entry_start: int = 0, entry_stop: int | None = None) -> Iterator[pa.Table]:
    """Yield the converted rows of one AnaTuple (MC or data) chunk by chunk, writing nothing.

    Each table has exactly `schema.PARQUET_SCHEMA` (rows keyed by `source_file`, `entry`; truth null for data) and
    the same rows and values the converter writes into its shards (selection applied), in entry order. Raises the
    same `ConversionError`s as `convert`.
    """
    path = Path(path)
    root_file, tree, is_mc = open_reco_tree(path)
    branches = [b.name for b in _reco_branch_specs(is_mc)]
    stop_limit = tree.num_entries if entry_stop is None else min(int(entry_stop), tree.num_entries)
    try:
        for start, stop in chunk_ranges(tree, branches, options.step_size):
            start, stop = max(start, int(entry_start)), min(stop, stop_limit)
            if start >= stop:
                continue
            chunk = read_chunk(path, tree, branches, start, stop)
            try:
                table, _ = build_table(chunk, np.arange(start, stop, dtype=np.int64), path.name, is_mc, options)
            except LayoutError as err:
                raise InconsistentCountsError(path, str(err)) from err
            yield table
    finally:
        root_file.close()


# --------------------------------------------------------------------------------------------------- one file


def shard_path(output_dir: Path, split: str, stem: str, chunk: int) -> Path:
    """OUTPUT_DIR/data/<split>/<stem>-<chunk:05d>.parquet"""
    return output_dir / "data" / split / f"{stem}-{chunk:05d}.parquet"


def _write_atomic_parquet(table: pa.Table, final: Path, row_group_size: int) -> None:
    with atomic_path(final) as tmp:
        # Dictionary encoding only for the constant file name: on float lists it costs time and makes files larger.
        pq.write_table(table, tmp, compression="zstd", row_group_size=max(1, row_group_size),
                       use_dictionary=["source_file"])


def _remove_file_outputs(output_dir: Path, stem: str) -> None:
    """Delete every shard and temp file of one source file (after it failed)."""
    for split in SPLITS:
        folder = output_dir / "data" / split
        if folder.is_dir():
            for shard in list(folder.glob(f"{glob_escape(stem)}-[0-9][0-9][0-9][0-9][0-9].parquet")) + \
                    list(folder.glob(f".{glob_escape(stem)}-*.tmp")):
                shard.unlink(missing_ok=True)


def glob_escape(text: str) -> str:
    """Escape glob metacharacters in a file stem."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_file(path: str | Path, output_dir: str | Path, shifted: bool, options: ConvertOptions) -> dict:
    """Convert one ROOT file into its shards (skipping finished chunks) and return its manifest entry."""
    path, output_dir = Path(path), Path(output_dir)
    try:
        return _convert_file(path, output_dir, shifted, options)
    except ConversionError:
        _remove_file_outputs(output_dir, path.stem)
        raise
    except LayoutError as err:
        _remove_file_outputs(output_dir, path.stem)
        raise InconsistentCountsError(path, str(err)) from err


def _remove_stale_temps(output_dir: Path, stem: str) -> None:
    """Delete temp files a killed run left behind for this source file."""
    for split in SPLITS:
        folder = output_dir / "data" / split
        if folder.is_dir():
            for tmp in folder.glob(f".{glob_escape(stem)}-*.tmp"):
                tmp.unlink(missing_ok=True)


def _convert_file(path: Path, output_dir: Path, shifted: bool, options: ConvertOptions) -> dict:
    root_file, tree, is_mc = open_reco_tree(path)
    # hashlib releases the GIL: the input's checksum is computed in a thread while the chunks are converted.
    with ThreadPoolExecutor(max_workers=1) as hasher:
        digest = hasher.submit(_sha256, path)
        report = _convert_chunks(path, output_dir, shifted, options, root_file, tree, is_mc)
        report["sha256"] = digest.result()
    return report


def _convert_chunks(path: Path, output_dir: Path, shifted: bool, options: ConvertOptions, root_file, tree,
                    is_mc: bool) -> dict:
    """Convert (or skip, when finished) every chunk of an opened file; the file's manifest entry without sha256."""
    _remove_stale_temps(output_dir, path.stem)
    branches = [b.name for b in _reco_branch_specs(is_mc)]
    chunks = []
    for index, (start, stop) in enumerate(chunk_ranges(tree, branches, options.step_size)):
        entries = np.arange(start, stop, dtype=np.int64)
        split_index = np.full(len(entries), 3, np.int8) if shifted else assign_splits(path.name, entries)
        splits = [SPLITS[k] for k in sorted(set(split_index.tolist()))]
        shards = [shard_path(output_dir, split, path.stem, index) for split in splits]
        if all(s.exists() for s in shards):
            stats = json.loads(pq.read_schema(shards[0]).metadata[CHUNK_STATS_KEY])
        else:
            chunk = read_chunk(path, tree, branches, start, stop)
            table, stats = build_table(chunk, entries, path.name, is_mc, options)
            stats = {"chunk": index, "entry_start": start, "entry_stop": stop, **stats}
            table = table.replace_schema_metadata({CHUNK_STATS_KEY: json.dumps(stats, sort_keys=True)})
            kept_split = split_index[np.searchsorted(entries, table.column("entry").to_numpy())] \
                if table.num_rows else np.zeros(0, np.int8)
            for split, shard in zip(splits, shards):
                if not shard.exists():
                    part = table.filter(pa.array(kept_split == SPLITS.index(split)))
                    _write_atomic_parquet(part, shard, options.row_group_size)
        chunks.append({**stats, "shards": [str(s.relative_to(output_dir)) for s in shards]})
    pot_used, pot_total = _read_pot(root_file)
    return {
        "name": path.name, "path": str(path.resolve()), "size_bytes": path.stat().st_size, "sha256": None,
        "is_mc": is_mc, "n_entries": tree.num_entries, "split": "shifted" if shifted else "hashed",
        "pot_used": pot_used, "pot_total": pot_total, "chunks": chunks,
    }


# --------------------------------------------------------------------------------------------------- many files


def expand_inputs(inputs) -> list[Path]:
    """ROOT files and folders (searched recursively for *.root, sorted) → file list; duplicate names are an error."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(sorted(item.rglob("*.root")))
        elif item.exists():
            files.append(item)
        else:
            raise NotRootFileError(item, "no such file or directory")
    names = [f.name for f in files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConversionError(duplicates[0], f"several inputs share the file name(s) {duplicates}; rows are keyed "
                                             f"by (file name, entry), so names must be unique")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        raise ConversionError(files[0], "several inputs share a file stem; shard names would collide")
    return files


def _check_options_marker(output_dir: Path, options: ConvertOptions) -> None:
    """Refuse to resume into an output dir written with different options (chunks and rows would not match)."""
    marker = output_dir / OPTIONS_MARKER
    current = json.dumps({"converter_version": CONVERTER_VERSION, **options.to_dict()}, sort_keys=True)
    if marker.exists() and marker.read_text() != current:
        raise ConversionError(output_dir, f"output directory was written with other options ({marker}); "
                                          f"use a fresh directory or delete it")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(marker, current)


def _run_pool(jobs: list[tuple], workers: int, progress: bool):
    """Run convert_file over jobs in a process pool (or inline for one worker); yield (job, result or error)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="convert", unit="file", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            try:
                yield job, convert_file(*job)
            except ConversionError as err:
                yield job, err
            bar.update()
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["dataset_builder.convert"])
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
            futures = {pool.submit(convert_file, *job): job for job in jobs}
            for future in as_completed(futures):
                try:
                    yield futures[future], future.result()
                except ConversionError as err:
                    yield futures[future], err
                bar.update()
    bar.close()


def _run_dask(jobs: list[tuple], address: str, workers: int, processes: bool, progress: bool):
    """Run convert_file over jobs on a Dask cluster ('local' = a LocalCluster); yield (job, result or error)."""
    from distributed import Client, LocalCluster
    from distributed import as_completed as dask_completed
    from tqdm.auto import tqdm

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                           dashboard_address=None) if address == "local" else None
    client = Client(cluster if cluster is not None else address)
    try:
        futures = {client.submit(convert_file, *job, pure=False): job for job in jobs}
        for future in tqdm(dask_completed(list(futures)), total=len(jobs), desc="convert", unit="file",
                           disable=not progress):
            try:
                yield futures[future], future.result()
            except ConversionError as err:
                yield futures[future], err
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def convert(inputs, output_dir: str | Path, options: ConvertOptions = ConvertOptions(), workers: int | None = None,
            dask: str | None = None, dask_processes: bool = True, progress: bool = True) -> dict:
    """Convert AnaTuple ROOT files to Parquet shards under `output_dir` and write `manifest.json`; return it.

    Raises the file's `ConversionError` if one file fails (several: `ConversionFailed`), after converting the others;
    no manifest is written then, and the finished shards are reused by the next run.
    """
    output_dir = Path(output_dir)
    files = expand_inputs(inputs)
    _check_options_marker(output_dir, options)
    jobs = [(str(f), str(output_dir), is_shifted(f, options.shifted_globs), options) for f in files]
    workers = workers or os.cpu_count() or 1
    runner = _run_dask(jobs, dask, workers, dask_processes, progress) if dask else _run_pool(jobs, workers, progress)
    reports, errors = {}, []
    for job, outcome in runner:
        (errors.append(outcome) if isinstance(outcome, ConversionError) else reports.__setitem__(job[0], outcome))
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise ConversionFailed(f"{len(errors)} files", "; ".join(sorted(str(e) for e in errors)))
    manifest = build_manifest([reports[job[0]] for job in jobs], output_dir, options)
    write_text_atomic(output_dir / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _add_counts(total: dict, part: dict) -> dict:
    """Recursively sum nested dicts of counts."""
    for key, value in part.items():
        if isinstance(value, dict):
            _add_counts(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
    return total


def build_manifest(reports: list[dict], output_dir: Path, options: ConvertOptions) -> dict:
    """Provenance and counts of a finished conversion (see the module docstring)."""
    shards, sources, totals = [], [], {"selection": {}, "truncation": {}, "rejected": {}}
    for report in reports:
        per_file = {"selection": {}, "truncation": {}, "rejected": {}}
        for chunk in report["chunks"]:
            for key in per_file:
                _add_counts(per_file[key], chunk[key])
            for relative in chunk["shards"]:
                shard = output_dir / relative
                shards.append({"path": relative, "split": Path(relative).parent.name, "source_file": report["name"],
                               "chunk": chunk["chunk"], "rows": pq.read_metadata(shard).num_rows,
                               "size_bytes": shard.stat().st_size, "sha256": _sha256(shard)})
        for key in totals:
            _add_counts(totals[key], per_file[key])
        source = {k: v for k, v in report.items() if k != "chunks"}
        sources.append({**source, **per_file, "n_chunks": len(report["chunks"])})
    events = {split: sum(s["rows"] for s in shards if s["split"] == split) for split in SPLITS}
    pot = [s["pot_used"] for s in sources if s["pot_used"] is not None]
    return {
        "converter_version": CONVERTER_VERSION,
        "schema": PARQUET_SCHEMA.to_string(show_schema_metadata=False),
        "options": options.to_dict(),
        "source_files": sources,
        "events_per_split": events,
        "pot_used_total": float(sum(pot)) if pot else None,
        "pot_used_by_split": {
            "shifted": float(sum(s["pot_used"] or 0.0 for s in sources if s["split"] == "shifted")),
            "hashed": float(sum(s["pot_used"] or 0.0 for s in sources if s["split"] == "hashed")),
        },
        **totals,
        "shards": sorted(shards, key=lambda s: s["path"]),
    }


# --------------------------------------------------------------------------------------------------- CLI


def options_from_args(args: argparse.Namespace) -> ConvertOptions:
    """ConvertOptions from the `minerva-fm convert` arguments."""
    selection = SelectionConfig.from_yaml(args.selection) if args.selection else SelectionConfig()
    step = args.step_size
    return ConvertOptions(
        step_size=int(step) if isinstance(step, str) and step.strip().isdigit() else step,
        row_group_size=args.row_group_size,
        shifted_globs=tuple(args.shifted),
        selection=selection,
        tokens=TokenConfig(blob_origin=getattr(args, "blob_origin", "vertex")),
    )


def run_convert_cli(args: argparse.Namespace) -> int:
    """Entry point of `minerva-fm convert`: convert, print the per-split counts, return the exit status."""
    try:
        manifest = convert(args.inputs, args.output_dir, options_from_args(args), workers=args.workers,
                           dask=args.dask, dask_processes=not getattr(args, "dask_threads", False),
                           progress=not getattr(args, "no_progress", False))
    except ConversionError as err:
        print(f"minerva-fm convert: error: {err}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{split} {n}" for split, n in manifest["events_per_split"].items())
    print(f"wrote {len(manifest['shards'])} shards ({counts} events) and {Path(args.output_dir) / 'manifest.json'}")
    return 0


__all__ = [
    "CONVERTER_VERSION", "ConversionError", "NotRootFileError", "CorruptFileError", "MissingTreeError",
    "MissingBranchError", "BranchTypeError", "InconsistentCountsError", "ConversionFailed", "ConvertOptions",
    "open_reco_tree", "chunk_ranges", "assign_splits", "build_table", "iter_converted_tables", "convert_file", "convert",
    "run_convert_cli",
]
