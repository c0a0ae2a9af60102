"""The AnaTuple trees and branches the converter reads, with their ROOT types and units.

This is the contract between real MasterAnaDev AnaTuples, the synthetic generator (which writes these names) and the
converter (which reads exactly these, never ``keys()``-wide). Units follow the tuples: MeV, mm, ns, rad.
Reference: ``shared/reference/minerva-data.md`` §1.3.
"""

from __future__ import annotations

from dataclasses import dataclass

RECO_TREE = "MasterAnaDev"  # one row per reconstructed candidate ("reco" tree); MC and data
TRUTH_TREE = "Truth"  # every generated interaction; MC only; not needed by the converter
META_TREE = "Meta"  # one row per file: POT bookkeeping


@dataclass(frozen=True)
class Branch:
    """One AnaTuple branch: name, element dtype, shape kind and unit."""

    name: str
    dtype: str  # numpy dtype of the elements: "f8" or "i4"
    shape: str  # "scalar", "fixed[k]", "var[counter]", "var[counter][4]" (vector<vector<double>>)
    unit: str = ""
    mc_only: bool = False


def _scalar(name: str, dtype: str = "f8", unit: str = "", mc_only: bool = False) -> Branch:
    return Branch(name, dtype, "scalar", unit, mc_only)


MUON_BRANCHES = (
    Branch("muon_corrected_p", "f8", "fixed[4]", "MeV"),  # (px,py,pz,E); px=py=-999 if no MINOS match
    _scalar("muon_theta", unit="rad"),
    _scalar("muon_phi", unit="rad"),
    _scalar("muon_fuzz_energy", unit="MeV"),
    _scalar("muon_iso_blobs_energy", unit="MeV"),
    _scalar("muon_trackVertexTime", unit="ns"),
    _scalar("isMinosMatchTrack", "i4"),
    _scalar("MasterAnaDev_minos_trk_qp", unit="1/MeV"),
)

PHOTON_BRANCHES = tuple(
    _scalar(f"gamma{slot}_{field}", unit=unit)
    for slot in (1, 2)
    for field, unit in (("px", "MeV"), ("py", "MeV"), ("pz", "MeV"), ("E", "MeV"), ("time", "ns"), ("dEdx", "MeV/cm"))
)

BLOB_BRANCHES = tuple(
    Branch(f"MasterAnaDev_Blob{field}", "f8", f"var[MasterAnaDev_Blob{field}_sz]", unit)
    for field, unit in (("X", "mm"), ("Y", "mm"), ("Z", "mm"), ("T", "ns"), ("TotalE", "MeV"))
)

PRONG_BRANCHES = (
    _scalar("n_prongs", "i4"),
    Branch("prong_part_E", "f8", "var[n_prongs][4]", "MeV"),  # (px,py,pz,E) of the best hypothesis
    Branch("prong_part_pos", "f8", "var[n_prongs][4]", "mm,ns"),  # (x,y,z,t)
    Branch("prong_part_pid", "i4", "var[n_prongs]"),  # raw hypothesis code: 3, 8, 13; 0/-999 none
    Branch("prong_dEdXMean", "f8", "var[n_prongs]", "MeV/cm"),  # -999 invalid, may be +-inf
)

EVENT_BRANCHES = (
    _scalar("MasterAnaDev_hadron_recoil", unit="MeV"),
    _scalar("MasterAnaDev_hadron_recoil_CCInc", unit="MeV"),
    _scalar("part_response_total_recoil_passive_allNonMuonClusters_id", unit="MeV"),
    _scalar("part_response_total_recoil_passive_allNonMuonClusters_od", unit="MeV"),
    _scalar("improved_nmichel", "i4"),
    _scalar("blob_recoil_E", unit="MeV"),
    _scalar("blob_recoil_E_tracker", unit="MeV"),
    _scalar("blob_recoil_E_ecal", unit="MeV"),
    _scalar("blob_recoil_E_hcal", unit="MeV"),
    _scalar("blob_recoil_E_nucl", unit="MeV"),
    _scalar("blob_recoil_E_od", unit="MeV"),
    Branch("vtx", "f8", "fixed[4]", "mm,ns"),
    _scalar("phys_n_dead_discr_pair_upstream_prim_track_proj", "i4"),
    _scalar("ev_run", "i4"),
    _scalar("ev_subrun", "i4"),
    _scalar("ev_gate", "i4"),
)

TRUTH_BRANCHES = (
    _scalar("mc_incomingE", unit="MeV", mc_only=True),
    _scalar("mc_intType", "i4", mc_only=True),  # 1 QE, 2 RES, 3 DIS, 4 COH, 8 2p2h
    _scalar("mc_current", "i4", mc_only=True),  # 1 CC, 2 NC
    _scalar("mc_incoming", "i4", mc_only=True),  # neutrino PDG
    _scalar("mc_primaryLepton", "i4", mc_only=True),  # PDG
    _scalar("mc_Q2", unit="MeV^2", mc_only=True),
    _scalar("mc_w", unit="MeV", mc_only=True),
    _scalar("mc_targetZ", "i4", mc_only=True),
    _scalar("mc_targetA", "i4", mc_only=True),
    Branch("mc_vtx", "f8", "fixed[4]", "mm,ns", mc_only=True),
    Branch("mc_primFSLepton", "f8", "fixed[4]", "MeV", mc_only=True),
    _scalar("mc_nFSPart", "i4", mc_only=True),
    Branch("mc_FSPartPx", "f8", "var[mc_nFSPart]", "MeV", mc_only=True),
    Branch("mc_FSPartPy", "f8", "var[mc_nFSPart]", "MeV", mc_only=True),
    Branch("mc_FSPartPz", "f8", "var[mc_nFSPart]", "MeV", mc_only=True),
    Branch("mc_FSPartE", "f8", "var[mc_nFSPart]", "MeV", mc_only=True),
    Branch("mc_FSPartPDG", "i4", "var[mc_nFSPart]", "", mc_only=True),
    _scalar("mc_run", "i4", mc_only=True),
    _scalar("mc_subrun", "i4", mc_only=True),
    _scalar("mc_nthEvtInFile", "i4", mc_only=True),
)

RECO_BRANCHES = MUON_BRANCHES + PHOTON_BRANCHES + BLOB_BRANCHES + PRONG_BRANCHES + EVENT_BRANCHES
ALL_BRANCHES = RECO_BRANCHES + TRUTH_BRANCHES

META_BRANCHES = (
    _scalar("POT_Used", unit="POT"),
    _scalar("POT_Total", unit="POT"),
    _scalar("Total_Reco_Entries"),
    _scalar("Total_Truth_Entries"),
)


def branch_names(mc: bool = True) -> list[str]:
    """Names of the reco-tree branches to read (truth ones only for MC)."""
    return [b.name for b in ALL_BRANCHES if mc or not b.mc_only]


__all__ = [
    "RECO_TREE", "TRUTH_TREE", "META_TREE", "Branch", "RECO_BRANCHES", "TRUTH_BRANCHES", "ALL_BRANCHES",
    "META_BRANCHES", "branch_names",
]
