"""The AnaTuple trees and branches the converter reads, with their C++ types, where each type was found, and units.

This is the contract between real MasterAnaDev AnaTuples, the synthetic generator (which writes these names and, as
far as uproot can, these types) and the converter (which reads exactly these, never ``keys()``-wide).
Units follow the tuples: MeV, mm, ns, rad. Reference: ``shared/reference/minerva-data.md`` §1.3.

``dtype`` is the physics kind the converter needs ("f8" a real number, "i4" an integer); ``cpp`` is the C++ type the
MINERvA sources declare. Productions differ (int vs double), so any numeric element type is accepted and cast
explicitly (`convert.normalise_chunk`): floats → float64; integers → int64, with values outside the int32 range
treated as invalid. Only a wrong *shape* (a vector where a scalar belongs, a missing `[4]`) is a type error.
Counted C arrays (``Double_t x[n]; //[n]``) and ``std::vector`` read alike (jagged); ``prong_part_E`` /
``prong_part_pos`` are ``std::vector<std::vector<double>>`` in real files.
"""

from __future__ import annotations

from dataclasses import dataclass

RECO_TREE = "MasterAnaDev"  # one row per reconstructed candidate ("reco" tree); MC and data
TRUTH_TREE = "Truth"  # every generated interaction; MC only; not needed by the converter
META_TREE = "Meta"  # one row per file: POT bookkeeping
GENERATOR_KEY = "minerva_fm_generator"  # TObjString (JSON) in files made by `minerva-fm generate`; not in real files

# Where the C++ types were read (public MINERvA analysis code, found with the project's code search).
MAD_TOOL = "MasterAnaDev tool source MasterAnaDev.cpp: declare{Int,Double}EventBranch / setContainerDoubleData"
MAD_HEADER = "MakeClass header 'from TChain MasterAnaDev/' (ROOT 5.34/36, 2021; namespace RECOTRACKS_ANA)"
SIBLING_HEADERS = ("MakeClass headers of AnaTuples from the same framework (CCQENu 2017, CCPi0 / CCProtonPi0, "
                   "NukeCC): identical ev_*/mc_* truth block")
MAT_READS = "MAT / analysis CVUniverse code reads it with GetDouble(); no header seen (type inferred)"
MAT_POT = "MAT PlotUtils POT counting reads leaf 'POT_Used' / 'POT_Total' of Meta as double"
UNSEEN = "not found in the sources searched; type as the synthetic files write it"


@dataclass(frozen=True)
class Branch:
    """One AnaTuple branch: name, physics kind, shape, unit, C++ type and the source of that type."""

    name: str
    dtype: str  # "f8" (real number) or "i4" (integer); any numeric element type is accepted and cast
    shape: str  # "scalar", "fixed[k]", "var[counter]", "var[counter][4]" (vector<vector<double>>)
    unit: str = ""
    mc_only: bool = False
    cpp: str = ""  # C++ declaration in real AnaTuples
    source: str = ""  # where `cpp` was found
    optional: bool = False  # read when present (never an error when absent)

    @property
    def file_dtype(self) -> str:
        """NumPy dtype real files store the elements in ("i4" for Int_t, else "f8"); the synthetic files use it."""
        return "i4" if self.cpp.startswith("Int_t") else "f8"


def _scalar(name: str, dtype: str = "f8", unit: str = "", mc_only: bool = False, cpp: str = "",
            source: str = "", optional: bool = False) -> Branch:
    cpp = cpp or ("Double_t" if dtype == "f8" else "Int_t")
    return Branch(name, dtype, "scalar", unit, mc_only, cpp, source, optional)


MUON_BRANCHES = (
    # (px,py,pz,E); px=py=-999 if no MINOS match. setContainerDoubleData("muon_corrected_p", 4 values).
    Branch("muon_corrected_p", "f8", "fixed[4]", "MeV", cpp="Double_t[4]", source=f"{MAD_TOOL}; {SIBLING_HEADERS}"),
    _scalar("muon_theta", unit="rad", source=MAD_HEADER),
    _scalar("muon_phi", unit="rad", source=MAD_HEADER),
    # declareIntEventBranch("muon_fuzz_energy", -9999.0): an integer number of MeV in real files.
    _scalar("muon_fuzz_energy", unit="MeV", cpp="Int_t", source=f"{MAD_TOOL}; {MAD_HEADER}"),
    _scalar("muon_iso_blobs_energy", unit="MeV", source=f"{MAD_TOOL} (declareDoubleEventBranch)"),
    _scalar("muon_trackVertexTime", unit="ns", source=MAD_HEADER),
    _scalar("isMinosMatchTrack", "i4", source=MAD_HEADER),
    _scalar("MasterAnaDev_minos_trk_qp", unit="1/MeV", source=MAD_HEADER),
)

