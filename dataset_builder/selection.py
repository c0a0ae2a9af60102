"""Event selection of the converter: a typed config (loadable from YAML), the row filter and the CC-inclusive flag.

Default: MC rows are kept iff `mc_intType` ∈ {1, 2, 3, 4, 8} (QE, RES, DIS, COH, 2p2h — the reference's split
filter); data rows are all kept. Nothing else removes rows: the reference's regression-evaluation cut is stored as
the `passes_cc_inclusive` column so it can be applied as a view (§7.20). Per-cut counts go to the manifest.

YAML layout (every key optional)::

    int_types: [1, 2, 3, 4, 8]     # null keeps every MC row
    cc_inclusive:
      max_muon_theta_deg: 20.0      # reco muon angle to the detector z axis
      min_muon_p_gev: 1.5
      max_muon_p_gev: 20.0
      require_positive_recoil: true # MasterAnaDev_hadron_recoil_CCInc > 0
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml


@dataclass(frozen=True)
class CCInclusiveCuts:
    """The reference's "CC-inclusive-like" regression-evaluation cut (reco muon from `muon_corrected_p`, §3.5).

    The E_true ≥ 0.05 GeV requirement of the evaluation is a truth cut and belongs to the metrics, not here.
    """

    max_muon_theta_deg: float = 20.0
    min_muon_p_gev: float = 1.5
    max_muon_p_gev: float = 20.0
    require_positive_recoil: bool = True

    def __post_init__(self) -> None:
        if not self.min_muon_p_gev < self.max_muon_p_gev:
            raise ValueError(f"cc_inclusive: min_muon_p_gev={self.min_muon_p_gev} must be < "
                             f"max_muon_p_gev={self.max_muon_p_gev}")


@dataclass(frozen=True)
class SelectionConfig:
    """Which rows the converter keeps (`int_types`, MC only) and how `passes_cc_inclusive` is computed."""

    int_types: tuple[int, ...] | None = (1, 2, 3, 4, 8)
    cc_inclusive: CCInclusiveCuts = field(default_factory=CCInclusiveCuts)

    @classmethod
    def from_dict(cls, values: dict, source: str = "selection config") -> SelectionConfig:
        """Build from a plain dict (e.g. parsed YAML); unknown keys raise ValueError naming them and the source."""
        values = dict(values or {})
        _check_keys(values, cls, source)
        cuts = values.pop("cc_inclusive", None) or {}
        _check_keys(cuts, CCInclusiveCuts, f"{source}: cc_inclusive")
        int_types = values.pop("int_types", cls.int_types)
        int_types = None if int_types is None else tuple(int(t) for t in int_types)
        return cls(int_types=int_types, cc_inclusive=CCInclusiveCuts(**cuts))

    @classmethod
    def from_yaml(cls, path: str | Path) -> SelectionConfig:
        """Load from a YAML file (see the module docstring for the layout)."""
        with open(path) as handle:
            values = yaml.safe_load(handle)
        if values is not None and not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping at the top level, got {type(values).__name__}")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict:
        """Plain-dict form (for the manifest)."""
        out = dataclasses.asdict(self)
        out["int_types"] = None if self.int_types is None else list(self.int_types)
        return out


def _check_keys(values: dict, cls: type, source: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(known)}")


def row_mask(int_type: np.ndarray | None, config: SelectionConfig) -> tuple[np.ndarray | None, dict[str, int]]:
    """Rows to keep → (mask or None for "all", per-cut counts). `int_type` is None for data files."""
    if int_type is None or config.int_types is None:
        return None, {}
    keep = np.isin(int_type, config.int_types)
    return keep, {"int_type": int(keep.sum())}


def passes_cc_inclusive(muon_p4: np.ndarray, has_muon: np.ndarray, recoil_ccinc: np.ndarray,
                        cuts: CCInclusiveCuts = CCInclusiveCuts()) -> np.ndarray:
    """Reference regression-evaluation cut per event: reco muon (MeV, detector frame) with cos θ_z > cos(θ_max),
    p_min < |p| < p_max (GeV) and, if required, `MasterAnaDev_hadron_recoil_CCInc` > 0 (MeV)."""
    p = np.linalg.norm(np.where(has_muon[:, None], muon_p4[:, :3], 0.0), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_theta = np.where(p > 0, muon_p4[:, 2] / np.where(p > 0, p, 1.0), -1.0)
    p_gev = p / 1000.0
    ok = has_muon & (cos_theta > np.cos(np.radians(cuts.max_muon_theta_deg)))
    ok &= (p_gev > cuts.min_muon_p_gev) & (p_gev < cuts.max_muon_p_gev)
    if cuts.require_positive_recoil:
        ok &= np.nan_to_num(recoil_ccinc, nan=0.0) > 0
    return ok


__all__ = ["CCInclusiveCuts", "SelectionConfig", "row_mask", "passes_cc_inclusive"]
