"""MINERvA event explorer (Gradio Space). Run locally: `python spaces/event_explorer/app.py`.

Settings (environment): MINERVA_EXPLORER_DATASET (Hub dataset id), MINERVA_EXPLORER_MODELS (comma-separated model
repo ids, `ns/name[@revision]`), MINERVA_EXPLORER_MAX_UPLOAD_MB, MINERVA_EXPLORER_MAX_EVENTS,
MINERVA_EXPLORER_MAX_DECODED_MB, MINERVA_EXPLORER_TRANSFER_STUDY (a transfer-study JSON shown in the summary tab).
Only the project's published models and those of MINERVA_EXPLORER_MODELS load
(their code runs in this process).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling explorer_*.py modules (not a package); minerva_common/ on the Space
CHECKOUT = HERE.parents[1] if len(HERE.parents) > 1 else HERE
if not (HERE / "minerva_common").is_dir() and (CHECKOUT / "minerva_common" / "results.py").is_file():
    sys.path.append(str(CHECKOUT))  # run from a checkout: the project's shared contracts (minerva_common)

from explorer_ui import build_demo, launch_options  # noqa: E402

demo = build_demo()

if __name__ == "__main__":
    demo.launch(**launch_options())  # server-side upload limit: a bigger request is refused before it is stored
