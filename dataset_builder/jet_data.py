"""One loader for jets in the JetClass layouts: our generated corpus and the real JetClass-II Parquet (local folder or
Hub dataset repo, streamed with `datasets`) and real JetClass-I ROOT files (tree `tree`, `part_*` / `label_*`
branches, read with uproot in chunks).

    split = load_jet_split("runs/jets", "train")                 # our corpus (or a JetClass-II folder / Hub repo id)
    split = load_jet_split("JetClass/val_5M", "validation")      # JetClass-I ROOT files
    for table in split.with_format("arrow").iter(batch_size=256): batch = JetCollator().collate_arrow(table)

Every source yields the columns of `JET_COLLATOR_COLUMNS` (plus whatever else the files hold); JetClass-I's one-hot
`label_*` branches become `jet_label` in JetClass-I label order (`dataset_builder.jets.JET_CLASSES`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from dataset_builder.jets import JET_CLASSES

PART_INPUT_COLUMNS = ("part_px", "part_py", "part_energy", "part_deta", "part_dphi", "part_d0val", "part_d0err",
                      "part_dzval", "part_dzerr", "part_charge", "part_isElectron", "part_isMuon", "part_isPhoton",
                      "part_isChargedHadron", "part_isNeutralHadron")
JET_SCALAR_COLUMNS = ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles")
JET_COLLATOR_COLUMNS = (*PART_INPUT_COLUMNS, "jet_label")
JETCLASS1_LABEL_BRANCHES = tuple(f"label_{name}" for name in JET_CLASSES)
ROOT_TREE = "tree"
SPLIT_ALIASES = {"train": ("train",), "validation": ("val",), "test": ("test",)}


def _split_files(root: Path, split: str, suffix: str) -> list[Path]:
    files = sorted(root.rglob(f"*{suffix}"))
    aliases = SPLIT_ALIASES.get(split, (split,))
    chosen = [f for f in files if any(a in f.relative_to(root).as_posix().lower() for a in aliases)]
    return chosen or ([] if suffix == ".parquet" else files)


def root_files(path: str | os.PathLike, split: str) -> list[Path]:
    """JetClass-I ROOT files of `split` (a file, or a folder searched for names containing the split)."""
    path = Path(path)
    return [path] if path.is_file() else _split_files(path, split, ".root")


def is_root_source(path: str) -> bool:
    """A .root file or a folder holding .root files (and no Parquet)."""
    p = Path(path)
    if p.is_file():
        return p.suffix == ".root"
    return p.is_dir() and any(p.rglob("*.root")) and not any(p.rglob("*.parquet"))


def load_jet_split(path: str, split: str = "train", revision: str | None = None, streaming: bool = True):
    """The `split` of a jet source as a (streaming) `datasets` dataset with `JET_COLLATOR_COLUMNS`."""
    from datasets import load_dataset

    root = Path(path)
    if is_root_source(path):
        return load_root_split(path, split)
    if root.is_dir():
        card = root / "README.md"
        if card.is_file() and "configs:" in card.read_text(errors="replace"):
            return load_dataset(str(root), split=split, streaming=streaming)
        files = _split_files(root, split, ".parquet")
        if not files:
            raise FileNotFoundError(f"no Parquet files for split {split!r} under {root}")
        return load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split, streaming=streaming)
    if root.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
        raise FileNotFoundError(f"jet source {path!r} is neither a folder, a .root file nor a Hub dataset repo id")
    return load_dataset(str(path), split=split, revision=revision, streaming=streaming)


def load_root_split(path: str, split: str = "train"):
    """JetClass-I ROOT files as an `IterableDataset` (sharded by file, so `split_dataset_by_node` splits files)."""
    from datasets import Features, IterableDataset, List, Value

    files = root_files(path, split)
    if not files:
        raise FileNotFoundError(f"no .root files for split {split!r} under {path}")
    features = Features({**{c: List(Value("float32")) for c in PART_INPUT_COLUMNS},
                         **{c: Value("float32") for c in JET_SCALAR_COLUMNS[:-1]},
                         "jet_nparticles": Value("int32"), "jet_label": Value("int32")})
    return IterableDataset.from_generator(_root_rows, gen_kwargs={"files": [str(f) for f in files]},
                                          features=features)


def read_root_chunks(files: list[str], step_size: int = 10_000):
    """Arrow tables of the collator's columns from JetClass-I ROOT files, `step_size` jets at a time."""
    import awkward as ak
    import pyarrow as pa
    import uproot

    branches = [*PART_INPUT_COLUMNS, *JET_SCALAR_COLUMNS, *JETCLASS1_LABEL_BRANCHES]
    for name in files:
        with uproot.open(name) as handle:
            if ROOT_TREE not in handle:
                raise KeyError(f"{name}: no TTree {ROOT_TREE!r} (keys: {handle.keys()[:10]})")
            tree = handle[ROOT_TREE]
            missing = [b for b in branches if b not in tree]
            if missing:
                raise KeyError(f"{name}: tree {ROOT_TREE!r} lacks branches {missing}")
            for chunk in tree.iterate(branches, step_size=step_size, library="ak"):
                onehot = np.stack([ak.to_numpy(chunk[b]) for b in JETCLASS1_LABEL_BRANCHES], axis=1)
                bad = np.flatnonzero(onehot.sum(axis=1) != 1)
                if len(bad):
                    raise ValueError(f"{name}: entry {int(bad[0])} has {onehot[bad[0]].sum()} label_* branches set "
                                     f"(expected exactly one)")
                columns = {c: pa.array(ak.to_list(ak.values_astype(chunk[c], np.float32)),
                                       pa.list_(pa.float32())) for c in PART_INPUT_COLUMNS}
                columns.update({c: pa.array(ak.to_numpy(chunk[c]).astype(np.float32)) for c in JET_SCALAR_COLUMNS[:-1]})
                columns["jet_nparticles"] = pa.array(ak.to_numpy(chunk["jet_nparticles"]).astype(np.int32))
                columns["jet_label"] = pa.array(onehot.argmax(axis=1).astype(np.int32))
                yield pa.table(columns)


def _root_rows(files: list[str]):
    for table in read_root_chunks(files):
        yield from table.to_pylist()


__all__ = ["load_jet_split", "load_root_split", "read_root_chunks", "root_files", "JET_COLLATOR_COLUMNS",
           "PART_INPUT_COLUMNS", "JETCLASS1_LABEL_BRANCHES"]
