"""Truth physics of the converter on hand-computed events: a few-event ROOT file → Parquet → exact values."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.dataset as pads
import pytest
from _anatuple import default_columns, write_anatuple

from dataset_builder import physics
from dataset_builder.convert import ConvertOptions, convert

B = 0.05887  # beam angle below the detector z axis (rad)
M_P, M_PI, M_PI0 = 938.27208943, 139.57039, 134.9768  # PDG (MeV), typed here by hand

# One row per event: (current, intType, Eν, primary lepton (px,py,pz,E), FS list of (pdg, px, py, pz, E)).
MU_ALONG_BEAM = [0.0, -3000.0 * math.sin(B), 3000.0 * math.cos(B), 3100.0]  # |p| = 3000 along the beam
EVENTS = [
    # 0: CC1π+ — proton, π+, neutron, a nucleus and a GENIE pseudo-particle
    (1, 2, 5000.0, MU_ALONG_BEAM,
     [(13, *MU_ALONG_BEAM), (2212, 300, 700, 0, 1000), (211, -300, 0, 0, 500), (2112, 0, 0, 0, 1000),
      (1000060110, 0, 0, 500, 10000), (2000000101, 0, 0, 0, 3)]),
    # 1: CC1π0 — π0, antiproton, K+, K0, electron, Λ
    (1, 1, 4000.0, [0.0, 0.0, 2000.0, 2010.0],
     [(13, 0, 0, 2000, 2010), (111, 0, 0, 200, 250), (-2212, 0, 0, 0, 1000), (321, 0, 0, 0, 600),
      (311, 0, 0, 0, 700), (11, 0, 0, 0, 20), (3122, 0, 0, 0, 1200)]),
    # 2: NC with π+ π−
    (2, 3, 6000.0, [0.0, 0.0, 1000.0, 1000.0],
     [(14, 0, 0, 1000, 1000), (211, 0, 0, 100, 200), (-211, 0, 0, -100, 200)]),
    # 3: CC with π+ π− (CCNπ±, no single binning pion)
    (1, 3, 8000.0, [0.0, 0.0, 5000.0, 5001.0],
     [(13, 0, 0, 5000, 5001), (211, 0, 0, 100, 200), (-211, 0, 0, -100, 200)]),
    # 4: CC, no pion, only a proton
    (1, 1, 2000.0, [0.0, 0.0, 1500.0, 1503.0], [(13, 0, 0, 1500, 1503), (2212, 0, 0, 0, 1038.272)]),
    # 5: intType 5 (ν-e elastic) — removed by the default selection
    (1, 5, 2000.0, [0.0, 0.0, 1500.0, 1500.0], [(11, 0, 0, 1500, 1500)]),
]


def _truth_file(path):
    n = len(EVENTS)
    columns = default_columns(n)
    columns["mc_current"] = np.array([e[0] for e in EVENTS])
    columns["mc_intType"] = np.array([e[1] for e in EVENTS])
    columns["mc_incomingE"] = np.array([e[2] for e in EVENTS])
    columns["mc_primFSLepton"] = np.array([e[3] for e in EVENTS])
    columns["mc_w"] = np.array([1232.0, -1.0, 2000.0, 2500.0, 938.0, 0.0])
    columns["mc_nFSPart"] = np.array([len(e[4]) for e in EVENTS])
    for k, name in enumerate(("mc_FSPartPDG", "mc_FSPartPx", "mc_FSPartPy", "mc_FSPartPz", "mc_FSPartE")):
        columns[name] = [[p[k] for p in e[4]] for e in EVENTS]
    columns["ev_run"] = np.full(n, 110000)
    return write_anatuple(path, columns, meta={"POT_Used": [2.5e18], "POT_Total": [3e18]})


@pytest.fixture(scope="module")
def truth_rows(tmp_path_factory):
    """Converted truth events keyed by entry."""
    folder = tmp_path_factory.mktemp("physics")
    source = _truth_file(folder / "truth.root")
    manifest = convert([source], folder / "out", ConvertOptions(), workers=1, progress=False)
    table = pads.dataset(folder / "out" / "data", format="parquet").to_table()
    return {row["entry"]: row for row in table.to_pylist()}, manifest


def test_selection_drops_non_listed_interaction_types(truth_rows):
    rows, manifest = truth_rows
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert manifest["selection"] == {"read": 6, "int_type": 5, "kept": 5, "passes_cc_inclusive": 0}
    assert manifest["pot_used_total"] == 2.5e18


def test_available_energy_both_conventions(truth_rows):
    rows, _ = truth_rows
    # event 0: proton T + π+ T (MINERvA) vs proton T + π+ E (reference); n, nucleus, pseudo-particle excluded
    assert rows[0]["e_avail"] == pytest.approx(((1000 - M_P) + (500 - M_PI)) / 1e3, rel=1e-6)
    assert rows[0]["e_avail_reference"] == pytest.approx(((1000 - M_P) + 500) / 1e3, rel=1e-6)
    # event 1: π0 E + p̄ (E + m_p | E − m_p) + K+ E + e E; K0 and Λ excluded
    assert rows[1]["e_avail"] == pytest.approx((250 + (1000 + M_P) + 600 + 20) / 1e3, rel=1e-6)
    assert rows[1]["e_avail_reference"] == pytest.approx((250 + (1000 - M_P) + 600 + 20) / 1e3, rel=1e-6)
    assert rows[2]["e_avail"] == pytest.approx(2 * (200 - M_PI) / 1e3, rel=1e-6)
    assert rows[4]["e_avail"] == pytest.approx(0.1, rel=1e-6)


def test_true_momentum_transfer_uses_the_beam_axis(truth_rows):
    rows, _ = truth_rows
    # event 0: the lepton goes exactly along the beam, |p| = 3000 → q3 = 5000 − 3000, q0 = 5000 − 3100
    assert rows[0]["q3"] == pytest.approx(2.0, rel=1e-6)
    assert rows[0]["q0"] == pytest.approx(1.9, rel=1e-6)
    assert rows[0]["q2"] == pytest.approx(2.0**2 - 1.9**2, rel=1e-5)
    # event 1: lepton along detector z, i.e. at angle B to the beam
    q3 = math.sqrt(4000**2 + 2000**2 - 2 * 4000 * 2000 * math.cos(B))
    assert rows[1]["q3"] == pytest.approx(q3 / 1e3, rel=1e-6)
    assert rows[1]["q2"] == pytest.approx((q3**2 - 1990**2) / 1e6, rel=1e-5)
    assert rows[1]["enu"] == pytest.approx(4.0)


def test_hadronic_w_excludes_leptons_nuclei_and_pseudo_particles(truth_rows):
    rows, _ = truth_rows
    assert rows[0]["w"] == pytest.approx(math.sqrt(2500**2 - 700**2) / 1e3, rel=1e-6)  # = 2.4 GeV
    assert rows[1]["w"] == pytest.approx(math.sqrt(3750**2 - 200**2) / 1e3, rel=1e-6)  # e excluded, K0/Λ kept
    assert rows[2]["w"] == pytest.approx(0.4, rel=1e-6)  # ν excluded
    assert rows[0]["w_genie"] == pytest.approx(1.232)
    assert rows[1]["w_genie"] is None  # negative mc_w → null


def test_topology_labels_and_flags(truth_rows):
    rows, _ = truth_rows
    assert [rows[i]["topology"] for i in range(5)] == [0, 2, 4, 1, 3]
    assert [(rows[i]["n_pi_plus"], rows[i]["n_pi_minus"], rows[i]["n_pi0"]) for i in range(5)] == [
        (1, 0, 0), (0, 0, 1), (1, 1, 0), (1, 1, 0), (0, 0, 0)]
    assert [rows[i]["is_cc1pi_charged"] for i in range(5)] == [True, False, False, False, False]
    assert [rows[i]["is_ccnpi_charged"] for i in range(5)] == [True, False, False, True, False]
    assert [rows[i]["is_cc1pi0"] for i in range(5)] == [False, True, False, False, False]


def test_binning_pion_energy_and_beam_angle(truth_rows):
    rows, _ = truth_rows
    assert rows[0]["pion_energy"] == pytest.approx(0.5)
    assert rows[0]["pion_kinetic_energy"] == pytest.approx((500 - M_PI) / 1e3, rel=1e-6)
    assert rows[0]["pion_theta"] == pytest.approx(math.pi / 2, rel=1e-6)  # along −x: perpendicular to the beam
    assert rows[1]["pion_energy"] == pytest.approx(0.25)
    assert rows[1]["pion_kinetic_energy"] == pytest.approx((250 - M_PI0) / 1e3, rel=1e-6)
    assert rows[1]["pion_theta"] == pytest.approx(B, rel=1e-5)  # along detector z = B off the beam
    for entry in (2, 3, 4):  # NC; two charged pions; no pion
        assert rows[entry]["pion_energy"] == 0.0 and rows[entry]["pion_theta"] is None


def test_pion_theta_uses_three_momentum_not_energy():
    # |p| over (px, py, pz) = 500 → cos θ_det = 0.6; the reference's |(py, pz, E)| would give another angle
    fs = physics.FinalState.from_jagged([[211]], [[400.0]], [[0.0]], [[300.0]], [[600.0]])
    _, _, theta = physics.binning_pion(np.array([1]), fs)
    beam = physics.rotate_to_beam_frame(np.array([400.0]), np.array([0.0]), np.array([300.0]))
    assert theta[0] == pytest.approx(math.acos(beam[2][0] / 500.0), rel=1e-12)


def test_rotation_maps_the_beam_direction_onto_z():
    x, y, z = physics.rotate_to_beam_frame(np.array([0.0]), np.array([-math.sin(B)]), np.array([math.cos(B)]))
    assert (x[0], y[0], z[0]) == pytest.approx((0.0, 0.0, 1.0), abs=1e-15)


def test_hybrid_q3_reference_formula():
    muon = np.array([[0.0, 0.0, 3000.0, 3010.0], [-999.0, -999.0, 0.0, 0.0]])
    q3 = physics.hybrid_q3(np.array([5000.0, 5000.0]), muon, np.array([True, False]))
    q2 = 2 * 5000 * (3010 - 3000) - 105.6583755**2
    assert q3[0] == pytest.approx(math.sqrt(q2 + 1990**2), rel=1e-12)
    assert np.isnan(q3[1])


def test_calorimetric_baseline_and_tags():
    calo = physics.calorimetric_e_avail(np.array([1000.0, 0.0, -999.0, np.nan]))
    assert calo.tolist() == [1170.0, -1.0, -1.0, -1.0]
    tags = physics.cut_based_tags(
        has_muon=np.array([True, True, True, False, True]), n_pi_prongs=np.array([1, 2, 0, 1, 1]),
        n_michel=np.array([1, 1, 0, 1, 2]), n_photons=np.array([0, 0, 2, 0, 0]),
        m_gammagamma=np.array([0.0, 0.0, 200.0, 0.0, 0.0]))
    assert tags["tag_cc1pi_charged"].tolist() == [True, False, False, False, False]
    assert tags["tag_ccnpi_charged"].tolist() == [True, True, False, False, True]
    assert tags["tag_cc1pi0"].tolist() == [False, False, True, False, False]
    ge1 = physics.cut_based_tags(np.array([True]), np.array([1]), np.array([2]), np.array([0]), np.array([0.0]),
                                 cc1pi_michel_rule="ge1")
    assert ge1["tag_cc1pi_charged"].tolist() == [True]
    far = physics.cut_based_tags(np.array([True]), np.array([0]), np.array([0]), np.array([2]), np.array([270.0]))
    assert far["tag_cc1pi0"].tolist() == [False]  # |m − 134.977| must be < 134.977


def test_unknown_e_avail_convention_is_refused():
    with pytest.raises(ValueError, match="convention"):
        physics.available_energy(physics.FinalState.from_jagged([[211]], [[0.0]], [[0.0]], [[0.0]], [[1.0]]),
                                 convention="paper")


def test_masses_are_the_pdg_values_and_defined_once():
    from particle import Particle

    from dataset_builder import physics, synthetic_physics

    for pdg, mass in ((2212, physics.M_PROTON), (2112, physics.M_NEUTRON), (211, physics.M_PI_CHARGED),
                      (111, physics.M_PI0), (13, physics.M_MUON), (11, physics.M_ELECTRON)):
        assert mass == pytest.approx(Particle.from_pdgid(pdg).mass, rel=1e-9), pdg
    # the generator uses the very same numbers (no re-typed copy)
    assert (synthetic_physics.M_PI0, synthetic_physics.M_P, synthetic_physics.BEAM_ANGLE) == \
        (physics.M_PI0, physics.M_PROTON, physics.BEAM_ANGLE_RAD)
