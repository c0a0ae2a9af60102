"""Fixtures of the Space tests: a small converted-events Parquet file (schema.PARQUET_SCHEMA) and the app modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from explorer_test_helpers import APP_DIR, make_events_table


@pytest.fixture(scope="session")
def events_parquet(tmp_path_factory) -> Path:
    """A 60-event Parquet file of the converted-dataset schema."""
    path = tmp_path_factory.mktemp("events") / "events.parquet"
    pq.write_table(make_events_table(), path, row_group_size=25)
    return path


@pytest.fixture(scope="session")
def app_module():
    """spaces/event_explorer/app.py imported by path (it is not a package)."""
    spec = importlib.util.spec_from_file_location("event_explorer_app", APP_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def explorer(app_module):
    """The explorer's sibling modules (importable once app.py put its folder on sys.path)."""
    import explorer_data
    import explorer_display
    import explorer_models
    import explorer_schema
    import explorer_study
    import explorer_ui

    return type("Explorer", (), {"data": explorer_data, "display": explorer_display, "models": explorer_models,
                                 "schema": explorer_schema, "study": explorer_study,
                                 "ui": explorer_ui, "app": app_module})
