"""Event explorer logic without a browser: upload validation, filters, decoding, batches, the schema copy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from explorer_test_helpers import APP_DIR, write_broken_parquet, write_expanding_parquet, write_transfer_study
from isolated_python import isolated_code
from dataset_builder import schema
from dataset_builder.collator import MinervaCollator
from minerva_common import results


def test_space_repo_layout_runs_without_the_project(tmp_path):
    """The files push-space uploads (app folder + minerva_common) run in a clean interpreter: the dataset-schema
    copy matches, the results contract and the transfer study come from minerva_common."""
    from model_cards.publish import space_files

    space = tmp_path / "space"
    for name, source in space_files(APP_DIR).items():
        (space / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, space / name)
    write_transfer_study(space / "transfer_study.json")
    code = ("import importlib.util, json, sys\n"
            f"spec = importlib.util.spec_from_file_location('app', {str(space / 'app.py')!r})\n"
            "app = importlib.util.module_from_spec(spec); spec.loader.exec_module(app)\n"
            "import explorer_schema as s, minerva_common.results as r\n"
            "print(json.dumps({'source': s.SCHEMA_SOURCE, 'names': [s.OBJECT_FEATURE_NAMES, s.PID_NAMES,"
            " s.EVENT_FEATURE_NAMES, s.TOPOLOGY_NAMES], 'signals': s.SIGNAL_CLASSES, 'demo': type(app.demo).__name__,"
            " 'results_from': r.__file__, 'labels': sorted(s.PID_LABELS),"
            " 'study': [c['props'].get('value', '')[:60] for c in app.demo.config['components']"
            " if c['props'].get('elem_id') == 'study-md'],"
            " 'project': [m for m in ('dataset_builder', 'recipes', 'modeling') if m in sys.modules]}))")
    proc = subprocess.run([sys.executable, "-I", "-c", isolated_code(code)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["source"].startswith("copy") and out["demo"] == "Blocks" and not out["project"]
    assert out["names"] == [list(schema.OBJECT_FEATURE_NAMES), list(schema.PID_NAMES),
                            list(schema.EVENT_FEATURE_NAMES), list(schema.TOPOLOGY_NAMES)]
    assert out["signals"] == {k: list(v) for k, v in schema.SIGNAL_CLASSES.items()}
    assert out["results_from"] == str(space / "minerva_common" / "results.py")
    assert out["labels"] == sorted(schema.PID_NAMES)  # every object type has a display label
    assert out["study"] and out["study"][0].startswith("### Transfer study"), out["study"]


def test_upload_reads_valid_parquet_and_respects_max_events(explorer, events_parquet):
    sample = explorer.data.read_upload(events_parquet)
    assert sample.table.num_rows == 60 and sample.total_events == 60
    sample = explorer.data.read_upload(events_parquet, max_events=30)
    assert sample.table.num_rows == 30 and sample.total_events == 60
    assert set(sample.table.schema.names) <= set(explorer.data._display_columns())  # source_file etc. not decoded


@pytest.mark.parametrize("kind, message", [
    ("text", "not a readable Parquet file"),
    ("suffix", "expected a .parquet file"),
    ("missing", "missing required column(s) ['object_features']"),
    ("width", "event_features must hold 16 values"),
    ("count", "disagree on the object count"),
    ("string_n_objects", "column 'n_objects' has type string, expected an integer"),
    ("null_features", "column 'object_features' has null values in 1 events (first: event 4)"),
    ("corrupt_page", "Parquet data could not be decoded"),
])
def test_bad_uploads_raise_user_messages(explorer, events_parquet, tmp_path, kind, message):
    table = pq.read_table(events_parquet)
    path = tmp_path / "bad.parquet"
    if kind == "text":
        path.write_text("run,subrun\n1,2\n")
    elif kind == "suffix":
        path = tmp_path / "events.csv"
        path.write_text("x")
    elif kind == "missing":
        pq.write_table(table.drop_columns(["object_features"]), path)
    elif kind == "width":
        short = pa.array([row[:15] for row in table["event_features"].to_pylist()], pa.list_(pa.float32()))
        pq.write_table(table.set_column(table.schema.get_field_index("event_features"), "event_features", short), path)
    elif kind == "count":
        wrong = pa.array(np.asarray(table["n_objects"]) + 1, pa.int32())
        pq.write_table(table.set_column(table.schema.get_field_index("n_objects"), "n_objects", wrong), path)
    else:
        write_broken_parquet(table, path, kind)
    with pytest.raises(explorer.data.UserInputError) as info:
        explorer.data.read_upload(path)
    assert message in str(info.value) and path.name in str(info.value)


def test_decoded_size_is_checked_before_decoding(explorer, tmp_path, monkeypatch):
    path = tmp_path / "bomb.parquet"
    write_expanding_parquet(path, 1_000_000)
    assert path.stat().st_size < 100_000  # kB on disk ...
    monkeypatch.setattr(explorer.data, "MAX_DECODED_MB", 20)  # ... 36 MB of object features once decoded
    with pytest.raises(explorer.data.UserInputError, match=r"bomb.parquet: the events to load would take \d+ MB "
                                                           r"in memory, over the 20 MB limit"):
        explorer.data.read_upload(path)


def test_upload_size_limit(explorer, events_parquet, monkeypatch):
    monkeypatch.setattr(explorer.data, "MAX_UPLOAD_MB", 0.001)
    with pytest.raises(explorer.data.UserInputError, match="over the 0.001 MB upload limit"):
        explorer.data.read_upload(events_parquet)


def test_filters_match_numpy_selection(explorer, events_parquet):
    table = pq.read_table(events_parquet)
    topology, q3, w = (np.asarray(table[c]) for c in ("topology", "q3", "w"))
    got = explorer.data.filter_events(table, "CC1pi0", (0.5, 2.5), (None, 3.0))
    assert got.tolist() == np.flatnonzero((topology == 2) & (q3 >= 0.5) & (q3 <= 2.5) & (w <= 3.0)).tolist()
    assert explorer.data.filter_events(table).tolist() == list(range(60))
    with pytest.raises(explorer.data.UserInputError, match="unknown channel"):
        explorer.data.filter_events(table, "CC2pi")


def test_decoded_objects_are_in_detector_units(explorer, events_parquet):
    row = pq.read_table(events_parquet).slice(3, 1).to_pylist()[0]
    objects = explorer.display.decode_objects(row)
    feats = np.asarray(row["object_features"])
    assert objects["type"].tolist() == [schema.PID_NAMES[p] for p in row["object_pid"]]
    np.testing.assert_allclose(objects["E (MeV)"], np.round(np.exp(feats[:, 3]) - 1e-6, 2))
    np.testing.assert_allclose(objects["z (mm)"], np.round(feats[:, 7] * 1e4, 1))
    assert not objects["has position"].iloc[0]  # the muon has a direction only
    views, scene = explorer.display.event_figures(objects, "t")
    labels = explorer.schema.PID_LABELS
    assert {t.name for t in views.data} == {labels[kind] for kind in objects["type"]}
    assert all("pid" in labels[k] for k in ("prong_pid3", "prong_pid8", "prong_pid13"))
    assert any(t.type == "scatter3d" for t in scene.data)
    truth = explorer.display.truth_table(row)
    assert f"{schema.TOPOLOGY_NAMES[row['topology']]} ({row['topology']})" in truth["value"].tolist()


def test_single_event_batch_equals_the_collator(explorer, events_parquet):
    table = pq.read_table(events_parquet)
    for index in (0, 7, 59):
        ours = explorer.models._single_event_batch(table.slice(index, 1).to_pylist()[0])
        theirs = MinervaCollator().collate_arrow(table.slice(index, 1))
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), key


def test_ui_callbacks_report_errors_as_messages(explorer, tmp_path):
    state = explorer.ui._empty_state()
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 garbage")
    with pytest.warns(UserWarning):  # gr.Warning outside a request falls back to warnings.warn
        outputs = explorer.ui.load_from_upload(str(bad), 100, None, state)
    assert len(outputs) == 9 and outputs[0] == {"__type__": "update"}  # the session keeps its previous sample
    assert outputs[-1].startswith("⚠️") and "not a readable Parquet file" in outputs[-1]
    broken = {"table": "not a table", "indices": [0], "source": {}, "total": None}  # an unexpected failure
    with pytest.warns(UserWarning):
        outputs = explorer.ui.show_event(0, None, broken)
    assert outputs[-1].startswith("⚠️ AttributeError")


def test_model_ids_are_allow_listed_hub_ids(explorer, tmp_path, monkeypatch):
    models = explorer.models
    monkeypatch.setattr(models, "_owner_models", {"owner/model", "owner/pinned@v1"})
    monkeypatch.setenv(models.MODELS_ENV, "env/model")
    assert models.checked_model_id(models.PUBLISHED_MODELS[0]) == (models.PUBLISHED_MODELS[0], None)
    assert models.checked_model_id("owner/model@main") == ("owner/model", "main")
    assert models.checked_model_id("owner/pinned@v1") == ("owner/pinned", "v1")
    assert models.checked_model_id("env/model") == ("env/model", None)
    (tmp_path / "config.json").write_text("{}")
    for bad, why in [("attacker/evil", "not on this Space's allow-list"), ("owner/pinned", "allow-list"),
                     (str(tmp_path), "must be a Hub repo id"), ("../owner/model", "must be a Hub repo id"),
                     ("owner/../../etc", "must be a Hub repo id"),
                     ("https://x.co/owner/model", "must be a Hub repo id"),
                     ("owner/model@../../x", "must be a Hub repo id")]:
        with pytest.raises(explorer.data.UserInputError, match=re.escape(why)):
            models.checked_model_id(bad)
        with pytest.raises(explorer.data.UserInputError, match=re.escape(why)):
            models.load_model(bad)  # refused before any download
    for bad in (str(tmp_path), "./data", "a/b/c", "~/x"):
        with pytest.raises(explorer.data.UserInputError, match="must be a Hub repo id"):
            explorer.data.load_hub_split(bad, "test")


def _results(task: str) -> dict:
    """A results dict of the minerva_common.results layout, with uncertainties (v1.1 keys)."""
    summary = {"iqr": 0.4, "mpv": 0.95, "iqr_over_mpv": 0.42, "rms": 0.5, "n": 22, "iqr_err": 0.03, "mpv_err": 0.02}
    block = {"q3_bins": [[0.0, 0.6], [0.6, 1.2]], "iqr": [0.5, 0.25], "mpv": [0.9, 1.0], "iqr_over_mpv": [0.56, 0.25],
             "rms": [0.6, 0.3], "n": [10, 12], "iqr_err": [0.05, 0.02], "mpv_err": [0.04, 0.01],
             "iqr_over_mpv_err": [0.06, 0.02], "overall": summary, "low_q3": summary}
    cls = {"cc1pi0": {"fpr_cut": 0.1, "tpr_cut": 0.3, "tpr_model": 0.45, "fpr_model": 0.09, "threshold": 0.2,
                      "auroc": 0.7, "n_signal": 40, "tpr_model_interval": [0.37, 0.53],
                      "tpr_cut_interval": [0.23, 0.38]}}
    entry = {"regression": block} if task == "regression" else {"classification": cls}
    baseline = ({"calorimetric": {"regression": block}} if task == "regression" else
                {"cut": {"classification": {"cc1pi0": {"fpr_cut": 0.1, "tpr_cut": 0.3, "n_signal": 40,
                                                       "tpr_cut_interval": [0.23, 0.38]}}}})
    return {"schema_version": results.RESULTS_SCHEMA_VERSION, "task": task, "split": "test", "dataset": "u/d",
            "primary_model": "pet", "models": {"pet": entry}, "baselines": baseline,
            "selection": {"n_events": 30, "n_selected": 22},
            "uncertainties": {"tpr": "clopper-pearson", "confidence_level": 0.6827, "iqr_mpv": "bootstrap",
                              "n_bootstrap": 100}}


def test_summary_reads_the_results_contract_with_uncertainties(explorer):
    models = explorer.models
    assert models.EvalResults is results.EvalResults  # the Space has no reader of its own
    text = models.summary_markdown("u/m", models.parse_results("u/m", _results("regression")))
    assert "| **pet** | 0.500 ± 0.050 | 0.250 ± 0.020 | 0.400 ± 0.030 | 0.400 ± 0.030 |" in text, text
    assert "| **pet** | 0.900 ± 0.040 | 1.000 ± 0.010 |" in text and "| **calorimetric (baseline)** |" in text
    assert "q3 ≤ 1.2 GeV" in text and "22 of 30 events" in text and "bootstrap standard deviation (100" in text
    text = models.summary_markdown("u/m", models.parse_results("u/m", _results("classification")))
    assert "| CC1π⁰ | **pet** | 0.450 [0.370, 0.530] | 0.0900 | 0.7000 | 40 |" in text, text
    assert "| CC1π⁰ | **cut (baseline)** | 0.300 [0.230, 0.380] | 0.1000 |  | 40 |" in text, text
    assert "clopper-pearson at 68.27 % CL" in text
    old = _results("regression")  # the pre-contract layout ("bins" list) is refused by the contract, naming the field
    old["models"]["pet"]["regression"] = {"bins": [{"lo": 0, "hi": 0.6, "iqr": 0.5}]}
    with pytest.raises(explorer.data.UserInputError, match=r"^u/m: eval_results.json: field "
                                                           r"models.pet.regression.q3_bins: expected"):
        models.parse_results("u/m", old)
    with pytest.raises(explorer.data.UserInputError, match="field schema_version: 2 is not supported"):
        models.parse_results("u/m", {**_results("regression"), "schema_version": 2})


def test_transfer_study_pretrained_vs_rw(explorer, tmp_path, monkeypatch):
    study_ui = explorer.study
    path = tmp_path / "study.json"
    written = write_transfer_study(path)
    study, message = study_ui.read_study(path)
    assert message == ""
    text = study_ui.study_intro(study) + "\n" + study_ui.study_table(study)
    for mode, labels in (("full", 1000), ("frozen", 10000)):
        rw, jet = ([c["metrics"]["iqr"] for c in written["cells"] if c["task"] == "regression" and c["init"] == i
                    and c["mode"] == mode and c["labels"] == labels] for i in ("rw", "jet"))
        cell = (f"{np.mean(jet):.3f} ± {np.std(jet, ddof=1):.3f} vs {np.mean(rw):.3f} ± {np.std(rw, ddof=1):.3f} "
                f"(Δ {np.mean(jet) - np.mean(rw):+.3f})")
        row = next(line for line in text.splitlines()
                   if line.startswith(f"| IQR of E_pred/E_true, all q3 | {mode} | jet-pretrained |"))
        assert row.split(" | ")[3 + (1000, 3000, 10000).index(labels)].strip(" |") == cell, (row, cell)
    assert "synthetic — not real MINERvA data" in text and "jet classification on Pythia jets (2k)" in text
    assert "the same step budget in every run (200 steps)" in text
    assert "| CCNπ± (N≥1) TPR at the cut's FPR | frozen | jet-pretrained |" in text
    figure = study_ui.study_figure(study)
    titles = [a.text for a in figure.layout.annotations]
    assert "IQR of E_pred/E_true, q3 ≤ 1.2 GeV (lower is better)" in titles and "cut tagger" in titles, titles
    assert "CC1π⁰ TPR at the cut's FPR (higher is better)" in titles
    traces = {t.name for t in figure.data}
    assert traces == {"random weights (rw) · full", "random weights (rw) · frozen", "jet-pretrained · full",
                      "jet-pretrained · frozen"}
    first = next(t for t in figure.data if t.name == "jet-pretrained · full")
    assert list(first.x) == [1000, 3000, 10000]
    assert list(study_ui.study_figure(study, "train_flops").data[0].x) == [1e9, 3e9, 1e10]

    partial = tmp_path / "partial.json"  # a collect-only study names the grid cells it has not run
    partial.write_text(json.dumps({**written, "missing_cells": ["regression/jet-lora/labels-1000/seed-0"]}))
    assert "⚠️ 1 grid cell(s) not run yet (e.g. `regression/jet-lora/labels-1000/seed-0`)" in \
        study_ui.study_intro(study_ui.read_study(partial)[0])
    assert "not run yet" not in text

    two = tmp_path / "two-backbones.json"  # a second backbone gets its own curves and rows, never averaged in
    other = [{**c, "backbone": "vit", "metrics": {**c["metrics"], "iqr": 0.9}} for c in written["cells"]
             if c["task"] == "regression"]
    two.write_text(json.dumps({**written, "cells": written["cells"] + other}))
    both, _ = study_ui.read_study(two)
    names = {t.name for t in study_ui.study_figure(both).data}
    assert "jet-pretrained · vit full" in names and "jet-pretrained · omnilearned full" in names
    assert "| IQR of E_pred/E_true, all q3 | vit full | jet-pretrained | 0.900 vs 0.900 (Δ +0.000) |" in \
        study_ui.study_table(both)

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**written, "cells": [{**written["cells"][0], "init": "imagenet"}]}))
    study, message = study_ui.read_study(broken)
    assert study is None and message.startswith("⚠️ transfer study not shown: ") and "cells[0].init" in message
    assert "\n" not in message
    monkeypatch.setenv(study_ui.STUDY_ENV, str(broken))
    assert study_ui.study_path() == broken
    monkeypatch.delenv(study_ui.STUDY_ENV)
    assert study_ui.study_path(app_dir=tmp_path) is None  # nothing configured, no transfer_study.json: not shown
    (tmp_path / study_ui.STUDY_FILE).write_text("{}")
    assert study_ui.study_path(app_dir=tmp_path) == tmp_path / study_ui.STUDY_FILE


def test_prediction_decision_at_the_working_point(explorer, events_parquet):
    row = pq.read_table(events_parquet).slice(2, 1).to_pylist()[0]
    probabilities = dict(zip(schema.TOPOLOGY_NAMES, [0.1, 0.1, 0.5, 0.2, 0.1]))
    scores = {s: sum(list(probabilities.values())[c] for c in cls) for s, cls in schema.SIGNAL_CLASSES.items()}
    points = {"cc1pi0": {"threshold": 0.4, "fpr_model": 0.09, "fpr_cut": 0.1, "tpr_model": 0.45}}
    result = {"task": "classification", "probabilities": probabilities, "scores": scores,
              "decisions": {"cc1pi0": True}}
    line = explorer.models.format_prediction("u/m", result, row, points)
    assert "CC1π⁰: score 0.5000 → TAGGED at threshold 0.4000 (FPR 0.0900 ≤ cut's 0.1000)" in line
    assert "CC1π±: score 0.1000 → no working point" in line
    records = explorer.ui.prediction_records("u/m", result, row, points)
    assert list(records[0]) == list(explorer.ui.PREDICTION_COLUMNS)
    assert [r["model decision"] for r in records if r["quantity"] == "CC1π⁰ score"] == ["tagged (score ≥ 0.4000)"]


def test_root_upload_goes_through_the_converter(explorer, tmp_path):
    from dataset_builder.synthetic import write_anatuples

    (root,) = write_anatuples(tmp_path / "root", n_events=40, seed=3)
    sample = explorer.data.read_upload(root)
    table = sample.table
    assert 0 < table.num_rows == sample.total_events <= 40
    assert set(explorer.data._display_columns()) <= set(table.schema.names)
    assert explorer.data.read_upload(root, max_events=5).table.num_rows == 5
    broken = tmp_path / "broken.root"
    broken.write_bytes(b"root" * 100)
    with pytest.raises(explorer.data.UserInputError, match="broken.root: could not convert the ROOT file"):
        explorer.data.read_upload(broken)