PHOTON_BRANCHES = tuple(
    _scalar(f"gamma{slot}_{field}", unit=unit, source=SIBLING_HEADERS + " (gamma1_/gamma2_ block)")
    for slot in (1, 2)
    for field, unit in (("px", "MeV"), ("py", "MeV"), ("pz", "MeV"), ("E", "MeV"), ("time", "ns"), ("dEdx", "MeV/cm"))
)

BLOB_BRANCHES = tuple(
    Branch(f"MasterAnaDev_Blob{field}", "f8", f"var[MasterAnaDev_Blob{field}_sz]", unit,
           cpp=f"Double_t[MasterAnaDev_Blob{field}_sz]", source=MAD_HEADER)
    for field, unit in (("X", "mm"), ("Y", "mm"), ("Z", "mm"), ("T", "ns"), ("TotalE", "MeV"))
)

PRONG_BRANCHES = (
    _scalar("n_prongs", "i4", source=MAD_HEADER),
    Branch("prong_part_E", "f8", "var[n_prongs][4]", "MeV",  # (px,py,pz,E) of the best hypothesis
           cpp="std::vector<std::vector<double>>", source=MAD_HEADER),
    Branch("prong_part_pos", "f8", "var[n_prongs][4]", "mm,ns",  # (x,y,z,t)
           cpp="std::vector<std::vector<double>>", source=MAD_HEADER),
    Branch("prong_part_pid", "i4", "var[n_prongs]",  # raw hypothesis code: 3, 8, 13; 0/-999 none
           cpp="Int_t[n_prongs]", source=MAD_HEADER),
    Branch("prong_dEdXMean", "f8", "var[n_prongs]", "MeV/cm",  # -999 invalid, may be +-inf
           cpp="Double_t[n_prongs]", source=MAD_HEADER),
)

EVENT_BRANCHES = (
    _scalar("MasterAnaDev_hadron_recoil", unit="MeV", source=MAT_READS),
    _scalar("MasterAnaDev_hadron_recoil_CCInc", unit="MeV", source=MAT_READS),
    _scalar("part_response_total_recoil_passive_allNonMuonClusters_id", unit="MeV", source=MAT_READS),
    _scalar("part_response_total_recoil_passive_allNonMuonClusters_od", unit="MeV", source=MAT_READS),
    _scalar("improved_nmichel", "i4", source=f"{MAD_HEADER}; MAT GetInt()"),
    _scalar("blob_recoil_E", unit="MeV", source=MAD_HEADER),
    _scalar("blob_recoil_E_tracker", unit="MeV", source=MAD_HEADER),
    _scalar("blob_recoil_E_ecal", unit="MeV", source=MAD_HEADER),
    _scalar("blob_recoil_E_hcal", unit="MeV", source=MAD_HEADER),
    _scalar("blob_recoil_E_nucl", unit="MeV", source=MAD_HEADER),
    _scalar("blob_recoil_E_od", unit="MeV", source=MAD_HEADER),
    Branch("vtx", "f8", "fixed[4]", "mm,ns", cpp="Double_t[4]", source=MAD_HEADER),
    _scalar("phys_n_dead_discr_pair_upstream_prim_track_proj", "i4", source=MAD_HEADER),
    _scalar("ev_run", "i4", source=SIBLING_HEADERS),
    _scalar("ev_subrun", "i4", source=SIBLING_HEADERS),
    _scalar("ev_gate", "i4", source=SIBLING_HEADERS),
)

