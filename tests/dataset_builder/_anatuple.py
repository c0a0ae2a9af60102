"""Tiny hand-made MasterAnaDev AnaTuple ROOT files for the converter tests (written with uproot)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from dataset_builder.branches import ALL_BRANCHES, META_TREE, RECO_TREE

NO_MUON = [-999.0, -999.0, -9999.0, -9999.0]


def default_columns(n: int, mc: bool = True) -> dict:
    """Every contract branch for n events: zeros, no muon (−999), no photons, no blobs/prongs/FS particles."""
    columns = {}
    for spec in ALL_BRANCHES:
        if spec.mc_only and not mc:
            continue
        dtype = np.float64 if spec.file_dtype == "f8" else np.int32
        if spec.shape == "scalar":
            columns[spec.name] = np.zeros(n, dtype=dtype)
        elif spec.shape.startswith("fixed["):
            columns[spec.name] = np.zeros((n, int(spec.shape[6:-1])), dtype=dtype)
        else:
            columns[spec.name] = [[] for _ in range(n)]
    columns["muon_corrected_p"] = np.tile(np.array(NO_MUON), (n, 1))
    return columns


def _to_writable(values, dtype) -> np.ndarray | ak.Array:
    """Lists of lists → jagged awkward array of `dtype`; arrays → `dtype`."""
    if isinstance(values, ak.Array):
        return ak.values_astype(values, dtype)
    if isinstance(values, list) and all(isinstance(v, (list, tuple)) for v in values):
        flat = np.asarray([x for v in values for x in v], dtype=dtype)
        return ak.unflatten(flat, np.asarray([len(v) for v in values], dtype=np.int64))
    return np.asarray(values, dtype=dtype)


def write_anatuple(path: Path, columns: dict, meta: dict | None = None, types: dict | None = None,
                   extra_trees: dict | None = None) -> Path:
    """Write a MasterAnaDev tree (jagged branches get `<name>_sz` counters) plus a Meta tree.

    `types` overrides the element dtype of a branch (for wrong-dtype tests).
    """
    specs = {b.name: b for b in ALL_BRANCHES}
    types = types or {}
    data = {}
    for name, values in columns.items():
        default = np.float64 if name not in specs or specs[name].file_dtype == "f8" else np.int32
        data[name] = _to_writable(values, types.get(name, default))
    with uproot.recreate(path) as handle:
        handle.mktree(RECO_TREE, {name: _branch_type(values) for name, values in data.items()},
                      counter_name=lambda counted: f"{counted}_sz")
        handle[RECO_TREE].extend(data)
        if meta is not None:
            handle[META_TREE] = {k: np.asarray(v, dtype=np.float64) for k, v in meta.items()}
        for tree_name, tree_data in (extra_trees or {}).items():
            handle[tree_name] = tree_data
    return path


def _branch_type(values):
    if isinstance(values, ak.Array):
        return values.type.content
    if values.ndim == 2:
        return np.dtype((values.dtype, (values.shape[1],)))
    return values.dtype
