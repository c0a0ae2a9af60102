"""MasterAnaDev AnaTuples written by real ROOT (PyROOT TTrees) in the layout of real files, for the converter tests.

Layout as MINERvA's MakeClass headers show it (see dataset_builder/branches.py): `Int_t` / `Double_t` scalars,
`Double_t x[4]` fixed arrays, counted C arrays `Double_t MasterAnaDev_BlobX[MasterAnaDev_BlobX_sz]`,
`Int_t prong_part_pid[n_prongs]`, `Double_t mc_FSPartPx[mc_nFSPart]`, and `std::vector<std::vector<double>>`
`prong_part_E` / `prong_part_pos`. The MasterAnaDev tree is written twice (two key cycles, the last complete);
`Meta` holds POT; data files have neither `Truth` nor `mc_*` branches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_builder.branches import ALL_BRANCHES, META_TREE, RECO_TREE, TRUTH_TREE, WEIGHT_BRANCHES

MAX_LEN = 64  # capacity of the counted-array buffers
ZLIB, LZMA, ZSTD = 101, 207, 505  # ROOT compression settings: algorithm * 100 + level


def _root():
    import ROOT  # slow to import (seconds): only when a test writes a file

    ROOT.gROOT.SetBatch(True)
    return ROOT


def _counter(spec) -> str:
    return spec.shape[4:].split("]")[0]


class _Tree:
    """A TTree with one buffer per branch, declared from the branch specs (counters first)."""

    def __init__(self, ROOT, name: str, specs):
        self.tree = ROOT.TTree(name, name)
        self.buffers, self.vectors, self.counters = {}, {}, {}
        for spec in specs:
            if spec.shape.startswith("var") and not spec.shape.endswith("[4]"):
                counter = _counter(spec)
                if counter not in self.buffers and counter not in self.counters:
                    self.counters[counter] = np.zeros(1, np.int32)
                    self.tree.Branch(counter, self.counters[counter], f"{counter}/I")
        for spec in specs:
            code, dtype = ("I", np.int32) if spec.file_dtype == "i4" else ("D", np.float64)
            if spec.name in self.counters:  # n_prongs, mc_nFSPart: declared above, as counters
                continue
            if spec.shape == "scalar":
                self.buffers[spec.name] = np.zeros(1, dtype)
                self.tree.Branch(spec.name, self.buffers[spec.name], f"{spec.name}/{code}")
            elif spec.shape.startswith("fixed["):
                size = int(spec.shape[6:-1])
                self.buffers[spec.name] = np.zeros(size, dtype)
                self.tree.Branch(spec.name, self.buffers[spec.name], f"{spec.name}[{size}]/{code}")
            elif spec.shape.endswith("[4]"):
                self.vectors[spec.name] = ROOT.std.vector(ROOT.std.vector("double"))()
                self.tree.Branch(spec.name, self.vectors[spec.name])
            else:
                self.buffers[spec.name] = np.zeros(MAX_LEN, dtype)
                self.tree.Branch(spec.name, self.buffers[spec.name], f"{spec.name}[{_counter(spec)}]/{code}")
        self.specs = {s.name: s for s in specs}

    def fill(self, ROOT, event: dict) -> None:
        """Fill one entry; counters are set from the array lengths unless the event gives them."""
        for name, values in event.items():
            spec = self.specs.get(name)
            if name in self.counters:
                continue
            if spec is None:
                raise KeyError(name)
            if name in self.vectors:
                vector = self.vectors[name]
                vector.clear()
                for row in values:
                    inner = ROOT.std.vector("double")()
                    for x in row:
                        inner.push_back(float(x))
                    vector.push_back(inner)
            elif spec.shape.startswith("var"):
                self.buffers[name][: len(values)] = values
                self.counters[_counter(spec)][0] = len(values)
            else:
                self.buffers[name][:] = values
        for counter, buffer in self.counters.items():
            if counter in event:
                buffer[0] = event[counter]
        self.tree.Fill()


def write_root_anatuple(path: Path, events: list[dict], mc: bool = True, compression: int = ZLIB,
                        pot: tuple[float, float] | None = (1.5e17, 2.0e17), first_cycle: int = 2) -> Path:
    """Write `events` (branch → value; omitted branches are 0/empty) with real ROOT; return `path`.

    The reco tree is written after `first_cycle` entries (key cycle 1) and again at the end (cycle 2, complete).
    """
    ROOT = _root()
    specs = [b for b in ALL_BRANCHES + WEIGHT_BRANCHES if mc or not b.mc_only]
    handle = ROOT.TFile(str(path), "RECREATE", "", compression)
    tree = _Tree(ROOT, RECO_TREE, specs)
    for k, event in enumerate(events):
        tree.fill(ROOT, _complete(event, tree))
        if k + 1 == first_cycle:
            tree.tree.Write()  # an intermediate key cycle, as a long job's AutoSave leaves behind
    tree.tree.Write()
    if mc:
        truth = _Tree(ROOT, TRUTH_TREE, [b for b in ALL_BRANCHES if b.mc_only])
        for event in events:
            truth.fill(ROOT, _complete(event, truth))
        truth.tree.Write()
    if pot is not None:
        meta = ROOT.TTree(META_TREE, META_TREE)
        used, total = np.array([pot[0]]), np.array([pot[1]])
        meta.Branch("POT_Used", used, "POT_Used/D")
        meta.Branch("POT_Total", total, "POT_Total/D")
        meta.Fill()
        meta.Write()
    handle.Close()
    return path


def _complete(event: dict, tree: _Tree) -> dict:
    """The event's values plus empty ones for the branches it omits (counters only where the event sets them)."""
    return {name: event.get(name, _empty(spec)) for name, spec in tree.specs.items()
            if name in event or name not in tree.counters}


def _empty(spec):
    if spec.shape == "scalar":
        return 0
    if spec.shape.startswith("fixed["):
        return [0.0] * int(spec.shape[6:-1])
    return []
