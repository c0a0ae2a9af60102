"""Jets in the JetClass layouts -> the model batch dict of docs/tensor-layout.md, in OmniLearned's jet convention
(backbones.md §1.3), so a jet-pretrained backbone has the same inputs and key layout as a converted OmniLearned one.

Per constituent (`object_features`, 9 columns, sorted by decreasing pT, at most `max_particles`):
0 dEta to the jet axis, 1 dPhi to the jet axis (rad), 2 log(pT / GeV), 3 log(E / GeV) -- the four kinematic
features PET embeds -- then the "additional" slots: 4 tanh(d0), 5 tanh(d0 error), 6 tanh(dz), 7 tanh(dz error)
(OmniLearned's four add features; 0 in our Pythia corpus, which has no detector), 8 electric charge.
`object_pid` (OmniLearned's recipe: K+/p merged into pi+, n into K0L, 8 codes, row 0 = padding): `JET_PID_NAMES`.
`event_features` (B, 16) are zero: jets carry no event-level features, so a jet-pretrained backbone's event token
has seen only zeros (recorded as a new, untrained input layer). `labels` = `jet_label` (int64) for classification.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from dataset_builder import schema
from dataset_builder.collator import MinervaCollator, _combined, _list_parts
from dataset_builder.jet_data import JET_COLLATOR_COLUMNS, PART_INPUT_COLUMNS

JET_PID_NAMES = ("padding", "charged hadron +", "charged hadron -", "neutral hadron", "photon", "electron",
                 "positron", "muon -", "muon +")
JET_OBJECT_FEATURE_NAMES = ("deta", "dphi", "log_pt", "log_e", "tanh_d0", "tanh_d0err", "tanh_dz", "tanh_dzerr",
                            "charge")
DEFAULT_MAX_PARTICLES = 128  # JetClass / ParT convention


def jet_pid_index(charge, is_electron, is_muon, is_photon, is_charged_hadron, is_neutral_hadron) -> np.ndarray:
    """PID index 1..8 of `JET_PID_NAMES` from JetClass flags and charge (unflagged: hadron by charge)."""
    negative = charge < 0
    pid = np.where(charge != 0, np.where(negative, 2, 1), 3)
    pid = np.where(is_neutral_hadron > 0, 3, pid)
    pid = np.where(is_charged_hadron > 0, np.where(negative, 2, 1), pid)
    pid = np.where(is_photon > 0, 4, pid)
    pid = np.where(is_electron > 0, np.where(negative, 5, 6), pid)
    pid = np.where(is_muon > 0, np.where(negative, 7, 8), pid)
    return pid.astype(np.int64)


class JetCollator:
    """Pads jets to the most populated jet in the batch (at most `max_particles`); adds `labels` for classification."""

    def __init__(self, task: str | None = None, max_particles: int = DEFAULT_MAX_PARTICLES):
        if task not in (None, "classification"):
            raise ValueError(f"task must be None or 'classification', got {task!r}")
        self.task, self.max_particles = task, max_particles
        self._assembler = MinervaCollator(max_objects=max_particles)

    @property
    def columns(self) -> list[str]:
        """Columns read (select these to stream less)."""
        return list(JET_COLLATOR_COLUMNS if self.task else PART_INPUT_COLUMNS)

    def collate_arrow(self, data: pa.Table | pa.RecordBatch) -> dict[str, torch.Tensor]:
        """Collate an Arrow table of jets through its list offsets (vectorised)."""
        missing = [c for c in self.columns if c not in data.schema.names]
        if missing:
            raise KeyError(f"jet data is missing columns {missing} (has {data.schema.names})")
        flat, offsets = {}, None
        for name in PART_INPUT_COLUMNS:
            these, values = _list_parts(_combined(data.column(name), name))
            if offsets is None:
                offsets = these
            elif not np.array_equal(offsets, these):
                raise ValueError(f"column {name!r} has a different number of constituents than part_px")
            flat[name] = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        counts = np.diff(offsets)
        feats, pids = self.constituent_arrays(flat)
        # decreasing pT within each jet (stable), so truncation keeps the hardest constituents
        jet_of = np.repeat(np.arange(len(counts)), counts)
        order = np.lexsort((-feats[:, 2], jet_of))
        event = np.zeros((len(counts), schema.NUM_EVENT_FEATURES), np.float32)
        batch = self._assembler._assemble(pids[order], feats[order], counts, event)
        if self.task:
            labels = _combined(data.column("jet_label"), "jet_label")
            if labels.null_count:
                raise ValueError(f"{labels.null_count} jets have a null jet_label")
            batch["labels"] = torch.from_numpy(labels.to_numpy(zero_copy_only=False).astype(np.int64))
        return batch

    @staticmethod
    def constituent_arrays(flat: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(n, 9) float32 features and (n,) PID indices of flat constituent columns (GeV)."""
        pt = np.hypot(flat["part_px"], flat["part_py"])
        feats = np.stack([
            flat["part_deta"], flat["part_dphi"],
            np.log(np.maximum(pt, 1e-6)), np.log(np.maximum(flat["part_energy"], 1e-6)),
            np.tanh(flat["part_d0val"]), np.tanh(flat["part_d0err"]), np.tanh(flat["part_dzval"]),
            np.tanh(flat["part_dzerr"]), flat["part_charge"],
        ], axis=1).astype(np.float32)
        pids = jet_pid_index(flat["part_charge"], flat["part_isElectron"], flat["part_isMuon"], flat["part_isPhoton"],
                             flat["part_isChargedHadron"], flat["part_isNeutralHadron"])
        return feats, pids


__all__ = ["JetCollator", "jet_pid_index", "JET_PID_NAMES", "JET_OBJECT_FEATURE_NAMES", "DEFAULT_MAX_PARTICLES"]
