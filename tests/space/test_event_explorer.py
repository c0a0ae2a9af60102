"""Event explorer logic without a browser: upload validation, filters, decoding, batches, the schema copy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from explorer_test_helpers import APP_DIR
from isolated_python import isolated_code
from dataset_builder import schema
from dataset_builder.collator import MinervaCollator


def test_app_loads_without_the_project_and_schema_copy_matches(tmp_path):
    code = ("import importlib.util, json, sys\n"
            f"spec = importlib.util.spec_from_file_location('app', {str(APP_DIR / 'app.py')!r})\n"
            "app = importlib.util.module_from_spec(spec); spec.loader.exec_module(app)\n"
            "import explorer_schema as s\n"
            "print(json.dumps({'source': s.SCHEMA_SOURCE, 'names': [s.OBJECT_FEATURE_NAMES, s.PID_NAMES,"
            " s.EVENT_FEATURE_NAMES, s.TOPOLOGY_NAMES], 'signals': s.SIGNAL_CLASSES, 'demo': type(app.demo).__name__}))")
    proc = subprocess.run([sys.executable, "-I", "-c", isolated_code(code)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120,
                          env={**__import__("os").environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["source"].startswith("copy") and out["demo"] == "Blocks"
    assert out["names"] == [list(schema.OBJECT_FEATURE_NAMES), list(schema.PID_NAMES),
                            list(schema.EVENT_FEATURE_NAMES), list(schema.TOPOLOGY_NAMES)]
    assert out["signals"] == {k: list(v) for k, v in schema.SIGNAL_CLASSES.items()}


def test_upload_reads_valid_parquet_and_respects_max_events(explorer, events_parquet):
    table = explorer.data.read_upload(events_parquet)
    assert table.num_rows == 60
    assert explorer.data.read_upload(events_parquet, max_events=30).num_rows == 30


@pytest.mark.parametrize("kind, message", [
    ("text", "not a readable Parquet file"),
    ("suffix", "expected a .parquet file"),
    ("missing", "missing required column(s) ['object_features']"),
    ("width", "event_features must hold 16 values"),
    ("count", "disagree on the object count"),
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
    with pytest.raises(explorer.data.UserInputError) as info:
        explorer.data.read_upload(path)
    assert message in str(info.value) and path.name in str(info.value)


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
    assert {t.name for t in views.data} == set(objects["type"])
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
        new_state, message = explorer.ui.load_from_upload(str(bad), 100, state)
    assert new_state["table"] is None and message.startswith("⚠️") and "not a readable Parquet file" in message


def test_root_upload_goes_through_the_converter(explorer, tmp_path):
    from dataset_builder.synthetic import write_anatuples

    (root,) = write_anatuples(tmp_path / "root", n_events=40, seed=3)
    table = explorer.data.read_upload(root)
    assert 0 < table.num_rows <= 40 and set(schema.PARQUET_SCHEMA.names) <= set(table.schema.names)
    broken = tmp_path / "broken.root"
    broken.write_bytes(b"root" * 100)
    with pytest.raises(explorer.data.UserInputError, match="broken.root: could not convert the ROOT file"):
        explorer.data.read_upload(broken)
