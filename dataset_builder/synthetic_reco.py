"""Detector level of the synthetic MINERvA generator: reco objects derived from truth by smearing and thresholds.

All steps are vectorised over padded ``(N, K)`` final-state arrays (see ``synthetic_physics``) or flat per-object
tables carrying an event index. The response is deliberately particle-type and energy dependent (proton quenching,
pion hadronic interactions, EM showers near calibration, neutron scatters far from the vertex), so per-object
information predicts the available energy better than the calorimetric sum ``1.17 * blob_recoil_E``; pid codes and
Michel tags are imperfect so that cut taggers are beatable. Units: MeV, mm, ns.

Synthetic conventions (real tuples do not document them, minerva-data.md §7.3): raw prong pid 3 carries the muon
mass hypothesis (the primary track is always pid 3), pid 8 the charged-pion mass, pid 13 the proton mass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataset_builder.synthetic_physics import M_E, M_MU, M_N, M_P, M_PI, M_PI0, TruthBatch, boost

C_MM_PER_NS = 299.792458
# More than schema.MAX_PRONGS (10) on purpose: the generator must exercise the converter's prong cap/aggregation.
SIM_MAX_PRONGS = 12
BLOB_MEAN_E = 9.5  # MeV of visible energy per blob cluster
TRACKER_Z, ECAL_Z, HCAL_Z = 5980.0, 8422.0, 8900.0
REGIONS = ("tracker", "ecal", "hcal", "nucl", "od")
# Visible-energy scale so that 1.17 * blob_recoil_E ~ E_avail on the 1A-like sample (tuned on 200k events).
VISIBLE_SCALE = 1.08
# Passive-material correction per region (tracker, ecal, hcal, nucl, od): visible -> deposited energy. The synthetic
# visible response does not depend on the region, so a region-weighted sum is a strong but imperfect recoil estimator.
PASSIVE_FACTORS = np.array([1.22, 1.30, 1.40, 1.32, 1.35])
# Fraction of a non-neutron particle's off-track visible energy that no reco object claims (dead regions, cross-talk
# merged into the vertex); it is only counted in the event-level recoil sums.
HIDDEN_FRACTION = 0.12
PRONG_CLUSTER_RESPONSE = 0.7  # visible / kinetic energy of the clusters attached to a prong (its shower)
VERTEX_RANGE_MM = 100.0  # untracked hadrons with a shorter range deposit only in the vertex cluster
BLOB_MIN_DEPOSIT = 30.0  # MeV; smaller off-track hadron deposits stay in the vertex cluster or on the prong
BLOB_SHARE_SIGMA = 1.8  # log-normal spread of the energy shares of the clusters of one deposit


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _norm(v):
    return np.sqrt(np.sum(v * v, axis=-1))


def _smear_direction(rng, direction, sigma):
    """Unit vectors smeared by a Gaussian angle ``sigma`` (rad) around ``direction`` (small-angle)."""
    d = direction + rng.normal(0.0, 1.0, direction.shape) * np.asarray(sigma)[..., None]
    return d / np.maximum(_norm(d), 1e-12)[..., None]


def _inside_hexagon(x, y, apothem):
    return (np.abs(x) < apothem) & (np.abs(y) < (2 * apothem - np.abs(x)) / np.sqrt(3))


def _region(x, y, z):
    """Sub-detector index into REGIONS for deposit positions (mm)."""
    od = ~_inside_hexagon(x, y, 1000.0)
    return np.select([od, z < TRACKER_Z, z < ECAL_Z, z < HCAL_Z], [4, 3, 0, 1], 2)


def reconstructed_mask(rng: np.random.Generator, truth: TruthBatch) -> np.ndarray:
    """Which interactions yield a MasterAnaDev row: vertex in the reconstruction volume, something visible, 90 % eff."""
    x, y, z = truth.vtx[:, 0], truth.vtx[:, 1], truth.vtx[:, 2]
    inside = _inside_hexagon(x, y, 1000.0) & (z > 4200.0) & (z < 9300.0)
    ke = truth.p4[..., 3] - _mass_of(truth.pdg)
    visible = np.isin(np.abs(truth.pdg), [13, 11, 211, 111]) | ((truth.pdg == 2212) & (ke > 20.0))
    return inside & visible.any(axis=1) & (rng.random(len(truth)) < 0.93)


def _mass_of(pdg):
    a = np.abs(pdg)
    return np.select([a == 13, a == 11, a == 211, a == 111, a == 2212, a == 2112],
                     [M_MU, M_E, M_PI, M_PI0, M_P, M_N], 0.0)


# ---------------------------------------------------------------------------------------------------- deposits
class Deposits:
    """Flat table of visible energy deposits: event, energy (MeV), position (mm), time (ns), kind."""

    BLOB, HIDDEN, TRACK, PHOTON, FUZZ, PRONG = 0, 1, 2, 3, 4, 5

    def __init__(self):
        self.parts: list[tuple] = []

    def add(self, event, energy, pos, time, kind):
        """Append the deposits with positive energy."""
        keep = energy > 0
        self.parts.append((event[keep], energy[keep], pos[keep], time[keep], np.full(keep.sum(), kind, np.int8)))

    def table(self):
        """All deposits as flat arrays (event, energy, position, time, kind)."""
        return tuple(np.concatenate([p[i] for p in self.parts]) for i in range(5))


def _split_into_blobs(rng, event, energy, origin, direction, d_lo, d_hi, transverse, t0, speed, mean_blob):
    """Split each deposit into clusters placed along ``direction`` between d_lo and d_hi.

    A shower makes 1 + Poisson(sqrt(E * mean_blob) / mean_blob) clusters (fewer, larger ones as E grows: a 1 GeV
    deposit gives ~10) with log-normal shares, so most clusters carry a few MeV and a few carry most of the energy.
    """
    n_b = np.minimum(1 + rng.poisson(np.sqrt(energy * mean_blob) / mean_blob), 40)
    rep = np.repeat(np.arange(len(energy)), n_b)
    weights = rng.lognormal(0.0, BLOB_SHARE_SIGMA, len(rep))
    sums = np.bincount(rep, weights=weights, minlength=len(energy))
    e_blob = np.maximum(energy[rep] * weights / sums[rep], 0.05)
    dist = d_lo[rep] + rng.random(len(rep)) * (d_hi[rep] - d_lo[rep])
    pos = origin[rep] + direction[rep] * dist[:, None] + rng.normal(0.0, 1.0, (len(rep), 3)) * transverse[rep, None]
    t = t0[rep] + dist / speed[rep] + rng.normal(0.0, 2.5, len(rep))
    return event[rep], e_blob, pos, t


# ---------------------------------------------------------------------------------------------------- main
@dataclass(frozen=True)
class RecoTune:
    """Tuned constants of `simulate_reco` (MeV, mm, rad); the defaults are the tuned detector response."""

    minos_efficiency: float = 0.97  # MINOS match probability on the plateau
    minos_max_theta: float = 0.50  # rad: the match turns off around this muon angle ...
    minos_theta_width: float = 0.025  # ... over this width
    minos_min_p: float = 1500.0  # MeV: and below this muon momentum ...
    minos_p_width: float = 200.0  # ... over this width
    fake_muon_min_p: float = 1500.0  # a pion above this momentum and ...
    fake_muon_max_theta: float = 0.35  # ... within this angle fakes the muon ...
    fake_muon_rate: float = 0.15  # ... this often
    muon_p_resolution: tuple[float, float] = (0.04, 0.08)  # below / above muon_p_resolution_split
    muon_p_resolution_split: float = 2500.0
    muon_min_scale: float = 0.3  # smallest reco/true momentum ratio
    muon_angle_resolution: float = 0.004  # rad
    muon_charge_flip: float = 0.01
    muon_time_resolution: float = 2.0  # ns
    shifted_response: float = 0.93  # 1B-like visible-energy scale
    fuzz_probability: float = 0.08  # share of untracked deposits that land in the muon fuzz
    range_per_mev: tuple[float, float] = (1.5, 4.0)  # mm per MeV kinetic energy: protons, others
    range_limits: tuple[float, float] = (10.0, 3000.0)  # mm
    neutron_hidden_probability: float = 0.2  # a whole neutron scatter is hidden
    attached_share: tuple[float, float] = (0.6, 0.95)  # share of an interacting track's shower on its prong
    prong_energy_resolution: float = 0.08
    prong_angle_resolution: tuple[float, float] = (0.05, 0.03)  # rad: protons, others


TUNE = RecoTune()


@dataclass
class _Particles:
    """The FS particles of N interactions, padded (N, K): PDG, mass, momentum, direction, kinetic energy."""

    pdg: np.ndarray
    apdg: np.ndarray
    p4: np.ndarray
    mass: np.ndarray
    p: np.ndarray
    direction: np.ndarray
    ke: np.ndarray

    @classmethod
    def of(cls, truth: TruthBatch) -> _Particles:
        mass = _mass_of(truth.pdg)
        p = _norm(truth.p4[..., :3])
        return cls(truth.pdg, np.abs(truth.pdg), truth.p4, mass, p, truth.p4[..., :3] / np.maximum(p, 1e-9)[..., None],
                   np.maximum(truth.p4[..., 3] - mass, 0.0))


@dataclass
class _Muon:
    """The reconstructed muon (a MINOS-matched true muon or a fake from a fast pion)."""

    is_mu: np.ndarray  # (N, K) true muons
    slot: np.ndarray  # (N,) FS slot the muon track comes from
    has_muon: np.ndarray
    true_p: np.ndarray
    true_dir: np.ndarray
    p_reco: np.ndarray
    d_reco: np.ndarray
    p4: np.ndarray  # (N, 4) reco four-vector


def simulate_reco(rng: np.random.Generator, truth: TruthBatch, shifted: bool = False,
                  tune: RecoTune = TUNE) -> dict[str, np.ndarray]:
    """Reco-tree columns (padded/flat numpy; jagged ones as ``(flat, counts)``) for reconstructed interactions.

    Steps, in a fixed order of random draws (same seed, same output): muon, tracks and primary, hadron energy
    deposits and prongs, hadron blobs, photons, noise blobs, event-level sums, Michel electrons.
    """
    parts = _Particles.of(truth)
    scale = VISIBLE_SCALE * (tune.shifted_response if shifted else 1.0)
    out: dict[str, np.ndarray] = {}
    muon = _simulate_muon(rng, parts, truth, tune, out)
    tracked, ke_meas, interacting, primary, raw_pid, any_track = _tracks_and_primary(rng, parts, muon)
    deposits = Deposits()
    rest, hadron_geometry = _hadron_deposits(rng, parts, truth, muon, tracked, ke_meas, interacting, primary,
                                             raw_pid, scale, tune, deposits, out)
    blob_parts = [_hadron_blobs(rng, parts, truth, tracked & interacting, rest, *hadron_geometry)]
    blob_parts.append(_photons(rng, out, deposits, truth, scale))
    blob_parts.append(_noise_blobs(rng, truth.vtx, muon.true_dir, any_track))
    _blobs(rng, out, deposits, blob_parts)
    _event_level(rng, out, deposits, truth, muon.has_muon, shifted)
    out["improved_nmichel"] = _michels(rng, parts.apdg, parts.ke, interacting, muon.is_mu, muon.has_muon,
                                       parts.p[:, 0], parts.pdg)
    return out


def _simulate_muon(rng: np.random.Generator, parts: _Particles, truth: TruthBatch, tune: RecoTune,
                   out: dict) -> _Muon:
    """MINOS match (or a fast pion faking the muon), momentum/angle smearing, charge; fills the muon branches."""
    n = len(parts.p)
    is_mu = parts.apdg == 13
    mu_p, mu_dir = parts.p[:, 0], parts.direction[:, 0]
    theta_det = np.arccos(np.clip(mu_dir[:, 2], -1, 1))
    p_match = tune.minos_efficiency * _sigmoid((tune.minos_max_theta - theta_det) / tune.minos_theta_width) \
        * _sigmoid((mu_p - tune.minos_min_p) / tune.minos_p_width)
    matched = is_mu[:, 0] & (rng.random(n) < p_match)
    is_pich = parts.apdg == 211
    lead_pi = np.argmax(np.where(is_pich, parts.p, -1.0), axis=1)
    lead_pi_p = np.take_along_axis(parts.p, lead_pi[:, None], 1)[:, 0]
    lead_pi_dir = np.take_along_axis(parts.direction, lead_pi[:, None, None], 1)[:, 0]
    fake = (~is_mu[:, 0] & (lead_pi_p > tune.fake_muon_min_p)
            & (np.arccos(np.clip(lead_pi_dir[:, 2], -1, 1)) < tune.fake_muon_max_theta)
            & (rng.random(n) < tune.fake_muon_rate))
    muon_slot = np.where(fake, lead_pi, 0)
    has_muon = matched | fake
    true_mu_p = np.where(fake, lead_pi_p, mu_p)
    true_mu_dir = np.where(fake[:, None], lead_pi_dir, mu_dir)
    sigma_p = np.where(true_mu_p < tune.muon_p_resolution_split, *tune.muon_p_resolution)
    p_reco = true_mu_p * np.maximum(1.0 + sigma_p * rng.normal(size=n), tune.muon_min_scale)
    d_reco = _smear_direction(rng, true_mu_dir, np.full(n, tune.muon_angle_resolution))
    mu4 = np.concatenate([d_reco * p_reco[:, None], np.sqrt(p_reco**2 + M_MU**2)[:, None]], axis=1)
    out["muon_corrected_p"] = np.where(has_muon[:, None], mu4, -999.0)
    beam_dir = _beam_frame(d_reco)
    out["muon_theta"] = np.where(has_muon, np.arccos(np.clip(beam_dir[:, 2], -1, 1)), -999.0)
    out["muon_phi"] = np.where(has_muon, np.arctan2(beam_dir[:, 1], beam_dir[:, 0]), -999.0)
    out["isMinosMatchTrack"] = has_muon.astype(np.int32)
    slot_pdg = truth.pdg[np.arange(n), muon_slot]
    charge = np.where(np.abs(slot_pdg) == 13, -np.sign(slot_pdg), np.sign(slot_pdg)).astype(float)  # PDG 13 = mu-
    charge = np.where(rng.random(n) < tune.muon_charge_flip, -charge, charge)
    out["MasterAnaDev_minos_trk_qp"] = np.where(has_muon, charge / p_reco, -9999.0)
    out["muon_trackVertexTime"] = truth.vtx[:, 3] + rng.normal(0.0, tune.muon_time_resolution, n)
    return _Muon(is_mu, muon_slot, has_muon, true_mu_p, true_mu_dir, p_reco, d_reco, mu4)


def _tracks_and_primary(rng: np.random.Generator, parts: _Particles, muon: _Muon):
    """Charged-track efficiency and measured energy, the primary track (the muon, else the hardest track or shower)
    and the raw prong pid codes → (tracked, ke_meas, interacting, primary, raw_pid, any_track)."""
    n = len(parts.p)
    tracked, ke_meas, interacting = _tracks(rng, parts.apdg, parts.ke, parts.p, parts.direction, muon.is_mu,
                                            muon.slot, muon.has_muon)
    rows = np.arange(n)
    score = np.where(tracked, parts.p, -1.0)
    score[rows, muon.slot] = np.where(muon.has_muon | (muon.is_mu & tracked)[rows, muon.slot], 1e12,
                                      score[rows, muon.slot])
    any_track = tracked.any(axis=1)
    # Rows without any track: the most energetic visible particle (an EM shower, a low-energy hadron) is the primary.
    showerable = np.isin(parts.apdg, [111, 211, 2212, 11, 13])
    score = np.where(any_track[:, None], score, np.where(showerable, parts.p4[..., 3], -1.0))
    primary = np.argmax(score, axis=1)
    raw_pid = _raw_pid(rng, parts.apdg)
    raw_pid[np.arange(n), primary] = 3
    return tracked, ke_meas, interacting, primary, raw_pid, any_track


def _hadron_deposits(rng, parts: _Particles, truth: TruthBatch, muon: _Muon, tracked, ke_meas, interacting, primary,
                     raw_pid, scale: float, tune: RecoTune, deposits: Deposits, out: dict):
    """Visible hadron energy: on tracks, in the muon fuzz, hidden, attached to prongs (then the prong branches);
    → (energy left for blobs (N, K), (neutron mask, range mm, event index, vertex time))."""
    n, k = parts.pdg.shape
    apdg, ke, p4, vtx = parts.apdg, parts.ke, parts.p4, truth.vtx
    event = np.broadcast_to(np.arange(n)[:, None], (n, k))
    primary_is_muon = np.zeros((n, k), bool)
    primary_is_muon[np.arange(n), primary] = apdg[np.arange(n), primary] == 13
    primary_is_muon[np.arange(n), muon.slot] |= muon.has_muon
    vis = _visible(rng, apdg, ke, interacting, p4) * scale
    vis = np.where(primary_is_muon, 0.0, vis)
    track_frac = np.where(tracked & ~primary_is_muon, np.clip(ke_meas / np.maximum(ke, 1e-9), 0.0, 1.0), 0.0)
    rng_mm = np.clip(np.where(apdg == 2212, *tune.range_per_mev) * ke, *tune.range_limits)
    mid = vtx[:, None, :3] + parts.direction * (0.5 * rng_mm)[..., None]
    t_vtx = np.broadcast_to(vtx[:, 3:4], (n, k))
    hadron = (apdg == 211) | (apdg == 2212) | (apdg == 11) | ((apdg == 13) & ~primary_is_muon)
    track_e = vis * track_frac * hadron
    deposits.add(event[hadron], track_e[hadron], mid[hadron], t_vtx[hadron], Deposits.TRACK)
    rest = np.where(hadron, vis - track_e, 0.0)
    neutron = apdg == 2112
    rest = np.where(neutron, vis, rest)
    u = rng.random((n, k))
    to_fuzz = (u < tune.fuzz_probability) & muon.has_muon[:, None] & ~neutron
    # Clusters no object claims (dead regions, cross-talk merged into the vertex) are counted in the recoil sums only:
    # a Beta-distributed share (mean HIDDEN_FRACTION) of every deposit, a whole neutron scatter in 20 % of cases.
    share = rng.beta(1.0, 1.0 / HIDDEN_FRACTION - 1.0, (n, k))
    hidden_e = np.where(neutron, np.where(u >= 1.0 - tune.neutron_hidden_probability, rest, 0.0), rest * share)
    # Short-range untracked hadrons stay inside the vertex cluster, which is no blob (as in MINERvA's vertex energy).
    # So do small untracked deposits (below the blob clustering threshold).
    in_vertex = hadron & ~tracked & ((rng_mm < VERTEX_RANGE_MM) | (rest < BLOB_MIN_DEPOSIT))
    hidden_e = np.where(in_vertex, rest, hidden_e)
    sel = to_fuzz & (rest > 0)
    deposits.add(event[sel], rest[sel], mid[sel], t_vtx[sel], Deposits.FUZZ)
    hidden_e = np.where(to_fuzz, 0.0, hidden_e)
    sel = hidden_e > 0
    deposits.add(event[sel], hidden_e[sel], mid[sel], t_vtx[sel], Deposits.HIDDEN)
    rest = np.where(to_fuzz, 0.0, rest - hidden_e)
    # Clusters along an interacting track's shower are attached to its prong: the prong's energy includes them
    # (calibrated like the reconstruction's best hypothesis does); the isolated remainder forms blobs.
    own_prong = tracked & ~primary_is_muon & hadron
    attached = np.where(own_prong, np.where(rest < BLOB_MIN_DEPOSIT, 1.0, rng.uniform(*tune.attached_share, (n, k)))
                        * rest, 0.0)
    deposits.add(event[own_prong], attached[own_prong], mid[own_prong], t_vtx[own_prong], Deposits.PRONG)
    rest = rest - attached
    ke_meas = ke_meas + attached / (PRONG_CLUSTER_RESPONSE * VISIBLE_SCALE) \
        * rng.normal(1.0, tune.prong_energy_resolution, (n, k))
    ke_meas = np.maximum(ke_meas, 1.0)
    # The matched muon's prong reproduces the MINOS-corrected muon four-vector exactly (as in real files).
    ke_meas[np.arange(n), primary] = np.where(muon.has_muon, muon.p4[:, 3] - M_MU, ke_meas[np.arange(n), primary])
    prong_dir = _smear_direction(rng, parts.direction, np.where(apdg == 2212, *tune.prong_angle_resolution))
    prong_dir[np.arange(n), primary] = np.where(muon.has_muon[:, None], muon.d_reco, prong_dir[np.arange(n), primary])
    _prongs(rng, out, tracked, primary, raw_pid, ke_meas, prong_dir, apdg, p4, parts.mass, vtx)
    return rest, (neutron, rng_mm, event, t_vtx)


def _hadron_blobs(rng, parts: _Particles, truth: TruthBatch, tracked_interacting, rest, neutron, rng_mm, event,
                  t_vtx):
    """The isolated hadron energy `rest` as blobs: along the track's end for interacting tracks, a neutron's
    scatter 150-650 mm away, otherwise along the particle's range."""
    n, k = parts.pdg.shape
    sel = rest > 0
    n_sel = sel.sum()
    tracked_int = tracked_interacting[sel]
    d_lo = np.where(neutron[sel], 150.0 + rng.exponential(500.0, n_sel), np.where(tracked_int, 0.6, 0.0) * rng_mm[sel])
    d_hi = np.where(neutron[sel], d_lo + 150.0, np.where(tracked_int, 1.1, 1.0) * rng_mm[sel])
    beta = np.clip(parts.p[sel] / np.maximum(parts.p4[sel][:, 3], 1e-9), 0.05, 1.0)
    speed = np.where(neutron[sel], beta * C_MM_PER_NS, C_MM_PER_NS)
    origin = np.broadcast_to(truth.vtx[:, None, :3], (n, k, 3))[sel]
    return _split_into_blobs(rng, event[sel], rest[sel], origin, parts.direction[sel], d_lo, d_hi,
                             np.where(neutron[sel], 60.0, 35.0), t_vtx[sel], speed, BLOB_MEAN_E)