TRUTH_BRANCHES = (
    _scalar("mc_incomingE", unit="MeV", mc_only=True, source=SIBLING_HEADERS),
    _scalar("mc_intType", "i4", mc_only=True, source=SIBLING_HEADERS),  # 1 QE, 2 RES, 3 DIS, 4 COH, 8 2p2h
    _scalar("mc_current", "i4", mc_only=True, source=SIBLING_HEADERS),  # 1 CC, 2 NC
    _scalar("mc_incoming", "i4", mc_only=True, source=SIBLING_HEADERS),  # neutrino PDG
    _scalar("mc_primaryLepton", "i4", mc_only=True, source=SIBLING_HEADERS),  # PDG
    _scalar("mc_Q2", unit="MeV^2", mc_only=True, source=SIBLING_HEADERS),
    _scalar("mc_w", unit="MeV", mc_only=True, source=SIBLING_HEADERS),
    _scalar("mc_targetZ", "i4", mc_only=True, source=SIBLING_HEADERS),
    _scalar("mc_targetA", "i4", mc_only=True, source=SIBLING_HEADERS),
    Branch("mc_vtx", "f8", "fixed[4]", "mm,ns", mc_only=True, cpp="Double_t[4]", source=SIBLING_HEADERS),
    Branch("mc_primFSLepton", "f8", "fixed[4]", "MeV", mc_only=True, cpp="Double_t[4]", source=SIBLING_HEADERS),
    _scalar("mc_nFSPart", "i4", mc_only=True, source=SIBLING_HEADERS),
    *(Branch(f"mc_FSPart{c}", "f8", "var[mc_nFSPart]", "MeV", mc_only=True, cpp="Double_t[mc_nFSPart]",
             source=SIBLING_HEADERS) for c in ("Px", "Py", "Pz", "E")),
    Branch("mc_FSPartPDG", "i4", "var[mc_nFSPart]", "", mc_only=True, cpp="Int_t[mc_nFSPart]",
           source=SIBLING_HEADERS),
    _scalar("mc_run", "i4", mc_only=True, source=SIBLING_HEADERS),
    _scalar("mc_subrun", "i4", mc_only=True, source=SIBLING_HEADERS),
    _scalar("mc_nthEvtInFile", "i4", mc_only=True, source=SIBLING_HEADERS),
)

# Central-value event weight: `Double_t mc_cvweight_total;` next to `wgt`, `mc_cvweight_totalFlux`,
# `mc_cvweight_totalXsec` in the truth block of the sibling MakeClass headers; analyses use it as the CV weight
# (e.g. `SetBranchAddress("mc_cvweight_total", &cvWeight)` with the flux universes). Optional: MAT-era analyses
# recompute the MINERvA-tune weight from PlotUtils reweighters instead, and older tuples may lack it.
# Systematic universes (next step, not read): counted arrays `mc_wgt_GENIE[mc_wgt_GENIE_sz]`,
# `mc_wgt_Flux_Tertiary[_sz]`, `mc_wgt_Flux_BeamFocus[_sz]`, `mc_wgt_Flux_NA49[_sz]`, `mc_wgt_Norm[_sz]`,
# `mc_wgt_ppfx1_Total[_sz]` (all Double_t), same headers.
WEIGHT_BRANCHES = (
    _scalar("mc_cvweight_total", mc_only=True, source=SIBLING_HEADERS + " (truth block, next to 'wgt')",
            optional=True),
)
SYSTEMATIC_WEIGHT_BRANCHES = ("mc_wgt_GENIE", "mc_wgt_Flux_Tertiary", "mc_wgt_Flux_BeamFocus", "mc_wgt_Flux_NA49",
                              "mc_wgt_Norm", "mc_wgt_ppfx1_Total")

RECO_BRANCHES = MUON_BRANCHES + PHOTON_BRANCHES + BLOB_BRANCHES + PRONG_BRANCHES + EVENT_BRANCHES
ALL_BRANCHES = RECO_BRANCHES + TRUTH_BRANCHES  # required (MC: all; data: the reco ones)
OPTIONAL_BRANCHES = WEIGHT_BRANCHES

META_BRANCHES = (
    _scalar("POT_Used", unit="POT", source=MAT_POT),
    _scalar("POT_Total", unit="POT", source=MAT_POT),
    _scalar("Total_Reco_Entries", source=UNSEEN),
    _scalar("Total_Truth_Entries", source=UNSEEN),
)


def branch_names(mc: bool = True) -> list[str]:
    """Names of the required reco-tree branches to read (truth ones only for MC)."""
    return [b.name for b in ALL_BRANCHES if mc or not b.mc_only]


__all__ = [
    "RECO_TREE", "TRUTH_TREE", "META_TREE", "GENERATOR_KEY", "Branch", "RECO_BRANCHES", "TRUTH_BRANCHES", "ALL_BRANCHES",
    "WEIGHT_BRANCHES", "OPTIONAL_BRANCHES", "SYSTEMATIC_WEIGHT_BRANCHES", "META_BRANCHES", "branch_names",
]
