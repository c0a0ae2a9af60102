"""Reconstructed objects → tokens: muon, photons, blobs, prongs (in that order) with the features of `schema.py`.

Input is one chunk of the MasterAnaDev tree as an awkward record array (fields = branch names of `branches.py`);
output is flat NumPy (objects of all events back to back + offsets) ready to become Arrow list columns.
All work is whole-array NumPy/awkward; nothing loops over events or objects.

Rules (reference ``shared/reference/minerva-data.md`` §2, with the fixes of §7):

- muon: present iff `muon_corrected_p` is finite, px ≠ −999 and py ≠ −999 (MINOS match), every |component| ≤ 1e6
  and E > 0. Events without a muon are kept (no token).
- photons: gamma1 then gamma2, each present iff its 4-vector is finite and E > 1e-5 MeV.
- blobs: E = `MasterAnaDev_BlobTotalE`, massless 4-vector along the unit vector **from the reco vertex** `vtx` to the
  blob (fixes §7.12; ``blob_origin="detector"`` uses (0, 0, 0) like the reference; an unusable vertex falls back to
  the origin). Dropped: non-finite energy/position, E ≤ 1e-5 MeV (incl. negative energies, counted).
- prongs: raw `prong_part_pid` ∈ {3, 8, 13} and finite E > 1e-6 MeV; 0/−999 ("no hypothesis") and unknown codes are
  dropped and counted. The prong of the muon track (closest in direction to the muon, within
  `muon_prong_match_angle`) is dropped when a muon token exists (fixes the double counting of §7.2).
- cap (20 blobs, 10 prongs): a type above its cap is sorted by E (descending), the first cap−1 are kept and the rest
  are merged into one aggregate token (PID 7 blobs / 8 prongs): 4-vectors summed, the five non-kinematic features
  (log_dedx, x, y, z, t) averaged. At or below the cap the file order is kept.
- non-finite values: dE/dx NaN → treated like the −999 sentinel (feature ln 0.1), ±inf → 100 (reference);
  NaN/inf positions and times → 0. Every NaN, inf, sentinel and negative energy is counted per branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import awkward as ak
import numpy as np

from . import physics
from .schema import (
    EVENT_FEATURE_NAMES, MAX_BLOBS, MAX_PRONGS, NUM_OBJECT_FEATURES, PID_NAMES, RAW_PRONG_PID_TO_INDEX,
)

PID = {name: index for index, name in enumerate(PID_NAMES)}
PHOTON_MIN_E = 1e-5  # MeV
BLOB_MIN_E = 1e-5  # MeV; the reference aborts the file below this, we drop the blob
PRONG_MIN_E = 1e-6  # MeV
NO_HYPOTHESIS_PIDS = (0, -999)
SENTINELS = (-999.0, -9999.0, -1e4)
POSITION_SCALE = 1e4  # mm and ns → O(1) features
DEDX_CLIP = 100.0
FAR_AWAY = 1e6  # MeV or mm: anything larger is a corrupt value
_RAW_PID_LOOKUP = np.zeros(max(RAW_PRONG_PID_TO_INDEX) + 1, dtype=np.int32)  # raw prong pid → PID index
_RAW_PID_LOOKUP[list(RAW_PRONG_PID_TO_INDEX)] = list(RAW_PRONG_PID_TO_INDEX.values())


def take_rows(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index] along axis 0 (np.take is several times faster than fancy indexing of 2-D arrays)."""
    return np.take(values, index, axis=0)


