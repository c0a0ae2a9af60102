"""Fixtures of the recipes tests (the helpers live in `recipes_test_helpers.py`, a uniquely named module, so they
never collide with another folder's `conftest`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from recipes_test_helpers import write_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """256 train / 128 validation / 128 test events, one shard per split."""
    return write_dataset(tmp_path_factory.mktemp("tiny_dataset"),
                         {"train": 256, "validation": 128, "test": 128, "shifted": 64})
