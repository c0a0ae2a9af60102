"""The event explorer as a person sees it: dataset + models on the loopback Hub, one app on 127.0.0.1, driven in
headless Debian Chromium (playwright) at common laptop sizes. Screenshots go to test-artifacts/ (look at them); the
assertions check what a screenshot shows (nothing cropped, nothing off-screen). Also `push-space`."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from explorer_test_helpers import (APP_DIR, dataset_repo_with, push_malicious_repo, push_tiny_model,
                                   write_transfer_study)
from dataset_builder.collator import MinervaCollator

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
LAPTOPS = {"1366x768": {"width": 1366, "height": 768}, "1440x900": {"width": 1440, "height": 900}}
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


@pytest.fixture(scope="module")
def app(hub, explorer, events_parquet, tmp_path_factory):
    """One launched explorer (owner models: tiny MLP regression + classification) and one headless browser."""
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("browser")
    dataset = dataset_repo_with(events_parquet, f"{hub.user}/explorer-events")
    reg, cls = f"{hub.user}/explorer-e-avail", f"{hub.user}/explorer-topology"
    models = {"regression": push_tiny_model(root / "reg", reg, "regression", seed=1, events=events_parquet),
              "classification": push_tiny_model(root / "cls", cls, "classification", seed=2, events=events_parquet)}
    results = {task: json.loads((root / name / "eval_results.json").read_text())
               for task, name in (("regression", "reg"), ("classification", "cls"))}
    evil, marker = f"{hub.user}/explorer-evil", root / "remote-code-ran.txt"
    push_malicious_repo(root / "evil", evil, marker)
    study = write_transfer_study(root / "transfer_study.json")
    demo = explorer.ui.build_demo(dataset_id=dataset, model_ids=[reg, cls], transfer_study=root / "transfer_study.json")
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, share=False, quiet=True,
                **explorer.ui.launch_options())
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            yield type("App", (), dict(url=demo.local_url, browser=browser, dataset=dataset, reg=reg, cls=cls,
                                       evil=evil, marker=marker, models=models, results=results,
                                       study=study))
            browser.close()
    finally:
        demo.close()


def _wait_status(page, text: str, timeout: int = 60_000) -> None:
    page.wait_for_function("t => document.querySelector('#status')?.innerText.includes(t)", arg=text,
                           timeout=timeout)


def _box(page, selector: str) -> dict:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not rendered"
    return box


def _assert_inside(inner: dict, outer: dict, what: str, tolerance: float = 1.5) -> None:
    assert inner["x"] >= outer["x"] - tolerance and inner["y"] >= outer["y"] - tolerance, (what, inner, outer)
    assert inner["x"] + inner["width"] <= outer["x"] + outer["width"] + tolerance, (what, inner, outer)
    assert inner["y"] + inner["height"] <= outer["y"] + outer["height"] + tolerance, (what, inner, outer)


def _assert_blank_edges(page, selector: str, what: str, inset: int = 0, rows: int = 3) -> None:
    """No ink in the `rows` pixel rows/columns just inside the bottom/left/right edges of an element's screenshot,
    `inset` px in from the bottom: a label drawn there is cut off (plotly clips a 3D scene at its domain)."""
    pixels = np.asarray(Image.open(io.BytesIO(page.locator(selector).first.screenshot())).convert("L"))
    height = pixels.shape[0]
    edges = {"bottom": pixels[height - inset - rows:height - inset, :], "left": pixels[:, :rows],
             "right": pixels[:, -rows:]}
    inked = {side: int((edge < 200).sum()) for side, edge in edges.items()}
    assert all(v <= 2 for v in inked.values()), f"{what}: drawn up to the edge (dark pixels {inked})"


def _no_horizontal_overflow(page, selector: str) -> None:
    """No element of `selector` is wider than the box that shows it (nothing hidden behind a scrollbar)."""
    overflow = page.evaluate("""sel => [...document.querySelectorAll(sel + ' *')]
        .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
        .map(e => [e.tagName, e.className, e.scrollWidth, e.clientWidth])""", selector)
    assert not overflow, f"{selector} scrolls horizontally: {overflow}"


def _assert_within_viewport_width(page, selector: str, viewport: dict) -> None:
    box = _box(page, selector)
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 1, (selector, box, viewport)


@pytest.mark.browser
@pytest.mark.parametrize("size", list(LAPTOPS))
def test_share_link_event_and_predictions_read_well(app, events_parquet, size):
    viewport = LAPTOPS[size]
    page = app.browser.new_page(viewport=viewport)
    page.goto(f"{app.url}?dataset={app.dataset}&split=test&event={EVENT}&models={app.reg},{app.cls},{app.evil}",
              wait_until="domcontentloaded")
    _wait_status(page, f"Showing event {EVENT}")
    status = page.inner_text("#status")
    assert "Loaded all 60 events" in status and f"Not loaded (not on this Space's allow-list): '{app.evil}'" in status
    assert not app.marker.exists()
    share = page.locator("#share textarea, #share input").first.input_value()
    assert f"event={EVENT}" in share and f"dataset={app.dataset}" in share and f"models={app.reg},{app.cls}" in share
    page.wait_for_selector("#views .js-plotly-plot .main-svg", timeout=30_000)
    page.wait_for_selector("#scene .js-plotly-plot .main-svg", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / f"event_explorer_event_{size}.png"), full_page=True)
    assert "muon" in page.inner_text("#objects")
    for plot in ("#views", "#scene"):  # the plotly figure fits its container: nothing clipped at the bottom/right
        _assert_inside(_box(page, f"{plot} .js-plotly-plot"), _box(page, plot), plot)
        _assert_within_viewport_width(page, plot, viewport)
    legend = page.locator("#views .legendtext").all_text_contents()
    assert "muon" in legend and "blob (calorimetric cluster)" in legend, legend
    # nothing drawn up to the figure's bottom/left/right edge (= cut off there); the 3D scene clips its tick labels at
    # the bottom of its domain, the 10 px margin above the figure's edge
    for plot, inset in (("#views", 0), ("#scene", 10)):
        _assert_blank_edges(page, f"{plot} .js-plotly-plot", plot, inset)
    assert "prong_part_pid hypothesis codes 3, 8 and 13" in page.inner_text("#pid-note")
    page.screenshot(path=str(ARTIFACTS / f"event_explorer_event_{size}.png"), full_page=True)

    page.get_by_role("tab", name="Predictions").click()
    page.click("#predict")
    page.wait_for_function("document.querySelector('#prediction-text textarea')?.value.split('\\n').length >= 2",
                           timeout=120_000)
    text = page.locator("#prediction-text textarea").input_value()
    table = pq.read_table(events_parquet)
    batch = MinervaCollator().collate_arrow(table.slice(EVENT, 1))
    with torch.no_grad():
        expected_e = float(app.models["regression"](**batch).predictions[0])
        expected_p = torch.softmax(app.models["classification"](**batch).logits, -1)[0].tolist()
    shown_e = float(re.search(rf"{re.escape(app.reg)}: E_avail = ([0-9.]+) GeV", text).group(1))
    assert shown_e == pytest.approx(expected_e, abs=5e-5)
    assert f"truth {table['e_avail'][EVENT].as_py():.4f} GeV" in text
    probs = re.search(rf"{re.escape(app.cls)}: P = \[([^\]]+)\]", text).group(1)
    assert [float(part.split()[-1]) for part in probs.split(",")] == pytest.approx(expected_p, abs=5e-5)
    score = expected_p[2]  # CC1π⁰ score = P(CC1pi0)
    cls_results = app.results["classification"]
    threshold = cls_results["models"][cls_results["primary_model"]]["classification"]["cc1pi0"]["threshold"]
    decision = "TAGGED" if score >= threshold else "not tagged"
    assert f"CC1π⁰: score {score:.4f} → {decision} at threshold {threshold:.4f}" in text
    headers = page.locator("#prediction-table th").all_inner_texts()
    assert {"model", "quantity", "model value", "truth", "baseline", "model decision"} <= {h.strip() for h in headers}
    assert "P(CC_other)" in page.inner_text("#prediction-table") and "P(NC)" in page.inner_text("#prediction-table")
    container = _box(page, "#prediction-table")
    _assert_within_viewport_width(page, "#prediction-table", viewport)
    for cell in page.locator("#prediction-table th").all():  # every column visible, none cut on the right
        _assert_inside(cell.bounding_box(), {**container, "height": 10_000, "y": container["y"] - 1}, "header")
    _no_horizontal_overflow(page, "#prediction-table")
    page.screenshot(path=str(ARTIFACTS / f"event_explorer_predictions_{size}.png"), full_page=True)

    page.get_by_role("tab", name="Model summary").click()  # no click on "Show evaluation": the tab shows it
    page.wait_for_function("document.querySelector('#summary-md')?.innerText.includes('IQR')", timeout=60_000)
    page.wait_for_selector("#summary-plots img", timeout=30_000)
    page.wait_for_function("[...document.querySelectorAll('#summary-plots img')].every(i => i.complete && "
                           "i.naturalWidth > 0)", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / f"event_explorer_summary_{size}.png"), full_page=True)
    gallery = _box(page, "#summary-plots")
    for image in page.locator("#summary-plots img").all():  # the whole plot is drawn: tick and axis labels kept
        drawn = image.evaluate("""i => { const r = i.getBoundingClientRect(), fit = getComputedStyle(i).objectFit;
            const sx = r.width / i.naturalWidth, sy = r.height / i.naturalHeight;
            const scale = fit === 'cover' ? Math.max(sx, sy) : fit === 'none' ? 1 : Math.min(sx, sy);
            return {fit, shownW: i.naturalWidth * scale, shownH: i.naturalHeight * scale, boxW: r.width,
                    boxH: r.height}; }""")
        assert drawn["shownW"] <= drawn["boxW"] + 1 and drawn["shownH"] <= drawn["boxH"] + 1, drawn
        assert drawn["shownW"] >= 0.3 * viewport["width"] / 2, drawn  # big enough to read
        _assert_inside(image.bounding_box(), gallery, "gallery image")
    reg = app.results["regression"]
    entry, shown = reg["models"][reg["primary_model"]]["regression"], page.inner_text("#summary-md")
    assert f"{entry['iqr'][1]:.3f} ± {entry['iqr_err'][1]:.3f}" in shown, shown  # bootstrap uncertainties
    assert f"{entry['low_q3']['mpv']:.3f} ± {entry['low_q3']['mpv_err']:.3f}" in shown, shown
    _check_transfer_study(page, app.study, viewport, size)

    page.locator("#summary-model input").fill(app.cls)
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#summary-md')?.innerText.includes('TPR at the cut')",
                           timeout=60_000)
    cls = app.results["classification"]
    block = cls["models"][cls["primary_model"]]["classification"]["cc1pi0"]
    lo, hi = block["tpr_model_interval"]
    assert f"{block['tpr_model']:.3f} [{lo:.3f}, {hi:.3f}]" in page.inner_text("#summary-md")  # Clopper-Pearson
    page.wait_for_function("[...document.querySelectorAll('#summary-plots img')].length >= 3 && "
                           "[...document.querySelectorAll('#summary-plots img')].every(i => i.complete && "
                           "i.naturalWidth > 0)", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / f"event_explorer_summary_classification_{size}.png"), full_page=True)
    page.close()


def _check_transfer_study(page, study: dict, viewport: dict, size: str) -> None:
    """The study's plot fits its box and the table shows the seed means of rw and the pretrained init."""
    page.wait_for_selector("#study-plot .js-plotly-plot .main-svg", timeout=30_000)
    _assert_inside(_box(page, "#study-plot .js-plotly-plot"), _box(page, "#study-plot"), "#study-plot")
    _assert_within_viewport_width(page, "#study-plot", viewport)
    _assert_blank_edges(page, "#study-plot .js-plotly-plot", "#study-plot")
    values = {init: [c["metrics"]["iqr"] for c in study["cells"] if c["task"] == "regression" and c["init"] == init
                     and c["mode"] == "full" and c["labels"] == 1000] for init in ("rw", "jet")}
    rw, jet = (np.mean(values[i]) for i in ("rw", "jet"))
    text = page.inner_text("#study")
    assert f"vs {rw:.3f} ± {np.std(values['rw'], ddof=1):.3f} (Δ {jet - rw:+.3f})" in text, text
    assert "synthetic" in text
    page.locator("#study").screenshot(path=str(ARTIFACTS / f"event_explorer_transfer_study_{size}.png"))
    page.locator("#study-x").get_by_text("fine-tuning FLOPs").click()
    page.wait_for_function("document.querySelector('#study-plot')?.textContent.includes('fine-tuning FLOPs')",
                           timeout=30_000)
    page.locator("#study-x").get_by_text("labelled training events").click()