def compress_rows(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """values[mask] along axis 0 (np.compress is several times faster than boolean indexing of 2-D arrays)."""
    return np.compress(mask, values, axis=0)


def put_rows(target: np.ndarray, index: np.ndarray, rows: np.ndarray) -> None:
    """target[index] = rows along axis 0, with each row moved as one opaque item (faster than fancy assignment)."""
    if target.ndim == 1 or not (target.flags.c_contiguous and rows.flags.c_contiguous) or target.dtype != rows.dtype:
        target[index] = rows
        return
    item = np.dtype((np.void, target.dtype.itemsize * target.shape[1]))
    target.view(item).reshape(-1)[index] = rows.view(item).reshape(-1)


class LayoutError(ValueError):
    """A jagged branch whose shape or counter disagrees with the others (names the branch)."""


@dataclass(frozen=True)
class TokenConfig:
    """How reco objects become tokens.

    blob_origin: "vertex" (blob direction from the reco vertex `vtx`, default) or "detector" (from (0,0,0), parity).
    muon_prong_match_angle: rad; the prong closest in direction to the muon is its track if within this angle.
    max_blobs / max_prongs: caps (schema.MAX_BLOBS / MAX_PRONGS); above them the aggregation rule applies.
    """

    blob_origin: str = "vertex"
    muon_prong_match_angle: float = 0.05
    max_blobs: int = MAX_BLOBS
    max_prongs: int = MAX_PRONGS

    def __post_init__(self) -> None:
        if self.blob_origin not in ("vertex", "detector"):
            raise ValueError(f"blob_origin={self.blob_origin!r}; expected 'vertex' or 'detector'")
        if self.max_blobs < 1 or self.max_prongs < 1:
            raise ValueError(f"caps must be >= 1, got max_blobs={self.max_blobs}, max_prongs={self.max_prongs}")


@dataclass
class ValueAudit:
    """Counts of rejected values per kind ("nan", "inf", "sentinel", "negative_energy") and branch."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, kind: str, branch: str, n) -> None:
        """Add n occurrences of `kind` in `branch` (zero counts are not recorded)."""
        n = int(n)
        if n:
            per_kind = self.counts.setdefault(kind, {})
            per_kind[branch] = per_kind.get(branch, 0) + n

    def audit_finite(self, values: np.ndarray, branch: str) -> np.ndarray:
        """Count NaN and ±inf in `values`; return the finite mask (same shape)."""
        finite = np.isfinite(values)
        if not finite.all():  # the common all-finite case costs one pass
            n_nan = np.count_nonzero(np.isnan(values))
            self.add("nan", branch, n_nan)
            self.add("inf", branch, finite.size - np.count_nonzero(finite) - n_nan)
        return finite

    def audit_energy(self, energy: np.ndarray, branch: str) -> None:
        """Count sentinel values (−999, −9999, −1e4) and other negative energies."""
        negative = energy < 0
        if negative.any():  # every sentinel is negative
            sentinel = negative & ((energy == SENTINELS[0]) | (energy == SENTINELS[1]) | (energy == SENTINELS[2]))
            n_sentinel = np.count_nonzero(sentinel)
            self.add("sentinel", branch, n_sentinel)
            self.add("negative_energy", branch, np.count_nonzero(negative) - n_sentinel)


@dataclass
class ObjectSet:
    """Objects of one kind for a chunk, flat: `counts` (N,) per event, `p4` (M, 4) MeV, `extra` (M, 5), `pid` (M,)."""

    counts: np.ndarray
    p4: np.ndarray
    extra: np.ndarray  # log_dedx, x, y, z, t (already scaled features)
    pid: np.ndarray

    @cached_property
    def event_index(self) -> np.ndarray:
        """Event number of each object."""
        return np.repeat(np.arange(len(self.counts)), self.counts)

    def select(self, mask: np.ndarray) -> ObjectSet:
        """The objects where `mask` is True (order kept)."""
        if mask.all():
            return self
        kept_before = np.concatenate([[0], np.cumsum(mask)])
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        counts = kept_before[offsets[1:]] - kept_before[offsets[:-1]]
        return ObjectSet(counts, compress_rows(self.p4, mask), compress_rows(self.extra, mask), self.pid[mask])


@dataclass
class TokenizedChunk:
    """Tokens and event-level quantities of one chunk (N events, M tokens in total)."""

    offsets: np.ndarray  # (N+1,) int32, tokens of event i are [offsets[i], offsets[i+1])
    pid: np.ndarray  # (M,) int32, schema.PID_NAMES index
    features: np.ndarray  # (M, 9) float32, schema.OBJECT_FEATURE_NAMES
    event_features: np.ndarray  # (N, 16) float32, schema.EVENT_FEATURE_NAMES
    has_muon: np.ndarray  # (N,) bool
    muon_p4: np.ndarray  # (N, 4) MeV, detector frame; meaningful where has_muon
    n_photons: np.ndarray  # (N,) int
    m_gammagamma: np.ndarray  # (N,) MeV, 0 unless exactly two photons
    n_pi_prongs_raw: np.ndarray  # (N,) prongs with raw pid in {8, 9} before any filter (tagger input, §7.17)
    truncation: dict[str, int]
    audit: ValueAudit


def numpy_column(chunk: ak.Array, name: str) -> np.ndarray:
    """A scalar or fixed-size branch of the chunk as a float64/int NumPy array."""
    return np.asarray(ak.to_numpy(chunk[name]))


def dedx_feature(dedx: np.ndarray) -> np.ndarray:
    """log_dedx feature: ln(|d| + 0.1) with sentinels (−999, −9999, −1e4) and NaN → 0, ±inf and |d| > 100 → 100.

    (MeV/cm.) The reference clips only d > 100; clipping |d| also bounds large negative non-sentinel values.
    """
    sentinel = (dedx == SENTINELS[0]) | (dedx == SENTINELS[1]) | (dedx == SENTINELS[2])
    magnitude = np.where(np.isnan(dedx) | sentinel, 0.0, np.abs(dedx))
    return np.log(np.minimum(magnitude, DEDX_CLIP) + 0.1)


def kinematic_features(p4: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(M, 4) px,py,pz,E in MeV → (M, 4) eta, phi, log_pt, log_e w.r.t. the detector z axis (reference definitions).

    eta = ½ ln((p+pz)/(p−pz)) clipped to [−10, 10] and 0 when p, p+pz or p−pz < 1e-6; phi = atan2(py, px);
    log_pt = ln(pT + 1e-6); log_e = ln(E + 1e-6).
    """
    px, py, pz, e = np.ascontiguousarray(np.asarray(p4, dtype=np.float64).T)
    p = np.sqrt(px**2 + py**2 + pz**2)
    p_plus, p_minus = p + pz, p - pz
    defined = (p >= 1e-6) & (p_plus >= 1e-6) & (p_minus >= 1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(defined, 0.5 * np.log(p_plus / p_minus), 0.0)
    out = np.empty((len(px), 4)) if out is None else out
    out[:, 0] = np.clip(eta, -10.0, 10.0)
    out[:, 1] = np.arctan2(py, px)
    out[:, 2] = np.log(np.hypot(px, py) + 1e-6)
    out[:, 3] = np.log(e + 1e-6)
    return out


def _list_parts(values: ak.Array) -> tuple[np.ndarray, ak.contents.Content] | None:
    """(offsets, inner layout) of a `var * ...` array, without copies; None for other layouts."""
    layout = ak.to_layout(values)
    if not isinstance(layout, ak.contents.ListOffsetArray):
        return None
    return np.asarray(layout.offsets), layout.content


def _numpy_content(layout: ak.contents.Content, start: int, stop: int) -> np.ndarray | None:
    """The plain NumPy data of a NumpyArray layout between start and stop (None for other layouts)."""
    if isinstance(layout, ak.contents.NumpyArray) and layout.data.ndim == 1:
        return np.asarray(layout.data)[start:stop]
    return None


def flatten_prong_vectors(values: ak.Array, branch: str, n_prongs: np.ndarray) -> np.ndarray:
    """A prong 4-vector branch → (M, 4) float64, M = Σ n_prongs.

    Accepts the real-file layout `var * var * float64` (vector<vector<double>>, inner length must be 4) and the
    flattened `var * float64` of length 4·n_prongs written by the synthetic generator.
    """
    fast = _flat_prong_vectors(values, branch)
    if fast is not None:
        flat, counts = fast
        if not np.array_equal(counts, n_prongs):
            raise LayoutError(f"branch {branch!r}: {counts.sum()} prongs but n_prongs sums to {n_prongs.sum()}")
        return flat.astype(np.float64, copy=False).reshape(-1, 4)
    if values.ndim == 3:
        inner = ak.to_numpy(ak.flatten(ak.num(values, axis=2), axis=None))
        if inner.size and np.any(inner != 4):
            raise LayoutError(f"branch {branch!r}: inner vectors must have length 4, found {sorted(set(inner))[:5]}")
        counts = ak.to_numpy(ak.num(values, axis=1))
    elif values.ndim == 2:
        counts4 = ak.to_numpy(ak.num(values, axis=1))
        if np.any(counts4 % 4):
            raise LayoutError(f"branch {branch!r}: flattened length per event must be a multiple of 4")
        counts = counts4 // 4
    else:
        raise LayoutError(f"branch {branch!r}: expected var * var * float64 or var * float64, got {values.type}")
    if not np.array_equal(counts, n_prongs):
        raise LayoutError(f"branch {branch!r}: {counts.sum()} prongs but n_prongs sums to {n_prongs.sum()}")
    return np.asarray(ak.to_numpy(ak.flatten(values, axis=None)), dtype=np.float64).reshape(-1, 4)


def _flat_prong_vectors(values: ak.Array, branch: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Fast path of `flatten_prong_vectors` on plain list-offset layouts: (flat values, prongs per event) or None."""
    parts = _list_parts(values)
    if parts is None:
        return None
    offsets, inner = parts
    if isinstance(inner, ak.contents.ListOffsetArray):  # var * var * float64
        inner_offsets = np.asarray(inner.offsets)[offsets[0]:offsets[-1] + 1]
        flat = _numpy_content(inner.content, inner_offsets[0], inner_offsets[-1])
        if flat is None:
            return None
        inner_counts = np.diff(inner_offsets)
        if inner_counts.size and np.any(inner_counts != 4):
            raise LayoutError(f"branch {branch!r}: inner vectors must have length 4, found "
                              f"{sorted(set(inner_counts.tolist()))[:5]}")
        return flat, np.diff(offsets)
    flat = _numpy_content(inner, offsets[0], offsets[-1])  # var * float64, 4 values per prong
    if flat is None:
        return None
    counts4 = np.diff(offsets)
    if np.any(counts4 % 4):
        raise LayoutError(f"branch {branch!r}: flattened length per event must be a multiple of 4")
    return flat, counts4 // 4


def jagged_flat(chunk: ak.Array, name: str, expected_counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A `var * T` branch → (flat values, counts); checks the counts against `expected_counts` if given."""
    parts = _list_parts(chunk[name])
    flat = None if parts is None else _numpy_content(parts[1], parts[0][0], parts[0][-1])
    if flat is not None:  # plain list-offset layout (what uproot returns): views, no copies
        counts = np.diff(parts[0])
        if expected_counts is not None and not np.array_equal(counts, expected_counts):
            raise LayoutError(f"branch {name!r}: per-event lengths differ from its sibling branches")
        return flat, counts
    counts = ak.to_numpy(ak.num(chunk[name], axis=1))
    if expected_counts is not None and not np.array_equal(counts, expected_counts):
        raise LayoutError(f"branch {name!r}: per-event lengths differ from its sibling branches")
    return np.asarray(ak.to_numpy(ak.flatten(chunk[name], axis=None))), counts


def _scaled_or_zero(values: np.ndarray, branch: str, audit: ValueAudit) -> np.ndarray:
    """values / 1e4 with NaN/inf → 0 (counted)."""
    finite = audit.audit_finite(values, branch)
    return np.where(finite, values, 0.0) / POSITION_SCALE


def build_muon(chunk: ak.Array, audit: ValueAudit) -> tuple[ObjectSet, np.ndarray, np.ndarray]:
    """Muon token (0 or 1 per event) → (objects, has_muon (N,), muon 4-vector (N, 4) MeV)."""
    p4 = numpy_column(chunk, "muon_corrected_p").astype(np.float64)
    finite = audit.audit_finite(p4, "muon_corrected_p").all(axis=1)
    matched = (p4[:, 0] != -999.0) & (p4[:, 1] != -999.0)
    audit.audit_energy(np.where(matched & finite, p4[:, 3], 0.0), "muon_corrected_p")
    has_muon = finite & matched & (np.abs(p4) <= FAR_AWAY).all(axis=1) & (p4[:, 3] > 0)
    t = _scaled_or_zero(numpy_column(chunk, "muon_trackVertexTime").astype(np.float64), "muon_trackVertexTime", audit)
    extra = np.zeros((len(p4), 5))
    extra[:, 4] = t
    pid = np.full(int(has_muon.sum()), PID["muon"], dtype=np.int32)
    return ObjectSet(has_muon.astype(np.int64), p4[has_muon], extra[has_muon], pid), has_muon, p4


def build_photons(chunk: ak.Array, audit: ValueAudit) -> tuple[ObjectSet, np.ndarray]:
    """Photon tokens (gamma1 then gamma2) → (objects, (N, 2, 4) 4-vectors with absent slots zeroed)."""
    slots_p4, slots_extra, present = [], [], []
    for slot in (1, 2):
        p4 = np.stack([numpy_column(chunk, f"gamma{slot}_{c}") for c in ("px", "py", "pz", "E")], axis=1)
        p4 = p4.astype(np.float64)
        finite = np.ones(len(p4), dtype=bool)
        for k, c in enumerate(("px", "py", "pz", "E")):
            finite &= audit.audit_finite(p4[:, k], f"gamma{slot}_{c}")
        audit.audit_energy(np.where(finite, p4[:, 3], 0.0), f"gamma{slot}_E")
        ok = finite & (p4[:, 3] > PHOTON_MIN_E) & (np.abs(p4) <= FAR_AWAY).all(axis=1)
        extra = np.zeros((len(p4), 5))
        dedx = numpy_column(chunk, f"gamma{slot}_dEdx").astype(np.float64)
        audit.audit_finite(dedx, f"gamma{slot}_dEdx")
        extra[:, 0] = dedx_feature(dedx)
        extra[:, 4] = _scaled_or_zero(numpy_column(chunk, f"gamma{slot}_time").astype(np.float64),
                                      f"gamma{slot}_time", audit)
        slots_p4.append(np.where(ok[:, None], p4, 0.0))
        slots_extra.append(extra)
        present.append(ok)
    present = np.stack(present, axis=1)  # (N, 2): row-major flattening keeps gamma1 before gamma2
    p4_all, extra_all = np.stack(slots_p4, axis=1), np.stack(slots_extra, axis=1)
    pid = np.full(int(present.sum()), PID["photon"], dtype=np.int32)
    objects = ObjectSet(present.sum(axis=1).astype(np.int64), p4_all[present], extra_all[present], pid)
    return objects, p4_all


def _blob_origin(chunk: ak.Array, config: TokenConfig) -> np.ndarray:
    """(N, 3) origin of the blob directions in mm: reco vertex, or (0,0,0) where asked or where vtx is unusable."""
    n = len(chunk)
    if config.blob_origin == "detector":
        return np.zeros((n, 3))
    vtx = numpy_column(chunk, "vtx").astype(np.float64)[:, :3]
    usable = (np.isfinite(vtx) & (np.abs(vtx) < FAR_AWAY)).all(axis=1)
    return np.where(usable[:, None], vtx, 0.0)


def build_blobs(chunk: ak.Array, config: TokenConfig, audit: ValueAudit, dropped: dict) -> ObjectSet:
    """Blob tokens: massless 4-vectors of energy TotalE pointing from the origin (vertex by default) to the blob."""
    energy, counts = jagged_flat(chunk, "MasterAnaDev_BlobTotalE")
    energy = energy.astype(np.float64, copy=False)
    xyz = [jagged_flat(chunk, f"MasterAnaDev_Blob{c}", counts)[0].astype(np.float64, copy=False) for c in "XYZ"]
    time = jagged_flat(chunk, "MasterAnaDev_BlobT", counts)[0].astype(np.float64, copy=False)
    finite = audit.audit_finite(energy, "MasterAnaDev_BlobTotalE")
    for c, values in zip("XYZ", xyz):
        finite &= audit.audit_finite(values, f"MasterAnaDev_Blob{c}")
    audit.audit_energy(np.where(finite, energy, 0.0), "MasterAnaDev_BlobTotalE")
    keep = finite & (energy > BLOB_MIN_E)
    for values in xyz:
        keep &= np.abs(values) < FAR_AWAY
    dropped["blob_invalid_or_below_threshold"] = dropped.get("blob_invalid_or_below_threshold", 0) + int((~keep).sum())
    t = _scaled_or_zero(time, "MasterAnaDev_BlobT", audit)
    # Only kept blobs get 4-vectors (they are finite, so the NaN → 0 of positions is moot for them).
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    kept_counts = kept_before[offsets[1:]] - kept_before[offsets[:-1]]
    energy, t = np.compress(keep, energy), np.compress(keep, t)
    x, y, z = (np.compress(keep, values) for values in xyz)
    event = np.repeat(np.arange(len(counts)), kept_counts)
    ox, oy, oz = np.ascontiguousarray(_blob_origin(chunk, config).T)
    dx, dy, dz = x - ox[event], y - oy[event], z - oz[event]
    r = np.sqrt(dx * dx + dy * dy + dz * dz)  # same rounding as np.linalg.norm(axis=1)
    far = r > 1e-6
    r = np.maximum(r, 1e-6)
    p4 = np.empty((len(energy), 4))
    # A blob exactly at the origin has no direction; point it along z.
    p4[:, 0] = np.where(far, dx / r, 0.0) * energy
    p4[:, 1] = np.where(far, dy / r, 0.0) * energy
    p4[:, 2] = np.where(far, dz / r, 1.0) * energy
    p4[:, 3] = energy
    extra = np.zeros((len(energy), 5))
    extra[:, 1] = x / POSITION_SCALE
    extra[:, 2] = y / POSITION_SCALE
    extra[:, 3] = z / POSITION_SCALE
    extra[:, 4] = t
    return ObjectSet(kept_counts.astype(np.int64), p4, extra, np.full(len(energy), PID["blob"], dtype=np.int32))


def _drop_muon_prong(prongs: ObjectSet, has_muon: np.ndarray, muon_p4: np.ndarray, angle: float) -> np.ndarray:
    """Mask (M,) that is False for the prong closest in direction to the muon (within `angle` rad), True elsewhere."""
    keep = np.ones(len(prongs.pid), dtype=bool)
    if not len(keep):
        return keep
    event = prongs.event_index
    mu = take_rows(muon_p4[:, :3], event)
    norm = np.linalg.norm(prongs.p4[:, :3], axis=1) * np.linalg.norm(mu, axis=1)
    cos = np.where(norm > 0, np.einsum("ij,ij->i", prongs.p4[:, :3], mu) / np.where(norm > 0, norm, 1.0), -2.0)
    cos = np.where(has_muon[event], cos, -2.0)
    order = np.lexsort((np.arange(len(cos)), -cos, event))  # per event: best match first, ties by file order
    starts = np.concatenate([[0], np.cumsum(prongs.counts)[:-1]])[prongs.counts > 0]
    best = order[starts]
    matched = best[cos[best] >= np.cos(angle)]
    keep[matched] = False
    return keep


def build_prongs(chunk: ak.Array, has_muon: np.ndarray, muon_p4: np.ndarray, config: TokenConfig,
                 audit: ValueAudit, dropped: dict) -> tuple[ObjectSet, np.ndarray, np.ndarray]:
    """Prong tokens → (objects, # kept prongs with raw pid 8/9 per event, # raw-pid 8/9 prongs before any filter)."""
    n_prongs = numpy_column(chunk, "n_prongs").astype(np.int64)
    p4 = flatten_prong_vectors(chunk["prong_part_E"], "prong_part_E", n_prongs)
    pos = flatten_prong_vectors(chunk["prong_part_pos"], "prong_part_pos", n_prongs)
    raw_pid = jagged_flat(chunk, "prong_part_pid", n_prongs)[0].astype(np.int64)
    dedx = jagged_flat(chunk, "prong_dEdXMean", n_prongs)[0].astype(np.float64)
    event = np.repeat(np.arange(len(n_prongs)), n_prongs)
    is_pi_code = (raw_pid == 8) | (raw_pid == 9)
    n_pi_raw = np.bincount(event[is_pi_code], minlength=len(n_prongs))

    finite = audit.audit_finite(p4, "prong_part_E").all(axis=1)
    audit.audit_energy(np.where(finite, p4[:, 3], 0.0), "prong_part_E")
    no_hypothesis = np.isin(raw_pid, NO_HYPOTHESIS_PIDS)
    known = np.isin(raw_pid, list(RAW_PRONG_PID_TO_INDEX))
    valid = finite & (p4[:, 3] > PRONG_MIN_E) & (np.abs(p4) <= FAR_AWAY).all(axis=1)
    _count(dropped, "prong_no_hypothesis", no_hypothesis)
    _count(dropped, "prong_unknown_pid", ~no_hypothesis & ~known)
    _count(dropped, "prong_invalid_or_below_threshold", known & ~valid)
    keep = known & valid

    audit.audit_finite(dedx, "prong_dEdXMean")
    extra = np.empty((len(raw_pid), 5))
    extra[:, 0] = dedx_feature(dedx)
    extra[:, 1:] = np.where(audit.audit_finite(pos, "prong_part_pos"), pos, 0.0) / POSITION_SCALE
    pid = _RAW_PID_LOOKUP[np.where(keep, raw_pid, 0)]
    prongs = ObjectSet(n_prongs, p4, extra, pid).select(keep)
    raw_kept = raw_pid[keep]

    not_muon = _drop_muon_prong(prongs, has_muon, muon_p4, config.muon_prong_match_angle)
    _count(dropped, "prong_muon_track", ~not_muon)
    prongs, raw_kept = prongs.select(not_muon), raw_kept[not_muon]
    pi_code_kept = (raw_kept == 8) | (raw_kept == 9)
    n_pi_kept = np.bincount(prongs.event_index[pi_code_kept], minlength=len(n_prongs))
    return prongs, n_pi_kept, n_pi_raw


def _count(dropped: dict, reason: str, mask: np.ndarray) -> None:
    dropped[reason] = dropped.get(reason, 0) + int(np.count_nonzero(mask))


def _order_by_energy_desc(energy: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Indices of the objects of the blocks [start, start+count), block by block, each sorted by E descending
    (ties and NaN: file order, like a stable lexsort)."""
    out = np.empty(int(counts.sum()), dtype=np.int64)
    out_start = np.cumsum(counts) - counts
    # Each block is sorted as a row of a NaN-padded grid: NaN sorts last and the sort is stable, so real NaNs stay
    # ahead of the padding and the first `count` columns of a row are that block's objects. Blocks of similar size
    # share a grid (little padding), and grids are kept small (cache-resident); the loop is over grids, not events.
    by_size = np.argsort(counts, kind="stable")
    sorted_counts = counts[by_size]
    cells_before = np.cumsum(sorted_counts)
    first = 0
    while first < len(by_size):
        last = max(first + 1, int(np.searchsorted(cells_before, cells_before[first] + _GRID_CELLS, side="right")))
        last = min(last, len(by_size))
        while last > first + 1 and (last - first) * int(sorted_counts[last - 1]) > 2 * _GRID_CELLS:
            last = first + max(1, (last - first) // 2)
        rows = by_size[first:last]
        row_counts, width = counts[rows], int(sorted_counts[last - 1])
        real = np.arange(width) < row_counts[:, None]
        grid = np.full(real.shape, np.nan)
        grid[real] = -energy[(starts[rows, None] + np.arange(width))[real]]
        order = np.argsort(grid, axis=1, kind="stable")
        out[(out_start[rows, None] + np.arange(width))[real]] = (starts[rows, None] + order)[real]
        first = last
    return out


_GRID_CELLS = 1 << 16


def cap_objects(objects: ObjectSet, cap: int, aggregate_pid: int) -> tuple[ObjectSet, ObjectSet, int]:
    """Apply the cap rule → (kept objects, aggregate tokens (0/1 per event), # objects merged).

    Events with more than `cap` objects: sort by E descending (ties: file order), keep cap−1, merge the rest into one
    token with summed 4-vector and mean extra features. Other events keep all objects in file order.
    """
    n = len(objects.counts)
    counts = np.asarray(objects.counts, dtype=np.int64)
    over = counts > cap
    if not over.any():
        empty = ObjectSet(np.zeros(n, dtype=np.int64), np.zeros((0, 4)), np.zeros((0, 5)), np.zeros(0, np.int32))
        return objects, empty, 0
    starts = np.cumsum(counts) - counts
    over_starts, over_counts = starts[over], counts[over]
    # Each over-cap event's block keeps its place; its objects, sorted, replace the block. Positions >= cap−1 inside
    # a sorted block are merged.
    sorted_over = _order_by_energy_desc(objects.p4[:, 3], over_starts, over_counts)
    n_merged = over_counts - (cap - 1)
    block_start = np.cumsum(over_counts) - over_counts  # of each over-cap block inside sorted_over
    merged_local = np.arange(int(n_merged.sum())) + np.repeat(block_start + cap - 1 - (np.cumsum(n_merged) - n_merged),
                                                             n_merged)
    merged_index = sorted_over[merged_local]
    keep_local = np.ones(len(sorted_over), dtype=bool)
    keep_local[merged_local] = False
    kept_over = np.zeros(len(objects.pid), dtype=bool)
    kept_over[sorted_over] = True  # mark positions of over-cap objects; replaced below by the sorted kept ones
    kept_index = np.arange(len(objects.pid))
    over_positions = np.flatnonzero(kept_over)
    kept_index[over_positions] = sorted_over
    keep_mask = np.ones(len(objects.pid), dtype=bool)
    keep_mask[over_positions[~keep_local]] = False
    kept_index = kept_index[keep_mask]
    n_merged_per_event = np.zeros(n, dtype=np.int64)
    n_merged_per_event[over] = n_merged
    kept = ObjectSet(counts - n_merged_per_event, take_rows(objects.p4, kept_index),
                     take_rows(objects.extra, kept_index), objects.pid[kept_index])
    # Sums in the sorted order (bincount adds sequentially), as the aggregate has always been defined.
    merged_event = np.repeat(np.arange(len(n_merged)), n_merged)
    merged_p4, merged_extra = take_rows(objects.p4, merged_index), take_rows(objects.extra, merged_index)
    sums_p4 = np.stack([np.bincount(merged_event, merged_p4[:, k], len(n_merged)) for k in range(4)], axis=1)
    sums_extra = np.stack([np.bincount(merged_event, merged_extra[:, k], len(n_merged)) for k in range(5)], axis=1)
    aggregate = ObjectSet(over.astype(np.int64), sums_p4, sums_extra / n_merged[:, None],
                          np.full(int(over.sum()), aggregate_pid, dtype=np.int32))
    return kept, aggregate, int(n_merged.sum())


def merge_in_order(sets: list[ObjectSet]) -> ObjectSet:
    """Concatenate object sets per event, keeping the order of `sets` inside each event."""
    counts = np.sum([s.counts for s in sets], axis=0)
    starts = np.cumsum(counts) - counts
    total = int(counts.sum())
    p4, extra, pid = np.empty((total, 4)), np.empty((total, 5)), np.empty(total, dtype=np.int32)
    before = np.zeros_like(counts)
    for s in sets:
        if len(s.pid):
            # object k of event i goes to starts[i] + before[i] + (k − first object of event i in s)
            shift = starts + before - (np.cumsum(s.counts) - s.counts)
            target = np.arange(len(s.pid)) + np.repeat(shift, s.counts)
            put_rows(p4, target, np.ascontiguousarray(s.p4))
            put_rows(extra, target, np.ascontiguousarray(s.extra))
            pid[target] = s.pid
        before = before + s.counts
    return ObjectSet(counts, p4, extra, pid)


def _log_energy(values: np.ndarray, branch: str, audit: ValueAudit, scale: float, offset: float) -> np.ndarray:
    """ln(max(E, 0)/scale + offset) with NaN/inf → 0 energy (counted), negatives counted."""
    finite = audit.audit_finite(values, branch)
    clean = np.where(finite, values, 0.0)
    audit.audit_energy(clean, branch)
    return np.log(np.maximum(clean, 0.0) / scale + offset)


def event_features(chunk: ak.Array, tokens: ObjectSet, has_muon: np.ndarray, m_gg: np.ndarray,
                   n_pi_kept: np.ndarray, audit: ValueAudit) -> np.ndarray:
    """The 16 event-level features of `schema.EVENT_FEATURE_NAMES` (reference order and transforms, §2.4)."""
    n = len(has_muon)
    col = {name: numpy_column(chunk, name).astype(np.float64) for name in (
        "muon_fuzz_energy", "muon_iso_blobs_energy", "MasterAnaDev_hadron_recoil",
        "part_response_total_recoil_passive_allNonMuonClusters_id",
        "part_response_total_recoil_passive_allNonMuonClusters_od")}
    out = np.zeros((n, len(EVENT_FEATURE_NAMES)))
    out[:, 0] = _log_energy(col["muon_fuzz_energy"], "muon_fuzz_energy", audit, 1.0, 1e-5)
    out[:, 1] = _log_energy(col["muon_iso_blobs_energy"], "muon_iso_blobs_energy", audit, 1.0, 1e-5)
    out[:, 2] = _log_energy(col["MasterAnaDev_hadron_recoil"], "MasterAnaDev_hadron_recoil", audit, 1.0, 1e-5)
    passive = []
    for k, side in ((3, "id"), (4, "od")):
        name = f"part_response_total_recoil_passive_allNonMuonClusters_{side}"
        out[:, k] = _log_energy(col[name], name, audit, 1e4, 1e-3)
        passive.append(np.maximum(np.where(np.isfinite(col[name]), col[name], 0.0), 0.0) / 1e4)
    out[:, 5] = np.log(passive[0] + passive[1] + 1e-3)
    out[:, 6] = np.maximum(numpy_column(chunk, "improved_nmichel"), 0)
    out[:, 7] = has_muon
    out[:, 8] = m_gg
    out[:, 9] = n_pi_kept
    energy_by_pid = np.bincount(tokens.event_index * len(PID_NAMES) + tokens.pid, tokens.p4[:, 3],
                                n * len(PID_NAMES)).reshape(n, len(PID_NAMES))
    out[:, 10:16] = np.log(energy_by_pid[:, PID["blob"]:] + 1e-3)  # PIDs 3..8: blob, 3 prong kinds, 2 aggregates
    return out.astype(np.float32)


def _zero_non_finite(values: np.ndarray, name: str, audit: ValueAudit) -> None:
    """Values that overflowed float32 (e.g. a 1e300 position / 1e4) → 0 in place, counted as "float32_overflow"."""
    finite = np.isfinite(values)
    if not finite.all():
        audit.add("float32_overflow", name, finite.size - np.count_nonzero(finite))
        values[~finite] = 0.0


def tokenize(chunk: ak.Array, config: TokenConfig = TokenConfig()) -> TokenizedChunk:
    """One chunk of MasterAnaDev rows → tokens (muon, photons, blobs, prongs), event features and counters."""
    audit, dropped = ValueAudit(), {}
    muon, has_muon, muon_p4 = build_muon(chunk, audit)
    photons, photon_p4 = build_photons(chunk, audit)
    blobs = build_blobs(chunk, config, audit, dropped)
    prongs, n_pi_kept, n_pi_raw = build_prongs(chunk, has_muon, muon_p4, config, audit, dropped)
    blobs, blob_aggregate, blobs_merged = cap_objects(blobs, config.max_blobs, PID["aggregated_blobs"])
    prongs, prong_aggregate, prongs_merged = cap_objects(prongs, config.max_prongs, PID["aggregated_prongs"])
    tokens = merge_in_order([muon, photons, blobs, blob_aggregate, prongs, prong_aggregate])

    n_photons = photons.counts
    m_gg = np.where(n_photons == 2, physics.invariant_mass_pair(photon_p4[:, 0], photon_p4[:, 1]), 0.0)
    features = np.empty((len(tokens.pid), NUM_OBJECT_FEATURES), dtype=np.float32)
    kinematic_features(tokens.p4, out=features[:, :4])
    with np.errstate(over="ignore"):
        features[:, 4:] = tokens.extra
    _zero_non_finite(features, "object_features", audit)
    event = event_features(chunk, tokens, has_muon, m_gg, n_pi_kept, audit)
    _zero_non_finite(event, "event_features", audit)
    truncation = {
        "events_with_blob_aggregate": int(blob_aggregate.counts.sum()), "blobs_merged": blobs_merged,
        "events_with_prong_aggregate": int(prong_aggregate.counts.sum()), "prongs_merged": prongs_merged,
        **{f"dropped_{reason}": n for reason, n in sorted(dropped.items())},
    }
    offsets = np.concatenate([[0], np.cumsum(tokens.counts)]).astype(np.int32)
    return TokenizedChunk(
        offsets=offsets, pid=tokens.pid, features=features,
        event_features=event,
        has_muon=has_muon, muon_p4=muon_p4, n_photons=n_photons, m_gammagamma=m_gg,
        n_pi_prongs_raw=n_pi_raw, truncation=truncation, audit=audit,
    )


__all__ = [
    "TokenConfig", "ValueAudit", "ObjectSet", "TokenizedChunk", "LayoutError", "tokenize", "dedx_feature",
    "kinematic_features", "flatten_prong_vectors", "cap_objects", "merge_in_order",
]