def _beam_frame(d):
    """Rotate detector-frame directions into the beam frame (inverse of the generator's rotation)."""
    from dataset_builder.synthetic_physics import BEAM_ANGLE

    c, s = np.cos(BEAM_ANGLE), np.sin(BEAM_ANGLE)
    out = d.copy()
    out[:, 1] = c * d[:, 1] + s * d[:, 2]
    out[:, 2] = -s * d[:, 1] + c * d[:, 2]
    return out


def _tracks(rng, apdg, ke, p, direction, is_mu, muon_slot, has_muon):
    """Tracking efficiency, measured kinetic energy (range/curvature) and whether the hadron interacted."""
    n, k = apdg.shape
    forward = np.where(direction[..., 2] > -0.2, 1.0, 0.5)
    eff = np.select(
        [apdg == 211, apdg == 2212, apdg == 11, apdg == 13],
        [0.5 * _sigmoid((ke - 100.0) / 25.0), 0.5 * _sigmoid((ke - 150.0) / 30.0), 0.95 * _sigmoid((ke - 100.0) / 20.0),
         _sigmoid((p - 250.0) / 50.0)], 0.0) * forward
    tracked = rng.random((n, k)) < eff
    tracked[np.arange(n), muon_slot] |= has_muon
    p_int = np.select([apdg == 211, apdg == 2212],
                      [0.55 * (1 - np.exp(-ke / 400.0)), 0.25 * (1 - np.exp(-ke / 500.0))], 0.0)
    interacting = rng.random((n, k)) < p_int
    frac = np.where(interacting, rng.uniform(0.3, 0.95, (n, k)), 1.0 + rng.normal(0.0, 0.06, (n, k)))
    return tracked, np.maximum(ke * frac, 1.0), interacting


