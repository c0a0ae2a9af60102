"""One loader for our corpus, JetClass-II Parquet (local and streamed from a Hub) and JetClass-I ROOT files, and the
jet collator's batch layout (docs/tensor-layout.md, OmniLearned's jet convention)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dataset_builder.jet_collator import JetCollator, jet_pid_index
from dataset_builder.jet_data import JETCLASS1_LABEL_BRANCHES, PART_INPUT_COLUMNS, load_jet_split


def _first_batch(split, collator, n=32):
    return collator.collate_arrow(next(iter(split.with_format("arrow").iter(batch_size=n))))


def _write_jetclass1_root(path, table: pa.Table, n: int, extra_label_entry: int | None = None,
                          drop: str | None = None):
    """A JetClass-I-layout ROOT file (tree `tree`: part_* jagged branches, one-hot label_* branches, jet_*)."""
    import awkward as ak
    import uproot

    rows = table.slice(0, n).to_pydict()
    branches = {c: ak.Array(rows[c]) for c in PART_INPUT_COLUMNS + ("part_pz",) if c != drop}
    labels = np.array(rows["jet_label"])
    for k, name in enumerate(JETCLASS1_LABEL_BRANCHES):
        onehot = (labels == k).astype(np.float32)
        if extra_label_entry is not None and k == 0:
            onehot[extra_label_entry] = 1.0 if labels[extra_label_entry] != 0 else onehot[extra_label_entry]
        branches[name] = onehot
    for c in ("jet_pt", "jet_eta", "jet_phi", "jet_energy"):
        branches[c] = np.array(rows[c], np.float32)
    branches["jet_nparticles"] = np.array(rows["jet_nparticles"], np.float32)  # JetClass-I stores floats
    branches["jet_sdmass"] = np.array(rows["jet_mass"], np.float32)
    with uproot.recreate(path) as f:
        f["tree"] = branches
    return path


def _corpus_table(corpus, split="train"):
    return pa.concat_tables([pq.read_table(p) for p in sorted((corpus / split).glob("*.parquet"))])


def test_collator_gives_the_backbone_batch_layout_in_omnilearned_convention(jet_corpus):
    table = _corpus_table(jet_corpus).slice(0, 5)
    batch = JetCollator("classification", max_particles=40).collate_arrow(table)
    assert set(batch) == {"object_features", "object_pid", "attention_mask", "event_features", "labels"}
    n = min(int(table.column("jet_nparticles").to_numpy().max()), 40)
    assert batch["object_features"].shape == (5, n, 9) and batch["object_features"].dtype == torch.float32
    assert batch["object_pid"].dtype == torch.int64 and batch["attention_mask"].dtype == torch.bool
    assert batch["event_features"].shape == (5, 16) and not batch["event_features"].any()
    row = table.slice(0, 1).to_pydict()
    k = min(len(row["part_px"][0]), 40)
    pt = np.hypot(row["part_px"][0], row["part_py"][0])
    order = np.argsort(-pt, kind="stable")[:k]
    feats = batch["object_features"][0, :k].numpy()
    np.testing.assert_allclose(feats[:, 0], np.array(row["part_deta"][0])[order], rtol=1e-6)  # Δη to the jet axis
    np.testing.assert_allclose(feats[:, 1], np.array(row["part_dphi"][0])[order], rtol=1e-6)
    np.testing.assert_allclose(feats[:, 2], np.log(pt[order]), rtol=1e-5)  # log pT / GeV
    np.testing.assert_allclose(feats[:, 3], np.log(np.array(row["part_energy"][0])[order]), rtol=1e-5)
    np.testing.assert_allclose(feats[:, 8], np.array(row["part_charge"][0])[order])
    assert batch["attention_mask"][0].sum() == k and not batch["object_features"][0, k:].any()
    assert batch["labels"].tolist() == table.column("jet_label").to_pylist()
    real = batch["object_pid"][batch["attention_mask"]]
    assert real.min() >= 1 and real.max() <= 8 and not batch["object_pid"][~batch["attention_mask"]].any()


def test_pid_index_follows_the_jet_table():
    charge = np.array([1, -1, 0, 0, -1, 1, -1, 1, 0, 1])
    flags = np.zeros((5, 10))
    flags[3, 0] = flags[3, 1] = 1  # charged hadrons
    flags[4, 2] = 1  # neutral hadron
    flags[2, 3] = 1  # photon
    flags[0, 4] = flags[0, 5] = 1  # electron, positron
    flags[1, 6] = flags[1, 7] = 1  # mu-, mu+
    # unflagged: charged -> charged hadron by sign, neutral -> neutral hadron
    pid = jet_pid_index(charge, flags[0], flags[1], flags[2], flags[3], flags[4])
    assert pid.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 3, 1]


def test_jetclass1_root_files_load_like_the_parquet(jet_corpus, tmp_path):
    table = _corpus_table(jet_corpus)
    _write_jetclass1_root(tmp_path / "val_5M" / "HToBB_120.root", table, 20)
    (tmp_path / "val_5M").mkdir(exist_ok=True)
    split = load_jet_split(str(tmp_path), "validation")
    collator = JetCollator("classification")
    from_root = _first_batch(split, collator, 20)
    from_parquet = collator.collate_arrow(table.slice(0, 20))
    for key in from_parquet:
        torch.testing.assert_close(from_root[key], from_parquet[key], msg=key)


def test_root_with_a_missing_branch_or_two_labels_names_it(jet_corpus, tmp_path):
    from dataset_builder.jet_data import read_root_chunks

    table = _corpus_table(jet_corpus)
    bad = _write_jetclass1_root(tmp_path / "nod0.root", table, 5, drop="part_d0val")
    with pytest.raises(KeyError, match="nod0.root.*part_d0val"):
        next(read_root_chunks([str(bad)]))
    labels = np.array(table.column("jet_label").to_pylist()[:5])
    entry = int(np.flatnonzero(labels != 0)[0])
    two = _write_jetclass1_root(tmp_path / "two.root", table, 5, extra_label_entry=entry)
    with pytest.raises(ValueError, match=f"two.root: entry {entry} has 2.0 label_"):
        next(read_root_chunks([str(two)]))


def test_streams_a_jetclass2_layout_dataset_from_the_hub(hub, jet_corpus):
    from huggingface_hub import HfApi

    repo = f"{hub.user}/jetclass2-layout"
    api = HfApi()
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=str(jet_corpus), repo_id=repo, repo_type="dataset")
    streamed = load_jet_split(repo, "train")
    assert type(streamed).__name__ == "IterableDataset"
    collator = JetCollator("classification")
    remote = _first_batch(streamed, collator, 16)
    local = _first_batch(load_jet_split(str(jet_corpus), "train"), collator, 16)
    for key in local:
        torch.testing.assert_close(remote[key], local[key], msg=key)


def test_missing_columns_and_sources_are_clear_errors(jet_corpus, tmp_path):
    table = _corpus_table(jet_corpus).drop_columns(["part_charge"])
    with pytest.raises(KeyError, match="missing columns \\['part_charge'\\]"):
        JetCollator().collate_arrow(table)
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        load_jet_split(str(tmp_path / "nowhere"), "train")
