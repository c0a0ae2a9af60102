"""The Pythia jet corpus: physics of the generated jets, determinism, the JetClass-II layout and its card."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from dataset_builder.jets import (JET_CLASSES, JET_SCHEMA, generate_class, pythia_seed, rows_to_table)


def _table(corpus, split="train"):
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(p) for p in sorted((corpus / split).glob("*.parquet"))])


def _all(corpus):
    import pyarrow as pa

    return pa.concat_tables([_table(corpus, s) for s in ("train", "validation", "test")])


def test_corpus_has_the_jetclass2_columns_and_every_class(jet_corpus):
    table = _all(jet_corpus)
    assert table.schema.equals(JET_SCHEMA)
    assert [f.name for f in table.schema if f.name.startswith("part_")][:6] == \
        ["part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi"]
    labels = table.column("jet_label").to_numpy()
    assert np.bincount(labels, minlength=10).tolist() == [12] * 10  # 12 per class, all 10 JetClass-I classes
    assert {s: len(list((jet_corpus / s).glob("*.parquet"))) for s in ("train", "validation", "test")} == \
        {"train": 1, "validation": 1, "test": 1}


def test_jets_are_in_the_kinematic_window_and_their_constituents_sum_to_the_jet(jet_corpus):
    t = _all(jet_corpus).to_pydict()
    pt, eta = np.array(t["jet_pt"]), np.array(t["jet_eta"])
    assert pt.min() >= 500 and pt.max() <= 1000 and np.abs(eta).max() < 2.0
    for i in range(len(pt)):
        px, py = np.sum(t["part_px"][i]), np.sum(t["part_py"][i])  # E-scheme recombination: jet = sum
        assert np.hypot(px, py) == pytest.approx(pt[i], rel=1e-4)
        assert len(t["part_px"][i]) == t["jet_nparticles"][i]
        dr = np.hypot(t["part_deta"][i], t["part_dphi"][i])
        part_pt = np.hypot(t["part_px"][i], t["part_py"][i])
        # anti-kT R = 0.8 clusters in rapidity: in pseudorapidity only slow massive hadrons stray outside
        assert part_pt[dr < 0.8].sum() > 0.99 * part_pt.sum()
        assert np.all(np.diff(part_pt) <= 1e-3)  # sorted by decreasing pT
        flags = np.stack([t[f"part_is{k}"][i] for k in ("Electron", "Muon", "Photon", "ChargedHadron",
                                                         "NeutralHadron")])
        assert np.all(flags.sum(0) <= 1)
        assert not np.any(t["part_d0val"][i]) and not np.any(t["part_dzerr"][i])  # no detector: 0
    charged = np.concatenate(t["part_isChargedHadron"]) > 0
    assert np.all(np.concatenate(t["part_charge"])[charged] != 0)


def test_truth_matched_jet_masses_peak_at_their_resonances(jet_corpus):
    t = _all(jet_corpus).to_pydict()
    mass, label = np.array(t["jet_mass"]), np.array(t["jet_label"])
    median = {name: float(np.median(mass[label == i])) for i, name in enumerate(JET_CLASSES)}
    assert 110 < median["Hbb"] < 135 and 110 < median["H4q"] < 140  # m_H = 125 GeV (b semileptonic: slightly low)
    assert 70 < median["Wqq"] < 90 and 80 < median["Zqq"] < 100
    assert 150 < median["Tbqq"] < 190
    assert median["QCD"] < 90  # QCD jets are light


def test_generation_is_deterministic_by_seed():
    seed = pythia_seed(5, 0, JET_CLASSES.index("Wqq"))
    first, again = generate_class("Wqq", 2, seed), generate_class("Wqq", 2, seed)
    other = generate_class("Wqq", 2, pythia_seed(5, 1, JET_CLASSES.index("Wqq")))
    a, b, c = (rows_to_table(r).to_pydict() for r in (first, again, other))
    assert a == b
    assert a["jet_pt"] != c["jet_pt"]
    assert len({pythia_seed(s, w, k) for s in range(3) for w in range(4) for k in range(10)}) == 120


def test_dataset_card_states_what_the_corpus_lacks_and_loads_as_on_the_hub(jet_corpus):
    from datasets import load_dataset

    card = (jet_corpus / "README.md").read_text()
    for fact in ("No detector simulation", "part_d0val", "Fewer classes", "188", "jet_sdmass", "MPI off"):
        assert fact in card, fact
    split = load_dataset(str(jet_corpus), split="validation")
    assert split.num_rows == pq.read_table(next((jet_corpus / "validation").glob("*.parquet"))).num_rows


def test_bad_arguments_are_one_line_errors(tmp_path):
    from dataset_builder.jets import generate_jets

    with pytest.raises(ValueError, match="unknown jet classes \\['Hzz'\\]"):
        generate_jets(tmp_path, 10, classes=("QCD", "Hzz"))
    with pytest.raises(ValueError, match="--jets >= 1"):
        generate_jets(tmp_path, 0)


def test_generate_jets_cli_with_two_workers(tmp_path):
    import subprocess
    import sys

    from recipes_test_helpers import REPO_ROOT

    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, "-m", "recipes.cli", "generate-jets", str(out), "--jets", "8",
                             "--classes", "QCD", "Zqq", "--workers", "2", "--seed", "3", "--no-progress"],
                            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert {f.split("/")[1].split("-")[1] for f in files} == {"w000", "w001"}  # one output per worker process
    labels = np.concatenate([pq.read_table(out / f).column("jet_label").to_numpy() for f in files])
    assert sorted(np.bincount(labels)[[0, 6]].tolist()) == [4, 4]  # 2 per class and worker
