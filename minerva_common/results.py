"""The evaluation-results contract: what `recipes/evaluate.py` writes as `eval_results.json` and what the model cards
and the Space read. One place for its version, file name and the physics conventions every reader shows.

The full layout is documented (and typed) here; recipes write it, cards and the Space only read it.
"""

from __future__ import annotations

RESULTS_SCHEMA_VERSION = 1
RESULTS_FILE = "eval_results.json"

# q3 bin edges of the paper's resolution figure (GeV, membership (lo, hi]); the last (overflow) bin is not plotted.
Q3_EDGES = (0.0, 0.6, 1.2, 1.8, 2.4, 3.0, 100.0)
LOW_Q3_MAX = 1.2  # GeV: the low-q3 region the paper highlights, q3 in (0, 1.2]

# Tagging tasks -> the 5-class topology indices counted as signal (the same table as dataset_builder.schema).
SIGNAL_CLASSES = {"cc1pi_charged": (0,), "ccnpi_charged": (0, 1), "cc1pi0": (2,)}
SIGNAL_LABELS = {"cc1pi_charged": "CC1π±", "ccnpi_charged": "CCNπ± (N≥1)", "cc1pi0": "CC1π⁰"}

__all__ = ["RESULTS_SCHEMA_VERSION", "RESULTS_FILE", "Q3_EDGES", "LOW_Q3_MAX", "SIGNAL_CLASSES", "SIGNAL_LABELS"]
