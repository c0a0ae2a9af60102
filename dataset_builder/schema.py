"""The converted-dataset contract: Parquet columns (one row per event), object/PID layout and units.

Everything downstream (the `datasets` features, the collator, the models' input layout, metrics, cards, the Space)
reads these names. Units in Parquet: energies, momenta and masses in **GeV** for targets and baselines, object
features as defined in ``OBJECT_FEATURE_NAMES`` (log of MeV, mm/1e4, ns/1e4), angles in rad.
"""

from __future__ import annotations

import pyarrow as pa

MAX_MUONS, MAX_PHOTONS, MAX_BLOBS, MAX_PRONGS = 1, 2, 20, 10
MAX_OBJECTS = MAX_MUONS + MAX_PHOTONS + MAX_BLOBS + MAX_PRONGS  # 33; order: muon, photons, blobs, prongs

# Per-object float features, in this order. Kinematics are w.r.t. the detector z axis (reference convention);
# "eta"/"phi" are absolute (nothing subtracted), energies in MeV before the log.
OBJECT_FEATURE_NAMES = (
    "eta",  # 0.5 ln((p+pz)/(p-pz)), clipped to [-10, 10]
    "phi",  # atan2(py, px) in [-pi, pi]
    "log_pt",  # ln(pT/MeV + 1e-6)
    "log_e",  # ln(E/MeV + 1e-6)
    "log_dedx",  # ln(|<dE/dx>| + 0.1) (prongs, photons); 0 for muon and blobs
    "x",  # mm / 1e4 (blobs, prongs; 0 for muon and photons)
    "y",  # mm / 1e4
    "z",  # mm / 1e4
    "t",  # ns / 1e4
)
NUM_OBJECT_FEATURES = len(OBJECT_FEATURE_NAMES)  # 9
NUM_KINEMATIC_FEATURES = 4  # the first four: what jet foundation models saw in pre-training

# PID index per object. 0 is reserved for padding (fixes the reference's muon = padding bug, minerva-data.md §7.1).
PID_NAMES = (
    "padding",  # 0
    "muon",  # 1
    "photon",  # 2
    "blob",  # 3
    "prong_pid3",  # 4: raw prong_part_pid 3
    "prong_pid8",  # 5: raw 8
    "prong_pid13",  # 6: raw 13
    "aggregated_blobs",  # 7: blobs beyond the cap, 4-vectors summed
    "aggregated_prongs",  # 8: prongs beyond the cap
)
PID_VOCAB_SIZE = len(PID_NAMES)  # 9
RAW_PRONG_PID_TO_INDEX = {3: 4, 8: 5, 13: 6}

# Event-level features (the reference's 16, same order; minerva-data.md §2.4).
EVENT_FEATURE_NAMES = (
    "log_muon_fuzz_energy",
    "log_muon_iso_blobs_energy",
    "log_hadron_recoil",  # zeroed by models in every paper run
    "log_passive_recoil_id",
    "log_passive_recoil_od",
    "log_passive_recoil_total",
    "n_michel",
    "has_muon",
    "m_gammagamma",  # MeV, raw; 0 unless exactly 2 photons
    "n_prongs_pid8or9",
    "log_sum_e_blob",
    "log_sum_e_prong_pid3",
    "log_sum_e_prong_pid8",
    "log_sum_e_prong_pid13",
    "log_sum_e_aggregated_blobs",
    "log_sum_e_aggregated_prongs",
)
NUM_EVENT_FEATURES = len(EVENT_FEATURE_NAMES)  # 16

# 5-class topology (minerva-data.md §3.4, re-derived from particle counts).
TOPOLOGY_NAMES = ("CC1pi_charged", "CCNpi_charged", "CC1pi0", "CC_other", "NC")
NUM_TOPOLOGIES = len(TOPOLOGY_NAMES)
# Signal classes (sum of softmax over these) for each tagging task.
SIGNAL_CLASSES = {"cc1pi_charged": (0,), "ccnpi_charged": (0, 1), "cc1pi0": (2,)}

KEY_COLUMNS = {"source_file": pa.string(), "entry": pa.int64(), "run": pa.int32(), "subrun": pa.int32(), "gate": pa.int32()}
OBJECT_COLUMNS = {
    "n_objects": pa.int32(),
    "object_pid": pa.list_(pa.int32()),
    "object_features": pa.list_(pa.list_(pa.float32(), NUM_OBJECT_FEATURES)),
    "event_features": pa.list_(pa.float32(), NUM_EVENT_FEATURES),
    "has_muon": pa.bool_(),
}
# Truth columns are null for data files. GeV unless stated.
TRUTH_COLUMNS = {
    "enu": pa.float32(),  # true neutrino energy
    "e_avail": pa.float32(),  # regression target, MINERvA convention (kinetic p/pi+-, total pi0/gamma/e; no n)
    "e_avail_reference": pa.float32(),  # the reference code's convention (pi+- total energy), for parity
    "q0": pa.float32(),  # true energy transfer, Enu - E_lepton (beam frame)
    "q3": pa.float32(),  # true 3-momentum transfer |p_nu - p_lepton|
    "q3_hybrid": pa.float32(),  # reference: true Enu, reco muon, detector axis (parity only)
    "q2": pa.float32(),  # GeV^2, -(p_nu - p_lepton)^2
    "w": pa.float32(),  # hadronic invariant mass from FS particles, nuclei and pseudo-particles excluded
    "w_genie": pa.float32(),  # mc_w / 1000 (pre-FSI)
    "int_type": pa.int32(),  # mc_intType
    "current": pa.int32(),  # 1 CC, 2 NC
    "nu_pdg": pa.int32(),
    "lepton_pdg": pa.int32(),
    "n_pi_plus": pa.int32(),
    "n_pi_minus": pa.int32(),
    "n_pi0": pa.int32(),
    "pion_energy": pa.float32(),  # total energy of the single pion used for binning (0: none)
    "pion_kinetic_energy": pa.float32(),
    "pion_theta": pa.float32(),  # rad, w.r.t. the beam axis
    "topology": pa.int32(),  # index into TOPOLOGY_NAMES
    "is_cc1pi_charged": pa.bool_(),
    "is_ccnpi_charged": pa.bool_(),
    "is_cc1pi0": pa.bool_(),
}
BASELINE_COLUMNS = {
    "calo_e_avail": pa.float32(),  # 1.17 * blob_recoil_E (all sub-detectors); -1 where blob_recoil_E == 0
    "tag_cc1pi_charged": pa.bool_(),
    "tag_ccnpi_charged": pa.bool_(),
    "tag_cc1pi0": pa.bool_(),
    "passes_cc_inclusive": pa.bool_(),  # the reference's regression-evaluation selection
}

# Central-value MC event weight (float32, nullable): null on data files and on MC files without the weight branch;
# the manifest names the branch it came from (`branches.WEIGHT_BRANCHES`, e.g. mc_cvweight_total).
WEIGHT_COLUMNS = {"event_weight": pa.float32()}

# Version of this layout; bumped whenever a column is added, removed or changes type (2: + event_weight).
SCHEMA_VERSION = 2

PARQUET_SCHEMA = pa.schema(
    [pa.field(n, t) for n, t in
     {**KEY_COLUMNS, **OBJECT_COLUMNS, **TRUTH_COLUMNS, **BASELINE_COLUMNS, **WEIGHT_COLUMNS}.items()],
    metadata={b"minerva_fm.schema_version": str(SCHEMA_VERSION).encode()},
)

SPLITS = ("train", "validation", "test", "shifted")  # "shifted": held-out 1B-like files, out of distribution


__all__ = [name for name in dir() if name.isupper()]
