"""A jet corpus from a real generator: Pythia 8 pp collisions at 13.6 TeV, anti-kT R = 0.8 jets (FastJet), written as
Parquet in the JetClass-II column layout (`part_*` per-constituent lists, `jet_*` scalars, `jet_label`).

    minerva-fm generate-jets runs/jets --jets 3000 --seed 1 --workers 2

Classes (JetClass-I names and label order, `JET_CLASSES`): QCD, H->bb, H->cc, H->gg, H->4q (WW*), H->lvqq' (WW*),
Z->qq, W->qq', t->bqq', t->blv. A signal jet is labelled when all visible decay products of its resonance (quarks,
charged leptons; the neutrino excepted) lie within dR < 0.8 of the jet axis; QCD jets are all jets of QCD events.
Constituents are the final visible particles (neutrinos dropped) with charge, the five JetClass particle-type flags
and dEta/dPhi to the jet axis. There is no detector: the impact-parameter columns (`part_d0val`, `part_d0err`,
`part_dzval`, `part_dzerr`) are 0. Multi-parton interactions are off (speed). Deterministic by (seed, worker, class):
each worker is one process with its own Pythia per class.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from minerva_common.atomic import atomic_path

# JetClass-I label order (its `label_*` branches); our `jet_label` indexes this tuple.
JET_CLASSES = ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl")
JET_CLASS_DESCRIPTIONS = {
    "QCD": "q/g jets of QCD 2->2 events", "Hbb": "H -> b b~", "Hcc": "H -> c c~", "Hgg": "H -> g g",
    "H4q": "H -> W W* -> 4 quarks", "Hqql": "H -> W W* -> l nu q q'", "Zqq": "Z -> q q~", "Wqq": "W -> q q'",
    "Tbqq": "t -> b W(-> q q')", "Tbl": "t -> b W(-> l nu)",
}
PART_FLOAT_COLUMNS = ("part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi", "part_d0val",
                      "part_d0err", "part_dzval", "part_dzerr", "part_charge", "part_isElectron", "part_isMuon",
                      "part_isPhoton", "part_isChargedHadron", "part_isNeutralHadron")
JET_FLOAT_COLUMNS = ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass")
JET_SCHEMA = pa.schema([*(pa.field(c, pa.list_(pa.float32())) for c in PART_FLOAT_COLUMNS),
                        *(pa.field(c, pa.float32()) for c in JET_FLOAT_COLUMNS),
                        pa.field("jet_nparticles", pa.int32()), pa.field("jet_label", pa.int32())])
SPLIT_FRACTIONS = {"train": 4, "validation": 1, "test": 1}  # JetClass-II's 4:1:1

JET_R = 0.8
JET_PT_RANGE = (500.0, 1000.0)  # GeV
JET_ABS_ETA_MAX = 2.0
MATCH_DR = 0.8

_COMMON = ["Beams:eCM = 13600.", "PartonLevel:MPI = off", "PhaseSpace:pTHatMin = 450.", "PhaseSpace:pTHatMax = 1050.",
           "Next:numberCount = 0", "Next:numberShowEvent = 0", "Next:numberShowInfo = 0",
           "Next:numberShowProcess = 0", "Init:showProcesses = off", "Init:showMultipartonInteractions = off",
           "Init:showChangedSettings = off", "Init:showChangedParticleData = off", "Random:setSeed = on"]
_HIGGS = ["HiggsSM:gg2Hg(l:t) = on", "HiggsSM:qg2Hq(l:t) = on", "HiggsSM:qqbar2Hg(l:t) = on", "25:onMode = off"]
_TOP = ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "24:onMode = off"]
_W_HADRONIC = ["24:onMode = off", "24:onIfAny = 1 2 3 4 5"]
# Pythia settings per class, and the resonance (|PDG id|) whose decay products are matched to the jet
PROCESSES = {
    "QCD": (["HardQCD:all = on"], None),
    "Hbb": (_HIGGS + ["25:onIfMatch = 5 -5"], 25),
    "Hcc": (_HIGGS + ["25:onIfMatch = 4 -4"], 25),
    "Hgg": (_HIGGS + ["25:onIfMatch = 21 21"], 25),
    "H4q": (_HIGGS + ["25:onIfMatch = 24 -24"] + _W_HADRONIC, 25),
    "Hqql": (_HIGGS + ["25:onIfMatch = 24 -24"], 25),  # W decays free; one leptonic + one hadronic selected below
    "Zqq": (["WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on", "WeakZ0:gmZmode = 2",
             "23:onMode = off", "23:onIfAny = 1 2 3 4 5"], 23),
    "Wqq": (["WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on"] + _W_HADRONIC, 24),
    "Tbqq": (_TOP + ["24:onIfAny = 1 2 3 4 5"], 6),
    "Tbl": (_TOP + ["24:onIfAny = 11 13 15"], 6),
}
QUARKS, LEPTONS, NEUTRINOS = {1, 2, 3, 4, 5}, {11, 13, 15}, {12, 14, 16}


@dataclass(frozen=True)
class JetJob:
    """What one worker generates: `n_per_class` jets of each class, seeded by (seed, worker)."""

    worker: int
    seed: int
    classes: tuple[str, ...]
    n_per_class: int
    progress: bool = True


def pythia_seed(seed: int, worker: int, class_index: int) -> int:
    """Pythia's seed (1..900_000_000) for one (corpus seed, worker, class)."""
    return 1 + (seed * 1_000_003 + worker * 7_919 + class_index * 104_729) % 899_999_999


