"""Fixtures of the pretraining tests: one small Pythia jet corpus per session (generated once, a few seconds) and a
tiny converted MINERvA dataset (the recipes tests' writer)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))  # recipes_test_helpers (write_dataset)

CORPUS_JETS = 120  # 12 per class, 1 worker: ~10 s of Pythia on one core


@pytest.fixture(scope="session")
def jet_corpus(tmp_path_factory) -> Path:
    """A generated corpus (all 10 classes, seed 11) in the JetClass-II layout with its dataset card."""
    from dataset_builder.jets import generate_jets

    out = tmp_path_factory.mktemp("jets") / "corpus"
    generate_jets(out, CORPUS_JETS, seed=11, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def minerva_dataset(tmp_path_factory) -> Path:
    """A tiny converted MINERvA dataset (train/validation/test/shifted)."""
    from recipes_test_helpers import write_dataset

    return write_dataset(tmp_path_factory.mktemp("minerva"), {"train": 192, "validation": 64, "test": 64,
                                                              "shifted": 64})
