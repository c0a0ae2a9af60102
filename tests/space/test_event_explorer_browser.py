"""The event explorer end to end: dataset + models on the loopback Hub, the app on 127.0.0.1, driven in headless
Debian Chromium (playwright). Also `push-space`."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from explorer_test_helpers import APP_DIR
from dataset_builder.collator import MinervaCollator

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TINY = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1)
EVENT = 5


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("MINERVA_FM_REQUIRE_BROWSER") == "1":
            pytest.fail("Debian chromium is required (MINERVA_FM_REQUIRE_BROWSER=1) but not on PATH")
        pytest.skip("Debian chromium not installed")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _push_tiny_model(tmp_path: Path, repo: str, task: str, seed: int):
    from modeling import build_model
    from model_cards.publish import push_model

    torch.manual_seed(seed)
    model = build_model("mlp", task, **TINY).eval()
    run = tmp_path / repo.split("/")[-1]
    model.save_pretrained(run)
    metrics = ({"regression": {"q3_bins": [[0, 0.6], [0.6, 1.2]], "iqr": [0.5, 0.4], "mpv": [0.9, 1.0],
                               "rms": [0.6, 0.5], "n": [10, 12]}} if task == "regression" else
               {"classification": {"cc1pi0": {"fpr_cut": 0.1, "tpr_cut": 0.3, "tpr_model": 0.4, "auroc": 0.6}}})
    (run / "eval_results.json").write_text(json.dumps({"task": task, "split": "test", "dataset": "tester/events",
                                                       "models": {"tiny": metrics}}))
    push_model(run, repo)
    return model


@pytest.mark.browser
def test_explorer_in_headless_chromium(hub, tmp_path, events_parquet, explorer):
    chromium = _chromium()
    from huggingface_hub import HfApi
    from playwright.sync_api import sync_playwright

    api = HfApi()
    dataset_repo = f"{hub.user}/explorer-events"
    api.create_repo(dataset_repo, repo_type="dataset", exist_ok=True)
    api.upload_file(path_or_fileobj=str(events_parquet), path_in_repo="data/test-00000-of-00001.parquet",
                    repo_id=dataset_repo, repo_type="dataset")
    reg_repo, cls_repo = f"{hub.user}/explorer-e-avail", f"{hub.user}/explorer-topology"
    regression = _push_tiny_model(tmp_path, reg_repo, "regression", seed=1)
    classification = _push_tiny_model(tmp_path, cls_repo, "classification", seed=2)

    table = pq.read_table(events_parquet)
    batch = MinervaCollator().collate_arrow(table.slice(EVENT, 1))
    with torch.no_grad():
        expected_e = float(regression(**batch).predictions[0])
        expected_p = torch.softmax(classification(**batch).logits, -1)[0].tolist()

    demo = explorer.ui.build_demo(dataset_id=dataset_repo, model_ids=[reg_repo, cls_repo])
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    ARTIFACTS.mkdir(exist_ok=True)
    bad = tmp_path / "not-events.parquet"
    bad.write_text("this is not parquet")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"{demo.local_url}?dataset={dataset_repo}&split=test&event={EVENT}&models={reg_repo},{cls_repo}",
                      wait_until="domcontentloaded")
            page.wait_for_function("document.querySelector('#share textarea, #share input')?.value.includes('event=')",
                                   timeout=90_000)
            share = page.locator("#share textarea, #share input").first.input_value()
            assert f"event={EVENT}" in share and "dataset=" in share
            page.wait_for_function(f"document.querySelector('#status')?.innerText.includes('event {EVENT}')",
                                   timeout=30_000)
            page.wait_for_selector("#views .js-plotly-plot", timeout=30_000)
            assert "muon" in page.inner_text("#objects")
            page.screenshot(path=str(ARTIFACTS / "event_explorer_event.png"), full_page=True)
            page.click("#apply-filters")  # default ranges keep every event
            page.wait_for_function("document.querySelector('#status')?.innerText.includes('60 pass the filters')",
                                   timeout=30_000)

            page.get_by_role("tab", name="Predictions").click()
            page.click("#predict")
            page.wait_for_function("document.querySelector('#prediction-text textarea')?.value.split('\\n').length >= 2",
                                   timeout=120_000)
            text = page.locator("#prediction-text textarea").input_value()
            shown_e = float(re.search(rf"{re.escape(reg_repo)}: E_avail = ([0-9.]+) GeV", text).group(1))
            assert shown_e == pytest.approx(expected_e, abs=5e-5)
            assert f"truth {table['e_avail'][EVENT].as_py():.4f} GeV" in text
            probs = re.search(rf"{re.escape(cls_repo)}: P = \[([^\]]+)\]", text).group(1)
            shown_p = [float(part.split()[-1]) for part in probs.split(",")]
            assert shown_p == pytest.approx(expected_p, abs=5e-5)
            page.screenshot(path=str(ARTIFACTS / "event_explorer_predictions.png"), full_page=True)

            page.get_by_role("tab", name="Model summary").click()
            page.click("#show-summary")
            page.wait_for_function("document.querySelector('#summary-md')?.innerText.includes('IQR')", timeout=60_000)

            page.get_by_role("tab", name="Event").click()
            page.set_input_files("#upload input[type=file]", str(bad))
            page.wait_for_function("document.querySelector('#status')?.innerText.includes('not a readable Parquet')",
                                   timeout=60_000)
            body = page.inner_text("body")
            assert "Traceback" not in body and "not-events.parquet" in page.inner_text("#status")
            page.screenshot(path=str(ARTIFACTS / "event_explorer_bad_upload.png"), full_page=True)
            browser.close()
    finally:
        demo.close()


def test_push_space_uploads_the_app(hub, tmp_path, capsys):
    from huggingface_hub import HfApi, SpaceCard

    from recipes.cli import main

    repo = f"{hub.user}/event-explorer"
    assert main(["push-space", repo, "--app-dir", str(APP_DIR)]) == 0
    assert repo in capsys.readouterr().out
    files = set(HfApi().list_repo_files(repo, repo_type="space"))
    expected = {p.relative_to(APP_DIR).as_posix() for p in APP_DIR.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert expected <= files and {"app.py", "requirements.txt", "README.md"} <= files
    assert not any(f.endswith(".pyc") for f in files)
    card = SpaceCard.load(HfApi().hf_hub_download(repo, "README.md", repo_type="space"))
    assert card.data.sdk == "gradio" and card.data.sdk_version == "6.31.0" and card.data.app_file == "app.py"
    assert main(["push-space", repo, "--app-dir", str(tmp_path)]) == 1  # not a Space folder
    assert "missing" in capsys.readouterr().err
