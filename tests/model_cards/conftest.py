"""Fixtures of the card/publish tests (helpers in card_run_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from card_run_helpers import make_run_dir


@pytest.fixture
def regression_run(tmp_path) -> Path:
    return make_run_dir(tmp_path / "run-regression", "regression")


@pytest.fixture
def classification_run(tmp_path) -> Path:
    return make_run_dir(tmp_path / "run-classification", "classification")
