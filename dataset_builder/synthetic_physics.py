"""Truth level of the synthetic MINERvA generator: neutrino interactions with GENIE-like final states.

Everything is vectorised over a batch of interactions. Final-state (FS) particles live in padded ``(N, K)`` arrays
(``pdg == 0`` marks an empty slot); slot 0 is always the outgoing lepton. Units: MeV, MeV², mm, ns.
Kinematics are generated in the beam frame (z along the neutrino) and rotated into the MINERvA detector frame,
where the NuMI beam points ``BEAM_ANGLE`` below the z axis (minerva-data.md, units paragraph).

Channels (``mc_intType``): 1 QE (one nucleon, Fermi motion), 2 RES (Delta-like W, N + pi [+ pi] two/three-body),
3 DIS (W > 1.6 GeV, multiplicity growing with ln W², charge-conserving pion charges), 4 COH (single pion, nucleus
unbroken), 8 2p2h (two nucleons). Hadronic systems decay with massive RAMBO phase space in their rest frame.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from dataset_builder.physics import (
    BEAM_ANGLE_RAD, M_ELECTRON, M_MUON, M_NEUTRON, M_PI_CHARGED, M_PROTON,
)
from dataset_builder.physics import M_PI0 as M_PI0_PHYS

# Masses (MeV) and the beam angle come from dataset_builder.physics, their only definition.
M_MU, M_E, M_PI, M_PI0, M_P, M_N = M_MUON, M_ELECTRON, M_PI_CHARGED, M_PI0_PHYS, M_PROTON, M_NEUTRON
M_NUCLEON = 0.5 * (M_P + M_N)
AMU = 931.494
BEAM_ANGLE = BEAM_ANGLE_RAD  # rad, NuMI beam below the detector z axis
K_MAX = 10  # FS slots per interaction: lepton + up to 8 hadrons (nucleon + 7 pions) + nuclear remnant

QE, RES, DIS, COH, MEC = 1, 2, 3, 4, 8
INT_TYPES = np.array([QE, RES, DIS, COH, MEC], dtype=np.int32)
# Fractions chosen so that 0.9 * CC + 0.1 * NC reproduces the 1A row fractions 12.3/21.4/61.7/1.0/3.6 % (§6).
CC_TYPE_FRACTIONS = np.array([0.1344, 0.2300, 0.5856, 0.0100, 0.0400])
NC_TYPE_FRACTIONS = np.array([0.0200, 0.0700, 0.9000, 0.0100, 0.0000])
CC_FRACTION = 0.90
NU_FLAVOURS = np.array([14, -14, 12, -12], dtype=np.int32)
NU_FRACTIONS = np.array([0.964, 0.025, 0.010, 0.001])

MASS_BY_PDG = {13: M_MU, -13: M_MU, 11: M_E, -11: M_E, 211: M_PI, -211: M_PI, 111: M_PI0, 2212: M_P, 2112: M_N}


@dataclass
class TruthBatch:
    """A batch of generated interactions (detector frame); FS particles padded to ``K_MAX`` slots."""

    enu: np.ndarray  # (N,) MeV
    nu_pdg: np.ndarray  # (N,) i4
    current: np.ndarray  # (N,) i4: 1 CC, 2 NC
    int_type: np.ndarray  # (N,) i4
    lepton_pdg: np.ndarray  # (N,) i4
    q2: np.ndarray  # (N,) MeV²
    w: np.ndarray  # (N,) MeV, generator-level hadronic invariant mass (pre-FSI, nucleon at rest)
    target_z: np.ndarray  # (N,) i4
    target_a: np.ndarray  # (N,) i4
    vtx: np.ndarray  # (N, 4) mm, ns
    pdg: np.ndarray  # (N, K) i4, 0 = empty slot
    p4: np.ndarray  # (N, K, 4) (px, py, pz, E) MeV

    def __len__(self) -> int:
        return len(self.enu)

    def take(self, index: np.ndarray) -> TruthBatch:
        """The sub-batch at ``index`` (integer or boolean)."""
        return TruthBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concatenate(batches: list[TruthBatch]) -> TruthBatch:
        """Join batches along the interaction axis."""
        return TruthBatch(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(TruthBatch)})


# ---------------------------------------------------------------------------------------------------- small helpers
def _isotropic(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit vectors uniform on the sphere, shape ``shape + (3,)``."""
    cos_t = rng.uniform(-1.0, 1.0, shape)
    phi = rng.uniform(0.0, 2 * np.pi, shape)
    sin_t = np.sqrt(1.0 - cos_t**2)
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)


