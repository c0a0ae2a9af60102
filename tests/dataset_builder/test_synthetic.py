"""Synthetic AnaTuple generator: real ROOT files read back with uproot, contract branches, physics sanity."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot

from dataset_builder.branches import (
    ALL_BRANCHES, GENERATOR_KEY, META_BRANCHES, META_TREE, RECO_TREE, TRUTH_BRANCHES, TRUTH_TREE,
)
from dataset_builder.synthetic import POT_PER_RECO_ROW, write_anatuples

N_EVENTS = 3000
M_MU, M_P, M_PI, M_PI0 = 105.6584, 938.2721, 139.5704, 134.9768
AK_DTYPE = {"f8": "float64", "i4": "int32"}


def _read(path, tree=RECO_TREE):
    with uproot.open(path) as f:
        return f[tree].arrays(library="ak")


def _num(array) -> np.ndarray:
    return ak.to_numpy(ak.num(array))


def _e_avail(a) -> np.ndarray:
    """MINERvA available energy (MeV): kinetic p and pi+-, total pi0/gamma/e, no neutrons (test-local definition)."""
    pdg, e = a.mc_FSPartPDG, a.mc_FSPartE
    apdg = abs(pdg)
    kin = ak.sum(ak.where(apdg == 2212, e - M_P, 0.0), axis=1) + ak.sum(ak.where(apdg == 211, e - M_PI, 0.0), axis=1)
    total = ak.sum(ak.where((apdg == 111) | (apdg == 22) | (apdg == 11), e, 0.0), axis=1)
    return ak.to_numpy(kin + total)


@pytest.fixture(scope="module")
def nominal(tmp_path_factory):
    return write_anatuples(tmp_path_factory.mktemp("nominal"), N_EVENTS, seed=7)[0]


@pytest.fixture(scope="module")
def reco(nominal):
    return _read(nominal)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    return write_anatuples(tmp_path_factory.mktemp("shifted"), N_EVENTS, seed=7, shifted=True)[0]


def test_file_names_trees_and_meta(nominal):
    assert nominal.name == "MasterAnaDev_mc_AnaTuple_run00110000_Playlist.root"
    assert not [p for p in nominal.parent.iterdir() if p != nominal]  # no temporary files left behind
    with uproot.open(nominal) as f:
        assert sorted(f.keys(cycle=False)) == sorted([RECO_TREE, TRUTH_TREE, META_TREE, GENERATOR_KEY])
        generator = json.loads(str(f[GENERATOR_KEY]))  # the mark of a synthetic file (real AnaTuples lack it)
        n_reco, n_truth = f[RECO_TREE].num_entries, f[TRUTH_TREE].num_entries
        meta = f[META_TREE].arrays([b.name for b in META_BRANCHES], library="np")
    assert n_reco == N_EVENTS
    assert generator["synthetic"] and generator["program"] == "minerva-fm generate" and generator["reco_rows"] == n_reco \
        and generator["seed"] == 7
    assert n_truth > n_reco  # the Truth tree also holds unreconstructed interactions
    assert meta["Total_Reco_Entries"][0] == n_reco and meta["Total_Truth_Entries"][0] == n_truth
    assert meta["POT_Used"][0] == pytest.approx(N_EVENTS * POT_PER_RECO_ROW)
    assert meta["POT_Total"][0] >= meta["POT_Used"][0] > 0


@pytest.mark.parametrize("tree_name, branches", [(RECO_TREE, ALL_BRANCHES), (TRUTH_TREE, TRUTH_BRANCHES)])
def test_every_contract_branch_has_its_dtype_and_shape(nominal, tree_name, branches):
    arrays = _read(nominal, tree_name)
    for branch in branches:
        assert branch.name in arrays.fields, f"{tree_name} lacks {branch.name}"
        typ = str(ak.type(arrays[branch.name]).content)
        dtype = AK_DTYPE[branch.file_dtype]
        expected = {"scalar": dtype, "fixed[4]": f"4 * {dtype}"}.get(branch.shape, f"var * {dtype}")
        assert typ == expected, f"{tree_name}/{branch.name}: {typ} != {expected}"


def test_counters_match_array_lengths(nominal, reco):
    n_prongs = ak.to_numpy(reco.n_prongs)
    assert n_prongs.min() >= 1
    assert np.array_equal(_num(reco.prong_part_E), 4 * n_prongs)
    assert np.array_equal(_num(reco.prong_part_pos), 4 * n_prongs)
    assert np.array_equal(_num(reco.prong_part_pid), n_prongs)
    assert np.array_equal(_num(reco.prong_dEdXMean), n_prongs)
    sizes = [ak.to_numpy(reco[f"MasterAnaDev_Blob{f}_sz"]) for f in ("X", "Y", "Z", "T", "TotalE")]
    for field, sz in zip(("X", "Y", "Z", "T", "TotalE"), sizes):
        assert np.array_equal(_num(reco[f"MasterAnaDev_Blob{field}"]), sz)
        assert np.array_equal(sz, sizes[0])
    for arrays in (reco, _read(nominal, TRUTH_TREE)):
        for name in ("mc_FSPartPx", "mc_FSPartPy", "mc_FSPartPz", "mc_FSPartE", "mc_FSPartPDG"):
            assert np.array_equal(_num(arrays[name]), ak.to_numpy(arrays.mc_nFSPart))


def test_same_seed_identical_other_seed_different(tmp_path, nominal, reco):
    again = _read(write_anatuples(tmp_path / "again", N_EVENTS, seed=7)[0])
    other = _read(write_anatuples(tmp_path / "other", N_EVENTS, seed=8)[0])
    for name in reco.fields:
        a, b = ak.to_numpy(ak.ravel(reco[name])), ak.to_numpy(ak.ravel(again[name]))
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
    assert not np.array_equal(ak.to_numpy(reco.mc_incomingE), ak.to_numpy(other.mc_incomingE))
    assert not np.array_equal(ak.to_numpy(ak.ravel(reco.MasterAnaDev_BlobTotalE)),
                              ak.to_numpy(ak.ravel(other.MasterAnaDev_BlobTotalE)))


def test_interaction_mix_matches_minerva_rows(reco):
    int_type = ak.to_numpy(reco.mc_intType)
    assert np.mean(ak.to_numpy(reco.mc_current) == 1) == pytest.approx(0.902, abs=0.03)
    for code, expected in ((1, 0.123), (2, 0.214), (3, 0.617), (4, 0.010), (8, 0.036)):
        assert np.mean(int_type == code) == pytest.approx(expected, abs=0.035), code
    nc = ak.to_numpy(reco.mc_current) == 2
    assert np.mean(int_type[nc] == 3) > 0.8  # NC is mostly DIS
    lepton = ak.to_numpy(reco.mc_primaryLepton)
    assert np.mean(lepton == 13) > 0.8 and np.any(lepton == -13) and np.any(np.abs(lepton) == 11)


def test_reco_object_multiplicities(reco):
    has_mu = ak.to_numpy(reco.muon_corrected_p[:, 0]) != -999
    assert 0.62 < has_mu.mean() < 0.78
    assert np.all(ak.to_numpy(reco.muon_corrected_p[~has_mu][:, 1]) == -999)
    n_blobs = ak.to_numpy(ak.num(reco.MasterAnaDev_BlobTotalE))
    # Real 1A: 31.7 % of rows without blobs; the synthetic sample is DIS-heavy and its untracked hadronic energy forms
    # blobs (as in MINERvA), so fewer rows have none.
    assert 8 < n_blobs.mean() < 20 and 0.05 < np.mean(n_blobs == 0) < 0.45
    blob_e = ak.to_numpy(ak.ravel(reco.MasterAnaDev_BlobTotalE))
    assert blob_e.min() > 0 and 1.0 < np.median(blob_e) < 20.0
    assert 1.4 < ak.mean(reco.n_prongs) < 2.3
    assert set(np.unique(ak.to_numpy(ak.ravel(reco.prong_part_pid)))) <= {3, 8, 13}
    assert np.isnan(ak.to_numpy(ak.ravel(reco.prong_part_pos))).any()  # real files have rare NaN coordinates
    two_gamma = ak.to_numpy((reco.gamma1_E > 1e-5) & (reco.gamma2_E > 1e-5))
    assert 0.05 < np.mean(two_gamma & has_mu) < 0.2


def test_diphoton_mass_peaks_at_pi0(reco):
    sel = ak.to_numpy((reco.gamma1_E > 1e-5) & (reco.gamma2_E > 1e-5))
    comps = [ak.to_numpy(reco[f"gamma1_{c}"] + reco[f"gamma2_{c}"])[sel] for c in ("px", "py", "pz", "E")]
    mass = np.sqrt(np.maximum(comps[3] ** 2 - comps[0] ** 2 - comps[1] ** 2 - comps[2] ** 2, 0.0))
    counts, edges = np.histogram(mass, bins=np.arange(0.0, 420.0, 20.0))
    assert 100.0 <= edges[np.argmax(counts)] <= 160.0
    assert np.mean(np.abs(mass - M_PI0) < M_PI0) > 0.5


def test_muon_kinematics_and_primary_prong(reco):
    has_mu = ak.to_numpy(reco.muon_corrected_p[:, 0]) != -999
    mu = ak.to_numpy(reco.muon_corrected_p)[has_mu]
    mass = np.sqrt(mu[:, 3] ** 2 - np.sum(mu[:, :3] ** 2, axis=1))
    np.testing.assert_allclose(mass, M_MU, rtol=1e-6)
    first = ak.to_numpy(reco.prong_part_E[has_mu][:, :4])
    np.testing.assert_allclose(first, mu, rtol=1e-9)
    assert np.all(ak.to_numpy(reco.prong_part_pid[:, 0]) == 3)
    theta = np.arccos(mu[:, 2] / np.linalg.norm(mu[:, :3], axis=1))
    assert np.quantile(theta, 0.95) < np.radians(30) and np.quantile(mu[:, 3], 0.05) > 1000.0


def test_final_state_is_self_consistent(reco):
    fs_e, pdg = reco.mc_FSPartE, reco.mc_FSPartPDG
    lepton = ak.to_numpy(reco.mc_primFSLepton)
    np.testing.assert_array_equal(ak.to_numpy(pdg[:, 0]), ak.to_numpy(reco.mc_primaryLepton))
    np.testing.assert_array_equal(ak.to_numpy(fs_e[:, 0]), lepton[:, 3])
    int_type = ak.to_numpy(reco.mc_intType)
    particle = abs(pdg) < 1_000_000_000  # drop nuclear remnants and GENIE pseudo-particles
    # RES / DIS: four-momentum conserved against a nucleon at rest (pion charge exchange shifts E by < 5 MeV/pion).
    sum_e = ak.to_numpy(ak.sum(ak.where(particle, fs_e, 0.0), axis=1))
    sum_p = np.stack([ak.to_numpy(ak.sum(ak.where(particle, reco[f"mc_FSPartP{c}"], 0.0), axis=1)) for c in "xyz"], 1)
    enu = ak.to_numpy(reco.mc_incomingE)
    multi = np.isin(int_type, [2, 3])
    assert np.median(np.abs(sum_e - enu - 938.9)[multi]) < 1.0
    assert np.quantile(np.abs(sum_e - enu - 938.9)[multi], 0.99) < 20.0
    np.testing.assert_allclose(np.linalg.norm(sum_p[multi], axis=1), enu[multi], rtol=1e-6)
    beam_y = sum_p[multi, 1] / np.linalg.norm(sum_p[multi], axis=1)
    np.testing.assert_allclose(beam_y, -np.sin(0.05887), atol=1e-9)  # NuMI beam 3.34 deg below the z axis
    w = ak.to_numpy(reco.mc_w)
    assert abs(np.median(w[int_type == 1]) - 938.9) < 5
    assert 1150 < np.median(w[int_type == 2]) < 1350
    assert np.mean(w[int_type == 3] > 2000) > 0.6


def test_calorimetric_recoil_is_consistent_and_biased(reco):
    parts = sum(ak.to_numpy(reco[f"blob_recoil_E_{r}"]) for r in ("tracker", "ecal", "hcal", "nucl", "od"))
    recoil = ak.to_numpy(reco.blob_recoil_E)
    np.testing.assert_allclose(recoil, parts, rtol=1e-12, atol=1e-9)
    e_avail = _e_avail(reco)
    ok = e_avail > 100
    ratio = 1.17 * recoil[ok] / e_avail[ok]
    assert 0.9 < np.median(ratio) < 1.1  # x1.17 roughly calibrates the visible response
    assert np.quantile(ratio, 0.75) - np.quantile(ratio, 0.25) > 0.1  # but with a realistic spread
    has_mu = ak.to_numpy(reco.muon_corrected_p[:, 0]) != -999
    assert np.all(ak.to_numpy(reco.MasterAnaDev_hadron_recoil_CCInc)[~has_mu] < 0)


def test_shifted_sample_has_lower_response_and_more_passive(nominal, shifted, reco):
    assert shifted.name == "MasterAnaDev_mc_AnaTuple_run00111000_Playlist.root"
    other = _read(shifted)
    def response(a):
        e = _e_avail(a)
        ok = e > 100
        return np.median(ak.to_numpy(a.blob_recoil_E)[ok] / e[ok])
    assert response(other) < 0.97 * response(reco)
    passive = "part_response_total_recoil_passive_allNonMuonClusters_id"
    def passive_ratio(a):
        r = ak.to_numpy(a.blob_recoil_E)
        ok = r > 50
        return np.median(ak.to_numpy(a[passive])[ok] / r[ok])
    assert passive_ratio(other) > 1.05 * passive_ratio(reco)
    assert np.any(ak.to_numpy(_read(shifted, TRUTH_TREE).mc_targetZ) == 2)  # helium target full


def test_truth_tree_holds_all_interactions(nominal, reco):
    truth = _read(nominal, TRUTH_TREE)
    nth = ak.to_numpy(reco.mc_nthEvtInFile)
    assert np.all(np.diff(nth) > 0)
    np.testing.assert_array_equal(ak.to_numpy(truth.mc_nthEvtInFile), np.arange(len(truth)))
    np.testing.assert_array_equal(ak.to_numpy(truth.mc_incomingE)[nth], ak.to_numpy(reco.mc_incomingE))
    truth_pdg = ak.to_numpy(ak.ravel(truth.mc_FSPartPDG[nth]))
    np.testing.assert_array_equal(truth_pdg, ak.to_numpy(ak.ravel(reco.mc_FSPartPDG)))


def test_split_over_files_and_bad_arguments(tmp_path):
    paths = write_anatuples(tmp_path, 700, seed=1, n_files=3)
    assert [p.name for p in paths] == [f"MasterAnaDev_mc_AnaTuple_run0011000{i}_Playlist.root" for i in range(3)]
    sizes = []
    for p in paths:
        with uproot.open(p) as f:
            sizes.append(f[RECO_TREE].num_entries)
    assert sizes == [234, 233, 233]
    with pytest.raises(ValueError, match="n_files"):
        write_anatuples(tmp_path, 2, seed=1, n_files=3)


def test_chunked_writing_appends_consistent_baskets(tmp_path, monkeypatch):
    import dataset_builder.synthetic as synthetic

    monkeypatch.setattr(synthetic, "CHUNK_ROWS", 300)
    path = write_anatuples(tmp_path, 1000, seed=3)[0]
    reco, truth = _read(path), _read(path, TRUTH_TREE)
    assert len(reco) == 1000
    np.testing.assert_array_equal(ak.to_numpy(truth.mc_nthEvtInFile), np.arange(len(truth)))
    assert np.all(np.diff(ak.to_numpy(reco.mc_nthEvtInFile)) > 0)
    assert np.array_equal(_num(reco.prong_part_E), 4 * ak.to_numpy(reco.n_prongs))
    gate_key = ak.to_numpy(reco.ev_subrun).astype(np.int64) * 100_000 + ak.to_numpy(reco.ev_gate)
    assert np.all(np.diff(gate_key) >= 0)  # gates continue across chunks; a few interactions share a gate
    assert 0.0 < np.mean(np.diff(gate_key) == 0) < 0.2
    with uproot.open(path) as f:
        assert f[META_TREE]["Total_Truth_Entries"].array(library="np")[0] == len(truth)
