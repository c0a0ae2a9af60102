"""AnaTuple ROOT → Parquet converter: one row per MasterAnaDev entry, columns exactly `schema.PARQUET_SCHEMA`.

Layout of the output::

    OUTPUT_DIR/data/{train,validation,test,shifted}/<input-file-stem>-<chunk:05d>.parquet   (zstd)
    OUTPUT_DIR/manifest.json                                                                 (written last)
    OUTPUT_DIR/.convert-options.json, .convert.lock          (marks the folder as the converter's; the run's lock)

- Reading: one file at a time, in entry chunks of `step_size` (uproot's byte budget), with the explicit branch list
  of `branches.branch_names(mc=...)`; MC vs data is detected from the `mc_*` branches (data → truth columns null).
- Split: files matching a ``--shifted`` glob go whole to `shifted`; other rows get train/validation/test 80/10/10 from
  a hash of (source file name, entry) — independent of chunking and of the number of workers.
- Types: any numeric element type is accepted and cast explicitly (`normalise_chunk`; int32 range-checked, never
  wrapped); a wrong shape is a `BranchTypeError`. Non-finite or out-of-range values become null where the schema
  allows it (truth, baselines, keys) and 0 in features; every case is counted in the manifest (`nulled`,
  `cast_invalid`, `rejected`).
- Malformed entries (a counter that disagrees with its array, a prong vector not of length 4, blob branches of
  different lengths) raise `BadEventError` naming the file and entry numbers; ``on_bad_event="skip"`` drops exactly
  those entries and lists them per file under ``bad_entries``.
- Robustness: every shard is written to a unique temp name and renamed; a chunk whose shards all exist (and match
  the sha256 of the previous manifest and the input's recorded sha256) is reused, so a rerun after a kill resumes and
  gives the same bytes. Per-chunk counters live in each shard's Parquet metadata so the manifest of a resumed run
  equals that of an uninterrupted one. A rerun reconverts inputs whose content changed, removes shards of inputs no
  longer given, and converts identical inputs (symlink, copy) once (``duplicate_inputs``). The output folder is
  locked; a non-empty folder the converter did not write, or one written with other options, needs ``overwrite``.
  A bad file raises a `ConversionError` subclass naming it; its own shards are removed, other files' shards stay,
  and no manifest is written.
- Parallelism: a process pool over files (default; workers exit when the parent dies), or the same per-file
  function on a Dask cluster. Within a file, reading the next chunk and writing the previous chunk's shards overlap
  with tokenising the current one. Output bytes do not depend on the number of workers.
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
import shutil
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import uproot

from . import physics
from minerva_common.atomic import atomic_path, write_text_atomic
from minerva_common.checksum import file_sha256
from .branches import ALL_BRANCHES, GENERATOR_KEY, META_TREE, OPTIONAL_BRANCHES, RECO_TREE, WEIGHT_BRANCHES, Branch
from .schema import BASELINE_COLUMNS, PARQUET_SCHEMA, SCHEMA_VERSION, SPLITS, TRUTH_COLUMNS, WEIGHT_COLUMNS
from .selection import SelectionConfig, passes_cc_inclusive, row_mask
from .tokens import LayoutError, TokenConfig, TokenizedChunk, tokenize

CONVERTER_VERSION = "2.0.0"
CHUNK_STATS_KEY = b"minerva_fm.chunk_stats"
OPTIONS_MARKER = ".convert-options.json"  # also marks a folder as written by the converter
LOCK_FILE = ".convert.lock"
MAX_LISTED_BAD_ENTRIES = 10_000  # per file, in the manifest
ON_BAD_EVENT = ("error", "skip")
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


class BadEventError(InconsistentCountsError):
    """Malformed entries (a counter that disagrees with its array, ...); the message names the entry numbers."""


class OutputDirError(ConversionError):
    """The output folder cannot be used: a file, foreign content, other options, or in use by another converter."""


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
    on_bad_event: str = "error"  # "error": a malformed entry fails its file; "skip": drop it, list it in the manifest

    def __post_init__(self) -> None:
        if self.on_bad_event not in ON_BAD_EVENT:
            raise ValueError(f"on_bad_event={self.on_bad_event!r}; expected one of {ON_BAD_EVENT}")

    def to_dict(self) -> dict:
        """Plain-dict form for the manifest."""
        return {"step_size": self.step_size, "row_group_size": self.row_group_size,
                "shifted_globs": list(self.shifted_globs), "selection": self.selection.to_dict(),
                "tokens": dataclasses.asdict(self.tokens), "on_bad_event": self.on_bad_event}


# --------------------------------------------------------------------------------------------------- opening


def _reco_branch_specs(is_mc: bool) -> list[Branch]:
    return [b for b in ALL_BRANCHES if is_mc or not b.mc_only]


def _optional_branch_specs(is_mc: bool, keys) -> list[Branch]:
    return [b for b in OPTIONAL_BRANCHES if (is_mc or not b.mc_only) and b.name in keys]


def open_reco_tree(path: Path, decompression_executor=None):
    """Open `path` and return (file, MasterAnaDev tree, is_mc) after checking trees, branches and types."""
    if path.exists() and not path.is_file():
        raise NotRootFileError(path, "is a folder or special file, not a ROOT file")
    if not path.is_file():
        raise NotRootFileError(path, "no such file")
    try:
        # Plain reads and no array cache: chunks are read once, and both the fsspec/mmap sources and the cache make
        # the resident memory grow with the file size (measured in benchmarks/bench_converter.py).
        extra = {} if decompression_executor is None else {"decompression_executor": decompression_executor}
        root_file = uproot.open(path, array_cache=None, handler=uproot.source.file.MultithreadedFileSource, **extra)
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
    for spec in _optional_branch_specs(is_mc, keys):
        _check_branch_type(path, tree[spec.name], spec)
    return root_file, tree, is_mc


def _leaf_dtype(interpretation) -> tuple[str, np.dtype | None]:
    """(layout, element dtype) of an uproot interpretation: layout is 'flat', 'jagged' or 'objects'."""
    if isinstance(interpretation, uproot.AsDtype):
        return "flat", interpretation.to_dtype
    if isinstance(interpretation, uproot.AsJagged) and isinstance(interpretation.content, uproot.AsDtype):
        return "jagged", interpretation.content.to_dtype
    return "objects", None


_NESTED_VECTOR = re.compile(r"vector<\s*(std::)?vector<\s*(double|float|int|long|short|unsigned|bool)")


def _check_branch_type(path: Path, branch, spec: Branch) -> None:
    """Raise BranchTypeError unless the branch's shape matches branches.py; any numeric element type is accepted."""
    try:
        layout, dtype = _leaf_dtype(branch.interpretation)
    except Exception:  # UnknownInterpretation and friends
        layout, dtype = "objects", None
    numeric = dtype is not None and dtype.base.kind in "fiub"
    if spec.shape == "scalar":
        ok = layout == "flat" and numeric and dtype.shape == ()
    elif spec.shape.startswith("fixed["):
        ok = layout == "flat" and numeric and dtype.shape == (int(spec.shape[6:-1]),)
    elif spec.shape.endswith("[4]"):  # vector<vector<double>> in real files, flattened var * f8 in synthetic ones
        ok = (layout == "jagged" and numeric and dtype.shape == ()) or \
             (layout == "objects" and _NESTED_VECTOR.search(branch.typename) is not None)
    else:
        ok = layout == "jagged" and numeric and dtype.shape == ()
    if not ok:
        raise BranchTypeError(path, f"branch {spec.name!r} has type {branch.typename!r}; expected numbers with "
                                    f"shape {spec.shape} (MINERvA declares {spec.cpp or spec.dtype})")


