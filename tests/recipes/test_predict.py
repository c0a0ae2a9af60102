"""`minerva-fm predict` on a converted folder, a loopback-Hub dataset and raw AnaTuples (MC and data): outputs join
back onto the input on (source_file, entry), match a direct forward pass, resume, refuse foreign folders and
mismatched layouts, and a real 2-process (torchrun, gloo) run writes every event exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recipes_test_helpers import REPO_ROOT, free_port, write_dataset
from dataset_builder import schema
from dataset_builder.collator import MinervaCollator
from recipes.cli import main

PREDICT = REPO_ROOT / "recipes" / "predict.py"
TINY_PET = dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=1, num_local_layers=1, num_neighbors=4,
                use_pair_bias=False, num_head_layers=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny PET regression model and a tiny MLP classifier, saved with save_pretrained."""
    from modeling import build_model

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    build_model("omnilearned", "regression", "small", **TINY_PET).save_pretrained(root / "pet-regression")
    build_model("mlp", "classification", "small", hidden_size=16, intermediate_size=32,
                num_hidden_layers=1).save_pretrained(root / "mlp-classification")
    build_model("mlp", "regression", "small", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_event_features=12).save_pretrained(root / "mlp-12-features")
    return {p.name: p for p in root.iterdir()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 shards per split (an odd number of shards in total is not needed: 6 over 2 processes, 3 each)."""
    return write_dataset(tmp_path_factory.mktemp("predict_data"), {"train": 150, "test": 70}, seed=5,
                         files_per_split=3)


def _read(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(out.rglob("*.parquet"))])


def _keys(table: pa.Table) -> list[tuple[str, int]]:
    return list(zip(table.column("source_file").to_pylist(), table.column("entry").to_pylist()))


def _input(root: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((root / "data").rglob("*.parquet"))])


def _aligned(source: pa.Table, got: pa.Table) -> pa.Table:
    """The rows of `source` in the order of `got`, matched on (source_file, entry) (Arrow joins skip list columns)."""
    where = {key: i for i, key in enumerate(_keys(source))}
    return source.take(pa.array([where[key] for key in _keys(got)]))


def _direct_forward(model_dir: Path, table: pa.Table) -> torch.Tensor:
    from recipes.evaluate import load_model

    model, _ = load_model(str(model_dir))
    with torch.no_grad():
        out = model(**MinervaCollator().collate_arrow(table))
    return out.predictions if getattr(out, "predictions", None) is not None else torch.softmax(out.logits, -1)


def test_predict_converted_folder_joins_back_and_matches_forward(models, data, tmp_path, capsys):
    out = tmp_path / "preds"
    assert main(["predict", "--model", str(models["pet-regression"]), "--data", str(data), "--out", str(out),
                 "--batch-size", "32", "--no-progress"]) == 0
    assert "wrote 6 prediction shards (220 events)" in capsys.readouterr().out
    got, source = _read(out), _input(data)
    assert sorted(_keys(got)) == sorted(_keys(source)) and len(set(_keys(got))) == 220
    joined = _aligned(source, got)
    want = _direct_forward(models["pet-regression"], joined).numpy()
    np.testing.assert_allclose(got.column("e_avail_pred").to_numpy(), want, rtol=1e-4, atol=1e-6)
    for name in schema.BASELINE_COLUMNS:
        assert got.column(name).equals(joined.column(name)), name
    meta = json.loads(pq.read_schema(next(out.rglob("*.parquet"))).metadata[b"minerva_fm.predict"])
    weights = hashlib.sha256((models["pet-regression"] / "model.safetensors").read_bytes()).hexdigest()
    assert meta["model_id"] == str(models["pet-regression"]) and meta["model_weights_sha256"] == weights
    assert meta["task"] == "regression" and meta["data"] == [str(data)]
    info = json.loads((out / "predictions.json").read_text())
    assert info["n_events"] == 220 and sum(s["rows"] for s in info["shards"]) == 220


def test_classification_outputs_probabilities_and_scores(models, data, tmp_path):
    out = tmp_path / "preds"
    assert main(["predict", "--model", str(models["mlp-classification"]), "--data", str(data), "--split", "test",
                 "--out", str(out), "--no-progress"]) == 0
    got = _read(out)
    assert got.num_rows == 70 and "e_avail_pred" not in got.schema.names
    probs = np.stack(got.column("probabilities").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got.column("score_ccnpi_charged").to_numpy(), probs[:, 0] + probs[:, 1], rtol=1e-6)
    np.testing.assert_array_equal(got.column("predicted_topology").to_numpy(), probs.argmax(1))
    test = pq.read_table(data / "data" / "test")
    assert _keys(got) == _keys(test)  # one shard: the input order is kept
    np.testing.assert_allclose(probs, _direct_forward(models["mlp-classification"], test).numpy(), rtol=1e-4,
                               atol=1e-6)


def test_rerun_resumes_and_foreign_folder_is_refused(models, data, tmp_path, capsys):
    out = tmp_path / "preds"
    args = ["predict", "--model", str(models["pet-regression"]), "--data", str(data), "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    removed = sorted(stamps)[0]
    removed.unlink()
    assert main(args) == 0
    again = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    assert set(again) == set(stamps)
    assert [p for p in stamps if again[p] != stamps[p]] == [removed]  # only the missing shard was redone
    assert not list(out.rglob("*.tmp"))
    capsys.readouterr()
    assert main(["predict", "--model", str(models["mlp-classification"]), "--data", str(data), "--out", str(out),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("minerva-fm predict: error:") and "another run" in err and "\n" not in err


def test_layout_mismatch_is_a_one_line_error(models, data, tmp_path, capsys):
    assert main(["predict", "--model", str(models["mlp-12-features"]), "--data", str(data), "--out",
                 str(tmp_path / "p"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "event features: model 12, data 16" in err and str(data) in err
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").rglob("*.parquet"))


def test_schema_version_mismatch_is_a_one_line_error(models, tmp_path, capsys):
    from modeling import build_model

    data = write_dataset(tmp_path / "v7", {"test": 20}, seed=1)
    shard = data / "data" / "test" / "part-00000.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.replace_schema_metadata({b"minerva_fm.schema_version": b"7"}), shard)
    model = build_model("mlp", "regression", "small", hidden_size=16, intermediate_size=32, num_hidden_layers=1)
    model.config.minerva_schema_version = 6
    model.save_pretrained(tmp_path / "trained-on-v6")
    code_version = getattr(schema, "SCHEMA_VERSION", None)
    assert main(["predict", "--model", str(tmp_path / "trained-on-v6"), "--data", str(data), "--out",
                 str(tmp_path / "p"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    if code_version is None:  # this code records no version yet: the model's is compared with the data's
        assert "trained on schema version 6" in err and "has version 7" in err
    else:
        assert "converted with schema version 7" in err and f"reads version {code_version}" in err


def test_hub_dataset_and_model_at_revision(models, data, tmp_path, hub):
    from huggingface_hub import HfApi

    from dataset_builder.hub import push_dataset
    from recipes.evaluate import load_model

    carded = tmp_path / "carded"
    write_dataset(carded, {"test": 70}, seed=5, files_per_split=2)
    from dataset_builder.dataset_card import write_dataset_card

    (carded / "manifest.json").write_text(json.dumps({"events_per_split": {"test": 70}, "source_files": []}))
    write_dataset_card(carded, plots=False)
    dataset_id = f"{hub.user}/predict-data"
    push_dataset(carded, dataset_id)
    model_id = f"{hub.user}/predict-mlp"
    model, _ = load_model(str(models["mlp-classification"]))
    model.push_to_hub(model_id)
    sha = HfApi().list_repo_commits(model_id)[0].commit_id
    out = tmp_path / "preds"
    assert main(["predict", "--model", f"{model_id}@{sha}", "--data", dataset_id, "--out", str(out),
                 "--no-progress"]) == 0
    got = _read(out)
    assert sorted(_keys(got)) == sorted(_keys(pq.read_table(carded / "data" / "test")))
    meta = json.loads(pq.read_schema(next(out.rglob("*.parquet"))).metadata[b"minerva_fm.predict"])
    assert (meta["model_id"], meta["model_revision"], meta["model_commit"]) == (model_id, sha, sha)


def _data_anatuple(mc_file: Path, path: Path) -> Path:
    """A data-like AnaTuple (no mc_* branches, no Truth tree) holding the reco branches of `mc_file`."""
    import awkward as ak
    import uproot

    sys.path.insert(0, str(REPO_ROOT / "tests" / "dataset_builder"))
    from _anatuple import default_columns, write_anatuple

    from dataset_builder.branches import RECO_TREE

    names = list(default_columns(1, mc=False))
    with uproot.open(mc_file) as handle:
        arrays = handle[RECO_TREE].arrays(names, library="ak")

    def plain(values):
        try:
            return ak.to_numpy(values)
        except ValueError:  # jagged
            return values

    return write_anatuple(path, {name: plain(arrays[name]) for name in names},
                          meta={"POT_Used": [1e18], "POT_Total": [1e18]})


def test_anatuples_mc_and_data(models, tmp_path):
    from dataset_builder import convert, synthetic

    raw = tmp_path / "raw"
    mc = synthetic.write_anatuples(raw, n_events=120, seed=2)[0]
    data_file = _data_anatuple(mc, raw / "MasterAnaDev_data_AnaTuple_run00022000.root")
    out = tmp_path / "preds"
    assert main(["predict", "--model", str(models["pet-regression"]), "--data", str(raw), "--out", str(out),
                 "--no-progress"]) == 0
    reference = tmp_path / "converted"
    manifest = convert.convert([mc, data_file], reference, workers=1, progress=False)
    assert {s["name"]: s["is_mc"] for s in manifest["source_files"]} == {mc.name: True, data_file.name: False}
    source = _input(reference)
    got = _read(out)
    assert sorted(_keys(got)) == sorted(_keys(source)) and len(set(_keys(got))) == got.num_rows
    assert {f for f, _ in _keys(got)} == {mc.name, data_file.name}
    assert sorted(p.name for p in (out / "anatuples").iterdir()) == sorted(f"{p.stem}.parquet" for p in (mc, data_file))
    np.testing.assert_allclose(got.column("e_avail_pred").to_numpy(),
                               _direct_forward(models["pet-regression"], _aligned(source, got)).numpy(),
                               rtol=1e-4, atol=1e-6)
    data_rows = source.filter(pa.compute.equal(source.column("source_file"), data_file.name))
    assert data_rows.num_rows > 0 and data_rows.column("e_avail").null_count == data_rows.num_rows  # no truth


def test_two_processes_write_every_event_once(models, data, tmp_path):
    out = tmp_path / "preds"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    run = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port",
                          str(free_port()), str(PREDICT), "--model", str(models["pet-regression"]), "--data",
                          str(data), "--out", str(out), "--batch-size", "16", "--no-progress"],
                         env=env, cwd=REPO_ROOT, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    got, source = _read(out), _input(data)
    assert got.num_rows == 220 and sorted(_keys(got)) == sorted(_keys(source))  # none twice, none missing
    info = json.loads((out / "predictions.json").read_text())
    assert info["n_events"] == 220 and len(info["shards"]) == 6
    writers = [json.loads(pq.read_schema(out / s["path"]).metadata[b"minerva_fm.predict"])["process_index"]
               for s in info["shards"]]
    assert writers == [k % 2 for k in range(6)]  # unit k on process k mod 2: each process its own shards
