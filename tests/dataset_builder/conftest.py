"""Fixtures for the `datasets`/collator/card/push tests (helpers in fake_data.py, importable as `fake_data`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_data import write_fake_dataset  # noqa: E402


@pytest.fixture(scope="session")
def fake_dataset_dir(tmp_path_factory) -> Path:
    """A shared read-only converted-dataset folder (400 events over 4 splits, 2 shards each)."""
    return write_fake_dataset(tmp_path_factory.mktemp("fake_dataset"))
