"""Shared pieces of the Space tests (a uniquely named module: every test folder has its own conftest): the app
folder, writers of valid and broken converted-events Parquet files, and loopback-Hub repos (tiny models, a malicious
remote-code repo, a dataset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataset_builder import schema

APP_DIR = Path(__file__).resolve().parents[2] / "spaces" / "event_explorer"


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


def write_broken_parquet(table: pa.Table, path, kind: str) -> None:
    """A Parquet file with a string n_objects column, a null object_features row, or a corrupt data page."""
    if kind == "string_n_objects":
        strings = pa.array([str(n) for n in table["n_objects"].to_pylist()], pa.string())
        table = table.set_column(table.schema.get_field_index("n_objects"), "n_objects", strings)
    elif kind == "null_features":
        values = table["object_features"].to_pylist()
        values[4] = None
        column = pa.array(values, table.schema.field("object_features").type)
        table = table.set_column(table.schema.get_field_index("object_features"), "object_features", column)
    pq.write_table(table, path, compression="none")
    if kind == "corrupt_page":  # overwrite the first page header of object_features (the footer stays valid)
        group = pq.ParquetFile(path).metadata.row_group(0)
        chunk = next(group.column(j) for j in range(group.num_columns)
                     if group.column(j).path_in_schema.startswith("object_features"))
        data = bytearray(path.read_bytes())
        data[chunk.data_page_offset:chunk.data_page_offset + 64] = b"\xff" * 64
        path.write_bytes(bytes(data))


def write_expanding_parquet(path, n_objects: int) -> None:
    """A tiny file whose single event holds `n_objects` all-zero objects: kB on disk, 36 B per object decoded."""
    table = make_events_table(1)
    features = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n_objects * schema.NUM_OBJECT_FEATURES,
                                                                    np.float32)), schema.NUM_OBJECT_FEATURES)
    columns = {"n_objects": pa.array([n_objects], pa.int32()),
               "object_pid": pa.array([[3] * n_objects], pa.list_(pa.int32())),
               "object_features": pa.ListArray.from_arrays(pa.array([0, n_objects], pa.int32()), features)}
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column.cast(table.schema.field(name).type))
    pq.write_table(table, path, compression="zstd")


TINY_MLP = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1)


def push_tiny_model(folder: Path, repo: str, task: str, seed: int, events: Path | None = None):
    """A tiny event-MLP checkpoint evaluated by `recipes.evaluate` on `events` (eval_results.json with bootstrap and
    Clopper-Pearson uncertainties, and its real plots), uploaded to `repo`."""
    import shutil

    import torch
    from huggingface_hub import HfApi

    from modeling import build_model
    from recipes.evaluate import evaluate

    torch.manual_seed(seed)
    model = build_model("mlp", task, **TINY_MLP).eval()
    model.save_pretrained(folder)
    data = folder.parent / f"{folder.name}-data" / "test"
    data.mkdir(parents=True, exist_ok=True)
    if events is None:
        pq.write_table(make_events_table(), data / "events.parquet")
    else:
        shutil.copy(events, data / "events.parquet")
    evaluate(model=str(folder), data=str(data.parent), out_dir=str(folder), n_bootstrap=20, device="cpu")
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo)
    return model


def write_transfer_study(path: Path) -> dict:
    """A transfer-study file (minerva_common.transfer_study layout): rw vs jet-pretrained, full/frozen, 3 label
    budgets, 2 seeds, both tasks; the metric improves with labels and with pretraining (made-up numbers)."""
    from minerva_common.transfer_study import dump_transfer_study

    rng = np.random.default_rng(7)
    cells = []
    for task in ("regression", "classification"):
        for init in ("rw", "jet"):
            for mode in ("full", "frozen"):
                for labels in (1000, 3000, 10000):
                    for seed in (0, 1):
                        gain = 0.05 * np.log10(labels / 1000) + (0.03 if init == "jet" else 0.0)
                        metrics = ({"iqr": 0.40 - gain + rng.normal(0, 0.005), "iqr_low_q3": 0.45 - gain}
                                   if task == "regression" else
                                   {"tpr_at_cut_fpr": {s: 0.30 + gain + rng.normal(0, 0.005)
                                                       for s in schema.SIGNAL_CLASSES}})
                        cells.append({"task": task, "backbone": "omnilearned", "size": "tiny", "init": init,
                                      "mode": mode, "labels": labels, "seed": seed, "steps": 200,
                                      "train_flops": 1e9 * labels / 1000, "metrics": metrics})
    study = {"schema": "minerva-fm/transfer-study", "version": 1, "config": {"steps": 200},
             "dataset": {"path": "runs/study/data", "origin": "synthetic"},
             "pretraining": {"jet": {"steps": 500, "train_flops": 3e10, "corpus": "Pythia jets (2k)",
                                     "objective": "jet classification"}},
             "baselines": {"regression": {"calorimetric": {"iqr": 0.42, "iqr_low_q3": 0.5}},
                           "classification": {"cut": {"tpr_at_cut_fpr": {s: 0.25 for s in schema.SIGNAL_CLASSES}}}},
             "cells": cells}
    dump_transfer_study(study, path)
    return study


MALICIOUS_CODE = """from pathlib import Path
Path({marker!r}).write_text("remote code of a visitor's repo ran in the Space")
from transformers import PretrainedConfig, PreTrainedModel
class EvilConfig(PretrainedConfig):
    model_type = "evil"
class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""


def push_malicious_repo(folder: Path, repo: str, marker: Path) -> None:
    """A model repo whose remote code (auto_map) writes `marker` when imported."""
    from huggingface_hub import HfApi

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modeling_evil.py").write_text(MALICIOUS_CODE.format(marker=str(marker)))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel",
                     "AutoModelForSequenceClassification": "modeling_evil.EvilModel"}}))
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo)


def dataset_repo_with(path: Path, repo: str) -> str:
    """A dataset repo on the loopback Hub whose test split is the Parquet file `path`."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    api.upload_file(path_or_fileobj=str(path), path_in_repo="data/test-00000-of-00001.parquet", repo_id=repo,
                    repo_type="dataset")
    return repo