@pytest.mark.browser
def test_fresh_page_upload_shows_first_event(app, events_parquet, tmp_path):
    viewport = LAPTOPS["1366x768"]
    page = app.browser.new_page(viewport=viewport)
    page.goto(app.url, wait_until="domcontentloaded")
    page.wait_for_selector("#objects th", timeout=60_000)
    for table, first in (("#objects", "type"), ("#event-features", "feature"), ("#truth", "quantity")):
        headers = [h.strip() for h in page.locator(f"{table} th").all_inner_texts() if h.strip()]
        assert headers and headers[0] == first and "1" not in headers, (table, headers)
    page.get_by_role("tab", name="Predictions").click()
    headers = [h.strip() for h in page.locator("#prediction-table th").all_inner_texts() if h.strip()]
    assert headers[:2] == ["model", "quantity"], headers
    page.get_by_role("tab", name="Event").click()
    page.screenshot(path=str(ARTIFACTS / "event_explorer_empty_1366x768.png"), full_page=True)

    import huggingface_hub.constants  # the Hub unreachable: the reason shows in the page within seconds

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{_free_port()}")
        start = time.monotonic()
        page.click("#load-hub")
        _wait_status(page, "could not reach the Hub", timeout=30_000)
        elapsed = time.monotonic() - start
    assert elapsed < 10 and page.inner_text("#status").startswith("⚠️"), elapsed
    page.screenshot(path=str(ARTIFACTS / "event_explorer_hub_unreachable_1366x768.png"), full_page=True)
    for close in page.locator(".toast-close").all():  # the warning toast would cover the event display
        close.click()

    page.set_input_files("#upload input[type=file]", str(events_parquet))
    _wait_status(page, "Showing event 0")  # no click on "Show event"
    assert "Loaded all 60 events from events.parquet" in page.inner_text("#status").replace("`", "")
    page.wait_for_selector("#views .js-plotly-plot .main-svg", timeout=30_000)
    assert "uploaded file" in page.locator("#share textarea, #share input").first.input_value()
    assert "muon" in page.inner_text("#objects")
    page.wait_for_selector("#scene .js-plotly-plot .main-svg", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "event_explorer_after_upload_1366x768.png"), full_page=True)
    _assert_blank_edges(page, "#scene .js-plotly-plot", "#scene after upload", inset=10)

    page.close()

    bad = tmp_path / "not-events.parquet"  # a fresh page: the File box now shows the uploaded file, not an input
    bad.write_text("this is not parquet")
    page = app.browser.new_page(viewport=viewport)
    page.goto(app.url, wait_until="domcontentloaded")
    page.wait_for_selector("#upload input[type=file]", state="attached", timeout=60_000)
    page.set_input_files("#upload input[type=file]", str(bad))
    _wait_status(page, "not a readable Parquet")
    status = page.inner_text("#status")
    assert status.startswith("⚠️") and "not-events.parquet" in status
    assert "Traceback" not in page.inner_text("body") and "Error" not in page.locator(".toast-title").all_inner_texts()
    page.screenshot(path=str(ARTIFACTS / "event_explorer_bad_upload_1366x768.png"), full_page=True)
    page.close()


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
    # the contracts the app reads (results, transfer study) travel with it: one reader, no copy in the app folder
    assert {"minerva_common/results.py", "minerva_common/transfer_study.py", "minerva_common/__init__.py"} <= files
    assert not any(f.endswith(".pyc") for f in files)
    card = SpaceCard.load(HfApi().hf_hub_download(repo, "README.md", repo_type="space"))
    assert card.data.sdk == "gradio" and card.data.sdk_version == "6.31.0" and card.data.app_file == "app.py"
    assert main(["push-space", repo, "--app-dir", str(tmp_path)]) == 1  # not a Space folder
    assert "missing" in capsys.readouterr().err