def make_pythia(name: str, seed: int):
    """An initialised Pythia 8 for class `name` (quiet, MPI off)."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    for line in _COMMON + PROCESSES[name][0] + [f"Random:seed = {seed}"]:
        if not pythia.readString(line):
            raise ValueError(f"Pythia rejected setting {line!r} for jet class {name}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise for jet class {name}")
    return pythia


def _delta_phi(a, b):
    return (np.asarray(a) - np.asarray(b) + np.pi) % (2 * np.pi) - np.pi


def visible_final_particles(event) -> np.ndarray:
    """(n, 7) px, py, pz, E, charge, |PDG id|, is-hadron of the final visible particles (neutrinos dropped)."""
    rows = [(p.px(), p.py(), p.pz(), p.e(), p.charge(), p.idAbs(), p.isHadron())
            for p in event if p.isFinal() and p.isVisible()]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 7)


def _bottom(event, i: int) -> int:
    return event[i].iBotCopyId()


def decay_products(event, i: int) -> list[tuple[int, float, float]]:
    """(|id|, eta, phi) of the quarks, gluons and leptons a resonance decays to, following W/Z daughters down."""
    out = []
    for d in event[_bottom(event, i)].daughterList():
        particle = event[d]
        if particle.idAbs() in (23, 24):
            out.extend(decay_products(event, d))
        else:
            out.append((particle.idAbs(), particle.eta(), particle.phi()))
    return out


def resonance_targets(event, name: str) -> list[list[tuple[float, float]]]:
    """For each resonance of class `name` in the event, the (eta, phi) of the products that must sit in the jet."""
    resonance = PROCESSES[name][1]
    targets = []
    seen = set()
    for i in range(event.size()):
        particle = event[i]
        if particle.idAbs() != resonance or particle.status() == 0:
            continue
        top = particle.iTopCopyId()
        if top in seen or _is_decay_product_of_other(event, top, resonance):
            continue
        seen.add(top)
        products = decay_products(event, i)
        ids = [p[0] for p in products]
        if name == "Hqql" and not (sum(x in LEPTONS for x in ids) == 1 and sum(x in QUARKS for x in ids) == 2):
            continue
        if name == "Tbl" and not any(x in LEPTONS for x in ids):
            continue
        targets.append([(eta, phi) for pid, eta, phi in products if pid not in NEUTRINOS])
    return targets


def _is_decay_product_of_other(event, i: int, resonance: int) -> bool:
    """A W from a top / H decay is not itself a W-jet candidate."""
    mother = event[i].mother1()
    return resonance in (23, 24) and event[mother].idAbs() in (6, 25)


def cluster_jets(particles: np.ndarray):
    """anti-kT R=0.8 jets of one event in the pT / |eta| window: list of (jet 4-vector, constituent indices)."""
    import fastjet

    if len(particles) == 0:
        return []
    pseudo = [fastjet.PseudoJet(float(px), float(py), float(pz), float(e)) for px, py, pz, e in particles[:, :4]]
    for index, pj in enumerate(pseudo):
        pj.set_user_index(index)
    sequence = fastjet.ClusterSequence(pseudo, fastjet.JetDefinition(fastjet.antikt_algorithm, JET_R))
    jets = []
    for jet in fastjet.sorted_by_pt(sequence.inclusive_jets(JET_PT_RANGE[0])):
        if jet.pt() <= JET_PT_RANGE[1] and abs(jet.eta()) < JET_ABS_ETA_MAX:
            idx = np.array([c.user_index() for c in jet.constituents()], dtype=np.int64)
            jets.append(((jet.px(), jet.py(), jet.pz(), jet.e(), jet.pt(), jet.eta(), jet.phi_std(), jet.m()), idx))
    return jets, sequence  # the sequence must outlive the constituents' use


def jet_row(jet: tuple, particles: np.ndarray, label: int) -> dict:
    """One jet as a JetClass-II row: constituents sorted by decreasing pT."""
    px, py, pz, e, pt, eta, phi, mass = jet
    p = particles
    order = np.argsort(-np.hypot(p[:, 0], p[:, 1]))
    p = p[order]
    part_pt = np.hypot(p[:, 0], p[:, 1])
    part_eta = np.arcsinh(p[:, 2] / np.maximum(part_pt, 1e-12))
    part_phi = np.arctan2(p[:, 1], p[:, 0])
    charge, pid, hadron = p[:, 4], p[:, 5], p[:, 6] > 0
    zeros = np.zeros(len(p))
    columns = {
        "part_px": p[:, 0], "part_py": p[:, 1], "part_pz": p[:, 2], "part_energy": p[:, 3],
        "part_deta": part_eta - eta, "part_dphi": _delta_phi(part_phi, phi),
        "part_d0val": zeros, "part_d0err": zeros, "part_dzval": zeros, "part_dzerr": zeros,  # no detector
        "part_charge": charge, "part_isElectron": pid == 11, "part_isMuon": pid == 13, "part_isPhoton": pid == 22,
        "part_isChargedHadron": hadron & (charge != 0), "part_isNeutralHadron": hadron & (charge == 0),
    }
    row = {k: np.asarray(v, np.float32) for k, v in columns.items()}
    row.update(jet_pt=pt, jet_eta=eta, jet_phi=phi, jet_energy=e, jet_mass=mass, jet_nparticles=len(p),
               jet_label=label)
    return row


def jets_of_event(event, name: str, label: int) -> list[dict]:
    """The labelled jet rows of one generated event (signal: truth-matched; QCD: every jet in the window)."""
    particles = visible_final_particles(event)
    found = cluster_jets(particles)
    if not found:
        return []
    jets, _sequence = found
    targets = resonance_targets(event, name) if PROCESSES[name][1] is not None else None
    rows = []
    for jet, idx in jets:
        if targets is not None and not any(_all_within(products, jet[5], jet[6]) for products in targets):
            continue
        rows.append(jet_row(jet, particles[idx], label))
    return rows


def _all_within(products, eta: float, phi: float) -> bool:
    if not products:
        return False
    arr = np.asarray(products, dtype=np.float64)
    return bool(np.all(np.hypot(arr[:, 0] - eta, _delta_phi(arr[:, 1], phi)) < MATCH_DR))


def generate_class(name: str, n_jets: int, seed: int, progress=None, max_events: int | None = None) -> list[dict]:
    """`n_jets` labelled jets of class `name` (one Pythia, seeded)."""
    pythia = make_pythia(name, seed)
    label = JET_CLASSES.index(name)
    rows: list[dict] = []
    events = 0
    limit = max_events or 200 * n_jets + 1000
    while len(rows) < n_jets:
        events += 1
        if events > limit:
            raise RuntimeError(f"jet class {name}: only {len(rows)} of {n_jets} jets after {limit} events")
        if not pythia.next():
            continue
        new = jets_of_event(pythia.event, name, label)[: n_jets - len(rows)]
        rows.extend(new)
        if progress is not None and new:
            progress.update(len(new))
    return rows


def run_job(job: JetJob) -> list[dict]:
    """All jets of one worker (its classes in order), with a tqdm bar per worker."""
    from tqdm.auto import tqdm

    total = job.n_per_class * len(job.classes)
    with tqdm(total=total, desc=f"jets worker {job.worker}", position=job.worker, disable=not job.progress,
              dynamic_ncols=True, leave=False) as bar:
        rows = []
        for name in job.classes:
            rows.extend(generate_class(name, job.n_per_class, pythia_seed(job.seed, job.worker,
                                                                          JET_CLASSES.index(name)), bar))
    return rows


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Jet rows -> an Arrow table with `JET_SCHEMA` (list columns built from flat arrays + offsets)."""
    counts = np.array([r["jet_nparticles"] for r in rows], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    arrays = []
    for field in JET_SCHEMA:
        name = field.name
        if name in PART_FLOAT_COLUMNS:
            flat = np.concatenate([r[name] for r in rows]) if rows else np.zeros(0, np.float32)
            arrays.append(pa.ListArray.from_arrays(offsets, pa.array(flat.astype(np.float32))))
        else:
            arrays.append(pa.array(np.array([r[name] for r in rows]).astype(field.type.to_pandas_dtype())))
    return pa.Table.from_arrays(arrays, schema=JET_SCHEMA)


def split_of(n: int, seed: int) -> np.ndarray:
    """Deterministic 4:1:1 train/validation/test assignment of n jets."""
    names = list(SPLIT_FRACTIONS)
    weights = np.array(list(SPLIT_FRACTIONS.values()), dtype=np.float64)
    return np.random.default_rng(seed).choice(len(names), size=n, p=weights / weights.sum())


def write_worker_output(rows: list[dict], out: Path, worker: int, seed: int, jets_per_file: int) -> list[Path]:
    """Shuffle one worker's jets, split 4:1:1 and write `<split>/jets-w<worker>-<k>.parquet` (atomically)."""
    rng = np.random.default_rng([seed, worker, 17])
    rows = [rows[i] for i in rng.permutation(len(rows))]
    assignment = split_of(len(rows), seed * 1000 + worker)
    written = []
    for index, split in enumerate(SPLIT_FRACTIONS):
        chosen = [r for r, a in zip(rows, assignment) if a == index]
        for k in range(0, max(len(chosen), 1), jets_per_file):
            part = chosen[k:k + jets_per_file]
            if not part:
                continue
            path = out / split / f"jets-w{worker:03d}-{k // jets_per_file:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                pq.write_table(rows_to_table(part), tmp)
            written.append(path)
    return written


def generate_jets(out: str | os.PathLike, n_jets: int, seed: int = 0, classes: tuple[str, ...] = JET_CLASSES,
                  workers: int = 1, jets_per_file: int = 100_000, progress: bool = True,
                  write_card: bool = True) -> dict:
    """Generate ~`n_jets` jets (equal per class and worker) into `out` as JetClass-II-layout Parquet + a card."""
    unknown = [c for c in classes if c not in JET_CLASSES]
    if unknown:
        raise ValueError(f"unknown jet classes {unknown}; choose from {list(JET_CLASSES)}")
    if n_jets < 1 or workers < 1:
        raise ValueError(f"need --jets >= 1 and --workers >= 1, got {n_jets}, {workers}")
    out = Path(out)
    n_per_class = max(1, math.ceil(n_jets / (len(classes) * workers)))
    jobs = [JetJob(w, seed, tuple(classes), n_per_class, progress) for w in range(workers)]
    if workers == 1:
        results = [run_job(jobs[0])]
    else:
        import multiprocessing

        # fork: the workers only run Pythia/FastJet/numpy, and callers need no `if __name__ == "__main__"` guard
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            results = list(pool.map(run_job, jobs))
    files = []
    for job, rows in zip(jobs, results):
        files.extend(write_worker_output(rows, out, job.worker, seed, jets_per_file))
    counts = {name: n_per_class * workers for name in classes}
    summary = {"jets": sum(counts.values()), "per_class": counts, "seed": seed, "workers": workers,
               "files": [str(f.relative_to(out)) for f in files]}
    if write_card:
        from dataset_builder.jet_card import write_jet_dataset_card

        write_jet_dataset_card(out, summary)
    return summary


__all__ = ["JET_CLASSES", "JET_SCHEMA", "PART_FLOAT_COLUMNS", "JET_FLOAT_COLUMNS", "generate_jets", "jets_of_event",
           "make_pythia", "rows_to_table", "resonance_targets"]
