"""Physics definitions of the converter, one function each: E_avail, q0/q3/Q², W, topology, pion, baselines, tags.

Every function is vectorised (NumPy over per-event arrays and over the flat final-state lists of `FinalState`) and
states its units. Inputs follow the AnaTuple (MeV, mm, ns, rad, detector frame: z = detector axis, y up) and so do the
outputs (MeV, MeV²); `convert.py` turns them into the GeV columns of `schema.PARQUET_SCHEMA`.
Reference: ``shared/reference/minerva-data.md`` §3, §4 and the bug list §7 (items fixed here are named).
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

# Masses in MeV (PDG 2024, as scikit-hep `particle` gives them; tests/dataset_builder/test_physics.py checks).
# The only copy in the project: the synthetic generator imports these.
M_PROTON = 938.27208943
M_NEUTRON = 939.5654219
M_PI_CHARGED = 139.57039
M_PI0 = 134.9768
M_MUON = 105.6583755
M_ELECTRON = 0.51099895069

# The NuMI beam points this far below the detector z axis (it travels "downhill", towards -y): 3.34°.
# Rotating a detector-frame vector about x by -BEAM_ANGLE_RAD gives beam-frame coordinates (MAT convention).
BEAM_ANGLE_RAD = 0.05887

# Above this |PDG| code a final-state entry is a nucleus (10LZZZAAAI) or a GENIE pseudo-particle (2000000xxx).
NUCLEUS_PDG_MIN = 1_000_000_000

E_AVAIL_CONVENTIONS = ("minerva", "reference")
CALORIMETRIC_SCALE = 1.17  # reference / LowRecoilPions calibration of blob_recoil_E to E_avail


@dataclass(frozen=True)
class FinalState:
    """The post-FSI final-state lists (`mc_FSPart*`) of N events, flat: particle k belongs to event `event[k]`."""

    pdg: np.ndarray  # (M,) int
    px: np.ndarray  # (M,) MeV, detector frame
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray  # (M,) MeV, total energy
    event: np.ndarray  # (M,) event index
    n_events: int

    @classmethod
    def from_jagged(cls, pdg, px, py, pz, e) -> FinalState:
        """From jagged (N, var) awkward arrays or lists, e.g. the `mc_FSPartPDG/Px/Py/Pz/E` branches."""
        pdg = ak.Array(pdg)
        counts = np.asarray(ak.to_numpy(ak.num(pdg, axis=1)), dtype=np.int64)
        flat = [np.asarray(ak.to_numpy(ak.flatten(ak.Array(c), axis=None)), dtype=np.float64)
                for c in (px, py, pz, e)]
        pdg_flat = np.asarray(ak.to_numpy(ak.flatten(pdg, axis=None)), dtype=np.int64)
        return cls(pdg_flat, *flat, np.repeat(np.arange(len(counts)), counts), len(counts))

    def per_event_sum(self, values: np.ndarray) -> np.ndarray:
        """Σ over each event's particles of `values` (M,) → (N,)."""
        return np.bincount(self.event, weights=values, minlength=self.n_events)

    def count(self, mask: np.ndarray) -> np.ndarray:
        """Number of particles per event where `mask` (M,) holds → (N,) int32."""
        return np.bincount(self.event[mask], minlength=self.n_events).astype(np.int32)


def rotate_to_beam_frame(px, py, pz):
    """Detector-frame (px, py, pz) → beam-frame components (rotation about x by −0.05887 rad; any length unit).

    The beam direction (0, −sin θb, cos θb) of the detector frame becomes (0, 0, 1).
    """
    cos_b, sin_b = np.cos(BEAM_ANGLE_RAD), np.sin(BEAM_ANGLE_RAD)
    return px, py * cos_b + pz * sin_b, -py * sin_b + pz * cos_b


def available_energy(fs: FinalState, convention: str = "minerva") -> np.ndarray:
    """True available energy per event (MeV) from the post-FSI final-state lists (MeV).

    ``convention="minerva"`` (default, arXiv 1511.05944 / 2110.13372): kinetic energy E − m of protons and π±,
    E + m_p for antiprotons (annihilation), total energy E of π⁰, γ, e± and K±.
    ``convention="reference"`` (the paper's code, for parity, bug §7.4): E − m_p for p **and** p̄, total energy E of
    π± (≈ +139.57 MeV per π± compared with MINERvA), π⁰, γ, e± and K±.
    Both exclude μ± and neutrinos, neutrons/antineutrons, neutral kaons, strange baryons, nuclei and GENIE
    pseudo-particles; both count the primary electron of ν_e-CC events; the event sum is clipped at 0.
    """
    if convention not in E_AVAIL_CONVENTIONS:
        raise ValueError(f"convention={convention!r}; expected one of {E_AVAIL_CONVENTIONS}")
    pdg, e = fs.pdg, fs.e
    total_e = (pdg == 111) | (pdg == 22) | (np.abs(pdg) == 11) | (np.abs(pdg) == 321)
    contribution = np.where(total_e, e, 0.0) + np.where(pdg == 2212, e - M_PROTON, 0.0)
    if convention == "minerva":
        contribution += np.where(pdg == -2212, e + M_PROTON, 0.0) + np.where(np.abs(pdg) == 211, e - M_PI_CHARGED, 0.0)
    else:
        contribution += np.where(pdg == -2212, e - M_PROTON, 0.0) + np.where(np.abs(pdg) == 211, e, 0.0)
    return np.clip(fs.per_event_sum(contribution), 0.0, None)