def boost(p4: np.ndarray, frame_p4: np.ndarray) -> np.ndarray:
    """Boost four-vectors ``(..., K, 4)`` from the rest frame of ``frame_p4`` ``(..., 4)`` into the lab."""
    beta = frame_p4[..., :3] / frame_p4[..., 3:4]
    b2 = np.clip(np.sum(beta**2, axis=-1), 0.0, 1.0 - 1e-15)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    beta, b2, gamma = beta[..., None, :], b2[..., None], gamma[..., None]
    bp = np.sum(beta * p4[..., :3], axis=-1)
    coef = np.where(b2 > 0, (gamma - 1.0) * bp / np.where(b2 > 0, b2, 1.0), 0.0) + gamma * p4[..., 3]
    out = np.empty_like(p4)
    out[..., :3] = p4[..., :3] + coef[..., None] * beta
    out[..., 3] = gamma * (p4[..., 3] + bp)
    return out


def rambo(rng: np.random.Generator, w: np.ndarray, masses: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Massive RAMBO: momenta ``(N, K, 4)`` of ``mask``-ed particles summing to ``(0, 0, 0, w)`` in the rest frame."""
    n, k = masses.shape
    q0 = -np.log(rng.uniform(1e-12, 1.0, (n, k)) * rng.uniform(1e-12, 1.0, (n, k))) * mask
    q = _isotropic(rng, (n, k)) * q0[..., None]
    big_q = np.concatenate([q.sum(axis=1), q0.sum(axis=1, keepdims=True)], axis=1)
    m_q = np.sqrt(np.maximum(big_q[:, 3] ** 2 - np.sum(big_q[:, :3] ** 2, axis=1), 1e-12))
    b = -big_q[:, :3] / m_q[:, None]
    x = w / m_q
    gam = big_q[:, 3] / m_q
    a = 1.0 / (1.0 + gam)
    bq = np.einsum("nj,nkj->nk", b, q)
    p0 = x[:, None] * (gam[:, None] * q0 + bq)
    p3 = x[:, None, None] * (q + b[:, None, :] * q0[..., None] + (a[:, None] * bq)[..., None] * b[:, None, :])
    # Rescale the massless momenta so that sum sqrt(m^2 + xi^2 p^2) = w (Newton iterations).
    msum = np.sum(masses * mask, axis=1)
    xi = np.sqrt(np.clip(1.0 - (msum / w) ** 2, 1e-6, 1.0))
    p0sq = (p0 * mask) ** 2
    m2 = (masses * mask) ** 2
    for _ in range(7):
        e = np.sqrt(m2 + (xi**2)[:, None] * p0sq)
        f = np.sum(e * mask, axis=1) - w
        df = np.sum(np.where(mask, xi[:, None] * p0sq / np.maximum(e, 1e-12), 0.0), axis=1)
        xi = np.clip(xi - f / np.maximum(df, 1e-12), 1e-6, 1.0)
    out = np.zeros((n, k, 4))
    out[..., :3] = p3 * xi[:, None, None] * mask[..., None]
    out[..., 3] = np.sqrt(m2 + (xi**2)[:, None] * p0sq) * mask
    return out


def _resample(rng, draw, valid, n: int, max_iter: int = 60):
    """Draw ``n`` values with ``draw(rng, idx)`` until ``valid(values, idx)``; returns values and the final mask."""
    idx = np.arange(n)
    values = draw(rng, idx)
    ok = valid(values, idx)
    for _ in range(max_iter):
        bad = np.flatnonzero(~ok)
        if bad.size == 0:
            break
        new = draw(rng, bad)
        for key in values:
            values[key][bad] = new[key]
        ok[bad] = valid({k: v[bad] for k, v in values.items()}, bad)
    return values, ok


# ---------------------------------------------------------------------------------------------------- interaction
def _sample_flavour_current_type(rng: np.random.Generator, n: int):
    nu = rng.choice(NU_FLAVOURS, size=n, p=NU_FRACTIONS)
    current = np.where(rng.random(n) < CC_FRACTION, 1, 2).astype(np.int32)
    u = rng.random(n)
    cc_type = INT_TYPES[np.searchsorted(np.cumsum(CC_TYPE_FRACTIONS), u * CC_TYPE_FRACTIONS.sum(), side="right")]
    nc_type = INT_TYPES[np.searchsorted(np.cumsum(NC_TYPE_FRACTIONS), u * NC_TYPE_FRACTIONS.sum(), side="right")]
    int_type = np.where(current == 1, cc_type, nc_type).astype(np.int32)
    return nu.astype(np.int32), current, int_type


def _sample_enu(rng: np.random.Generator, int_type: np.ndarray) -> np.ndarray:
    """ME-FHC-like event spectrum (MeV): focusing peak near 6 GeV, a low-energy shoulder and a long tail to >20 GeV."""
    n = len(int_type)
    w_tail = np.select([int_type == DIS, int_type == RES], [0.38, 0.22], 0.15)
    w_low = np.select([int_type == DIS, int_type == RES], [0.04, 0.14], 0.22)
    u = rng.random(n)
    peak = rng.normal(6200.0, 1300.0, n)
    low = rng.lognormal(np.log(2600.0), 0.45, n)
    tail = 5000.0 + rng.exponential(7000.0, n)
    enu = np.where(u < w_low, low, np.where(u < w_low + w_tail, tail, peak))
    e_min = np.select([int_type == DIS, int_type == RES, int_type == COH], [2300.0, 1100.0, 800.0], 500.0)
    return np.clip(np.maximum(enu, e_min + rng.exponential(500.0, n)), 0.0, 120_000.0)


def _lepton_mass(lepton_pdg: np.ndarray) -> np.ndarray:
    return np.select([np.abs(lepton_pdg) == 13, np.abs(lepton_pdg) == 11], [M_MU, M_E], 0.0)


def _lepton_cos(enu, nu_e, q2, m_l):
    """Lepton energy, momentum and cos(theta) for energy transfer ``nu_e`` and Q²; NaN-free where valid."""
    e_l = enu - nu_e
    p_l = np.sqrt(np.maximum(e_l**2 - m_l**2, 0.0))
    cos = (2 * enu * e_l - m_l**2 - q2) / np.maximum(2 * enu * p_l, 1e-9)
    return e_l, p_l, cos


def _kinematics(rng: np.random.Generator, enu, int_type, nu_pdg, m_l):
    """Sample (nu = q0, Q², W) per channel with physical lepton kinematics; returns a dict of (N,) arrays."""
    anti = nu_pdg < 0

    def draw(r, idx):
        t, e = int_type[idx], enu[idx]
        m = len(idx)
        q2 = np.select([t == COH, t == MEC], [r.exponential(0.06e6, m), r.gamma(1.3, 0.32e6, m)],
                       r.gamma(1.3, 0.3e6, m))
        bw = 1232.0 + 58.5 * np.tan(np.pi * (r.random(m) - 0.5))
        w_res = np.where(r.random(m) < 0.75, bw, r.uniform(1350.0, 2000.0, m))
        x = np.clip(r.beta(0.7, 2.4, m), 0.01, 0.98)
        y = np.where(anti[idx], 1.0 - r.random(m) ** (1.0 / 3.0), r.random(m))
        nu_dis = y * e
        q2_dis = 2 * M_NUCLEON * nu_dis * x
        w_dis = np.sqrt(np.maximum(M_NUCLEON**2 + 2 * M_NUCLEON * nu_dis * (1 - x), 0.0))
        nu_res = (w_res**2 - M_NUCLEON**2 + q2) / (2 * M_NUCLEON)
        nu_qe = q2 / (2 * M_NUCLEON)
        nu_mec = q2 / (2 * M_NUCLEON) + r.uniform(40.0, 380.0, m)
        nu_coh = M_PI + r.exponential(1500.0, m)
        nu_e = np.select([t == QE, t == RES, t == DIS, t == COH], [nu_qe, nu_res, nu_dis, nu_coh], nu_mec)
        q2 = np.where(t == DIS, q2_dis, q2)
        w = np.select([t == QE, t == RES, t == DIS, t == COH],
                      [np.full(m, M_NUCLEON), w_res, w_dis, np.full(m, M_PI)],
                      np.sqrt(np.maximum(M_NUCLEON**2 + 2 * M_NUCLEON * nu_mec - q2, 0.0)))
        return {"nu": nu_e, "q2": q2, "w": w}

    def valid(v, idx):
        t = int_type[idx]
        e_l, p_l, cos = _lepton_cos(enu[idx], v["nu"], v["q2"], m_l[idx])
        ok = (e_l > m_l[idx] + 1.0) & (np.abs(cos) <= 1.0) & (v["nu"] > 0)
        ok &= np.where(t == RES, (v["w"] > 1080.0) & (v["w"] < 2000.0), True)
        ok &= np.where(t == DIS, (v["w"] > 1600.0) & (v["q2"] > 0.05e6), True)
        ok &= np.where(t == COH, v["nu"] < enu[idx] - m_l[idx] - 50.0, True)
        return ok

    values, ok = _resample(rng, draw, valid, len(enu))
    return values, ok


def _lepton_and_q(rng, enu, nu_e, q2, m_l):
    """Lepton four-vector and three-momentum transfer in the beam frame."""
    e_l, p_l, cos = _lepton_cos(enu, nu_e, q2, m_l)
    cos = np.clip(cos, -1.0, 1.0)
    sin = np.sqrt(1.0 - cos**2)
    phi = rng.uniform(0, 2 * np.pi, len(enu))
    lep = np.stack([p_l * sin * np.cos(phi), p_l * sin * np.sin(phi), p_l * cos, e_l], axis=1)
    q = -lep[:, :3].copy()
    q[:, 2] += enu
    return lep, q


def _charge_balance(charges: np.ndarray, mask: np.ndarray, nucleon_charge: np.ndarray, target: np.ndarray):
    """Adjust nucleon then pion charges (in place, slot by slot) so that the hadronic charge equals ``target``."""
    diff = target - nucleon_charge - np.sum(charges * mask, axis=1)
    up = (diff > 0) & (nucleon_charge == 0)
    down = (diff < 0) & (nucleon_charge == 1)
    nucleon_charge[up] = 1
    nucleon_charge[down] = 0
    diff = diff - up + down
    for _ in range(2):
        for j in range(charges.shape[1]):
            inc = mask[:, j] & (diff > 0) & (charges[:, j] < 1)
            dec = mask[:, j] & (diff < 0) & (charges[:, j] > -1)
            charges[inc, j] += 1
            charges[dec, j] -= 1
            diff = diff - inc + dec
    return nucleon_charge, charges


def _hadron_species(rng, int_type, w, hadronic_charge, target_charge):
    """PDG codes (N, K-1) of the hadrons of each channel; slot 0 is the (leading) nucleon."""
    n = len(w)
    k = K_MAX - 2
    pdg = np.zeros((n, k), dtype=np.int32)
    n_pi = np.zeros(n, dtype=np.int64)
    res = int_type == RES
    n_pi[res] = np.where(w[res] > 1450.0, np.where(rng.random(res.sum()) < 0.3, 2, 1), 1)
    dis = int_type == DIS
    mean = np.maximum(0.45 + 1.05 * np.log((w[dis] / 1000.0) ** 2), 0.2)
    n_pi[dis] = 1 + rng.poisson(mean)
    n_max = np.floor((w - M_NUCLEON - 20.0) / M_PI).astype(np.int64)
    n_pi = np.clip(np.minimum(n_pi, n_max), 0, k - 1)
    n_pi[res | dis] = np.maximum(n_pi[res | dis], 1)
    pi_mask = np.arange(k - 1)[None, :] < n_pi[:, None]
    charges = rng.choice(np.array([1, -1, 0]), size=(n, k - 1), p=[0.34, 0.28, 0.38])
    if res.any():  # Delta-like isospin: N pi charge states follow the resonance charge
        charges[res] = rng.choice(np.array([1, -1, 0]), size=(res.sum(), k - 1), p=[0.45, 0.15, 0.40])
    nucleon_charge = (rng.random(n) < 0.5).astype(np.int64)
    nucleon_charge, charges = _charge_balance(charges, pi_mask, nucleon_charge, hadronic_charge)
    pion_pdg = np.select([charges == 1, charges == -1], [211, -211], 111)
    pdg[:, 1:] = np.where(pi_mask, pion_pdg, 0)
    pdg[:, 0] = np.where(nucleon_charge == 1, 2212, 2112)
    # QE / 2p2h / COH: fixed final states.
    qe = int_type == QE
    pdg[qe, 0] = np.where(hadronic_charge[qe] >= 1, 2212, 2112)
    mec = int_type == MEC
    pdg[mec, 0] = np.where(hadronic_charge[mec] >= 1, 2212, 2112)
    pdg[mec, 1] = np.where(hadronic_charge[mec] >= 2, 2212, 2112)
    coh = int_type == COH
    coh_charge = hadronic_charge[coh] - target_charge[coh]
    pdg[coh, 0] = np.select([coh_charge > 0, coh_charge < 0],
                            [211, -211], 111)
    return pdg


def _masses(pdg: np.ndarray) -> np.ndarray:
    out = np.zeros(pdg.shape)
    for code, mass in MASS_BY_PDG.items():
        out[pdg == code] = mass
    return out


def _sample_vertices(rng, n: int, shifted: bool):
    """True vertices (mm, ns) over a volume larger than the reconstructed one; also target Z, A."""
    regions = np.array([0, 1, 2, 3])  # tracker, nuclear targets, ECAL/HCAL, helium cryotarget
    probs = np.array([0.58, 0.22, 0.14, 0.06]) if shifted else np.array([0.62, 0.22, 0.16, 0.0])
    region = rng.choice(regions, size=n, p=probs / probs.sum())
    z_lo = np.array([5900.0, 4300.0, 8500.0, 4100.0])[region]
    z_hi = np.array([8500.0, 5900.0, 9500.0, 4300.0])[region]
    z = rng.uniform(z_lo, z_hi)
    x, y = _hexagon(rng, n, 1040.0)
    t = rng.uniform(2400.0, 7600.0, n)
    u = rng.random(n)
    tz = np.select(
        [region == 0, region == 1, region == 2, region == 3],
        [np.where(u < 0.92, 6, 1), np.select([u < 0.4, u < 0.8], [26, 82], 6), np.where(u < 0.5, 82, 26),
         np.where(u < 0.7, 2, 13)],
    ).astype(np.int32)
    ta = np.select([tz == 1, tz == 2, tz == 6, tz == 13, tz == 26], [1, 4, 12, 27, 56], 207).astype(np.int32)
    return np.stack([x, y, z, t], axis=1), tz, ta


def _hexagon(rng, n: int, apothem: float):
    """Points uniform in MINERvA's hexagon (flat sides at x = +-apothem)."""
    out_x, out_y = np.empty(n), np.empty(n)
    todo = np.arange(n)
    circ = 2 * apothem / np.sqrt(3)
    while todo.size:
        x = rng.uniform(-apothem, apothem, todo.size)
        y = rng.uniform(-circ, circ, todo.size)
        ok = np.abs(y) < (2 * apothem - np.abs(x)) / np.sqrt(3)
        out_x[todo[ok]], out_y[todo[ok]] = x[ok], y[ok]
        todo = todo[~ok]
    return out_x, out_y


def _to_detector_frame(p4: np.ndarray) -> np.ndarray:
    """Rotate beam-frame four-vectors about x so the beam axis points BEAM_ANGLE below detector z."""
    c, s = np.cos(BEAM_ANGLE), np.sin(BEAM_ANGLE)
    out = p4.copy()
    out[..., 1] = c * p4[..., 1] - s * p4[..., 2]
    out[..., 2] = s * p4[..., 1] + c * p4[..., 2]
    return out


def generate_truth(rng: np.random.Generator, n: int, shifted: bool = False) -> TruthBatch:
    """Generate ``n`` neutrino interactions with self-consistent final states (detector frame, MeV)."""
    nu_pdg, current, int_type = _sample_flavour_current_type(rng, n)
    vtx, target_z, target_a = _sample_vertices(rng, n, shifted)
    # Hydrogen (free proton) cannot host nu CCQE / 2p2h / COH: move those to carbon.
    bad_h = (target_z == 1) & np.isin(int_type, [QE, MEC, COH])
    target_z[bad_h], target_a[bad_h] = 6, 12
    enu = _sample_enu(rng, int_type)
    anti = nu_pdg < 0
    lepton_pdg = np.where(current == 1, np.sign(nu_pdg) * (np.abs(nu_pdg) - 1), nu_pdg).astype(np.int32)
    m_l = _lepton_mass(lepton_pdg)
    kin, ok = _kinematics(rng, enu, int_type, nu_pdg, m_l)
    lep, q = _lepton_and_q(rng, enu, kin["nu"], kin["q2"], m_l)

    # Hadronic charge: target nucleon charge + charge given by the lepton current.
    target_charge = np.where(target_z == 1, 1, (rng.random(n) < 0.5).astype(np.int64))
    target_charge = np.where((int_type == QE) & (current == 1), np.where(anti, 1, 0), target_charge)
    delta_q = np.where(current == 1, np.where(anti, -1, 1), 0)
    pair_charge = np.where(anti, 1, 0) + (rng.random(n) < 0.65)  # nu: np (65 %) or nn; nubar: pp or np
    had_charge = np.where(int_type == MEC, pair_charge + delta_q, target_charge + delta_q)
    had_charge = np.where(int_type == COH, delta_q, had_charge)
    hadrons = _hadron_species(rng, int_type, kin["w"], had_charge, np.zeros(n, dtype=np.int64))
    h_mask = hadrons != 0
    h_mass = _masses(hadrons)

    # Hadronic system four-momentum in the beam frame.
    m_sys = np.where(int_type == MEC, 2 * M_NUCLEON - 20.0, M_NUCLEON)
    p_sys = np.concatenate([q, (kin["nu"] + m_sys)[:, None]], axis=1)
    w_sys = np.sqrt(np.maximum(p_sys[:, 3] ** 2 - np.sum(q**2, axis=1), 1.0))
    multi = np.isin(int_type, [RES, DIS, MEC])
    w_decay = np.where(multi, np.maximum(w_sys, np.sum(h_mass * h_mask, axis=1) + 1.0), 1.0)
    had_p4 = boost(rambo(rng, w_decay, h_mass, h_mask & multi[:, None]), p_sys)
    # QE: single nucleon with momentum q + Fermi momentum; COH: pion along q with a small t.
    fermi = _isotropic(rng, (n,)) * (221.0 * rng.random(n) ** (1.0 / 3.0))[:, None]
    p_single = np.where((int_type == QE)[:, None], q + fermi, q)
    coh = int_type == COH
    kick = _isotropic(rng, (n,)) * rng.exponential(60.0, n)[:, None]
    e_pi = np.maximum(kin["nu"], M_PI + 1.0)
    p_pi_mag = np.sqrt(e_pi**2 - M_PI**2)
    dir_pi = q + kick
    dir_pi /= np.linalg.norm(dir_pi, axis=1, keepdims=True)
    p_single = np.where(coh[:, None], dir_pi * p_pi_mag[:, None], p_single)
    single = (int_type == QE) | coh
    had_p4[single, 0, :3] = p_single[single]
    had_p4[single, 0, 3] = np.sqrt(h_mass[single, 0] ** 2 + np.sum(p_single[single] ** 2, axis=1))
    had_p4[single, 1:] = 0.0

    pdg = np.zeros((n, K_MAX), dtype=np.int32)
    p4 = np.zeros((n, K_MAX, 4))
    pdg[:, 0] = lepton_pdg
    p4[:, 0] = lep
    pdg[:, 1:K_MAX - 1] = hadrons
    p4[:, 1:K_MAX - 1] = had_p4 * h_mask[..., None]
    _charge_exchange(rng, pdg, p4)
    _add_remnant(rng, pdg, p4, int_type, target_z, target_a)
    p4 = _to_detector_frame(p4)
    return TruthBatch(enu=enu, nu_pdg=nu_pdg, current=current, int_type=int_type, lepton_pdg=lepton_pdg,
                      q2=kin["q2"], w=kin["w"], target_z=target_z, target_a=target_a, vtx=vtx, pdg=pdg, p4=p4)


def _charge_exchange(rng, pdg: np.ndarray, p4: np.ndarray) -> None:
    """Pion final-state interactions: 4 % of pions swap charged <-> neutral (3-momentum kept, energy on shell)."""
    pions = np.isin(pdg, [211, -211, 111]) & (rng.random(pdg.shape) < 0.04)
    new = np.where(pdg == 111, np.where(rng.random(pdg.shape) < 0.5, 211, -211), 111)
    pdg[pions] = new[pions]
    mass = np.where(pdg == 111, M_PI0, M_PI)
    p4[..., 3] = np.where(pions, np.sqrt(mass**2 + np.sum(p4[..., :3] ** 2, axis=-1)), p4[..., 3])


def _add_remnant(rng, pdg, p4, int_type, target_z, target_a) -> None:
    """Last slot: nuclear remnant (10LZZZAAAI) for COH and ~25 % of other nuclear events; 1 % GENIE pseudo-particle."""
    n = len(pdg)
    nuclear = target_a > 1
    coh = int_type == COH
    remnant = nuclear & (coh | (rng.random(n) < 0.25))
    z_r = np.where(coh, target_z, target_z - (rng.random(n) < 0.5))
    a_r = np.where(coh, target_a, target_a - np.where(int_type == MEC, 2, 1))
    mass = a_r * AMU
    p = _isotropic(rng, (n,)) * rng.exponential(80.0, n)[:, None]
    slot = K_MAX - 1
    pdg[remnant, slot] = (1_000_000_000 + 10_000 * z_r + 10 * a_r)[remnant]
    p4[remnant, slot, :3] = p[remnant]
    p4[remnant, slot, 3] = np.sqrt(mass**2 + np.sum(p**2, axis=1))[remnant]
    pseudo = ~remnant & nuclear & (rng.random(n) < 0.01)
    pdg[pseudo, slot] = 2_000_000_101
    p4[pseudo, slot, 3] = rng.uniform(5.0, 30.0, pseudo.sum())


__all__ = [
    "TruthBatch", "generate_truth", "boost", "rambo", "BEAM_ANGLE", "M_MU", "M_PI", "M_PI0", "M_P", "M_N", "K_MAX",
]
