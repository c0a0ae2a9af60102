"""Synthetic MINERvA MasterAnaDev AnaTuples: ROOT files with the real tree/branch names of ``branches.py``.

``write_anatuples`` writes MC-like files ``MasterAnaDev_mc_AnaTuple_run00NNNNNN_Playlist.root`` (1A-like runs
110000+i; ``shifted=True`` gives a 1B-like sample, runs 111000+i, helium target full: ~7 % lower calorimetric response,
+15 % passive-material energy, helium/aluminium vertices upstream). Each file holds

* ``MasterAnaDev`` — one row per reconstructed interaction: every branch of ``branches.ALL_BRANCHES`` with the element
  type real files use (``Branch.file_dtype``: Int_t → int32, e.g. ``muon_fuzz_energy`` in whole MeV; else float64),
  shape and unit, plus the ``mc_*`` truth of the matched interaction and the central-value weight
  ``mc_cvweight_total`` (``synthetic_weight``);
* ``Truth`` — the ``mc_*`` branches of every generated interaction (reconstructed or not, about 1.2 per reco row; real files: ~2.9);
* ``minerva_fm_generator`` — a TObjString with the JSON ``generator_record`` (program, seed, …): the mark of a
  synthetic file, copied by the converter into ``manifest.json`` (``source_files[].generator``);
* ``Meta`` — ``POT_Used``, ``POT_Total`` (≈1e19 POT per 186k reco rows, as in a real 1A file),
  ``Total_Reco_Entries``, ``Total_Truth_Entries``.

Counters: prong arrays share ``n_prongs``; every blob branch ``MasterAnaDev_BlobX`` has its own ``<branch>_sz``;
FS arrays share ``mc_nFSPart``.

Deviation from real files (uproot cannot write nested vectors into a TTree): ``prong_part_E`` and ``prong_part_pos``
are ``vector<vector<double>>`` ([n_prongs][4]) in real tuples, here they are written FLATTENED under the same branch
name as a jagged ``double[]`` of length ``4 * n_prongs`` (row-major (px, py, pz, E) resp. (x, y, z, t) per prong) with
counter branch ``prong_part_E_sz`` / ``prong_part_pos_sz``. Readers must accept both forms.

Physics (``synthetic_physics``) and detector response (``synthetic_reco``) are vectorised numpy; the same
``seed`` gives identical arrays. Files are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from minerva_common.atomic import atomic_path
from dataset_builder.branches import (
    ALL_BRANCHES, GENERATOR_KEY, META_TREE, RECO_BRANCHES, RECO_TREE, TRUTH_BRANCHES, TRUTH_TREE, WEIGHT_BRANCHES,
)
from dataset_builder.synthetic_physics import TruthBatch, generate_truth
from dataset_builder.synthetic_reco import reconstructed_mask, simulate_reco

RUN_1A, RUN_1B = 110000, 111000
CHUNK_ROWS = 50_000  # reco rows generated and written per basket
POT_PER_RECO_ROW = 9.98e18 / 186_439  # a real 1A MC file: 9.98e18 POT for 186,439 MasterAnaDev rows
RECO_EFFICIENCY_GUESS = 0.8
GATES_PER_SUBRUN = 5000
COMPRESSION = uproot.LZ4(1)  # 7x faster than ZLIB(1) at +10 % size; uproot reads it via cramjam
PRONG_COUNTED = ("prong_part_pid", "prong_dEdXMean")
FLAT_4 = ("prong_part_E", "prong_part_pos")


def anatuple_name(run: int) -> str:
    """MC AnaTuple file name for ``run`` (real pattern: MasterAnaDev_mc_AnaTuple_run00110000_Playlist.root)."""
    return f"MasterAnaDev_mc_AnaTuple_run{run:08d}_Playlist.root"


def counter_name(branch: str) -> str:
    """Counter branch for a jagged branch: n_prongs, mc_nFSPart, or ``<branch>_sz``."""
    if branch in PRONG_COUNTED:
        return "n_prongs"
    if branch.startswith("mc_FSPart"):
        return "mc_nFSPart"
    return f"{branch}_sz"


def write_anatuples(output_dir, n_events: int, seed: int, shifted: bool = False, n_files: int = 1) -> list[Path]:
    """Write ``n_events`` reco rows of synthetic AnaTuples split over ``n_files`` files; returns their paths."""
    if n_files < 1 or n_events < n_files:
        raise ValueError(f"need n_files >= 1 and n_events >= n_files, got n_events={n_events}, n_files={n_files}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    sizes = [len(part) for part in np.array_split(np.arange(n_events), n_files)]
    run0 = RUN_1B if shifted else RUN_1A
    paths = []
    for index, size in enumerate(sizes):
        path = output_dir / anatuple_name(run0 + index)
        _write_file(path, size, seed, index, shifted, run0 + index)
        paths.append(path)
    return paths


def _write_file(path: Path, n_rows: int, seed: int, index: int, shifted: bool, run: int) -> None:
    """Generate and write one file atomically."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, int(shifted)]))
    # The weights have their own stream, so adding them left every other generated number unchanged.
    state = {"nth": 0, "gate": 0, "weight_rng": np.random.default_rng(np.random.SeedSequence([seed, index,
                                                                                              int(shifted), 7]))}
    n_truth_total = 0
    with atomic_path(path) as tmp:
        with uproot.recreate(tmp, compression=COMPRESSION) as f:
            reco_tree = truth_tree = None
            for start in range(0, n_rows, CHUNK_ROWS):
                need = min(CHUNK_ROWS, n_rows - start)
                reco, truth = generate_chunk(rng, need, shifted, run, state)
                n_truth_total += len(truth["mc_incomingE"])
                if reco_tree is None:
                    reco_tree = f.mktree(RECO_TREE, reco, counter_name=counter_name)
                    truth_tree = f.mktree(TRUTH_TREE, truth, counter_name=counter_name)
                else:
                    reco_tree.extend(reco)
                    truth_tree.extend(truth)
            f[GENERATOR_KEY] = json.dumps(generator_record(seed, index, shifted, n_rows))
            f.mktree(META_TREE, {
                "POT_Used": np.array([n_rows * POT_PER_RECO_ROW]),
                "POT_Total": np.array([n_rows * POT_PER_RECO_ROW]),
                "Total_Reco_Entries": np.array([float(n_rows)]),
                "Total_Truth_Entries": np.array([float(n_truth_total)]),
            })


