"""Run Python in a fresh interpreter where this project cannot be imported, as on a user's machine that only has
the Hub: `python -I` (no PYTHONPATH, no cwd on sys.path) plus a prelude that removes an editable install's import
hooks, so `importlib.util.find_spec("modeling")` is genuinely None there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT_PACKAGES = ("modeling", "dataset_builder", "recipes", "model_cards")
REPO_ROOT = Path(__file__).resolve().parents[1]

ISOLATION_PRELUDE = f"""
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", type(f).__module__)]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path[:] = [p for p in sys.path if "__editable__" not in p and p.rstrip("/") != {str(REPO_ROOT)!r}]
sys.path_importer_cache.clear()
import importlib.util
for _name in {PROJECT_PACKAGES!r}:
    assert importlib.util.find_spec(_name) is None, _name + " is importable in the isolated process"
"""


def isolated_code(script: str) -> str:
    """`script` preceded by the prelude that makes the project unimportable (and checks that it is)."""
    return ISOLATION_PRELUDE + textwrap.dedent(script)


def run_isolated(script: str, cwd: Path, env: dict | None = None, timeout: int = 240,
                 args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run `script` with `args` in a fresh `python -I` process in `cwd` without the project; assert it succeeds."""
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    clean_env.update({"HF_HOME": str(Path(cwd) / "hf_home"), "OMP_NUM_THREADS": "1", **(env or {})})
    result = subprocess.run([sys.executable, "-I", "-c", isolated_code(script), *args], cwd=cwd, env=clean_env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"isolated process failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr[-4000:]}"
    return result
