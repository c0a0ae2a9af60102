"""Fixtures of the Space tests: a small converted-events Parquet file (schema.PARQUET_SCHEMA) and the app modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_builder import schema

from explorer_test_helpers import APP_DIR


def make_events_table(n_events: int = 60, seed: int = 0) -> pa.Table:
    """Random but schema-valid events: muon + photons + blobs + prongs, truth and baselines filled."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_events):
        n_photons, n_blobs, n_prongs = rng.integers(0, 3), rng.integers(1, 6), rng.integers(0, 4)
        pid = [1] + [2] * n_photons + [3] * n_blobs + list(rng.choice([4, 5, 6], size=n_prongs))
        n = len(pid)
        feats = np.zeros((n, schema.NUM_OBJECT_FEATURES), np.float32)
        feats[:, 0] = rng.uniform(1.0, 4.0, n)  # eta: forward-going
        feats[:, 1] = rng.uniform(-np.pi, np.pi, n)
        energy = rng.uniform(20.0, 3000.0, n)
        feats[:, 2] = np.log(energy * 0.3 + 1e-6)
        feats[:, 3] = np.log(energy + 1e-6)
        placed = np.array(pid) >= 3  # blobs and prongs carry a position
        feats[placed, 5] = rng.uniform(-0.08, 0.08, placed.sum())
        feats[placed, 6] = rng.uniform(-0.08, 0.08, placed.sum())
        feats[placed, 7] = rng.uniform(0.6, 0.85, placed.sum())
        feats[placed, 8] = rng.uniform(0.0, 0.002, placed.sum())
        topology = int(rng.integers(0, schema.NUM_TOPOLOGIES))
        rows.append({
            "source_file": "synthetic.root", "entry": i, "run": 110000, "subrun": 1, "gate": i + 1,
            "n_objects": n, "object_pid": [int(p) for p in pid], "object_features": feats.tolist(),
            "event_features": rng.normal(0, 1, schema.NUM_EVENT_FEATURES).astype(np.float32).tolist(),
            "has_muon": True, "enu": float(rng.uniform(2, 10)), "e_avail": float(rng.uniform(0.05, 3.0)),
            "e_avail_reference": None, "q0": float(rng.uniform(0.1, 3)), "q3": float(rng.uniform(0.1, 3.5)),
            "q3_hybrid": None, "q2": float(rng.uniform(0.05, 2)), "w": float(rng.uniform(0.9, 3.5)),
            "w_genie": None, "int_type": int(rng.integers(1, 5)), "current": 2 if topology == 4 else 1,
            "nu_pdg": 14, "lepton_pdg": 13, "n_pi_plus": int(topology in (0, 1)), "n_pi_minus": 0,
            "n_pi0": int(topology == 2), "pion_energy": 0.0, "pion_kinetic_energy": 0.0, "pion_theta": 0.0,
            "topology": topology, "is_cc1pi_charged": topology == 0, "is_ccnpi_charged": topology in (0, 1),
            "is_cc1pi0": topology == 2, "calo_e_avail": float(rng.uniform(0.05, 3.0)),
            "tag_cc1pi_charged": bool(rng.integers(0, 2)), "tag_ccnpi_charged": bool(rng.integers(0, 2)),
            "tag_cc1pi0": bool(rng.integers(0, 2)), "passes_cc_inclusive": True,
        })
    return pa.Table.from_pylist(rows, schema=schema.PARQUET_SCHEMA)


@pytest.fixture(scope="session")
def events_parquet(tmp_path_factory) -> Path:
    """A 60-event Parquet file of the converted-dataset schema."""
    path = tmp_path_factory.mktemp("events") / "events.parquet"
    pq.write_table(make_events_table(), path, row_group_size=25)
    return path


@pytest.fixture(scope="session")
def app_module():
    """spaces/event_explorer/app.py imported by path (it is not a package)."""
    spec = importlib.util.spec_from_file_location("event_explorer_app", APP_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def explorer(app_module):
    """The explorer's sibling modules (importable once app.py put its folder on sys.path)."""
    import explorer_data
    import explorer_display
    import explorer_models
    import explorer_schema
    import explorer_ui

    return type("Explorer", (), {"data": explorer_data, "display": explorer_display, "models": explorer_models,
                                 "schema": explorer_schema, "ui": explorer_ui, "app": app_module})