def generator_record(seed: int, index: int, shifted: bool, n_rows: int) -> dict:
    """What made a synthetic file (stored as the TObjString `GENERATOR_KEY`; the converter copies it to the manifest)."""
    return {"program": "minerva-fm generate", "synthetic": True, "seed": seed, "file_index": index,
            "shifted": shifted, "reco_rows": n_rows}


def generate_chunk(rng: np.random.Generator, n_rows: int, shifted: bool, run: int, state: dict):
    """Exactly ``n_rows`` reco rows plus the Truth rows of all interactions generated up to the last of them."""
    batches, masks, found = [], [], 0
    while found < n_rows:
        n_try = int((n_rows - found) / RECO_EFFICIENCY_GUESS * 1.05) + 32
        batch = generate_truth(rng, n_try, shifted)
        mask = reconstructed_mask(rng, batch)
        batches.append(batch)
        masks.append(mask)
        found += int(mask.sum())
    truth = TruthBatch.concatenate(batches) if len(batches) > 1 else batches[0]
    mask = np.concatenate(masks)
    last = np.flatnonzero(mask)[n_rows - 1]
    truth = truth.take(slice(0, last + 1))
    mask = mask[: last + 1]
    book = _bookkeeping(rng, len(truth), run, state)
    truth_cols = _truth_columns(truth, book)
    selected = truth.take(mask)
    reco_cols = simulate_reco(rng, selected, shifted)
    reco_book = {k: v[mask] for k, v in book.items()}
    reco = _reco_columns(reco_cols, _truth_columns(selected, reco_book), reco_book)
    if "weight_rng" in state:
        reco[WEIGHT_BRANCHES[0].name] = synthetic_weight(state["weight_rng"], selected)
    return reco, truth_cols


def synthetic_weight(rng: np.random.Generator, truth: TruthBatch) -> np.ndarray:
    """A plausible central-value weight per event (float64, ~1): MINERvA-tune-like factors by process, 5 % spread.

    2p2h ×1.3 (the tune's low-recoil enhancement), resonant pion production at Q² < 0.3 GeV² ×0.8 (low-Q²
    suppression), QE ×0.95 (RPA-like), times a flux-like log-normal factor of 5 %. Not a physics model.
    """
    factor = np.ones(len(truth.enu))
    factor[truth.int_type == 8] = 1.3
    factor[(truth.int_type == 2) & (truth.q2 < 0.3e6)] = 0.8
    factor[truth.int_type == 1] = 0.95
    return factor * rng.lognormal(0.0, 0.05, len(factor))


