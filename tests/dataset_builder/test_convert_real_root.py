"""AnaTuples written by real ROOT in the real layout (counted C arrays, [4] arrays, vector<vector<double>>, Int_t
scalars, two key cycles, Meta POT, data files without truth), ZLIB / LZMA / ZSTD; values checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.dataset as pads
import pytest
import uproot

pytest.importorskip("ROOT")
from _root_anatuple import LZMA, ZLIB, ZSTD, write_root_anatuple  # noqa: E402

from dataset_builder.convert import ConvertOptions, convert, iter_converted_tables  # noqa: E402
from dataset_builder.selection import SelectionConfig  # noqa: E402

M_MU, M_PI, M_P = 105.658, 139.570, 938.272  # MeV (PDG)


def _energy(p, m):
    return math.sqrt(sum(x * x for x in p) + m * m)


MUON_P = (0.0, 300.0, 4000.0)
PION_P = (250.0, -100.0, 300.0)  # true FS pi+
PROTON_P = (-200.0, 0.0, 350.0)
E_NU = 6000.0


def _mc_event(k: int) -> dict:
    """One CC1pi+ event: a MINOS-matched muon, two blobs (counted arrays), two prongs (vector<vector<double>>)."""
    e_mu = _energy(MUON_P, M_MU)
    return {
        "muon_corrected_p": [*MUON_P, e_mu], "muon_fuzz_energy": 25 + k, "muon_iso_blobs_energy": 4.5,
        "isMinosMatchTrack": 1, "improved_nmichel": 1, "ev_run": 110000, "ev_subrun": 3, "ev_gate": 100 + k,
        "MasterAnaDev_BlobTotalE": [50.0, 30.0], "MasterAnaDev_BlobX": [100.0, -200.0],
        "MasterAnaDev_BlobY": [0.0, 50.0], "MasterAnaDev_BlobZ": [6000.0, 6100.0], "MasterAnaDev_BlobT": [10.0, 12.0],
        "vtx": [0.0, 0.0, 5900.0, 8.0], "blob_recoil_E": 200.0, "MasterAnaDev_hadron_recoil_CCInc": 150.0,
        "n_prongs": 2, "prong_part_E": [[-300.0, 0.0, 100.0, 500.0], [0.0, -400.0, -50.0, 1200.0]],
        "prong_part_pos": [[10.0, 20.0, 5950.0, 9.0], [30.0, 40.0, 5960.0, 11.0]], "prong_part_pid": [8, 3],
        "prong_dEdXMean": [2.0, 4.0],
        "mc_incomingE": E_NU, "mc_intType": 2, "mc_current": 1, "mc_incoming": 14, "mc_primaryLepton": 13,
        "mc_primFSLepton": [*MUON_P, e_mu], "mc_w": 1300.0, "mc_targetZ": 6, "mc_targetA": 12,
        "mc_FSPartPDG": [13, 211, 2212], "mc_FSPartPx": [MUON_P[0], PION_P[0], PROTON_P[0]],
        "mc_FSPartPy": [MUON_P[1], PION_P[1], PROTON_P[1]], "mc_FSPartPz": [MUON_P[2], PION_P[2], PROTON_P[2]],
        "mc_FSPartE": [e_mu, _energy(PION_P, M_PI), _energy(PROTON_P, M_P)],
        "mc_run": 110000, "mc_subrun": 3, "mc_nthEvtInFile": k, "mc_cvweight_total": 0.9 + 0.05 * k,
    }


N_EVENTS = 4


@pytest.fixture(scope="module")
def root_files(tmp_path_factory):
    """One MC file per compression and one data file (ZLIB, no Truth, no mc_*), written once by PyROOT."""
    folder = tmp_path_factory.mktemp("real_root")
    events = [_mc_event(k) for k in range(N_EVENTS)]
    files = {name: write_root_anatuple(folder / f"MasterAnaDev_mc_{name}.root", events, compression=setting)
             for name, setting in (("zlib", ZLIB), ("lzma", LZMA), ("zstd", ZSTD))}
    data_events = [{k: v for k, v in e.items() if not k.startswith("mc_")} for e in events[:3]]
    files["data"] = write_root_anatuple(folder / "MasterAnaDev_data.root", data_events, mc=False, pot=(3e16, 3e16))
    return files


def _rows(out):
    table = pads.dataset(out / "data", format="parquet").to_table()
    return sorted(table.to_pylist(), key=lambda r: r["entry"])


def test_the_files_have_the_real_layout(root_files):
    with uproot.open(root_files["zlib"]) as f:
        assert sorted(f.keys()) == ["MasterAnaDev;1", "MasterAnaDev;2", "Meta;1", "Truth;1"]
        assert f["MasterAnaDev;1"].num_entries == 2 and f["MasterAnaDev"].num_entries == N_EVENTS
        tree = f["MasterAnaDev"]
        assert tree["muon_fuzz_energy"].typename == "int32_t"
        assert tree["prong_part_E"].typename == "std::vector<std::vector<double>>"
        assert tree["prong_part_pid"].typename == "int32_t[]" and tree["MasterAnaDev_BlobX_sz"].typename == "int32_t"
        assert tree["vtx"].typename == "double[4]"
        assert tree["mc_FSPartPx"].count_branch.name == "mc_nFSPart"
        assert tree["prong_dEdXMean"].count_branch.name == "n_prongs"
    assert {name: uproot.open(path).file.compression.name for name, path in root_files.items()} == \
        {"zlib": "ZLIB", "lzma": "LZMA", "zstd": "ZSTD", "data": "ZLIB"}
    with uproot.open(root_files["data"]) as f:
        assert "Truth" not in f.keys(cycle=False) and not [k for k in f["MasterAnaDev"].keys() if k.startswith("mc_")]


def test_mc_values_match_the_hand_computation(root_files, tmp_path):
    manifest = convert([root_files["zlib"]], tmp_path / "out", ConvertOptions(), workers=1, progress=False)
    rows = _rows(tmp_path / "out")
    assert [r["entry"] for r in rows] == list(range(N_EVENTS))  # the highest cycle only, never 2 + 4 rows
    [source] = manifest["source_files"]
    assert (source["n_entries"], source["pot_used"], source["pot_total"]) == (N_EVENTS, 1.5e17, 2.0e17)
    row = rows[1]
    assert (row["run"], row["subrun"], row["gate"], row["source_file"]) == (110000, 3, 101, root_files["zlib"].name)
    # muon, 2 blobs (file order), 2 prongs sorted as written: pid 8 → PID 5, pid 3 → PID 4
    assert row["object_pid"] == [1, 3, 3, 5, 4] and row["n_objects"] == 5 and row["has_muon"]
    muon = row["object_features"][0]
    p = math.sqrt(sum(x * x for x in MUON_P))
    assert muon[0] == pytest.approx(0.5 * math.log((p + MUON_P[2]) / (p - MUON_P[2])), rel=1e-5)
    assert muon[1] == pytest.approx(math.atan2(MUON_P[1], MUON_P[0]), rel=1e-6)
    assert muon[2] == pytest.approx(math.log(300.0 + 1e-6), rel=1e-6)
    assert muon[3] == pytest.approx(math.log(_energy(MUON_P, M_MU) + 1e-6), rel=1e-6)
    blob = row["object_features"][1]  # from the vertex (0, 0, 5900) to (100, 0, 6000): 45 degrees, E = 50
    assert blob[0] == pytest.approx(0.5 * math.log((math.sqrt(2) + 1) / (math.sqrt(2) - 1)), rel=1e-5)
    assert blob[3] == pytest.approx(math.log(50.0 + 1e-6), rel=1e-6)
    assert blob[5:] == pytest.approx([100.0 / 1e4, 0.0, 6000.0 / 1e4, 10.0 / 1e4], rel=1e-6)
    prong = row["object_features"][3]
    assert prong[3] == pytest.approx(math.log(500.0 + 1e-6), rel=1e-6)
    assert prong[4] == pytest.approx(math.log(2.0 + 0.1), rel=1e-6)
    assert prong[5:] == pytest.approx([10.0 / 1e4, 20.0 / 1e4, 5950.0 / 1e4, 9.0 / 1e4], rel=1e-6)
    assert row["event_features"][0] == pytest.approx(math.log(26 + 1e-5), rel=1e-6)  # Int_t muon_fuzz_energy
    assert row["event_features"][6] == 1.0  # improved_nmichel
    # truth: E_avail (MINERvA) = T_pi+ + T_p; q0 = Enu - E_mu
    t_pi, t_p = _energy(PION_P, M_PI) - M_PI, _energy(PROTON_P, M_P) - M_P
    assert row["e_avail"] == pytest.approx((t_pi + t_p) / 1e3, rel=1e-5)
    assert row["e_avail_reference"] == pytest.approx((_energy(PION_P, M_PI) + t_p) / 1e3, rel=1e-5)
    assert row["q0"] == pytest.approx((E_NU - _energy(MUON_P, M_MU)) / 1e3, rel=1e-5)
    assert row["enu"] == pytest.approx(6.0) and row["w_genie"] == pytest.approx(1.3)
    assert (row["n_pi_plus"], row["n_pi_minus"], row["n_pi0"], row["topology"]) == (1, 0, 0, 0)
    assert (row["int_type"], row["current"], row["nu_pdg"], row["lepton_pdg"]) == (2, 1, 14, 13)
    assert row["pion_energy"] == pytest.approx(_energy(PION_P, M_PI) / 1e3, rel=1e-5)
    assert row["calo_e_avail"] == pytest.approx(1.17 * 200.0 / 1e3, rel=1e-6)
    assert [r["event_weight"] for r in rows] == pytest.approx([0.9, 0.95, 1.0, 1.05], rel=1e-6)
    assert manifest["event_weight"]["branch"] == "mc_cvweight_total"


@pytest.mark.parametrize("compression", ["lzma", "zstd"])
def test_every_compression_gives_the_same_rows(root_files, compression, tmp_path):
    options = ConvertOptions(step_size=3)
    reference = [t for t in iter_converted_tables(root_files["zlib"], options)]
    other = [t for t in iter_converted_tables(root_files[compression], options)]
    assert [t.num_rows for t in other] == [3, 1]
    for a, b in zip(reference, other):
        assert a.drop_columns(["source_file"]).equals(b.drop_columns(["source_file"]))


def test_data_file_without_truth(root_files, tmp_path):
    manifest = convert([root_files["data"]], tmp_path / "out", ConvertOptions(selection=SelectionConfig()),
                       workers=1, progress=False)
    rows = _rows(tmp_path / "out")
    assert len(rows) == 3 and all(r["e_avail"] is None and r["event_weight"] is None for r in rows)
    assert all(r["int_type"] is None and r["topology"] is None for r in rows)
    assert rows[2]["object_pid"] == [1, 3, 3, 5, 4] and rows[2]["gate"] == 102
    [source] = manifest["source_files"]
    assert (source["is_mc"], source["pot_used"], source["event_weight_branch"]) == (False, 3e16, None)
    assert manifest["event_weight"]["branch"] is None


def test_a_prong_vector_of_length_3_names_its_entry(tmp_path):
    events = [_mc_event(k) for k in range(3)]
    events[2]["prong_part_E"] = [[-300.0, 0.0, 100.0, 500.0], [0.0, -400.0, -50.0]]
    path = write_root_anatuple(tmp_path / "bad_vector.root", events)
    from dataset_builder.convert import BadEventError

    with pytest.raises(BadEventError, match=r"bad_vector.root: 1 malformed entry: entry 2: branch 'prong_part_E' "
                                            r"has a prong vector whose length is not 4"):
        convert([path], tmp_path / "out", ConvertOptions(), workers=1, progress=False)
    manifest = convert([path], tmp_path / "skip", ConvertOptions(on_bad_event="skip"), workers=1, progress=False)
    assert [r["entry"] for r in _rows(tmp_path / "skip")] == [0, 1]
    assert manifest["source_files"][0]["bad_entries"][0]["entry"] == 2