def _raw_pid(rng, apdg):
    """Imperfect raw hypothesis codes: pions mostly 8, protons mostly 13, EM prongs mostly 8."""
    u = rng.random(apdg.shape)
    pion = np.select([u < 0.72, u < 0.87], [8, 3], 13)
    proton = np.select([u < 0.60, u < 0.82], [13, 8], 3)
    em = np.where(u < 0.7, 8, 3)
    return np.select([apdg == 211, apdg == 2212, apdg == 11], [pion, proton, em], 3).astype(np.int32)


def _dedx(rng, apdg, p4, mass):
    """Mean dE/dx (MeV/cm): ~1.9/beta^1.8 for hadrons and muons, showering electrons ~3, Landau-like spread."""
    beta2 = np.clip(np.sum(p4[..., :3] ** 2, axis=-1) / np.maximum(p4[..., 3] ** 2, 1e-9), 0.01, 1.0)
    base = np.minimum(1.9 / beta2**0.9, 30.0)
    base = np.where(np.abs(apdg) == 11, 3.0, base)
    return base * rng.lognormal(0.0, 0.15, apdg.shape)


def _prongs(rng, out, tracked, primary, raw_pid, ke_meas, prong_dir, apdg, p4, mass, vtx):
    """Prong arrays: primary first, then the other tracked particles in FS order; at most SIM_MAX_PRONGS."""
    n, k = tracked.shape
    slot = np.broadcast_to(np.arange(k), (n, k))
    is_primary = slot == primary[:, None]
    has_any = tracked.any(axis=1)
    tracked = tracked.copy()
    tracked[np.arange(n), primary] |= ~has_any  # every row keeps at least its primary track
    key = np.where(tracked, np.where(is_primary, -1, slot), k + 1)
    order = np.argsort(key, axis=1, kind="stable")
    valid = np.take_along_axis(key, order, 1) <= k
    valid &= np.cumsum(valid, axis=1) <= SIM_MAX_PRONGS

    def take(a):
        idx = order if a.ndim == 2 else np.broadcast_to(order[..., None], a.shape)
        return np.take_along_axis(a, idx, 1)[valid]

    pid = take(raw_pid)
    hyp = np.select([pid == 3, pid == 8], [M_MU, M_PI], M_P)
    t_ke = take(ke_meas)
    pmag = np.sqrt(t_ke**2 + 2 * t_ke * hyp)
    d = take(prong_dir)
    e4 = np.concatenate([d * pmag[:, None], (t_ke + hyp)[:, None]], axis=1)
    counts = valid.sum(axis=1)
    ev = np.repeat(np.arange(n), counts)
    start = vtx[ev, :3] + d * rng.uniform(0.0, 30.0, len(ev))[:, None] + rng.normal(0.0, 2.0, (len(ev), 3))
    pos = np.concatenate([start, (vtx[ev, 3] + rng.normal(0.0, 3.0, len(ev)))[:, None]], axis=1)
    dedx = _dedx(rng, take(apdg), take(p4), take(mass))
    u = rng.random(len(ev))
    dedx = np.select([u < 0.01, u < 0.0105, u < 0.0107], [-999.0, np.inf, -np.inf], dedx)
    bad = rng.random(len(ev)) < 2e-4
    if len(ev) >= 200:
        bad[rng.integers(len(ev))] = True  # at least one NaN coordinate per chunk, as in real files
    pos[bad, rng.integers(0, 4)] = np.nan
    out["n_prongs"] = counts.astype(np.int32)
    out["prong_part_E"] = (e4.reshape(-1), counts * 4)
    out["prong_part_pos"] = (pos.reshape(-1), counts * 4)
    out["prong_part_pid"] = (pid.astype(np.int32), counts)
    out["prong_dEdXMean"] = (dedx, counts)