def _bookkeeping(rng, n: int, run: int, state: dict) -> dict[str, np.ndarray]:
    """Run/subrun/gate numbers: ~10 % of interactions share a readout gate with the previous one."""
    nth = state["nth"] + np.arange(n)
    gate = state["gate"] + np.cumsum(rng.random(n) < 0.9)
    state["nth"] += n
    state["gate"] = int(gate[-1]) if n else state["gate"]
    subrun = (1 + gate // GATES_PER_SUBRUN).astype(np.int32)
    return {"run": np.full(n, run, np.int32), "subrun": subrun, "gate": (1 + gate % GATES_PER_SUBRUN).astype(np.int32),
            "nth": nth.astype(np.int32)}


def _jagged(flat: np.ndarray, counts: np.ndarray) -> ak.Array:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), ak.contents.NumpyArray(flat)))


def _truth_columns(truth: TruthBatch, book: dict[str, np.ndarray]) -> dict:
    """The mc_* branches (TRUTH_BRANCHES order) for every interaction of ``truth``."""
    valid = truth.pdg != 0
    counts = valid.sum(axis=1).astype(np.int32)
    fs = truth.p4[valid]
    cols = {
        "mc_incomingE": truth.enu.astype(np.float64),
        "mc_intType": truth.int_type.astype(np.int32),
        "mc_current": truth.current.astype(np.int32),
        "mc_incoming": truth.nu_pdg.astype(np.int32),
        "mc_primaryLepton": truth.lepton_pdg.astype(np.int32),
        "mc_Q2": truth.q2.astype(np.float64),
        "mc_w": truth.w.astype(np.float64),
        "mc_targetZ": truth.target_z.astype(np.int32),
        "mc_targetA": truth.target_a.astype(np.int32),
        "mc_vtx": np.ascontiguousarray(truth.vtx, dtype=np.float64),
        "mc_primFSLepton": np.ascontiguousarray(truth.p4[:, 0], dtype=np.float64),
        "mc_nFSPart": counts,
        "mc_FSPartPx": _jagged(np.ascontiguousarray(fs[:, 0]), counts),
        "mc_FSPartPy": _jagged(np.ascontiguousarray(fs[:, 1]), counts),
        "mc_FSPartPz": _jagged(np.ascontiguousarray(fs[:, 2]), counts),
        "mc_FSPartE": _jagged(np.ascontiguousarray(fs[:, 3]), counts),
        "mc_FSPartPDG": _jagged(truth.pdg[valid].astype(np.int32), counts),
        "mc_run": book["run"],
        "mc_subrun": book["subrun"],
        "mc_nthEvtInFile": book["nth"],
    }
    assert list(cols) == [b.name for b in TRUTH_BRANCHES]
    return cols


def _reco_columns(reco: dict, truth_cols: dict, book: dict) -> dict:
    """Assemble the MasterAnaDev tree columns in ``ALL_BRANCHES`` order with their contract dtypes."""
    n = len(book["run"])
    blob_ev, blob_e, blob_pos, blob_t = reco.pop("_blobs")
    blob_counts = np.bincount(blob_ev, minlength=n).astype(np.int32)
    blobs = {"X": blob_pos[:, 0], "Y": blob_pos[:, 1], "Z": blob_pos[:, 2], "T": blob_t, "TotalE": blob_e}
    for field, values in blobs.items():
        reco[f"MasterAnaDev_Blob{field}"] = (np.ascontiguousarray(values), blob_counts)
    reco["ev_run"], reco["ev_subrun"], reco["ev_gate"] = book["run"], book["subrun"], book["gate"]
    cols = {}
    for branch in RECO_BRANCHES:
        value = reco[branch.name]
        dtype = branch.file_dtype
        if isinstance(value, tuple):
            cols[branch.name] = _jagged(np.ascontiguousarray(value[0], dtype=dtype), value[1])
        elif dtype == "i4" and np.asarray(value).dtype.kind == "f":
            cols[branch.name] = np.rint(value).astype(np.int32)  # e.g. muon_fuzz_energy: Int_t MeV in real files
        else:
            cols[branch.name] = np.ascontiguousarray(value, dtype=dtype)
    cols.update(truth_cols)
    assert list(cols) == [b.name for b in ALL_BRANCHES]
    return cols


__all__ = ["write_anatuples", "anatuple_name", "counter_name", "generate_chunk"]
