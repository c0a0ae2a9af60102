"""Reco objects → tokens on hand-computed events: a few-event ROOT file → Parquet → exact features."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pyarrow.dataset as pads
import pytest
from _anatuple import default_columns, write_anatuple

from dataset_builder.convert import ConvertOptions, convert
from dataset_builder.schema import EVENT_FEATURE_NAMES, PID_NAMES
from dataset_builder.tokens import (
    LayoutError, ObjectSet, TokenConfig, cap_objects, dedx_feature, flatten_prong_vectors, kinematic_features,
)

PID = {name: i for i, name in enumerate(PID_NAMES)}
EF = {name: i for i, name in enumerate(EVENT_FEATURE_NAMES)}
LN_EMPTY = math.log(1e-3)  # ln(0 + 1e-3): the sum-energy features of an absent type
MUON = [0.0, 300.0, 4000.0, 4020.0]


def _reco_file(path):
    """Event 0: muon + 2 photons + 2 blobs + prongs (muon track, pid 8, no-hypothesis); event 1: 25 blobs and
    12 prongs (caps), no muon; event 2: nothing at all."""
    columns = default_columns(3)
    columns["mc_intType"] = np.array([1, 1, 1])
    columns["mc_current"] = np.array([1, 1, 1])
    columns["muon_corrected_p"][0] = MUON
    columns["muon_trackVertexTime"] = np.array([5000.0, 0.0, 0.0])
    for slot, px in ((1, 100.0), (2, -100.0)):
        columns[f"gamma{slot}_px"] = np.array([px, 0.0, 0.0])
        columns[f"gamma{slot}_E"] = np.array([100.0, -9999.0, 0.0])
        columns[f"gamma{slot}_dEdx"] = np.array([2.0, 0.0, 0.0])
        columns[f"gamma{slot}_time"] = np.array([3000.0, 0.0, 0.0])
    columns["vtx"] = np.array([[0.0, 0.0, 6000.0, 0.0], [0.0, 0.0, 6000.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # blobs: event 0 at (300, 400, 6000) E 10 and (0, 0, 7000) E 5; event 1: 25 blobs at (1000, 0, 6000), E 1..25
    columns["MasterAnaDev_BlobX"] = [[300.0, 0.0], [1000.0] * 25, []]
    columns["MasterAnaDev_BlobY"] = [[400.0, 0.0], [0.0] * 25, []]
    columns["MasterAnaDev_BlobZ"] = [[6000.0, 7000.0], [6000.0] * 25, []]
    columns["MasterAnaDev_BlobT"] = [[1000.0, 2000.0], [10.0 * (i + 1) for i in range(25)], []]
    columns["MasterAnaDev_BlobTotalE"] = [[10.0, 5.0], [float(i + 1) for i in range(25)], []]
    # prongs: event 0: muon track (pid 3), a pid-8 prong, a no-hypothesis prong; event 1: 12 pid-13 prongs
    columns["n_prongs"] = np.array([3, 12, 0])
    columns["prong_part_pid"] = [[3, 8, 0], [13] * 12, []]
    columns["prong_part_E"] = [MUON + [100.0, 0.0, 0.0, 250.0] + [1.0, 1.0, 1.0, 9.0],
                               [c for k in range(12) for c in (0.0, 50.0 * (k + 1), 0.0, 100.0 * (k + 1))], []]
    columns["prong_part_pos"] = [[0.0] * 4 + [100.0, 200.0, 6000.0, 4000.0] + [0.0] * 4,
                                 [c for k in range(12) for c in (10.0 * k, 0.0, 6000.0, 100.0 * k)], []]
    columns["prong_dEdXMean"] = [[1.0, 3.0, 1.0], [float(k + 1) for k in range(12)], []]
    columns["muon_fuzz_energy"] = np.array([50.0, 0.0, 0.0])
    columns["muon_iso_blobs_energy"] = np.array([-999.0, 0.0, 0.0])
    columns["MasterAnaDev_hadron_recoil"] = np.array([400.0, 0.0, 0.0])
    columns["MasterAnaDev_hadron_recoil_CCInc"] = np.array([500.0, 0.0, 0.0])
    columns["part_response_total_recoil_passive_allNonMuonClusters_id"] = np.array([2000.0, 0.0, 0.0])
    columns["part_response_total_recoil_passive_allNonMuonClusters_od"] = np.array([500.0, 0.0, 0.0])
    columns["improved_nmichel"] = np.array([1, 0, 0])
    columns["blob_recoil_E"] = np.array([1000.0, 0.0, 0.0])
    return write_anatuple(path, columns)


def _convert(folder, **token_options):
    source = _reco_file(folder / "reco.root")
    options = ConvertOptions(tokens=TokenConfig(**token_options))
    manifest = convert([source], folder / "out", options, workers=1, progress=False)
    table = pads.dataset(folder / "out" / "data", format="parquet").to_table()
    return {row["entry"]: row for row in table.to_pylist()}, manifest


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp("tokens"))


def _features(px, py, pz, e, extra):
    p = math.sqrt(px**2 + py**2 + pz**2)
    eta = 0.5 * math.log((p + pz) / (p - pz)) if min(p, p + pz, p - pz) >= 1e-6 else 0.0
    return [eta, math.atan2(py, px), math.log(math.hypot(px, py) + 1e-6), math.log(e + 1e-6), *extra]


def test_event_with_every_object_type(converted):
    rows, _ = converted
    row = rows[0]
    # muon, 2 photons, 2 blobs, the pid-8 prong (muon-track prong and no-hypothesis prong dropped)
    assert row["object_pid"] == [PID["muon"], PID["photon"], PID["photon"], PID["blob"], PID["blob"],
                                 PID["prong_pid8"]]
    assert row["n_objects"] == 6 and row["has_muon"] is True
    expected = [
        _features(*MUON, [0.0, 0.0, 0.0, 0.0, 0.5]),
        _features(100, 0, 0, 100, [math.log(2.1), 0, 0, 0, 0.3]),
        _features(-100, 0, 0, 100, [math.log(2.1), 0, 0, 0, 0.3]),
        _features(6, 8, 0, 10, [0.0, 0.03, 0.04, 0.6, 0.1]),  # from the vertex: direction (300, 400, 0)/500
        [0.0, 0.0, math.log(1e-6), math.log(5 + 1e-6), 0.0, 0.0, 0.0, 0.7, 0.2],  # along z: eta undefined → 0
        _features(100, 0, 0, 250, [math.log(3.1), 0.01, 0.02, 0.6, 0.4]),
    ]
    np.testing.assert_allclose(row["object_features"], expected, rtol=1e-6, atol=1e-7)


def test_event_features_of_the_full_event(converted):
    rows, _ = converted
    ef = rows[0]["event_features"]
    expected = {
        "log_muon_fuzz_energy": math.log(50 + 1e-5), "log_muon_iso_blobs_energy": math.log(1e-5),
        "log_hadron_recoil": math.log(400 + 1e-5), "log_passive_recoil_id": math.log(0.2 + 1e-3),
        "log_passive_recoil_od": math.log(0.05 + 1e-3), "log_passive_recoil_total": math.log(0.25 + 1e-3),
        "n_michel": 1.0, "has_muon": 1.0, "m_gammagamma": 200.0, "n_prongs_pid8or9": 1.0,
        "log_sum_e_blob": math.log(15 + 1e-3), "log_sum_e_prong_pid3": LN_EMPTY,  # muon prong not double-counted
        "log_sum_e_prong_pid8": math.log(250 + 1e-3), "log_sum_e_prong_pid13": LN_EMPTY,
        "log_sum_e_aggregated_blobs": LN_EMPTY, "log_sum_e_aggregated_prongs": LN_EMPTY,
    }
    np.testing.assert_allclose(ef, [expected[name] for name in EVENT_FEATURE_NAMES], rtol=1e-6)


def test_baselines_of_the_full_event(converted):
    rows, _ = converted
    row = rows[0]
    assert row["calo_e_avail"] == pytest.approx(1.17)
    assert row["passes_cc_inclusive"] is True  # θ = 4.3°, p = 4.01 GeV, recoil 500 MeV
    assert (row["tag_cc1pi_charged"], row["tag_ccnpi_charged"], row["tag_cc1pi0"]) == (True, True, False)
    assert row["q3_hybrid"] is not None


def test_caps_sort_keep_and_aggregate(converted):
    rows, manifest = converted
    row = rows[1]
    assert row["has_muon"] is False
    assert row["object_pid"] == [PID["blob"]] * 19 + [PID["aggregated_blobs"]] + [PID["prong_pid13"]] * 9 + [
        PID["aggregated_prongs"]]
    features = np.array(row["object_features"])
    # blobs sorted by energy: 25, 24, ..., 7 kept, 6..1 merged (E = 21, pointing along x from the vertex)
    np.testing.assert_allclose(np.exp(features[:19, 3]), np.arange(25, 6, -1), rtol=1e-5)
    np.testing.assert_allclose(features[19], _features(21, 0, 0, 21, [0, 0.1, 0, 0.6, 0.0035]), rtol=1e-6, atol=1e-7)
    # prongs: E 1200..400 kept, 300+200+100 merged; extras are means (dE/dx of k = 0, 1, 2; x = 10k; t = 100k)
    np.testing.assert_allclose(np.exp(features[20:29, 3]), np.arange(1200, 399, -100), rtol=1e-5)
    mean_dedx = np.mean([math.log(1.1), math.log(2.1), math.log(3.1)])
    np.testing.assert_allclose(features[29], _features(0, 300, 0, 600, [mean_dedx, 0.001, 0, 0.6, 0.01]),
                               rtol=1e-6, atol=1e-7)
    ef = row["event_features"]
    assert ef[EF["log_sum_e_blob"]] == pytest.approx(math.log(304 + 1e-3), rel=1e-6)
    assert ef[EF["log_sum_e_aggregated_blobs"]] == pytest.approx(math.log(21 + 1e-3), rel=1e-6)
    assert ef[EF["log_sum_e_prong_pid13"]] == pytest.approx(math.log(7200 + 1e-3), rel=1e-6)
    assert ef[EF["log_sum_e_aggregated_prongs"]] == pytest.approx(math.log(600 + 1e-3), rel=1e-6)
    truncation = manifest["truncation"]
    assert (truncation["events_with_blob_aggregate"], truncation["blobs_merged"]) == (1, 6)
    assert (truncation["events_with_prong_aggregate"], truncation["prongs_merged"]) == (1, 3)
    assert truncation["dropped_prong_muon_track"] == 1 and truncation["dropped_prong_no_hypothesis"] == 1


def test_event_without_objects_is_kept(converted):
    rows, manifest = converted
    assert rows[2]["n_objects"] == 0 and rows[2]["object_pid"] == [] and rows[2]["object_features"] == []
    assert rows[2]["event_features"][EF["has_muon"]] == 0.0
    assert manifest["rejected"]["sentinel"] == {"muon_iso_blobs_energy": 1, "gamma1_E": 1, "gamma2_E": 1}


def test_blob_direction_from_detector_origin_option(tmp_path):
    rows, _ = _convert(tmp_path, blob_origin="detector")
    blob = rows[0]["object_features"][3]
    scale = 10 / math.sqrt(300**2 + 400**2 + 6000**2)
    np.testing.assert_allclose(blob[:4], _features(300 * scale, 400 * scale, 6000 * scale, 10, [])[:4], rtol=1e-6)


def test_nested_and_flat_prong_vectors_give_the_same_array():
    nested = ak.Array([[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], [], [[9.0, 10.0, 11.0, 12.0]]])
    flat = ak.Array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [], [9.0, 10.0, 11.0, 12.0]])
    n_prongs = np.array([2, 0, 1])
    expected = np.arange(1.0, 13.0).reshape(3, 4)
    np.testing.assert_array_equal(flatten_prong_vectors(nested, "prong_part_E", n_prongs), expected)
    np.testing.assert_array_equal(flatten_prong_vectors(flat, "prong_part_E", n_prongs), expected)


@pytest.mark.parametrize("bad, n_prongs, message", [
    (ak.Array([[[1.0, 2.0, 3.0]]]), [1], "inner vectors must have length 4"),
    (ak.Array([[1.0, 2.0, 3.0, 4.0, 5.0]]), [1], "multiple of 4"),
    (ak.Array([[1.0, 2.0, 3.0, 4.0]]), [2], "n_prongs"),
])
def test_prong_vector_layout_errors_name_the_branch(bad, n_prongs, message):
    with pytest.raises(LayoutError, match=f"prong_part_pos.*{message}"):
        flatten_prong_vectors(bad, "prong_part_pos", np.array(n_prongs))


def test_cap_keeps_file_order_at_or_below_the_cap():
    energies = np.array([1.0, 5.0, 3.0])
    objects = ObjectSet(np.array([3]), np.stack([energies * 0, energies * 0, energies, energies], 1),
                        np.zeros((3, 5)), np.full(3, 3, np.int32))
    kept, aggregate, merged = cap_objects(objects, cap=3, aggregate_pid=7)
    assert kept.p4[:, 3].tolist() == [1.0, 5.0, 3.0] and aggregate.counts.tolist() == [0] and merged == 0
    kept, aggregate, merged = cap_objects(objects, cap=2, aggregate_pid=7)
    assert kept.p4[:, 3].tolist() == [5.0] and aggregate.p4[:, 3].tolist() == [4.0] and merged == 2


def test_dedx_transform_handles_sentinels_nan_and_inf():
    values = dedx_feature(np.array([-999.0, np.nan, np.inf, -np.inf, 250.0, 1.9, -2.9]))
    expected = [math.log(0.1), math.log(0.1), math.log(100.1), math.log(100.1), math.log(100.1), math.log(2.0),
                math.log(3.0)]
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_kinematic_features_eta_clip_and_phi():
    out = kinematic_features(np.array([[1.0, 0.0, 1e5, 1e5], [0.0, -2.0, 0.0, 2.0]]))
    assert out[0, 0] == 10.0  # clipped
    assert out[1, 0] == 0.0 and out[1, 1] == pytest.approx(-math.pi / 2)
