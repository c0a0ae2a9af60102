"""Helpers of the recipes tests: tiny Parquet datasets made with pyarrow in the converted-dataset schema.

The events carry a learnable signal (E_avail is the summed blob/prong energy, the topology follows the prong PIDs),
a calorimetric estimate that is a smeared version of it and cut tags that are noisy versions of the truth, so tiny
training runs have something to learn without depending on the synthetic ROOT generator.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataset_builder import schema

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO_ROOT = Path(__file__).resolve().parents[2]


def make_events(n: int, seed: int, entry_offset: int = 0) -> pa.Table:
    """`n` events following `schema.PARQUET_SCHEMA` with a learnable E_avail and topology."""
    rng = np.random.default_rng(seed)
    n_blobs = rng.integers(1, 6, n)
    n_prongs = rng.integers(0, 3, n)
    prong_pid = rng.choice([4, 5, 6], size=n_prongs.sum())
    n_obj = 1 + n_blobs + n_prongs
    total = int(n_obj.sum())
    pid = np.empty(total, np.int32)
    feats = rng.normal(0, 1, (total, schema.NUM_OBJECT_FEATURES)).astype(np.float32)
    energy_mev = rng.exponential(300.0, total)
    starts = np.r_[0, np.cumsum(n_obj)[:-1]]
    event_of = np.repeat(np.arange(n), n_obj)
    pos = np.arange(total) - starts[event_of]
    pid[:] = np.where(pos == 0, 1, np.where(pos <= n_blobs[event_of], 3, 0))
    pid[pid == 0] = prong_pid
    energy_mev[pid == 1] = rng.uniform(2000, 8000, n)
    feats[:, 3] = np.log(energy_mev + 1e-6)
    feats[:, 2] = feats[:, 3] - 0.3
    hadronic = np.where(pid != 1, energy_mev, 0.0)
    e_avail = np.bincount(event_of, weights=hadronic, minlength=n) / 1000.0
    n_pi = np.bincount(event_of, weights=(pid == 4).astype(float), minlength=n).astype(int)
    n_em = np.bincount(event_of, weights=(pid == 5).astype(float), minlength=n).astype(int)
    topology = np.select([n_pi == 1, n_pi > 1, n_em == 1], [0, 1, 2], default=3).astype(np.int32)
    nc = rng.random(n) < 0.1
    topology[nc] = 4
    event = rng.normal(0, 1, (n, schema.NUM_EVENT_FEATURES)).astype(np.float32)
    event[:, 9] = n_pi
    calo = 1.17 * e_avail * rng.normal(0.85, 0.35, n)
    calo = np.where(rng.random(n) < 0.03, -1.0, np.clip(calo, 0, None))

    def noisy(truth, flip):
        return np.where(rng.random(n) < flip, ~truth, truth)

    cols = {
        "source_file": pa.array([f"fixture_{seed}.root"] * n),
        "entry": pa.array(np.arange(entry_offset, entry_offset + n, dtype=np.int64)),
        "run": pa.array(np.full(n, 1, np.int32)), "subrun": pa.array(np.full(n, 1, np.int32)),
        "gate": pa.array(np.arange(n, dtype=np.int32)),
        "n_objects": pa.array(n_obj.astype(np.int32)),
        "object_pid": pa.ListArray.from_arrays(pa.array(np.r_[starts, total].astype(np.int32)), pa.array(pid)),
        "object_features": pa.ListArray.from_arrays(
            pa.array(np.r_[starts, total].astype(np.int32)),
            pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()), schema.NUM_OBJECT_FEATURES)),
        "event_features": pa.FixedSizeListArray.from_arrays(pa.array(event.ravel()), schema.NUM_EVENT_FEATURES),
        "has_muon": pa.array(np.ones(n, bool)),
    }
    truth = {
        "enu": e_avail + 3.0, "e_avail": e_avail, "e_avail_reference": e_avail + 0.14 * n_pi, "q0": e_avail + 0.1,
        "q3": e_avail * rng.uniform(0.8, 2.0, n), "q3_hybrid": e_avail * 1.3, "q2": e_avail, "w": rng.uniform(0.9, 4.2, n),
        "w_genie": rng.uniform(0.9, 4.0, n), "int_type": np.full(n, 1), "current": np.where(nc, 2, 1),
        "nu_pdg": np.full(n, 14), "lepton_pdg": np.full(n, 13), "n_pi_plus": n_pi, "n_pi_minus": np.zeros(n),
        "n_pi0": (topology == 2).astype(int), "pion_energy": np.where(n_pi == 1, rng.uniform(0.2, 2.0, n), 0.0),
        "pion_kinetic_energy": np.where(n_pi == 1, rng.uniform(0.1, 1.9, n), 0.0),
        "pion_theta": rng.uniform(0, 1.5, n), "topology": topology, "is_cc1pi_charged": topology == 0,
        "is_ccnpi_charged": np.isin(topology, (0, 1)), "is_cc1pi0": topology == 2,
    }
    baselines = {
        "calo_e_avail": calo, "tag_cc1pi_charged": noisy(topology == 0, 0.25),
        "tag_ccnpi_charged": noisy(np.isin(topology, (0, 1)), 0.25), "tag_cc1pi0": noisy(topology == 2, 0.2),
        "passes_cc_inclusive": rng.random(n) < 0.9,
    }
    for name, values in {**truth, **baselines}.items():
        cols[name] = pa.array(np.asarray(values).astype(schema.PARQUET_SCHEMA.field(name).type.to_pandas_dtype()))
    cols["event_weight"] = pa.array(np.ones(n, np.float32))  # schema v2 column (central-value MC weight)
    return pa.Table.from_pydict(cols, schema=schema.PARQUET_SCHEMA)


def write_dataset(root: Path, sizes: dict[str, int], seed: int = 0, files_per_split: int = 1) -> Path:
    """Write `<root>/data/<split>/part-0000k.parquet` shards (the converter layout) for each split; returns `root`."""
    offset = 0
    for i, (split, n) in enumerate(sizes.items()):
        table = make_events(n, seed + 17 * i, entry_offset=offset)
        offset += n
        bounds = np.linspace(0, n, files_per_split + 1).astype(int)
        (root / "data").mkdir(parents=True, exist_ok=True)
        for k in range(files_per_split):
            part = table.slice(bounds[k], bounds[k + 1] - bounds[k])
            (root / "data" / split).mkdir(parents=True, exist_ok=True)
            pq.write_table(part, root / "data" / split / f"part-{k:05d}.parquet")
    return root



def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def set_column(root: Path, split: str, name: str, values_of, dtype=None) -> None:
    """Replace (or add) column `name` in every shard of `split`: `values_of(table)` gives the new values."""
    for shard in sorted((root / "data" / split).glob("*.parquet")):
        table = pq.read_table(shard)
        array = pa.array(values_of(table), type=dtype or (table.schema.field(name).type if name in
                                                           table.schema.names else None))
        table = table.set_column(table.schema.get_field_index(name), name, array) if name in table.schema.names \
            else table.append_column(name, array)
        pq.write_table(table, shard)


def copy_dataset(source: Path, target: Path) -> Path:
    """A private copy of a dataset folder (tests that edit columns must not touch the session fixture)."""
    import shutil

    shutil.copytree(source, target)
    return target
