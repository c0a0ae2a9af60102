"""The converter end to end: schema, layout, manifest, splits, selection, data files, parallel runs, resume."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from _anatuple import default_columns, write_anatuple

from dataset_builder.convert import ConversionError, ConvertOptions, assign_splits, convert
from dataset_builder.schema import PARQUET_SCHEMA, SPLITS, TRUTH_COLUMNS
from dataset_builder.selection import SelectionConfig

REPO = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(out: Path) -> dict[str, str]:
    """Every output file (shards + manifest) → sha256."""
    files = sorted((out / "data").rglob("*.parquet")) + [out / "manifest.json"]
    return {p.relative_to(out).as_posix(): _sha(p) for p in files}


def _mc_file(path: Path, n: int = 60, int_types=(1, 2, 3, 8, 5)) -> Path:
    columns = default_columns(n)
    columns["mc_intType"] = np.resize(np.array(int_types), n)
    columns["mc_current"] = np.ones(n)
    columns["ev_run"] = np.full(n, 110000)
    columns["ev_gate"] = np.arange(n)
    columns["muon_corrected_p"][::2] = [0.0, 100.0, 3000.0, 3010.0]
    columns["MasterAnaDev_hadron_recoil_CCInc"] = np.full(n, 100.0)
    columns["MasterAnaDev_BlobTotalE"] = [[float(i % 7)] * (i % 4) for i in range(n)]
    for axis in "XYZT":
        columns[f"MasterAnaDev_Blob{axis}"] = [[10.0 * i] * (i % 4) for i in range(n)]
    return write_anatuple(path, columns, meta={"POT_Used": [1e18], "POT_Total": [2e18]})


def _table(out: Path, split: str | None = None):
    folder = out / "data" / split if split else out / "data"
    return pads.dataset(folder, format="parquet").to_table().sort_by([("source_file", "ascending"),
                                                                        ("entry", "ascending")])


def test_shards_have_exactly_the_contract_schema_and_layout(tmp_path):
    source = _mc_file(tmp_path / "MasterAnaDev_mc_AnaTuple_run00110000_Playlist.root")
    manifest = convert([source], tmp_path / "out", ConvertOptions(step_size=25), workers=1, progress=False)
    shards = sorted((tmp_path / "out" / "data").rglob("*.parquet"))
    assert shards
    for shard in shards:
        assert shard.parent.name in SPLITS
        assert shard.name.startswith("MasterAnaDev_mc_AnaTuple_run00110000_Playlist-0000")
        schema = pq.read_schema(shard).remove_metadata()
        assert schema.equals(PARQUET_SCHEMA) and [f.nullable for f in schema] == [f.nullable for f in PARQUET_SCHEMA]
        metadata = pq.read_metadata(shard)
        assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert [s["chunk"] for s in manifest["shards"] if s["split"] == "train"] == [0, 1, 2]


def test_manifest_provenance_and_counts(tmp_path):
    source = _mc_file(tmp_path / "a.root")
    out = tmp_path / "out"
    manifest = convert([source], out, ConvertOptions(step_size=25, row_group_size=7), workers=1, progress=False)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    [entry] = manifest["source_files"]
    assert entry["sha256"] == _sha(source) and entry["size_bytes"] == source.stat().st_size
    assert (entry["is_mc"], entry["n_entries"], entry["pot_used"], entry["pot_total"]) == (True, 60, 1e18, 2e18)
    assert entry["generator"] is None  # not a `minerva-fm generate` file: nothing marks it synthetic
    assert manifest["selection"] == {"read": 60, "int_type": 48, "kept": 48, "passes_cc_inclusive": 24}
    assert sum(manifest["events_per_split"].values()) == 48 and manifest["events_per_split"]["shifted"] == 0
    for shard in manifest["shards"]:
        path = out / shard["path"]
        metadata = pq.read_metadata(path)
        assert shard["sha256"] == _sha(path) and shard["rows"] == metadata.num_rows
        assert all(metadata.row_group(k).num_rows <= 7 for k in range(metadata.num_row_groups))
    assert manifest["options"]["selection"]["int_types"] == [1, 2, 3, 4, 8]
    table = _table(out)
    assert sorted(set(table.column("int_type").to_pylist())) == [1, 2, 3, 8]
    assert table.column("gate").to_pylist() == [e for e in range(60) if e % 5 != 4]  # keyed by entry, not position


def test_splits_are_stable_under_rechunking(tmp_path):
    source = _mc_file(tmp_path / "a.root", n=200)
    tables = {}
    for step in (13, 1000):
        out = tmp_path / f"out{step}"
        convert([source], out, ConvertOptions(step_size=step), workers=1, progress=False)
        tables[step] = {split: _table(out, split) for split in ("train", "validation", "test")}
    for split in ("train", "validation", "test"):
        assert tables[13][split].equals(tables[1000][split])
    assert tables[13]["validation"].num_rows > 0 and tables[13]["test"].num_rows > 0


def test_split_hash_fractions_and_determinism():
    entries = np.arange(200_000)
    splits = assign_splits("MasterAnaDev_mc_AnaTuple_run00110000_Playlist.root", entries)
    fractions = np.bincount(splits, minlength=3) / len(entries)
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.005)
    again = assign_splits("MasterAnaDev_mc_AnaTuple_run00110000_Playlist.root", entries[::-1])[::-1]
    np.testing.assert_array_equal(splits, again)
    assert not np.array_equal(splits, assign_splits("other.root", entries))


def test_shifted_glob_sends_whole_files_to_shifted(tmp_path):
    regular, shifted = _mc_file(tmp_path / "run1A.root"), _mc_file(tmp_path / "run1B.root")
    manifest = convert([regular, shifted], tmp_path / "out", ConvertOptions(shifted_globs=("*1B*",)), workers=1,
                       progress=False)
    table = _table(tmp_path / "out", "shifted")
    assert set(table.column("source_file").to_pylist()) == {"run1B.root"}
    assert manifest["events_per_split"]["shifted"] == 48
    assert [s["split"] for s in manifest["source_files"]] == ["hashed", "shifted"]
    assert manifest["pot_used_by_split"] == {"hashed": 1e18, "shifted": 1e18}


def test_data_file_has_null_truth_and_no_interaction_type_cut(tmp_path):
    columns = default_columns(5, mc=False)
    columns["muon_corrected_p"][1] = [0.0, 100.0, 3000.0, 3010.0]
    source = write_anatuple(tmp_path / "MasterAnaDev_data_AnaTuple_run00010066_Playlist.root", columns)
    manifest = convert([source], tmp_path / "out", ConvertOptions(), workers=1, progress=False)
    table = _table(tmp_path / "out")
    assert table.num_rows == 5
    for name in TRUTH_COLUMNS:
        assert table.column(name).null_count == 5, name
    assert table.column("has_muon").to_pylist() == [False, True, False, False, False]
    [entry] = manifest["source_files"]
    assert (entry["is_mc"], entry["pot_used"]) == (False, None)
    assert manifest["selection"] == {"read": 5, "kept": 5, "passes_cc_inclusive": 0}


def test_selection_from_yaml(tmp_path):
    config = tmp_path / "selection.yaml"
    config.write_text("int_types: [1]\ncc_inclusive:\n  require_positive_recoil: false\n  max_muon_theta_deg: 1.0\n")
    selection = SelectionConfig.from_yaml(config)
    assert selection.int_types == (1,) and selection.cc_inclusive.max_muon_theta_deg == 1.0
    source = _mc_file(tmp_path / "a.root")
    manifest = convert([source], tmp_path / "out", ConvertOptions(selection=selection), workers=1, progress=False)
    assert manifest["selection"] == {"read": 60, "int_type": 12, "kept": 12, "passes_cc_inclusive": 0}  # θ = 1.9°
    (tmp_path / "typo.yaml").write_text("int_type: [1]\n")
    with pytest.raises(ValueError, match=r"typo.yaml.*unknown key.*int_type"):
        SelectionConfig.from_yaml(tmp_path / "typo.yaml")


def test_rerun_resumes_and_reproduces_the_same_bytes(tmp_path):
    sources = [_mc_file(tmp_path / "a.root"), _mc_file(tmp_path / "b.root")]
    out = tmp_path / "out"
    options = ConvertOptions(step_size=10)
    convert(sources, out, options, workers=1, progress=False)
    reference = _snapshot(out)
    # simulate a kill: manifest and some shards missing, a stray temp file left behind
    (out / "manifest.json").unlink()
    removed = sorted((out / "data").rglob("b-*.parquet"))[::2] + sorted((out / "data").rglob("a-00003.parquet"))
    for path in removed:
        path.unlink()
    (out / "data" / "train" / ".b-00001.parquet.123.tmp").write_bytes(b"partial")
    untouched = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*.parquet")}
    convert(sources, out, options, workers=1, progress=False)
    assert _snapshot(out) == reference
    assert all(p.stat().st_mtime_ns == t for p, t in untouched.items())  # finished shards were not rewritten
    assert not list(out.rglob("*.tmp"))


def test_rerun_with_other_options_is_refused(tmp_path):
    source = _mc_file(tmp_path / "a.root")
    convert([source], tmp_path / "out", ConvertOptions(step_size=10), workers=1, progress=False)
    with pytest.raises(ConversionError, match="other options"):
        convert([source], tmp_path / "out", ConvertOptions(step_size=20), workers=1, progress=False)


def test_duplicate_file_names_are_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    first, second = _mc_file(tmp_path / "x" / "a.root", n=5), _mc_file(tmp_path / "y" / "a.root", n=5)
    with pytest.raises(ConversionError, match="a.root"):
        convert([first, second], tmp_path / "out", workers=1, progress=False)


# ------------------------------------------------------------------ end to end on the synthetic generator


@pytest.fixture(scope="module")
def synthetic_inputs(tmp_path_factory):
    """Two generated files: a 1A-like one and a shifted 1B-like one (few hundred events)."""
    synthetic = pytest.importorskip("dataset_builder.synthetic")
    folder = tmp_path_factory.mktemp("synthetic")
    regular = synthetic.write_anatuples(folder / "regular", n_events=300, seed=3)
    shifted = synthetic.write_anatuples(folder / "shifted", n_events=200, seed=4, shifted=True)
    return regular + shifted


@pytest.fixture(scope="module")
def serial_reference(synthetic_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "out"
    options = ConvertOptions(step_size=64, shifted_globs=(f"*{synthetic_inputs[1].name}",))
    manifest = convert(synthetic_inputs, out, options, workers=1, progress=False)
    return out, options, manifest


@pytest.mark.slow
def test_synthetic_sample_end_to_end(serial_reference, synthetic_inputs):
    out, _, manifest = serial_reference
    assert manifest["events_per_split"]["shifted"] == manifest["source_files"][1]["selection"]["kept"]
    assert [(s["generator"]["seed"], s["generator"]["shifted"]) for s in manifest["source_files"]] == \
        [(3, False), (4, True)]  # the generator records travel into the manifest
    assert manifest["events_per_split"]["train"] > manifest["events_per_split"]["validation"] > 0
    table = _table(out)
    assert table.num_rows == sum(manifest["events_per_split"].values())
    n_objects = np.asarray(table.column("n_objects"))
    assert n_objects.max() <= 33 and (n_objects == np.diff(table.column("object_pid").combine_chunks().offsets))\
        .all()
    assert np.isfinite(np.concatenate(table.column("object_features").to_numpy(zero_copy_only=False)).tolist()).all()
    e_avail = table.column("e_avail").to_numpy(zero_copy_only=False)
    assert np.all(e_avail >= 0) and np.all(table.column("e_avail_reference").to_numpy(zero_copy_only=False)
                                           >= e_avail - 1e-6)


@pytest.mark.slow
def test_process_pool_and_dask_give_identical_output(serial_reference, synthetic_inputs, tmp_path):
    reference_out, options, _ = serial_reference
    convert(synthetic_inputs, tmp_path / "pool", options, workers=2, progress=False)
    assert _snapshot(tmp_path / "pool") == _snapshot(reference_out)
    convert(synthetic_inputs, tmp_path / "dask", options, workers=1, dask="local", dask_processes=False,
            progress=False)
    assert _snapshot(tmp_path / "dask") == _snapshot(reference_out)


@pytest.mark.slow
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    synthetic = pytest.importorskip("dataset_builder.synthetic")
    sources = synthetic.write_anatuples(tmp_path / "in", n_events=800, seed=5)
    out, fresh = tmp_path / "out", tmp_path / "fresh"

    def command(target: Path) -> list[str]:
        return [sys.executable, "-m", "recipes.cli", "convert", *map(str, sources), str(target), "--workers", "1",
                "--step-size", "20", "--no-progress"]

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command(out), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list((out / "data").rglob("*-00003.parquet")) and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"converter exited early: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    n_partial = len(list((out / "data").rglob("*.parquet")))
    resumed = subprocess.run(command(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    subprocess.run(command(fresh), cwd=REPO, env=env, check=True, timeout=300, capture_output=True)
    assert n_partial < len(list((fresh / "data").rglob("*.parquet")))
    assert _snapshot(out) == _snapshot(fresh)


def test_iter_converted_tables_streams_the_rows_the_converter_writes(tmp_path):
    from dataset_builder.convert import iter_converted_tables

    source = _mc_file(tmp_path / "a.root")
    convert([source], tmp_path / "out", ConvertOptions(step_size=25), workers=1, progress=False)
    tables = list(iter_converted_tables(source, ConvertOptions(step_size=25)))
    assert len(tables) == 3 and all(t.schema.remove_metadata().equals(PARQUET_SCHEMA) for t in tables)
    streamed = pa.concat_tables(tables)
    assert streamed.column("entry").to_pylist() == sorted(streamed.column("entry").to_pylist())
    assert streamed.equals(_table(tmp_path / "out").replace_schema_metadata(None))
    assert not list(tmp_path.glob("*.parquet")) and sorted(p.name for p in tmp_path.iterdir()) == ["a.root", "out"]
    data = write_anatuple(tmp_path / "data.root", default_columns(4, mc=False))
    [table] = iter_converted_tables(data)
    assert table.num_rows == 4 and table.column("e_avail").null_count == 4
    assert table.column("source_file").to_pylist() == ["data.root"] * 4
