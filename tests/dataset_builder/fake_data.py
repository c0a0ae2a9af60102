"""Small converted-dataset folders written directly with pyarrow (test data for the `datasets`/collator/card tests).

`write_fake_dataset(root, events_per_split, seed)` writes `root/data/<split>/part-XXXXX.parquet` with exactly
`schema.PARQUET_SCHEMA` (random but valid rows: objects ordered muon, photons, blobs, prongs; PIDs in 1..8;
labels consistent with pion counts) plus `root/manifest.json`, i.e. the converter's output layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataset_builder import schema

DEFAULT_SPLIT_SIZES = {"train": 240, "validation": 60, "test": 60, "shifted": 40}


def fake_table(n: int, seed: int, source_file: str = "fake_000.root", with_truth: bool = True) -> pa.Table:
    """`n` random valid events with the converted-dataset schema."""
    rng = np.random.default_rng(seed)
    has_muon = rng.random(n) < 0.8
    n_photons = rng.integers(0, schema.MAX_PHOTONS + 1, n)
    n_blobs = rng.integers(0, schema.MAX_BLOBS + 1, n)
    n_prongs = rng.integers(0, schema.MAX_PRONGS + 1, n)
    counts = has_muon.astype(int) + n_photons + n_blobs + n_prongs
    counts[counts == 0] = 1  # keep every event non-empty: one blob
    n_blobs = counts - has_muon - n_photons - n_prongs
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    total = int(offsets[-1])
    # PID per object in canonical order: muon, photons, blobs, prongs (prongs 4/5/6, the last may be aggregated)
    event_of = np.repeat(np.arange(n), counts)
    pos = np.arange(total) - offsets[:-1][event_of]
    mu, ph, bl = has_muon[event_of].astype(int), n_photons[event_of], n_blobs[event_of]
    pid = np.where(pos < mu, 1, np.where(pos < mu + ph, 2, np.where(pos < mu + ph + bl, 3, rng.integers(4, 9, total))))
    features = rng.normal(size=(total, schema.NUM_OBJECT_FEATURES)).astype(np.float32)
    event_features = rng.normal(size=(n, schema.NUM_EVENT_FEATURES)).astype(np.float32)

    columns = {
        "source_file": pa.array([source_file] * n),
        "entry": pa.array(np.arange(n, dtype=np.int64) + seed * 100_000),
        "run": pa.array(np.full(n, 10_000 + seed, np.int32)),
        "subrun": pa.array(rng.integers(1, 50, n).astype(np.int32)),
        "gate": pa.array(rng.integers(1, 700, n).astype(np.int32)),
        "n_objects": pa.array(counts.astype(np.int32)),
        "object_pid": pa.ListArray.from_arrays(pa.array(offsets), pa.array(pid.astype(np.int32))),
        "object_features": pa.ListArray.from_arrays(
            pa.array(offsets), pa.FixedSizeListArray.from_arrays(pa.array(features.ravel()), schema.NUM_OBJECT_FEATURES)),
        "event_features": pa.FixedSizeListArray.from_arrays(pa.array(event_features.ravel()), schema.NUM_EVENT_FEATURES),
        "has_muon": pa.array(has_muon),
    }
    truth = _fake_truth(rng, n) if with_truth else {}
    for name, typ in {**schema.TRUTH_COLUMNS, **schema.BASELINE_COLUMNS}.items():
        if name in truth:
            columns[name] = pa.array(truth[name], type=typ)
        elif name in schema.BASELINE_COLUMNS:
            columns[name] = pa.array(rng.random(n) < 0.3) if typ == pa.bool_() else pa.array(rng.gamma(2, 0.4, n), typ)
        else:
            columns[name] = pa.nulls(n, typ)
    columns["event_weight"] = pa.array(rng.lognormal(0.0, 0.05, n), pa.float32()) if with_truth \
        else pa.nulls(n, pa.float32())
    return pa.table(columns, schema=schema.PARQUET_SCHEMA)


def _fake_truth(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    current = np.where(rng.random(n) < 0.85, 1, 2)
    n_pip, n_pim, n_pi0 = rng.poisson(0.5, n), rng.poisson(0.2, n), rng.poisson(0.3, n)
    n_charged = n_pip + n_pim
    topology = np.where(n_charged == 1, 0, np.where(n_charged > 1, 1, np.where(n_pi0 == 1, 2, 3)))
    topology = np.where(current == 1, topology, 4)
    enu = rng.gamma(4, 1.5, n)
    e_avail = np.minimum(rng.gamma(1.5, 0.4, n), enu * 0.9)
    return {
        "enu": enu, "e_avail": e_avail, "e_avail_reference": e_avail + 0.14 * n_charged, "q0": e_avail * 1.1,
        "q3": e_avail * 1.3 + 0.2, "q3_hybrid": e_avail * 1.3 + 0.25, "q2": rng.gamma(2, 0.2, n),
        "w": rng.uniform(0.9, 3, n), "w_genie": rng.uniform(0.9, 3, n), "int_type": rng.integers(1, 5, n),
        "current": current, "nu_pdg": np.full(n, 14), "lepton_pdg": np.where(current == 1, 13, 14),
        "n_pi_plus": n_pip, "n_pi_minus": n_pim, "n_pi0": n_pi0,
        "pion_energy": np.where(n_charged == 1, rng.uniform(0.2, 2, n), 0.0),
        "pion_kinetic_energy": np.where(n_charged == 1, rng.uniform(0.05, 1.8, n), 0.0),
        "pion_theta": np.where(n_charged == 1, rng.uniform(0, 3.14, n), 0.0),
        "topology": topology, "is_cc1pi_charged": topology == 0, "is_ccnpi_charged": np.isin(topology, (0, 1)),
        "is_cc1pi0": topology == 2,
    }


def write_fake_dataset(root: Path, sizes: dict[str, int] | None = None, seed: int = 0, files_per_split: int = 2,
                       row_group_size: int = 50) -> Path:
    """Converter-layout folder with Parquet shards per split and a manifest."""
    sizes = sizes or DEFAULT_SPLIT_SIZES
    manifest = {  # the keys convert.build_manifest writes
        "converter_version": "fake", "schema": schema.PARQUET_SCHEMA.to_string(show_schema_metadata=False),
        "options": {"selection": {"int_types": [1, 2, 3, 4, 8]},
                    "tokens": {"max_blobs": schema.MAX_BLOBS, "max_prongs": schema.MAX_PRONGS}},
        "source_files": [], "events_per_split": dict(sizes), "selection": {"read": sum(sizes.values())},
        "truncation": {"blobs_merged": 0}, "rejected": {}, "shards": []}
    for split_idx, (split, n) in enumerate(sizes.items()):
        (root / "data" / split).mkdir(parents=True, exist_ok=True)
        per_file = np.array_split(np.arange(n), files_per_split)
        for file_idx, rows in enumerate(per_file):
            table = fake_table(len(rows), seed * 1000 + split_idx * 10 + file_idx, f"fake_{split}_{file_idx}.root")
            path = root / "data" / split / f"part-{file_idx:05d}.parquet"
            pq.write_table(table, path, row_group_size=row_group_size)
            manifest["shards"].append({"path": str(path.relative_to(root)), "split": split, "rows": len(rows)})
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root