def _visible(rng, apdg, ke, interacting, p4):
    """Visible (scintillator) energy per FS particle before calibration, MeV."""
    shape = apdg.shape
    r_p = (0.58 + 0.14 * (1 - np.exp(-ke / 350.0))) * rng.normal(1.0, 0.06, shape)
    r_pi = np.where(interacting, rng.uniform(0.4, 0.85, shape), 0.84 * rng.normal(1.0, 0.05, shape))
    r_n = np.where(rng.random(shape) < 0.45, rng.uniform(0.05, 0.35, shape), 0.0)
    vis = np.select([apdg == 2212, apdg == 211, apdg == 2112, apdg == 11, apdg == 13],
                    [r_p * ke, r_pi * ke, r_n * ke, 0.95 * p4[..., 3], 0.9 * np.minimum(ke, 300.0)], 0.0)
    return np.maximum(vis, 0.0)


def _photons(rng, out, deposits, truth, scale):
    """pi0 -> gamma gamma; the two most energetic reconstructed photons fill gamma1/2, the rest become blobs."""
    n = len(truth)
    ev_pi, slot_pi = np.nonzero(truth.pdg == 111)
    m = len(ev_pi)
    star = np.zeros((m, 2, 4))
    d = _iso(rng, m)
    star[:, 0, :3], star[:, 1, :3] = d * (M_PI0 / 2), -d * (M_PI0 / 2)
    star[:, :, 3] = M_PI0 / 2
    gam = boost(star, truth.p4[ev_pi, slot_pi]).reshape(-1, 4)
    ev = np.repeat(ev_pi, 2)
    # Fake photons (hadronic interactions mimicking EM showers) in 4 % of events.
    fake_ev = np.flatnonzero(rng.random(n) < 0.04)
    fake = np.concatenate([_iso(rng, len(fake_ev)) * 1.0, np.ones((len(fake_ev), 1))], axis=1)
    fake *= (20.0 + rng.exponential(90.0, len(fake_ev)))[:, None]
    gam = np.concatenate([gam, fake])
    ev = np.concatenate([ev, fake_ev])
    e_true = gam[:, 3]
    g_dir = gam[:, :3] / np.maximum(_norm(gam[:, :3]), 1e-9)[:, None]
    sigma = np.sqrt(0.06**2 / np.maximum(e_true / 1000.0, 0.02) + 0.04**2)
    e_reco = e_true * np.maximum(rng.normal(1.0, sigma), 0.1) * scale
    d_reco = _smear_direction(rng, g_dir, np.full(len(ev), 0.04))
    conv = rng.exponential(300.0, len(ev))
    detected = (e_true > 40.0) & (rng.random(len(ev)) < 0.42)
    order = np.lexsort((-e_reco, ~detected, ev))
    ev, e_reco, e_true, d_reco, conv, detected = (x[order] for x in (ev, e_reco, e_true, d_reco, conv, detected))
    first = np.searchsorted(ev, ev, side="left")
    rank = np.arange(len(ev)) - first
    vtx = truth.vtx
    for s in (1, 2):
        sel = detected & (rank == s - 1)
        e = np.zeros(n)
        e[ev[sel]] = e_reco[sel]
        for i, comp in enumerate(("px", "py", "pz")):
            col = np.zeros(n)
            col[ev[sel]] = e_reco[sel] * d_reco[sel, i]
            out[f"gamma{s}_{comp}"] = col
        out[f"gamma{s}_E"] = e
        tcol = np.zeros(n)
        tcol[ev[sel]] = vtx[ev[sel], 3] + conv[sel] / C_MM_PER_NS + rng.normal(0.0, 3.0, sel.sum())
        out[f"gamma{s}_time"] = tcol
        dcol = np.zeros(n)
        dcol[ev[sel]] = 2.2 * rng.lognormal(0.0, 0.25, sel.sum())
        out[f"gamma{s}_dEdx"] = dcol
    in_slot = detected & (rank < 2)
    pos_conv = vtx[ev, :3] + d_reco * conv[:, None]
    deposits.add(ev[in_slot], (0.95 * e_true * scale)[in_slot], pos_conv[in_slot], vtx[ev[in_slot], 3], Deposits.PHOTON)
    hidden = ~in_slot & (rng.random(len(ev)) < HIDDEN_FRACTION)
    deposits.add(ev[hidden], (0.95 * e_true * scale)[hidden], pos_conv[hidden], vtx[ev[hidden], 3], Deposits.HIDDEN)
    rest = ~in_slot & ~hidden
    e_vis = (0.95 * e_true * scale)[rest]
    return _split_into_blobs(rng, ev[rest], e_vis, vtx[ev[rest], :3], d_reco[rest], conv[rest], conv[rest] + 400.0,
                             np.full(rest.sum(), 35.0), vtx[ev[rest], 3], np.full(rest.sum(), C_MM_PER_NS), BLOB_MEAN_E)


