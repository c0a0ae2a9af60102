"""The dataset and results contract names the explorer needs.

Dataset schema: from the installed minerva-fm package, else the copy below (tests/space/test_event_explorer.py checks
it is identical), so the Space runs where only gradio/torch/transformers and minerva_common are installed. Results:
minerva_common/results.py only.
"""

from __future__ import annotations

try:
    from dataset_builder.schema import (
        EVENT_FEATURE_NAMES,
        NUM_EVENT_FEATURES,
        NUM_OBJECT_FEATURES,
        OBJECT_FEATURE_NAMES,
        PID_NAMES,
        SIGNAL_CLASSES,
        TOPOLOGY_NAMES,
    )

    SCHEMA_SOURCE = "dataset_builder.schema"
except ImportError:  # Copied from dataset_builder/schema.py
    OBJECT_FEATURE_NAMES = ("eta", "phi", "log_pt", "log_e", "log_dedx", "x", "y", "z", "t")
    NUM_OBJECT_FEATURES = len(OBJECT_FEATURE_NAMES)
    PID_NAMES = ("padding", "muon", "photon", "blob", "prong_pid3", "prong_pid8", "prong_pid13", "aggregated_blobs",
                 "aggregated_prongs")
    EVENT_FEATURE_NAMES = (
        "log_muon_fuzz_energy", "log_muon_iso_blobs_energy", "log_hadron_recoil", "log_passive_recoil_id",
        "log_passive_recoil_od", "log_passive_recoil_total", "n_michel", "has_muon", "m_gammagamma",
        "n_prongs_pid8or9", "log_sum_e_blob", "log_sum_e_prong_pid3", "log_sum_e_prong_pid8",
        "log_sum_e_prong_pid13", "log_sum_e_aggregated_blobs", "log_sum_e_aggregated_prongs",
    )
    NUM_EVENT_FEATURES = len(EVENT_FEATURE_NAMES)
    TOPOLOGY_NAMES = ("CC1pi_charged", "CCNpi_charged", "CC1pi0", "CC_other", "NC")
    SIGNAL_CLASSES = {"cc1pi_charged": (0,), "ccnpi_charged": (0, 1), "cc1pi0": (2,)}
    SCHEMA_SOURCE = "copy in spaces/event_explorer/explorer_schema.py"

# The evaluation-results contract is read only through minerva_common/results.py (push-space uploads the
# minerva_common package next to app.py; no second copy of it here).
from minerva_common.results import LOW_Q3_MAX, RESULTS_FILE, SIGNAL_LABELS

# Display names of the object types: MINERvA's raw prong_part_pid hypothesis codes 3, 8, 13 are kept as codes because
# their meaning is unverified (the reference code calls them "pion", "EM shower", "muon-like"; raw 3 carries the muon
# mass and repeats the muon track in the reference ntuples).
PID_LABELS = {"padding": "padding", "muon": "muon", "photon": "photon (π⁰ candidate)",
              "blob": "blob (calorimetric cluster)", "prong_pid3": "prong, raw pid 3 ('pion'?)",
              "prong_pid8": "prong, raw pid 8 ('EM shower'?)", "prong_pid13": "prong, raw pid 13 ('muon-like'?)",
              "aggregated_blobs": "blobs beyond the cap (summed)",
              "aggregated_prongs": "prongs beyond the cap (summed)"}
PID_NOTE = ("Prong types are MINERvA's raw `prong_part_pid` hypothesis codes 3, 8 and 13. The reference code labels "
            "them 'pion', 'EM shower' and 'muon-like', but those meanings are unverified (raw 3 carries the muon mass "
            "and repeats the muon track), so the codes are shown. Aggregated tokens sum the objects beyond the "
            "per-type cap.")

# Columns an uploaded file must have (the model inputs); truth and baseline columns are shown when present.
REQUIRED_COLUMNS = ("n_objects", "object_pid", "object_features", "event_features")
OBJECT_TABLE_COLUMNS = ("type", "E (MeV)", "pT (MeV)", "eta", "phi", "log dE/dx", "x (mm)", "y (mm)", "z (mm)",
                        "t (ns)")
TRUTH_FIELDS = (  # column, label, unit
    ("topology", "channel (topology)", ""), ("current", "current (1 CC, 2 NC)", ""), ("int_type", "mc_intType", ""),
    ("e_avail", "E_avail (true)", "GeV"), ("q3", "q3 (true)", "GeV"), ("q0", "q0 (true)", "GeV"),
    ("w", "W (true)", "GeV"), ("enu", "E_nu (true)", "GeV"), ("n_pi_plus", "N pi+", ""), ("n_pi_minus", "N pi-", ""),
    ("n_pi0", "N pi0", ""), ("calo_e_avail", "E_avail calorimetric baseline", "GeV"),
    ("tag_cc1pi_charged", "cut tagger CC1pi+-", ""), ("tag_ccnpi_charged", "cut tagger CCNpi+-", ""),
    ("tag_cc1pi0", "cut tagger CC1pi0", ""),
)