def true_momentum_transfer(enu, lepton_p4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True (q0, q3, Q²) in (MeV, MeV, MeV²) from `mc_incomingE` (MeV) and `mc_primFSLepton` (N, 4) = (px,py,pz,E).

    The neutrino travels along the beam axis; the lepton momentum is rotated into the beam frame first (fixes bug
    §7.5). q0 = Eν − E_ℓ, q⃗ = Eν ẑ_beam − p⃗_ℓ, q3 = |q⃗|, Q² = q3² − q0² = −(p_ν − p_ℓ)².
    """
    lx, ly, lz = rotate_to_beam_frame(lepton_p4[:, 0], lepton_p4[:, 1], lepton_p4[:, 2])
    q0 = enu - lepton_p4[:, 3]
    q3 = np.sqrt(lx**2 + ly**2 + (enu - lz) ** 2)
    return q0, q3, q3**2 - q0**2


def hybrid_q3(enu, muon_p4, has_muon) -> np.ndarray:
    """The reference's "q3" (MeV) for parity only (bug §7.5): true Eν, **reco** muon, detector z axis.

    q0 = Eν − E_μ, Q² = 2 Eν (E_μ − p_z,μ) − m_μ², q3 = √(Q² + q0²); NaN where there is no reco muon or Q² + q0² < 0.
    """
    q0 = enu - muon_p4[:, 3]
    q2 = 2.0 * enu * (muon_p4[:, 3] - muon_p4[:, 2]) - M_MUON**2
    arg = q2 + q0**2
    ok = has_muon & (arg >= 0)
    return np.where(ok, np.sqrt(np.where(ok, arg, 0.0)), np.nan)


def hadronic_invariant_mass(fs: FinalState) -> np.ndarray:
    """True hadronic W (MeV) = invariant mass of the final-state list without leptons, nuclei and pseudo-particles.

    Sums every FS entry with |PDG| ∉ {11..16} and |PDG| < 1e9 (neutrons and photons included; nuclei 10LZZZAAAI and
    GENIE pseudo-codes 2000000xxx excluded, fixing bug §7.6). Post-FSI, so it differs from GENIE's `mc_w`.
    NaN where nothing is summed or the mass² is negative.
    """
    abs_pdg = np.abs(fs.pdg)
    hadronic = ((abs_pdg < 11) | (abs_pdg > 16)) & (abs_pdg < NUCLEUS_PDG_MIN)
    px, py, pz, e = (fs.per_event_sum(np.where(hadronic, c, 0.0)) for c in (fs.px, fs.py, fs.pz, fs.e))
    mass2 = e**2 - px**2 - py**2 - pz**2
    ok = (fs.count(hadronic) > 0) & (mass2 >= 0)
    return np.where(ok, np.sqrt(np.where(ok, mass2, 0.0)), np.nan)


def pion_counts(fs: FinalState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numbers of π⁺ (211), π⁻ (−211) and π⁰ (111) per event in the final state (post-FSI, no thresholds)."""
    return tuple(fs.count(fs.pdg == code) for code in (211, -211, 111))


def topology(current, n_pi_plus, n_pi_minus, n_pi0) -> np.ndarray:
    """5-class label (index into `schema.TOPOLOGY_NAMES`) from `mc_current` (1 CC, 2 NC) and true pion counts.

    0 CC with exactly one π± (any π⁰), 1 CC with more than one π±, 2 CC with no π± and exactly one π⁰,
    3 other CC, 4 NC (anything with current ≠ 1). No kinematic thresholds, no lepton-flavour check (reference §3.4).
    """
    n_charged = n_pi_plus + n_pi_minus
    label = np.where(n_charged == 1, 0, np.where(n_charged > 1, 1, np.where(n_pi0 == 1, 2, 3)))
    return np.where(current == 1, label, 4).astype(np.int32)


def topology_flags(label) -> dict[str, np.ndarray]:
    """Signal flags per tagging task from the 5-class label: CC1π± = {0}, CCNπ± (N ≥ 1) = {0, 1}, CC1π⁰ = {2}."""
    return {"is_cc1pi_charged": label == 0, "is_ccnpi_charged": (label == 0) | (label == 1), "is_cc1pi0": label == 2}


def binning_pion(current, fs: FinalState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The single true pion used to bin the tagging metrics: (total E [MeV], kinetic E [MeV], θ to the beam [rad]).

    CC only: exactly one π⁺ and no π⁻ → that π⁺; exactly one π⁻ and no π⁺ → that π⁻; no π± and exactly one π⁰ →
    that π⁰; otherwise no pion (E = T = 0, θ = NaN). θ uses |p⃗| of (px, py, pz) and the beam axis (fixes bug §7.7,
    where |p| was taken over (py, pz, E) and the angle to the detector axis).
    """
    n_plus, n_minus, n_zero = pion_counts(fs)
    cc = current == 1
    chosen = np.where(cc & (n_plus == 1) & (n_minus == 0), 211,
                      np.where(cc & (n_minus == 1) & (n_plus == 0), -211,
                               np.where(cc & (n_plus + n_minus == 0) & (n_zero == 1), 111, 0)))
    match = (fs.pdg == chosen[fs.event]) & (chosen[fs.event] != 0)
    pick = [fs.per_event_sum(np.where(match, c, 0.0)) for c in (fs.px, fs.py, fs.pz, fs.e)]
    found = chosen != 0
    mass = np.where(chosen == 111, M_PI0, M_PI_CHARGED)
    energy = np.where(found, pick[3], 0.0)
    kinetic = np.where(found, pick[3] - mass, 0.0)
    bx, by, bz = rotate_to_beam_frame(*pick[:3])
    p = np.sqrt(bx**2 + by**2 + bz**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = np.where(found & (p > 0), np.arccos(np.clip(bz / p, -1.0, 1.0)), np.nan)
    return energy, kinetic, theta


def calorimetric_e_avail(blob_recoil_e, scale: float = CALORIMETRIC_SCALE) -> np.ndarray:
    """Reference calorimetric E_avail baseline (MeV) = scale × `blob_recoil_E` (all sub-detectors, no fuzz removal).

    −1 where `blob_recoil_E` is 0, negative (sentinel) or not finite — the reference's "excluded" marker (§4.1;
    note §7.11: the 1.17 calibration belongs to tracker+ECAL minus muon fuzz).
    """
    valid = np.isfinite(blob_recoil_e) & (blob_recoil_e > 0)
    return np.where(valid, scale * np.where(valid, blob_recoil_e, 0.0), -1.0)


def cut_based_tags(has_muon, n_pi_prongs, n_michel, n_photons, m_gammagamma,
                   cc1pi_michel_rule: str = "eq1") -> dict[str, np.ndarray]:
    """Cut-based taggers of the reference evaluation (§4.2); inputs are per-event counts, m_γγ in MeV.

    n_pi_prongs counts **unfiltered** prongs with raw `prong_part_pid` ∈ {8, 9} (reference choice, §7.17).
    CC1π±: muon, n_π = 1, n_Michel = 1 (``cc1pi_michel_rule="ge1"``: ≥ 1, the label-training version, §7.10).
    CCNπ±: muon, n_π ≥ 1, n_Michel ≥ 1. CC1π⁰: muon, exactly 2 photons, n_π = 0, |m_γγ − m_π⁰| < m_π⁰, n_Michel = 0.
    """
    if cc1pi_michel_rule not in ("eq1", "ge1"):
        raise ValueError(f"cc1pi_michel_rule={cc1pi_michel_rule!r}; expected 'eq1' or 'ge1'")
    michel_ok = (n_michel == 1) if cc1pi_michel_rule == "eq1" else (n_michel >= 1)
    return {
        "tag_cc1pi_charged": has_muon & (n_pi_prongs == 1) & michel_ok,
        "tag_ccnpi_charged": has_muon & (n_pi_prongs >= 1) & (n_michel >= 1),
        "tag_cc1pi0": has_muon & (n_photons == 2) & (n_pi_prongs == 0) & (np.abs(m_gammagamma - M_PI0) < M_PI0)
        & (n_michel == 0),
    }


def invariant_mass_pair(p4_a, p4_b) -> np.ndarray:
    """Invariant mass (MeV) of two (N, 4) = (px, py, pz, E) four-vectors; a negative mass² gives 0."""
    total = p4_a + p4_b
    mass2 = total[:, 3] ** 2 - total[:, 0] ** 2 - total[:, 1] ** 2 - total[:, 2] ** 2
    return np.sqrt(np.clip(mass2, 0.0, None))


__all__ = [
    "FinalState", "M_PROTON", "M_PI_CHARGED", "M_PI0", "M_MUON", "BEAM_ANGLE_RAD", "NUCLEUS_PDG_MIN",
    "E_AVAIL_CONVENTIONS",
    "CALORIMETRIC_SCALE", "rotate_to_beam_frame", "available_energy", "true_momentum_transfer", "hybrid_q3",
    "hadronic_invariant_mass", "pion_counts", "topology", "topology_flags", "binning_pion", "calorimetric_e_avail",
    "cut_based_tags", "invariant_mass_pair",
]