def _iso(rng, m):
    cos_t = rng.uniform(-1.0, 1.0, m)
    phi = rng.uniform(0.0, 2 * np.pi, m)
    sin_t = np.sqrt(1 - cos_t**2)
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)


def _noise_blobs(rng, vtx, mu_dir, any_track):
    """Low-energy clusters along the primary track and near the vertex (cross-talk, delta rays)."""
    n = len(vtx)
    cnt = rng.poisson(np.where(any_track, 0.25, 0.1))
    ev = np.repeat(np.arange(n), cnt)
    d = rng.uniform(0.0, 1500.0, len(ev))
    pos = vtx[ev, :3] + mu_dir[ev] * d[:, None] + rng.normal(0.0, 40.0, (len(ev), 3))
    return ev, 0.3 + rng.exponential(2.5, len(ev)), pos, vtx[ev, 3] + d / C_MM_PER_NS + rng.normal(0.0, 3.0, len(ev))


def _blobs(rng, out, deposits, blob_parts):
    """Keep blob clusters inside the detector as MasterAnaDev_Blob* (event order); all go to the recoil deposits."""
    ev, e, pos, t = (np.concatenate([b[i] for b in blob_parts]) for i in range(4))
    order = np.argsort(ev, kind="stable")
    ev, e, pos, t = ev[order], e[order], pos[order], t[order]
    inside = _inside_hexagon(pos[:, 0], pos[:, 1], 1100.0) & (pos[:, 2] > 4200.0) & (pos[:, 2] < 10200.0)
    deposits.add(ev[inside], e[inside], pos[inside], t[inside], Deposits.BLOB)
    # Clusters outside the inner detector are measured by the OD calorimetry (recoil sums) but are no blobs.
    outside = ~inside
    deposits.add(ev[outside], e[outside], pos[outside], t[outside], Deposits.HIDDEN)
    out["_blobs"] = (ev[inside], e[inside], pos[inside], t[inside])


