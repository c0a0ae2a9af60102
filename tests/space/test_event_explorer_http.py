"""The explorer through its HTTP interface (gradio_client and raw requests against one launched app on 127.0.0.1,
models and data on the loopback Hub): the model allow-list, server-side upload limits and ⚠️ messages for bad input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from explorer_test_helpers import (dataset_repo_with, make_events_table, push_malicious_repo, push_tiny_model,
                                   write_broken_parquet, write_expanding_parquet)
from dataset_builder.collator import MinervaCollator


@pytest.fixture(scope="module")
def served(hub, explorer, events_parquet, tmp_path_factory):
    """One launched app: owner models (tiny MLP regression + classification), a malicious repo on the same Hub."""
    from gradio_client import Client

    root = tmp_path_factory.mktemp("http")
    dataset = dataset_repo_with(events_parquet, f"{hub.user}/http-events")
    reg, cls = f"{hub.user}/http-e-avail", f"{hub.user}/http-topology"
    regression = push_tiny_model(root / "reg", reg, "regression", seed=1)
    push_tiny_model(root / "cls", cls, "classification", seed=2)
    marker = root / "remote-code-ran.txt"
    evil = f"{hub.user}/http-evil"
    push_malicious_repo(root / "evil", evil, marker)
    demo = explorer.ui.build_demo(dataset_id=dataset, model_ids=[reg, cls])
    demo.launch(server_name="127.0.0.1", server_port=_closed_port(), prevent_thread_lock=True, share=False, quiet=True,
                **explorer.ui.launch_options())
    try:
        yield type("Served", (), dict(demo=demo, url=demo.local_url, client=lambda: Client(demo.local_url,
                                                                                           verbose=False),
                                      dataset=dataset, reg=reg, cls=cls, evil=evil, marker=marker,
                                      regression=regression, root=root))
    finally:
        demo.close()


def _status(outputs) -> str:
    return outputs[-1]


def test_visitor_model_ids_never_run_code_or_read_files(served, events_parquet, tmp_path):
    client = served.client()
    loaded = client.predict(served.dataset, "test", 20, [served.reg], api_name="/load_split")
    assert "Loaded the first **20** events (truncated at 'max events'; the split may hold more)" in _status(loaded)
    text, _, status = client.predict([served.evil], 0, api_name="/predict")
    assert status.startswith("⚠️") and "not on this Space's allow-list" in status and text == ""
    summary, plots = client.predict(served.evil, api_name="/summary")
    assert summary.startswith("⚠️") and "allow-list" in summary and not plots
    local = tmp_path / "local-model"  # a folder with a config.json and a plot: neither loaded nor served
    local.mkdir()
    (local / "config.json").write_text("{}")
    (local / "eval_results.json").write_text('{"schema_version": 1, "models": {"x": {}}, "plots": ["secret.png"]}')
    for model_id in (str(local), "../" + served.reg, "file:///etc/passwd"):
        _, _, status = client.predict([model_id], 0, api_name="/predict")
        assert status.startswith("⚠️") and "must be a Hub repo id" in status, status
        summary, plots = client.predict(model_id, api_name="/summary")
        assert summary.startswith("⚠️") and not plots
    assert not served.marker.exists()

    text, table, status = client.predict([served.reg], 3, api_name="/predict")  # the owner's model does load
    batch = MinervaCollator().collate_arrow(pq.read_table(events_parquet).slice(3, 1))
    with torch.no_grad():
        expected = float(served.regression(**batch).predictions[0])
    assert f"E_avail = {expected:.4f} GeV" in text and status == "Predicted event 3 with 1 model(s)."
    assert not served.marker.exists()

    # control: the malicious repo really runs code when loaded with trust_remote_code
    code = ("from transformers.dynamic_module_utils import get_class_from_dynamic_module\n"
            f"get_class_from_dynamic_module('modeling_evil.EvilModel', {served.evil!r})\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-control")}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=120)
    assert served.marker.exists()
    served.marker.unlink()


def test_adapter_base_must_be_allow_listed(served, hub, explorer, tmp_path):
    from huggingface_hub import HfApi

    adapter = f"{hub.user}/http-adapter"
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(f'{{"base_model_name_or_path": "{served.evil}", "peft_type": "LORA"}}')
    HfApi().create_repo(adapter, exist_ok=True)
    HfApi().upload_folder(folder_path=str(folder), repo_id=adapter)
    explorer.models.allow_models([adapter])  # the owner allows the adapter, not the base it names
    client = served.client()
    client.predict(served.dataset, "test", 5, [served.reg], api_name="/load_split")
    _, _, status = client.predict([adapter], 0, api_name="/predict")
    assert status.startswith("⚠️") and "the adapter's base model cannot be loaded" in status and "allow-list" in status
    assert not served.marker.exists()


def test_upload_over_the_request_limit_is_refused_before_it_is_stored(served, explorer, tmp_path):
    import httpx

    big = tmp_path / "big.parquet"
    with big.open("wb") as handle:  # 120 MB (sparse on disk)
        handle.truncate(120 * 2**20)
    upload_dir = Path(served.demo.server_app.uploaded_file_dir if hasattr(served.demo, "server_app") else
                      os.environ.get("GRADIO_TEMP_DIR", "/tmp/gradio"))
    before = {p for p in upload_dir.rglob("*") if p.is_file()}
    with big.open("rb") as handle:
        response = httpx.post(f"{served.url}gradio_api/upload", files={"files": ("big.parquet", handle)},
                              timeout=120)
    assert response.status_code == 413, response.text
    assert "maximum allowed size" in response.text
    new = [p for p in upload_dir.rglob("*") if p.is_file() and p not in before]
    assert not [p for p in new if p.stat().st_size > 2**20], new  # nothing of it stays on the server


def test_bad_uploads_are_one_line_warnings_over_http(served, explorer, events_parquet, tmp_path, monkeypatch):
    from gradio_client import handle_file

    client = served.client()
    table = pq.read_table(events_parquet)
    cases = {"string_n_objects": "column 'n_objects' has type string", "null_features": "has null values",
             "corrupt_page": "Parquet data could not be decoded"}
    for kind, message in cases.items():
        path = tmp_path / f"{kind}.parquet"
        write_broken_parquet(table, path, kind)
        outputs = client.predict(handle_file(str(path)), 100, [served.reg], api_name="/load_upload")
        assert _status(outputs).startswith("⚠️") and message in _status(outputs) and path.name in _status(outputs)
    bomb = tmp_path / "bomb.parquet"
    write_expanding_parquet(bomb, 1_000_000)
    monkeypatch.setattr(explorer.data, "MAX_DECODED_MB", 20)  # in-process server: 36 MB decoded is over the limit
    outputs = client.predict(handle_file(str(bomb)), 100, [served.reg], api_name="/load_upload")
    assert _status(outputs).startswith("⚠️") and "over the 20 MB limit" in _status(outputs)


def test_model_errors_are_one_line_warnings_over_http(served, tmp_path):
    from gradio_client import handle_file

    client = served.client()
    table = make_events_table(4)
    features = table["event_features"].to_pylist()
    features[1][0] = float("nan")
    pids = table["object_pid"].to_pylist()
    pids[2][-1] = 99
    for name, column in (("event_features", features), ("object_pid", pids)):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pa.array(column, table.schema.field(name).type))
    path = tmp_path / "odd-values.parquet"
    pq.write_table(table, path)
    outputs = client.predict(handle_file(str(path)), 100, [served.reg], api_name="/load_upload")
    assert "Loaded all **4** events" in _status(outputs) and "Showing event 0" in _status(outputs)
    _, _, status = client.predict([served.reg], 1, api_name="/predict")
    assert status.startswith("⚠️") and f"{served.reg} cannot predict event 1" in status
    assert "NaN" in status and "\n" not in status
    _, _, status = client.predict([served.reg, served.cls], 2, api_name="/predict")
    assert status.startswith("⚠️ event 2: object_pid 99 is not an object type of the schema")
    outputs = client.predict(2, [served.reg], api_name="/show_event")  # the event itself still displays
    assert "pid 99" in str(outputs[2]) and _status(outputs).startswith("Showing event 2")


def test_unreachable_hub_fails_fast_with_the_reason(served, explorer, monkeypatch):
    import huggingface_hub.constants

    client = served.client()
    client.predict(served.dataset, "test", 5, [served.reg], api_name="/load_split")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    _, _, status = client.predict([explorer.models.PUBLISHED_MODELS[0]], 0, api_name="/predict")
    elapsed = time.monotonic() - start
    assert status.startswith("⚠️ could not reach the Hub") and "ConnectError" in status, status
    assert elapsed < 10, elapsed  # huggingface_hub's own retries take ~23 s
    start = time.monotonic()
    outputs = client.predict(served.dataset, "test", 5, [served.reg], api_name="/load_split")
    elapsed = time.monotonic() - start
    assert _status(outputs).startswith("⚠️ could not reach the Hub") and "ConnectError" in _status(outputs)
    assert elapsed < 10, elapsed


def _closed_port() -> int:
    """A free local port (nothing listens on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_share_link_and_truncation_message(served):
    client = served.client()
    outputs = client.predict(served.dataset, "test", 1000, [served.reg, served.cls], api_name="/load_split")
    assert "Loaded all **60** events" in _status(outputs)
    share = outputs[6]  # (index, views, scene, objects, features, truth, share, status): the State is not sent
    assert f"dataset={served.dataset}" in share and "event=0" in share and f"models={served.reg},{served.cls}" in share
    outputs = client.predict(7, [served.cls], api_name="/show_event")
    assert outputs[5].endswith(f"event=7&models={served.cls}")
