"""The paper's metrics as Hugging Face `evaluate` modules: one self-contained file per metric (it runs from a Space
without this package) that recipes/metrics.py imports its implementation from.

    evaluate.load("recipes/evaluate_metrics/eavail_resolution")        # or a Space repo "user/eavail_resolution"
    evaluate.load("recipes/evaluate_metrics/tpr_at_baseline_fpr")
"""

import importlib
import sys
from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("eavail_resolution", "tpr_at_baseline_fpr")


def _import_hf_evaluate():
    """Import the `evaluate` library even when recipes/ is on sys.path (`python recipes/finetune.py` puts it first,
    where recipes/evaluate.py would shadow the library for the module files' `import evaluate`)."""
    loaded = sys.modules.get("evaluate")
    if loaded is not None and hasattr(loaded, "Metric"):
        return loaded
    sys.modules.pop("evaluate", None)
    recipes_dir = METRICS_DIR.parent
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != recipes_dir]
    try:
        return importlib.import_module("evaluate")
    finally:
        sys.path[:] = saved


_import_hf_evaluate()


def push_to_hub(namespace: str, names: tuple[str, ...] = METRIC_NAMES, private: bool = False) -> list[str]:
    """Publish each metric module (its .py and metric card) as a Space `<namespace>/<name>`, the layout
    `evaluate.load("<namespace>/<name>")` downloads from; returns the repo ids. The Spaces are static (no widget)."""
    from huggingface_hub import HfApi

    api = HfApi()
    repos = []
    for name in names:
        repo_id = f"{namespace}/{name}"
        api.create_repo(repo_id, repo_type="space", space_sdk="static", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(METRICS_DIR / name), repo_id=repo_id, repo_type="space",
                          allow_patterns=[f"{name}.py", "README.md"], commit_message=f"Upload the {name} metric")
        repos.append(repo_id)
    return repos
