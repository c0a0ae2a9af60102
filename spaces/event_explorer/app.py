"""MINERvA event explorer (Gradio Space). Run locally: `python spaces/event_explorer/app.py`.

Settings (environment): MINERVA_EXPLORER_DATASET (Hub dataset id), MINERVA_EXPLORER_MODELS (comma-separated model
repo ids, `ns/name[@revision]`), MINERVA_EXPLORER_MAX_UPLOAD_MB, MINERVA_EXPLORER_MAX_EVENTS.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling explorer_*.py modules (not a package)

from explorer_ui import build_demo  # noqa: E402

demo = build_demo()

if __name__ == "__main__":
    demo.launch()
