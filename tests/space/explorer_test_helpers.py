"""Shared constants of the Space tests (a uniquely named module: every test folder has its own conftest)."""

from __future__ import annotations

from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[2] / "spaces" / "event_explorer"