def _event_level(rng, out, deposits, truth, has_muon, shifted):
    """Calorimetric recoil per sub-detector, passive-corrected recoil, hadron recoil, fuzz, vertex, bookkeeping."""
    n = len(truth)
    ev, e, pos, t, kind = deposits.table()
    region = _region(pos[:, 0], pos[:, 1], pos[:, 2])
    calo = kind != Deposits.FUZZ
    by_region = np.bincount(ev[calo] * 5 + region[calo], weights=e[calo], minlength=5 * n).reshape(n, 5)
    for i, name in enumerate(REGIONS):
        out[f"blob_recoil_E_{name}"] = by_region[:, i]
    total = by_region[:, 0] + by_region[:, 1] + by_region[:, 2] + by_region[:, 3] + by_region[:, 4]
    out["blob_recoil_E"] = total
    passive = PASSIVE_FACTORS * (1.15 if shifted else 1.0) * rng.normal(1.0, 0.05, (n, 1))
    he_extra = np.where(truth.target_z == 2, rng.exponential(60.0, n), 0.0) if shifted else 0.0
    passive_id = np.sum(by_region[:, :4] * passive[:, :4], axis=1) + he_extra
    out["part_response_total_recoil_passive_allNonMuonClusters_id"] = passive_id
    out["part_response_total_recoil_passive_allNonMuonClusters_od"] = by_region[:, 4] * passive[:, 4]
    hadron_recoil = 1.2 * total * rng.normal(1.0, 0.03, n)
    hadron_recoil = np.where(rng.random(n) < 0.003, -1.0, hadron_recoil)
    out["MasterAnaDev_hadron_recoil"] = hadron_recoil
    out["MasterAnaDev_hadron_recoil_CCInc"] = np.where(has_muon, hadron_recoil, -1.0)
    fuzz = np.bincount(ev[kind == Deposits.FUZZ], weights=e[kind == Deposits.FUZZ], minlength=n)
    out["muon_fuzz_energy"] = np.where(rng.random(n) < 0.005, -1.0, 3.0 + rng.exponential(12.0, n) + fuzz)
    iso = np.where(has_muon & (rng.random(n) < 0.3), rng.exponential(25.0, n), 0.0)
    out["muon_iso_blobs_energy"] = np.where(rng.random(n) < 0.005, -1.0, iso)
    smear = np.array([3.0, 3.0, 8.0, 2.0]) * np.where(has_muon, 1.0, 4.0)[:, None]
    reco_vtx = truth.vtx + rng.normal(0.0, 1.0, (n, 4)) * smear
    misreco = rng.random(n) < 0.01
    reco_vtx[misreco, 2] += rng.normal(0.0, 300.0, misreco.sum())
    out["vtx"] = reco_vtx
    out["phys_n_dead_discr_pair_upstream_prim_track_proj"] = rng.choice(
        np.array([0, 1, 2], dtype=np.int32), size=n, p=[0.93, 0.06, 0.01])


def _michels(rng, apdg, ke, interacting, is_mu, has_muon, mu_p, pdg):
    """Tagged Michel electrons: stopping pi+ (55 % eff), rare pi-, stopping muons, accidentals."""
    n = len(apdg)
    pi_plus = (pdg == 211) & ~(interacting & (rng.random(apdg.shape) < 0.7))
    pi_minus = pdg == -211
    tag = (pi_plus & (rng.random(apdg.shape) < 0.45)) | (pi_minus & (rng.random(apdg.shape) < 0.04))
    stop_mu = is_mu[:, 0] & ~has_muon & (mu_p < 1500.0) & (rng.random(n) < 0.4)
    return (tag.sum(axis=1) + stop_mu + rng.poisson(0.03, n)).astype(np.int32)


__all__ = ["simulate_reco", "RecoTune", "TUNE", "reconstructed_mask", "REGIONS", "SIM_MAX_PRONGS"]