# --------------------------------------------------------------------------------------------------- casting

INVALID_INT = np.iinfo(np.int64).min  # an integer branch value that does not fit int32 (or a non-integral float)
_INT32 = np.iinfo(np.int32)


def _to_int64(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer/float/bool values → int64, out-of-int32-range and non-integral values as INVALID_INT; (array, #)."""
    if values.dtype.kind == "b":
        return values.astype(np.int64), 0
    if values.dtype.kind in "iu" and values.dtype.itemsize <= 4 and not (values.dtype.kind == "u"
                                                                         and values.dtype.itemsize == 4):
        return values.astype(np.int64, copy=False), 0
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            good = np.isfinite(values) & (values >= _INT32.min) & (values <= _INT32.max) & (values == np.round(values))
    else:  # int64, uint32, uint64: e.g. a uint32 -1 sentinel 4294967295
        good = (values <= _INT32.max) if values.dtype.kind == "u" else (values >= _INT32.min) & (values <= _INT32.max)
    out = np.where(good, values, 0).astype(np.int64)
    out[~good] = INVALID_INT
    return out, int(np.count_nonzero(~good))


def _cast_jagged(values: ak.Array, spec: Branch) -> tuple[ak.Array, int]:
    """A jagged branch with its elements cast to float64 (f8) or range-checked int64 (i4); (array, # invalid)."""
    layout = ak.to_layout(values)
    leaf = layout
    while hasattr(leaf, "content"):
        leaf = leaf.content
    if not isinstance(leaf, ak.contents.NumpyArray):
        return values, 0
    kind = np.asarray(leaf.data).dtype
    if spec.dtype == "f8":
        return (values, 0) if kind == np.float64 else (ak.values_astype(values, np.float64), 0)
    if kind.kind in "iu" and kind.itemsize <= 4 and kind != np.uint32:
        return values, 0
    flat, n_bad = _to_int64(np.asarray(leaf.data))
    return ak.Array(_replace_leaf(layout, ak.contents.NumpyArray(flat))), n_bad


def _replace_leaf(layout, leaf):
    if not hasattr(layout, "content"):
        return leaf
    return layout.copy(content=_replace_leaf(layout.content, leaf))


def normalise_chunk(chunk: ak.Array, specs: list[Branch]) -> tuple[ak.Array, dict[str, int]]:
    """Cast every read branch explicitly: reals → float64, integers → int64 (INVALID_INT where out of int32 range).

    Returns the chunk and the number of invalid integer values per branch. Branches already of the usual type
    (Double_t, Int_t) pass through without a copy.
    """
    columns, invalid = {}, {}
    for spec in specs:
        values = chunk[spec.name]
        if spec.shape == "scalar" or spec.shape.startswith("fixed["):
            array = np.asarray(ak.to_numpy(values))
            if spec.dtype == "f8":
                array, n_bad = array.astype(np.float64, copy=False), 0
            else:
                array, n_bad = _to_int64(array)
            columns[spec.name] = array
        else:
            columns[spec.name], n_bad = _cast_jagged(values, spec)
        if n_bad:
            invalid[spec.name] = n_bad
    return ak.zip(columns, depth_limit=1), invalid


# --------------------------------------------------------------------------------------------------- bad events


@dataclass
class EventCheck:
    """One per-entry consistency rule: which rows break it and how to say so for one row."""

    mask: np.ndarray
    describe: Callable[[int], str]


def _counts(values: ak.Array) -> np.ndarray:
    """Elements per entry of a `var * ...` array (fast path on list-offset layouts)."""
    layout = ak.to_layout(values)
    if isinstance(layout, ak.contents.ListOffsetArray):
        return np.diff(np.asarray(layout.offsets))
    return np.asarray(ak.to_numpy(ak.num(values, axis=1)))


def _prong_vector_check(values: ak.Array, name: str, n_prongs: np.ndarray) -> EventCheck:
    """prong_part_E / _pos: nested (n_prongs × 4) or flattened (4·n_prongs) per entry."""
    layout = ak.to_layout(values)
    outer = _counts(values)
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.ListOffsetArray):
        inner_offsets = np.asarray(layout.content.offsets)
        offsets = np.asarray(layout.offsets)
        inner = np.diff(inner_offsets[offsets[0]:offsets[-1] + 1])
        rows = np.repeat(np.arange(len(outer)), outer)
        bad_inner = np.bincount(rows[inner != 4], minlength=len(outer)) > 0
        prongs = outer
    elif values.ndim == 3:
        inner = ak.num(values, axis=2)
        bad_inner = ~np.asarray(ak.to_numpy(ak.all(inner == 4, axis=1)))
        prongs = outer
    else:
        bad_inner = outer % 4 != 0
        prongs = outer // 4
    mask = bad_inner | (prongs != n_prongs)

    def describe(i: int) -> str:
        if bad_inner[i]:
            return f"branch {name!r} has a prong vector whose length is not 4"
        return f"branch {name!r} has {prongs[i]} prongs but n_prongs = {n_prongs[i]}"
    return EventCheck(mask, describe)


def _length_check(values: ak.Array, name: str, counter: np.ndarray, counter_name: str) -> EventCheck:
    lengths = _counts(values)
    return EventCheck(lengths != counter,
                      lambda i: f"branch {name!r} has {lengths[i]} entries but {counter_name} = {counter[i]}")


def event_checks(chunk: ak.Array, is_mc: bool) -> list[EventCheck]:
    """The per-entry consistency rules of a chunk: counters against their arrays, blob siblings, prong vectors."""
    n_prongs = np.asarray(chunk["n_prongs"])
    checks = [EventCheck(n_prongs < 0, lambda i: f"n_prongs = {n_prongs[i]} is negative or invalid")]
    checks += [_prong_vector_check(chunk[name], name, n_prongs) for name in ("prong_part_E", "prong_part_pos")]
    checks += [_length_check(chunk[name], name, n_prongs, "n_prongs") for name in ("prong_part_pid", "prong_dEdXMean")]
    blob_e = _counts(chunk["MasterAnaDev_BlobTotalE"])
    checks += [_length_check(chunk[f"MasterAnaDev_Blob{axis}"], f"MasterAnaDev_Blob{axis}", blob_e,
                             "len(MasterAnaDev_BlobTotalE)") for axis in "XYZT"]
    if is_mc:
        n_fs = np.asarray(chunk["mc_nFSPart"])
        checks.append(EventCheck(n_fs < 0, lambda i: f"mc_nFSPart = {n_fs[i]} is negative or invalid"))
        checks += [_length_check(chunk[f"mc_FSPart{c}"], f"mc_FSPart{c}", n_fs, "mc_nFSPart")
                   for c in ("Px", "Py", "Pz", "E", "PDG")]
    return checks


def find_bad_events(chunk: ak.Array, is_mc: bool) -> tuple[np.ndarray, dict[int, str]]:
    """(mask of malformed rows of the chunk, row → first reason)."""
    checks = event_checks(chunk, is_mc)
    bad = np.zeros(len(chunk), dtype=bool)
    for check in checks:
        bad |= check.mask
    reasons = {}
    for row in np.flatnonzero(bad).tolist():
        reasons[row] = next(c.describe(row) for c in checks if c.mask[row])
    return bad, reasons


def _read_pot(root_file) -> tuple[float | None, float | None]:
    """(POT_Used, POT_Total) summed over the Meta tree, or None where absent (data files may lack Meta)."""
    if META_TREE not in root_file.keys(cycle=False):
        return None, None
    meta = root_file[META_TREE]
    values = []
    for name in ("POT_Used", "POT_Total"):
        values.append(float(np.sum(meta[name].array(library="np"))) if name in meta.keys() else None)
    return values[0], values[1]


def _read_generator(root_file) -> dict | None:
    """The `minerva_fm_generator` record of a synthetic file (`synthetic.generator_record`), None for real files."""
    if GENERATOR_KEY not in root_file.keys(cycle=False):
        return None
    try:
        record = json.loads(str(root_file[GENERATOR_KEY]))
    except ValueError:
        return {"synthetic": True, "unparsed": str(root_file[GENERATOR_KEY])[:200]}
    return record if isinstance(record, dict) else {"synthetic": True, "unparsed": str(record)[:200]}


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

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _nullable(values: np.ndarray, arrow_type, nulled: dict | None = None, name: str = "",
              valid: np.ndarray | None = None) -> pa.Array:
    """NumPy → Arrow with non-finite floats, values beyond the float32/int32 range and ~valid as null (counted)."""
    mask = np.zeros(len(values), dtype=bool) if valid is None else ~valid
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            mask |= ~np.isfinite(values)
            if pa.types.is_float32(arrow_type):
                mask |= np.abs(values) > _FLOAT32_MAX  # 1e300 → null, never inf
    elif pa.types.is_int32(arrow_type) and values.dtype.kind in "iu":
        mask |= (values < _INT32.min) | (values > _INT32.max) if values.dtype.kind == "i" else values > _INT32.max
    n_null = int(np.count_nonzero(mask))
    if nulled is not None and n_null:
        nulled[name] = nulled.get(name, 0) + n_null
    if values.dtype.kind == "f":
        clean = np.where(mask, 0.0, values)
    else:
        clean = np.where(mask, 0, values)
    return pa.array(clean.astype(arrow_type.to_pandas_dtype()), type=arrow_type, mask=mask if n_null else None)


def truth_columns(chunk: ak.Array, tokens: TokenizedChunk) -> dict[str, np.ndarray]:
    """The MC truth columns of `schema.TRUTH_COLUMNS` for a chunk (GeV, GeV², rad; NaN / INVALID_INT = null)."""
    n_fs = np.asarray(ak.to_numpy(chunk["mc_nFSPart"]))
    for name in ("mc_FSPartPx", "mc_FSPartPy", "mc_FSPartPz", "mc_FSPartE", "mc_FSPartPDG"):
        if not np.array_equal(_counts(chunk[name]), n_fs):
            raise LayoutError(f"branch {name!r}: per-event lengths differ from mc_nFSPart")
    fs = physics.FinalState.from_jagged(*(chunk[f"mc_FSPart{c}"] for c in ("PDG", "Px", "Py", "Pz", "E")))
    enu = np.asarray(ak.to_numpy(chunk["mc_incomingE"]), dtype=np.float64)
    current = np.asarray(ak.to_numpy(chunk["mc_current"]), dtype=np.int64)
    lepton = np.asarray(ak.to_numpy(chunk["mc_primFSLepton"]), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
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
            "int_type": np.asarray(ak.to_numpy(chunk["mc_intType"]), dtype=np.int64),
            "current": current,
            "nu_pdg": np.asarray(ak.to_numpy(chunk["mc_incoming"]), dtype=np.int64),
            "lepton_pdg": np.asarray(ak.to_numpy(chunk["mc_primaryLepton"]), dtype=np.int64),
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


def weight_branch(chunk: ak.Array) -> str | None:
    """The central-value weight branch present in the chunk (first of `branches.WEIGHT_BRANCHES`), or None."""
    return next((b.name for b in WEIGHT_BRANCHES if b.name in chunk.fields), None)


def _int32_column(values: np.ndarray, nulled: dict, name: str) -> pa.Array:
    """int64 values (INVALID_INT where the source did not fit) → int32 Arrow, out-of-range as null (counted)."""
    return _nullable(values, pa.int32(), nulled, name, valid=values != INVALID_INT)


def build_table(chunk: ak.Array, entries: np.ndarray, source_name: str, is_mc: bool,
                options: ConvertOptions) -> tuple[pa.Table, dict]:
    """One chunk → (Arrow table with exactly PARQUET_SCHEMA, after the row selection; per-chunk counters)."""
    tokens = tokenize(chunk, options.tokens)
    n = len(entries)
    nulled: dict[str, int] = {}
    columns: dict[str, pa.Array] = {
        "source_file": pa.array([source_name] * n, pa.string()) if n else pa.array([], pa.string()),
        "entry": pa.array(entries, pa.int64()),
        "run": _int32_column(np.asarray(chunk["ev_run"]), nulled, "run"),
        "subrun": _int32_column(np.asarray(chunk["ev_subrun"]), nulled, "subrun"),
        "gate": _int32_column(np.asarray(chunk["ev_gate"]), nulled, "gate"),
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
        if not is_mc:
            columns[name] = pa.nulls(n, arrow_type)
        elif pa.types.is_int32(arrow_type):
            columns[name] = _int32_column(np.asarray(truth[name], dtype=np.int64), nulled, name)
        elif pa.types.is_boolean(arrow_type):
            columns[name] = pa.array(truth[name], arrow_type)
        else:
            columns[name] = _nullable(truth[name], arrow_type, nulled, name)
    for name, values in baseline_columns(chunk, tokens, options.selection).items():
        arrow_type = BASELINE_COLUMNS[name]
        columns[name] = _nullable(values, arrow_type, nulled, name) if pa.types.is_floating(arrow_type) \
            else pa.array(values, arrow_type)
    weight = weight_branch(chunk) if is_mc else None
    columns["event_weight"] = _nullable(np.asarray(chunk[weight], dtype=np.float64), WEIGHT_COLUMNS["event_weight"],
                                        nulled, "event_weight") if weight else pa.nulls(n, pa.float32())
    table = pa.Table.from_arrays([columns[f.name].cast(f.type) for f in PARQUET_SCHEMA], schema=PARQUET_SCHEMA)

    int_type = None
    if is_mc:  # a null (out-of-range) interaction type never passes the int_types cut
        int_type = np.where(truth["int_type"] == INVALID_INT, -1, truth["int_type"])
    keep, cut_counts = row_mask(int_type, options.selection)
    if keep is not None:
        table = table.filter(pa.array(keep))
    passes = table.column("passes_cc_inclusive").to_numpy(zero_copy_only=False)
    stats = {
        "selection": {"read": n, **cut_counts, "kept": table.num_rows,
                      "passes_cc_inclusive": int(np.count_nonzero(passes))},
        "truncation": tokens.truncation,
        "rejected": tokens.audit.counts,
        "nulled": nulled,
        "weight_branch": weight,
    }
    return table, stats


# --------------------------------------------------------------------------------------------------- one chunk


def clean_chunk(path: Path, chunk: ak.Array, entries: np.ndarray, specs: list[Branch], is_mc: bool,
                on_bad_event: str) -> tuple[ak.Array, np.ndarray, dict]:
    """Cast the read branches and handle malformed entries → (chunk, entries, counters incl. skipped entries).

    ``on_bad_event="error"`` raises `BadEventError` naming the file and the entry numbers; ``"skip"`` drops exactly
    those entries and reports each with its reason.
    """
    chunk, invalid = normalise_chunk(chunk, specs)
    bad, reasons = find_bad_events(chunk, is_mc)
    report = {"cast_invalid": invalid, "skipped": {}, "skipped_entries": []}
    if not bad.any():
        return chunk, entries, report
    listed = [(int(entries[row]), reason) for row, reason in reasons.items()]
    if on_bad_event == "error":
        shown = "; ".join(f"entry {entry}: {reason}" for entry, reason in listed[:5])
        more = f" (and {len(listed) - 5} more)" if len(listed) > 5 else ""
        raise BadEventError(path, f"{len(listed)} malformed entr{'y' if len(listed) == 1 else 'ies'}: {shown}{more}; "
                                  f"--on-bad-event skip drops them and lists them in the manifest")
    report["skipped"] = {"entries": len(listed)}
    report["skipped_entries"] = [{"entry": entry, "reason": reason} for entry, reason in listed]
    keep = ~bad
    return chunk[keep], entries[keep], report


def convert_chunk(path: Path, chunk: ak.Array, entries: np.ndarray, specs: list[Branch], is_mc: bool,
                  options: ConvertOptions) -> tuple[pa.Table, dict]:
    """A raw chunk of entries → (table with PARQUET_SCHEMA, counters): cast, bad-event handling, tokens, columns."""
    chunk, entries, report = clean_chunk(path, chunk, entries, specs, is_mc, options.on_bad_event)
    try:
        table, stats = build_table(chunk, entries, path.name, is_mc, options)
    except LayoutError as err:  # rules not covered by the per-entry checks
        raise InconsistentCountsError(path, str(err)) from err
    return table, {**stats, **report}


def _read_specs(tree, is_mc: bool) -> list[Branch]:
    return _reco_branch_specs(is_mc) + _optional_branch_specs(is_mc, set(tree.keys()))


# --------------------------------------------------------------------------------------------------- streaming


def iter_converted_tables(path: str | Path, options: ConvertOptions = ConvertOptions(),
                          entry_start: int = 0, entry_stop: int | None = None) -> Iterator[pa.Table]:
    """Yield the converted rows of one AnaTuple (MC or data) chunk by chunk, writing nothing.

    Each table has exactly `schema.PARQUET_SCHEMA` (rows keyed by `source_file`, `entry`; truth and `event_weight`
    null for data) and the same rows and values the converter writes into its shards (selection and
    ``options.on_bad_event`` applied), in entry order. Raises the same `ConversionError`s as `convert`.
    """
    path = Path(path)
    root_file, tree, is_mc = open_reco_tree(path)
    specs = _read_specs(tree, is_mc)
    branches = [b.name for b in specs]
    stop_limit = tree.num_entries if entry_stop is None else min(int(entry_stop), tree.num_entries)
    try:
        for start, stop in chunk_ranges(tree, branches, options.step_size):
            start, stop = max(start, int(entry_start)), min(stop, stop_limit)
            if start >= stop:
                continue
            chunk = read_chunk(path, tree, branches, start, stop)
            table, _ = convert_chunk(path, chunk, np.arange(start, stop, dtype=np.int64), specs, is_mc, options)
            yield table
    finally:
        root_file.close()


# --------------------------------------------------------------------------------------------------- one file

SHARD_GLOB = "-[0-9][0-9][0-9][0-9][0-9].parquet"


def shard_path(output_dir: Path, split: str, stem: str, chunk: int) -> Path:
    """OUTPUT_DIR/data/<split>/<stem>-<chunk:05d>.parquet"""
    return output_dir / "data" / split / f"{stem}-{chunk:05d}.parquet"


PARQUET_ZSTD_LEVEL = 1  # benchmarks/bench_converter.py (parquet-options): level 3 costs 1.5x the CPU for 2 % less
FLOAT_LEAVES = ["object_features.list.element.list.element", "event_features.list.element"]


def _write_atomic_parquet(table: pa.Table, final: Path, row_group_size: int) -> None:
    with atomic_path(final) as tmp:
        # Measured (parquet-options benchmark): dictionary encoding of the float lists costs 2.3x the CPU and makes
        # files 27 % larger, so only the constant file name is dictionary-encoded; BYTE_STREAM_SPLIT on the float
        # leaves makes files ~5 % smaller at the same CPU. Statistics only on the key columns.
        pq.write_table(table, tmp, compression="zstd", compression_level=PARQUET_ZSTD_LEVEL,
                       row_group_size=max(1, row_group_size), use_dictionary=["source_file"],
                       use_byte_stream_split=FLOAT_LEAVES,
                       write_statistics=["source_file", "entry", "run", "subrun", "gate"])


def _file_shards(output_dir: Path, stem: str) -> list[Path]:
    """Every finished shard of one source file (by its stem), all splits."""
    pattern = f"{glob_escape(stem)}{SHARD_GLOB}"
    return [shard for split in SPLITS for shard in (output_dir / "data" / split).glob(pattern)]


def _file_temps(output_dir: Path, stem: str) -> list[Path]:
    """Temp files of one source file's shards (exact pattern: 'a' never matches the temps of 'a-b')."""
    pattern = f".{glob_escape(stem)}{SHARD_GLOB}.*.tmp"
    return [tmp for split in SPLITS for tmp in (output_dir / "data" / split).glob(pattern)]


def _remove_file_outputs(output_dir: Path, stem: str) -> None:
    """Delete every shard and temp file of one source file (after it failed or its content changed)."""
    for path in _file_shards(output_dir, stem) + _file_temps(output_dir, stem):
        path.unlink(missing_ok=True)


def glob_escape(text: str) -> str:
    """Escape glob metacharacters in a file stem."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def convert_file(path: str | Path, output_dir: str | Path, shifted: bool, options: ConvertOptions,
                 known_shards: dict[str, str] | None = None) -> dict:
    """Convert one ROOT file into its shards (reusing verified finished chunks) and return its manifest entry.

    `known_shards` maps shard paths (relative to `output_dir`) to the sha256 a previous manifest recorded; a reused
    shard that does not match is rewritten.
    """
    path, output_dir = Path(path), Path(output_dir)
    try:
        return _convert_file(path, output_dir, shifted, options, known_shards or {})
    except ConversionError:
        _remove_file_outputs(output_dir, path.stem)
        raise
    except LayoutError as err:
        _remove_file_outputs(output_dir, path.stem)
        raise InconsistentCountsError(path, str(err)) from err


def _convert_file(path: Path, output_dir: Path, shifted: bool, options: ConvertOptions,
                  known_shards: dict[str, str]) -> dict:
    for tmp in _file_temps(output_dir, path.stem):  # left behind by a killed run (the output folder is locked)
        tmp.unlink(missing_ok=True)
    with ThreadPoolExecutor(max_workers=1) as hasher:
        # hashlib releases the GIL: the input's checksum is computed while the chunks are converted; a resumed file
        # is hashed first, so that shards of replaced content are never reused.
        digest = hasher.submit(file_sha256, path)
        if _file_shards(output_dir, path.stem) and _recorded_source_sha(output_dir, path.stem) != digest.result():
            _remove_file_outputs(output_dir, path.stem)
        root_file, tree, is_mc = open_reco_tree(path)
        try:
            report = _convert_chunks(path, output_dir, shifted, options, root_file, tree, is_mc, known_shards,
                                     digest)
        finally:
            root_file.close()
        report["sha256"] = digest.result()
    return report


def _recorded_source_sha(output_dir: Path, stem: str) -> str | None:
    """The input sha256 recorded in the first readable shard of `stem` (None if none is readable)."""
    for shard in sorted(_file_shards(output_dir, stem)):
        stats = _shard_stats(shard)
        if stats is not None:
            return stats.get("source_sha256")
    return None


def _shard_stats(shard: Path) -> dict | None:
    """The per-chunk counters stored in a shard's Parquet metadata, or None if the shard cannot be read."""
    try:
        metadata = pq.read_schema(shard).metadata or {}
        return json.loads(metadata[CHUNK_STATS_KEY])
    except Exception:
        return None


def _reusable(shards: list[Path], output_dir: Path, known_shards: dict[str, str]) -> tuple[dict | None, list[str]]:
    """(stats of a finished chunk whose shards all exist and verify, or None; one line per shard that failed).

    A shard that cannot be read or differs from the sha256 the previous manifest recorded is deleted (rewritten).
    """
    problems, stats = [], None
    for shard in shards:
        if not shard.exists():
            continue
        recorded = known_shards.get(str(shard.relative_to(output_dir)))
        shard_stats = _shard_stats(shard)
        if shard_stats is None:
            problems.append(f"{shard}: unreadable Parquet shard, rewritten")
        elif recorded is not None and file_sha256(shard) != recorded:
            problems.append(f"{shard}: sha256 differs from the one recorded in manifest.json, rewritten")
        else:
            stats = stats or shard_stats
            continue
        shard.unlink()
    return (stats if all(s.exists() for s in shards) else None), problems


def _convert_chunks(path: Path, output_dir: Path, shifted: bool, options: ConvertOptions, root_file, tree,
                    is_mc: bool, known_shards: dict[str, str], digest) -> dict:
    """Convert (or reuse, when finished and verified) every chunk of an opened file; its manifest entry (no sha)."""
    specs = _read_specs(tree, is_mc)
    branches = [b.name for b in specs]
    ranges = chunk_ranges(tree, branches, options.step_size)
    plans = []
    for index, (start, stop) in enumerate(ranges):
        entries = np.arange(start, stop, dtype=np.int64)
        split_index = np.full(len(entries), 3, np.int8) if shifted else assign_splits(path.name, entries)
        splits = [SPLITS[k] for k in sorted(set(split_index.tolist()))]
        shards = [shard_path(output_dir, split, path.stem, index) for split in splits]
        stats, problems = _reusable(shards, output_dir, known_shards)
        for line in problems:
            print(f"minerva-fm convert: {line}", file=sys.stderr)
        plans.append((index, start, stop, entries, split_index, splits, shards, stats))
    chunks, writes = [], []
    # Three stages overlap: reading chunk k+1 (decompression releases the GIL) and writing the shards of chunk k-1
    # (pyarrow releases the GIL; one thread per split) run while chunk k is tokenised. Bytes do not depend on timing.
    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=3) as writer:
        pending = {}

        def prefetch(k: int) -> None:
            while k < len(plans) and plans[k][7] is not None:
                k += 1
            if k < len(plans) and k not in pending:
                _, start, stop = plans[k][:3]
                pending[k] = reader.submit(read_chunk, path, tree, branches, start, stop)

        prefetch(0)
        for k, (index, start, stop, entries, split_index, splits, shards, stats) in enumerate(plans):
            if stats is None:
                chunk = pending.pop(k).result()
                prefetch(k + 1)
                table, stats = convert_chunk(path, chunk, entries, specs, is_mc, options)
                stats = {"chunk": index, "entry_start": start, "entry_stop": stop, **stats,
                         "source_sha256": digest.result()}
                metadata = {CHUNK_STATS_KEY: json.dumps(stats, sort_keys=True),
                            SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)}
                table = table.replace_schema_metadata(metadata)
                kept = table.column("entry").to_numpy()
                kept_split = split_index[kept - start] if table.num_rows else np.zeros(0, np.int8)
                for future in writes:  # at most one chunk's tables wait in memory
                    future.result()
                writes = []
                for split, shard in zip(splits, shards):
                    if not shard.exists():  # a resumed chunk keeps its finished shards (same bytes)
                        part = table.filter(pa.array(kept_split == SPLITS.index(split)))
                        writes.append(writer.submit(_write_atomic_parquet, part, shard, options.row_group_size))
            chunks.append((stats, shards))
        for future in writes:
            future.result()
        chunks = [{**stats, "shards": list(writer.map(lambda s: _shard_record(s, output_dir), shards))}
                  for stats, shards in chunks]
    pot_used, pot_total = _read_pot(root_file)
    return {
        "name": path.name, "path": str(path.resolve()), "size_bytes": path.stat().st_size, "sha256": None,
        "is_mc": is_mc, "n_entries": tree.num_entries, "split": "shifted" if shifted else "hashed",
        "pot_used": pot_used, "pot_total": pot_total, "generator": _read_generator(root_file), "chunks": chunks,
    }


SCHEMA_VERSION_KEY = b"minerva_fm.schema_version"


def _shard_record(shard: Path, output_dir: Path) -> dict:
    """Path, rows, size and sha256 of a finished shard (hashed in the worker, right after writing)."""
    return {"path": str(shard.relative_to(output_dir)), "rows": pq.read_metadata(shard).num_rows,
            "size_bytes": shard.stat().st_size, "sha256": file_sha256(shard)}


# --------------------------------------------------------------------------------------------------- many files


def expand_inputs(inputs) -> tuple[list[Path], list[dict]]:
    """ROOT files and folders (searched recursively for *.root, sorted) → (files, duplicates dropped).

    The same file reached twice (a symlink, a path given twice) is kept once and listed as a duplicate; two
    different files with one name are an error (rows are keyed by file name).
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(sorted(item.rglob("*.root")))
        elif item.exists():
            files.append(item)
        else:
            raise NotRootFileError(item, "no such file or directory")
    unique, seen, duplicates = [], {}, []
    for f in files:
        key = f.resolve()
        if key in seen:
            duplicates.append({"name": f.name, "path": str(f), "same_file_as": seen[key].name, "reason": "same file"})
            continue
        seen[key] = f
        unique.append(f)
    names = [f.name for f in unique]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConversionError(clashes[0], f"several inputs share the file name(s) {clashes}; rows are keyed "
                                          f"by (file name, entry), so names must be unique")
    stems = [f.stem for f in unique]
    if len(set(stems)) != len(stems):
        raise ConversionError(unique[0], "several inputs share a file stem; shard names would collide")
    return unique, duplicates


@contextmanager
def output_lock(output_dir: Path):
    """Hold an exclusive lock on the output folder (a second converter on the same folder fails at once)."""
    import fcntl

    if output_dir.exists() and not output_dir.is_dir():
        raise OutputDirError(output_dir, "the output path is a file, not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        handle = open(output_dir / LOCK_FILE, "a+")
    except OSError as err:
        raise OutputDirError(output_dir, f"cannot create the output folder: {err.strerror or err} (errno {err.errno})") from err
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise OutputDirError(output_dir, "another minerva-fm convert is writing into this folder "
                                             f"(lock {output_dir / LOCK_FILE}); wait for it or use another") from err
        yield
    finally:
        handle.close()


def _clear_outputs(output_dir: Path) -> None:
    """--overwrite: remove what a conversion writes (data/, manifest.json, the options marker)."""
    shutil.rmtree(output_dir / "data", ignore_errors=True)
    for name in ("manifest.json", OPTIONS_MARKER):
        (output_dir / name).unlink(missing_ok=True)


def prepare_output_dir(output_dir: Path, options: ConvertOptions, overwrite: bool = False) -> None:
    """Refuse foreign non-empty folders and folders written with other options (unless `overwrite`); mark ours."""
    marker = output_dir / OPTIONS_MARKER
    current = json.dumps({"converter_version": CONVERTER_VERSION, **options.to_dict()}, sort_keys=True)
    contents = [p.name for p in output_dir.iterdir() if p.name != LOCK_FILE]
    if contents and not marker.exists():
        if not overwrite:
            raise OutputDirError(output_dir, f"folder is not empty ({', '.join(sorted(contents)[:3])}, ...) and was "
                                             f"not written by minerva-fm convert; use an empty folder or --overwrite")
        _clear_outputs(output_dir)
    elif marker.exists() and marker.read_text() != current:
        if not overwrite:
            raise OutputDirError(output_dir, f"output folder was written with other options or converter version "
                                             f"({marker}); use a fresh folder or --overwrite")
        _clear_outputs(output_dir)
    write_text_atomic(marker, current)


def _previous_shard_checksums(output_dir: Path) -> dict[str, str]:
    """shard path → sha256 from an existing manifest.json (empty if there is none or it is unreadable)."""
    try:
        manifest = json.loads((output_dir / "manifest.json").read_text())
        return {s["path"]: s["sha256"] for s in manifest.get("shards", []) if s.get("sha256")}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def _worker_init(parent_pid: int) -> None:
    """Pool initializer: the worker exits as soon as the converting parent is gone (killed or crashed)."""
    def watch() -> None:
        while True:
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            if os.getppid() == 1:
                os._exit(1)
            threading.Event().wait(0.2)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


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
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                                 initializer=_worker_init, initargs=(os.getpid(),)) as pool:
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
            dask: str | None = None, dask_processes: bool = True, progress: bool = True,
            overwrite: bool = False) -> dict:
    """Convert AnaTuple ROOT files to Parquet shards under `output_dir` and write `manifest.json`; return it.

    Raises the file's `ConversionError` if one file fails (several: `ConversionFailed`), after converting the others;
    no manifest is written then, and the finished shards are reused by the next run. A rerun reconverts inputs whose
    content changed, rewrites shards that fail their recorded checksum and removes shards of inputs no longer given;
    inputs with identical content are converted once (the others are listed under ``duplicate_inputs``).
    """
    output_dir = Path(output_dir)
    files, duplicates = expand_inputs(inputs)
    with output_lock(output_dir):
        prepare_output_dir(output_dir, options, overwrite)
        known = _previous_shard_checksums(output_dir)
        jobs = [(str(f), str(output_dir), is_shifted(f, options.shifted_globs), options, known) for f in files]
        workers = workers or os.cpu_count() or 1
        runner = _run_dask(jobs, dask, workers, dask_processes, progress) if dask else \
            _run_pool(jobs, workers, progress)
        reports, errors = {}, []
        for job, outcome in runner:
            (errors.append(outcome) if isinstance(outcome, ConversionError) else reports.__setitem__(job[0], outcome))
        if errors:
            if len(errors) == 1:
                raise errors[0]
            raise ConversionFailed(f"{len(errors)} files", "; ".join(sorted(str(e) for e in errors)))
        ordered = [reports[job[0]] for job in jobs]
        ordered, content_duplicates = _drop_identical_content(ordered, output_dir)
        manifest = build_manifest(ordered, output_dir, options)
        manifest["duplicate_inputs"] = duplicates + content_duplicates
        manifest["removed_stale_shards"] = _remove_stale_shards(output_dir, manifest)
        write_text_atomic(output_dir / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _drop_identical_content(reports: list[dict], output_dir: Path) -> tuple[list[dict], list[dict]]:
    """Keep the first of several inputs with the same sha256 (a copy under another name); remove the others' shards."""
    first: dict[str, dict] = {}
    kept, dropped = [], []
    for report in reports:
        original = first.setdefault(report["sha256"], report)
        if original is report:
            kept.append(report)
            continue
        _remove_file_outputs(output_dir, Path(report["name"]).stem)
        dropped.append({"name": report["name"], "path": report["path"], "same_content_as": original["name"],
                        "sha256": report["sha256"], "reason": "identical content"})
    return kept, dropped


def _remove_stale_shards(output_dir: Path, manifest: dict) -> list[str]:
    """Delete Parquet files under data/ that this manifest does not list (inputs no longer given); their paths."""
    listed = {s["path"] for s in manifest["shards"]}
    stale = sorted(str(p.relative_to(output_dir)) for p in (output_dir / "data").rglob("*.parquet")
                   if str(p.relative_to(output_dir)) not in listed)
    for relative in stale:
        (output_dir / relative).unlink(missing_ok=True)
    return stale


SUMMED_KEYS = ("selection", "truncation", "rejected", "nulled", "cast_invalid", "skipped")


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
    shards, sources, totals = [], [], {key: {} for key in SUMMED_KEYS}
    for report in reports:
        per_file = {key: {} for key in SUMMED_KEYS}
        bad_entries, weights = [], set()
        for chunk in report["chunks"]:
            for key in per_file:
                _add_counts(per_file[key], chunk.get(key, {}))
            bad_entries.extend(chunk.get("skipped_entries", []))
            weights.add(chunk.get("weight_branch"))
            for record in chunk["shards"]:
                shards.append({**record, "split": Path(record["path"]).parent.name, "source_file": report["name"],
                               "chunk": chunk["chunk"]})
        for key in totals:
            _add_counts(totals[key], per_file[key])
        source = {k: v for k, v in report.items() if k != "chunks"}
        sources.append({**source, **per_file, "n_chunks": len(report["chunks"]),
                        "bad_entries": bad_entries[:MAX_LISTED_BAD_ENTRIES],
                        "event_weight_branch": next((w for w in sorted(weights, key=str) if w), None)})
    events = {split: sum(s["rows"] for s in shards if s["split"] == split) for split in SPLITS}
    pot = [s["pot_used"] for s in sources if s["pot_used"] is not None]
    weight_branches = sorted({s["event_weight_branch"] for s in sources if s["event_weight_branch"]})
    return {
        "converter_version": CONVERTER_VERSION,
        "schema_version": SCHEMA_VERSION,
        "schema": PARQUET_SCHEMA.to_string(show_schema_metadata=False),
        "options": options.to_dict(),
        "source_files": sources,
        "events_per_split": events,
        "pot_used_total": float(sum(pot)) if pot else None,
        "pot_used_by_split": {
            "shifted": float(sum(s["pot_used"] or 0.0 for s in sources if s["split"] == "shifted")),
            "hashed": float(sum(s["pot_used"] or 0.0 for s in sources if s["split"] == "hashed")),
        },
        "event_weight": {
            "column": "event_weight",
            "branch": weight_branches[0] if len(weight_branches) == 1 else (weight_branches or None),
            "files_with_weight": sum(1 for s in sources if s["event_weight_branch"]),
            "files_without_weight": sum(1 for s in sources if not s["event_weight_branch"]),
            "note": "central-value weight as stored in the AnaTuple; null on data and where the branch is absent",
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
        on_bad_event=getattr(args, "on_bad_event", "error"),
    )


def run_convert_cli(args: argparse.Namespace) -> int:
    """Entry point of `minerva-fm convert`: convert, print one line with what was written, return the exit status."""
    try:
        manifest = convert(args.inputs, args.output_dir, options_from_args(args), workers=args.workers,
                           dask=args.dask, dask_processes=not getattr(args, "dask_threads", False),
                           progress=not getattr(args, "no_progress", False),
                           overwrite=getattr(args, "overwrite", False))
    except ConversionError as err:
        print(f"minerva-fm convert: error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:  # unreadable selection YAML, read-only or full disk, bad option values
        from minerva_common.errors import report

        return report("convert", err, where=args.output_dir)
    counts = ", ".join(f"{split} {n}" for split, n in manifest["events_per_split"].items())
    skipped = manifest.get("skipped", {}).get("entries", 0)
    extra = f"; skipped {skipped} malformed entries (listed in the manifest)" if skipped else ""
    print(f"wrote {len(manifest['shards'])} shards ({counts} events) and "
          f"{Path(args.output_dir) / 'manifest.json'}{extra}")
    return 0


__all__ = [
    "CONVERTER_VERSION", "ConversionError", "NotRootFileError", "CorruptFileError", "MissingTreeError",
    "MissingBranchError", "BranchTypeError", "InconsistentCountsError", "BadEventError", "OutputDirError",
    "ConversionFailed", "ConvertOptions", "open_reco_tree", "chunk_ranges", "assign_splits", "build_table",
    "normalise_chunk", "find_bad_events", "clean_chunk", "convert_chunk", "iter_converted_tables", "convert_file",
    "convert", "run_convert_cli",
]
