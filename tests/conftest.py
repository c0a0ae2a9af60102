"""Suite-wide setup: every HF client talks to a loopback Hub (tests/hub/hub_server.py), never to the internet.

At import time (before any test module can import huggingface_hub / datasets / transformers / gradio, whose
constants are read at import) this pre-binds 127.0.0.1:0 and sets:

    HF_ENDPOINT=http://127.0.0.1:PORT   HF_TOKEN=<hub token>   HF_HOME=<fresh temp dir>
    HF_HUB_DISABLE_XET=1  HF_HUB_DISABLE_TELEMETRY=1  HF_HUB_DISABLE_UPDATE_CHECK=1
    HF_HUB_DISABLE_PROGRESS_BARS=1  GRADIO_ANALYTICS_ENABLED=False

Fixture `hub` (session): starts the server on that port on first use and yields the `HubServer`
(`.endpoint`, `.token`, `.user`, `.requests`, `.repo(repo_id, repo_type)`). Use unique repo names per test
(e.g. `f"{hub.user}/{request.node.name}"`-like) because the store lives for the whole session.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "hub"))
sys.path.insert(0, str(Path(__file__).parent.parent))  # the project root, for `import dataset_builder` etc.

from hub_server import HubServer  # noqa: E402  (no HF import inside)

HUB_TOKEN = "hf_loopback_test_token"
_HUB = HubServer(token=HUB_TOKEN)  # socket bound now, served once the fixture is first requested
_HF_HOME = tempfile.mkdtemp(prefix="minerva-fm-hf-home-")
os.environ.update({
    "HF_ENDPOINT": _HUB.endpoint,
    "HF_TOKEN": HUB_TOKEN,
    "HF_HOME": _HF_HOME,
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
})
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_DATASETS_CACHE",
             "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def hub() -> HubServer:
    """The running loopback Hub (started on first use, stopped at the end of the session)."""
    if _HUB._server is None:
        _HUB.start()
    yield _HUB


def pytest_unconfigure(config) -> None:
    """Stop the server and remove the temporary HF_HOME."""
    if _HUB._server is not None:
        _HUB.stop()
    shutil.rmtree(_HF_HOME, ignore_errors=True)
