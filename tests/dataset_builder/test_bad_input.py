"""Bad input to the converter: clear errors naming the file (and branch), or documented counted handling."""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow.dataset as pads
import pytest
import uproot
from _anatuple import default_columns, write_anatuple

from dataset_builder import cli as data_cli
from dataset_builder.convert import (
    BadEventError, BranchTypeError, ConversionError, ConversionFailed, ConvertOptions, CorruptFileError,
    InconsistentCountsError, MissingBranchError, MissingTreeError, NotRootFileError, convert,
)


def _good(path, n=4):
    columns = default_columns(n)
    columns["mc_intType"] = np.full(n, 1)
    return write_anatuple(path, columns)


def _run(sources, out, **options):
    return convert(sources, out, ConvertOptions(**options), workers=1, progress=False)


def _shards(out):
    return sorted(p.relative_to(out).as_posix() for p in (out / "data").rglob("*.parquet")) if out.exists() else []


def _rows(out):
    return pads.dataset(out / "data", format="parquet").to_table().to_pylist()


def test_not_a_root_file(tmp_path):
    bad = tmp_path / "notes.root"
    bad.write_text("this is not ROOT\n" * 20)
    with pytest.raises(NotRootFileError, match="notes.root.*not a ROOT file"):
        _run([bad], tmp_path / "out")


def test_truncated_root_file(tmp_path):
    good = _good(tmp_path / "full.root", n=2000)
    cut = tmp_path / "cut.root"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="cut.root"):
        _run([cut], tmp_path / "out")


def test_root_file_without_the_reco_tree(tmp_path):
    path = tmp_path / "no_tree.root"
    with uproot.recreate(path) as handle:
        handle["MasterAnaDev_v2"] = {"x": np.zeros(3)}
        handle["Meta"] = {"POT_Used": np.ones(1)}
    with pytest.raises(MissingTreeError, match=r"no_tree.root.*'MasterAnaDev'.*close matches: \['MasterAnaDev_v2'\]"):
        _run([path], tmp_path / "out")


def test_missing_branch_names_branch_file_and_close_matches(tmp_path):
    columns = default_columns(3)
    columns["MasterAnaDev_BlobTotE"] = columns.pop("MasterAnaDev_BlobTotalE")
    path = write_anatuple(tmp_path / "renamed.root", columns)
    with pytest.raises(MissingBranchError) as info:
        _run([path], tmp_path / "out")
    message = str(info.value)
    assert "renamed.root" in message and "'MasterAnaDev_BlobTotalE'" in message
    assert "MasterAnaDev_BlobTotE" in message.split("close matches")[1]


def test_mc_file_missing_one_truth_branch(tmp_path):
    columns = default_columns(3)
    del columns["mc_FSPartPDG"]
    path = write_anatuple(tmp_path / "half_mc.root", columns)
    with pytest.raises(MissingBranchError, match=r"half_mc.root.*'mc_FSPartPDG'.*MC file"):
        _run([path], tmp_path / "out")


def _one_prong(n=2):
    columns = default_columns(n)
    columns["n_prongs"] = np.array([1] + [0] * (n - 1))
    columns["prong_part_pid"] = [[8]] + [[] for _ in range(n - 1)]
    columns["prong_part_E"] = [[1.0, 2.0, 3.0, 10.0]] + [[] for _ in range(n - 1)]
    columns["prong_part_pos"] = [[0.0, 0.0, 0.0, 0.0]] + [[] for _ in range(n - 1)]
    columns["prong_dEdXMean"] = [[1.0]] + [[] for _ in range(n - 1)]
    return columns


@pytest.mark.parametrize("branch, dtype", [("prong_part_pid", np.float64), ("MasterAnaDev_BlobTotalE", np.int32),
                                           ("improved_nmichel", np.float32), ("muon_fuzz_energy", np.float64),
                                           ("muon_fuzz_energy", np.int64), ("ev_run", np.uint32),
                                           ("muon_iso_blobs_energy", np.float32)])
def test_other_numeric_types_are_cast_and_give_the_same_rows(tmp_path, branch, dtype):
    columns = _one_prong()
    columns["muon_fuzz_energy"] = np.array([12, 40])
    columns["muon_iso_blobs_energy"] = np.array([3.5, 0.25])
    columns["improved_nmichel"] = np.array([1, 0])
    columns["ev_run"] = np.array([110000, 110001])
    columns["mc_intType"] = np.array([1, 1])
    reference = _rows_of(write_anatuple(tmp_path / "plain.root", columns), tmp_path / "plain")
    typed = _rows_of(write_anatuple(tmp_path / "typed.root", columns, types={branch: dtype}), tmp_path / "typed")
    assert len(typed) == len(reference) == 2
    for row, want in zip(typed, reference):
        assert {k: v for k, v in row.items() if k != "source_file"} == \
            {k: v for k, v in want.items() if k != "source_file"}
    assert [r["run"] for r in typed] == [110000, 110001]
    assert typed[0]["event_features"][0] == pytest.approx(np.log(12 + 1e-5))  # log muon_fuzz_energy


def _rows_of(path, out, **options):
    _run([path], out, **options)
    return sorted(_rows(out), key=lambda r: r["entry"])


@pytest.mark.parametrize("branch, values", [("muon_fuzz_energy", [[1.0], [2.0]]), ("n_prongs", [[1], []])])
def test_a_vector_where_a_scalar_belongs_is_a_type_error(tmp_path, branch, values):
    columns = _one_prong()
    columns[branch] = values
    path = write_anatuple(tmp_path / "vector.root", columns)
    with pytest.raises(BranchTypeError, match=f"vector.root: branch '{branch}'.*expected numbers with shape scalar"):
        _run([path], tmp_path / "out")


def test_wrong_shape_of_a_fixed_array(tmp_path):
    columns = default_columns(2)
    columns["vtx"] = np.zeros(2)  # scalar instead of [4]
    path = write_anatuple(tmp_path / "shape.root", columns)
    with pytest.raises(BranchTypeError, match=r"shape.root.*'vtx'.*fixed\[4\]"):
        _run([path], tmp_path / "out")


def test_inconsistent_prong_counter(tmp_path):
    columns = default_columns(2)
    columns["n_prongs"] = np.array([2, 0])  # but only one prong stored
    columns["prong_part_pid"] = [[8], []]
    columns["prong_part_E"] = [[1.0, 2.0, 3.0, 10.0], []]
    columns["prong_part_pos"] = [[0.0, 0.0, 0.0, 0.0], []]
    columns["prong_dEdXMean"] = [[1.0], []]
    path = write_anatuple(tmp_path / "counts.root", columns)
    with pytest.raises(BadEventError, match=r"counts.root: 1 malformed entry: entry 0: branch 'prong_part_E' has 1 "
                                            r"prongs but n_prongs = 2"):
        _run([path], tmp_path / "out")


def test_nan_and_inf_values_are_handled_and_counted(tmp_path):
    columns = default_columns(3)
    columns["mc_intType"] = np.full(3, 2)
    columns["muon_corrected_p"][0] = [np.nan, 0.0, 3000.0, 3000.0]  # unusable muon → no token
    columns["MasterAnaDev_BlobX"] = [[0.0, np.nan], [], []]
    columns["MasterAnaDev_BlobY"] = [[0.0, 0.0], [], []]
    columns["MasterAnaDev_BlobZ"] = [[100.0, 100.0], [], []]
    columns["MasterAnaDev_BlobT"] = [[np.inf, 0.0], [], []]
    columns["MasterAnaDev_BlobTotalE"] = [[5.0, 5.0], [], []]
    columns["n_prongs"] = np.array([0, 2, 0])
    columns["prong_part_pid"] = [[], [8, 13], []]
    columns["prong_part_E"] = [[], [0.0, 0.0, 100.0, 200.0, np.nan, 0.0, 1.0, 5.0], []]
    columns["prong_part_pos"] = [[], [np.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], []]
    columns["prong_dEdXMean"] = [[], [-np.inf, 1.0], []]
    columns["muon_fuzz_energy"] = np.array([np.nan, 1.0, np.inf])
    path = write_anatuple(tmp_path / "nan.root", columns, types={"muon_fuzz_energy": np.float64})  # a Double_t one
    manifest = _run([path], tmp_path / "out")
    rows = {r["entry"]: r for r in _rows(tmp_path / "out")}
    assert rows[0]["has_muon"] is False and rows[0]["object_pid"] == [3]  # NaN-position blob dropped
    assert rows[0]["object_features"][0][8] == 0.0  # inf time → 0
    assert rows[1]["object_pid"] == [5]  # NaN 4-vector prong dropped; NaN position of the other → 0
    assert rows[1]["object_features"][0][4] == pytest.approx(np.log(100.1))  # −inf dE/dx → 100
    assert all(np.isfinite(v) for r in rows.values() for f in r["object_features"] for v in f)
    assert all(np.isfinite(v) for r in rows.values() for v in r["event_features"])
    assert manifest["rejected"]["nan"] == {"muon_corrected_p": 1, "MasterAnaDev_BlobX": 1, "prong_part_E": 1,
                                           "prong_part_pos": 1, "muon_fuzz_energy": 1}
    assert manifest["rejected"]["inf"] == {"MasterAnaDev_BlobT": 1, "prong_dEdXMean": 1, "muon_fuzz_energy": 1}


def test_negative_energies_are_masked_and_counted(tmp_path):
    columns = default_columns(2)
    columns["mc_intType"] = np.full(2, 1)
    columns["gamma1_E"] = np.array([-5.0, 0.0])
    columns["MasterAnaDev_BlobX"] = [[0.0, 0.0, 0.0], []]
    columns["MasterAnaDev_BlobY"] = [[0.0, 0.0, 0.0], []]
    columns["MasterAnaDev_BlobZ"] = [[10.0, 10.0, 10.0], []]
    columns["MasterAnaDev_BlobT"] = [[0.0, 0.0, 0.0], []]
    columns["MasterAnaDev_BlobTotalE"] = [[4.0, -3.0, -999.0], []]
    columns["n_prongs"] = np.array([0, 1])
    columns["prong_part_pid"] = [[], [13]]
    columns["prong_part_E"] = [[], [0.0, 0.0, 10.0, -10.0]]
    columns["prong_part_pos"] = [[], [0.0] * 4]
    columns["prong_dEdXMean"] = [[], [1.0]]
    columns["muon_iso_blobs_energy"] = np.array([-7.0, 2.0])
    path = write_anatuple(tmp_path / "negative.root", columns)
    manifest = _run([path], tmp_path / "out")
    rows = {r["entry"]: r for r in _rows(tmp_path / "out")}
    assert rows[0]["object_pid"] == [3] and rows[1]["object_pid"] == []
    assert rows[0]["event_features"][1] == pytest.approx(np.log(1e-5))  # negative → 0 energy
    assert manifest["rejected"]["negative_energy"] == {"gamma1_E": 1, "MasterAnaDev_BlobTotalE": 1,
                                                       "prong_part_E": 1, "muon_iso_blobs_energy": 1}
    assert manifest["rejected"]["sentinel"] == {"MasterAnaDev_BlobTotalE": 1}
    assert manifest["truncation"]["dropped_blob_invalid_or_below_threshold"] == 2
    assert manifest["truncation"]["dropped_prong_invalid_or_below_threshold"] == 1


def test_zero_objects_and_above_cap_events(tmp_path):
    columns = default_columns(2)
    columns["mc_intType"] = np.full(2, 3)
    columns["MasterAnaDev_BlobX"] = [[], [float(i) for i in range(30)]]
    columns["MasterAnaDev_BlobY"] = [[], [0.0] * 30]
    columns["MasterAnaDev_BlobZ"] = [[], [100.0] * 30]
    columns["MasterAnaDev_BlobT"] = [[], [0.0] * 30]
    columns["MasterAnaDev_BlobTotalE"] = [[], [1.0 + i for i in range(30)]]
    path = write_anatuple(tmp_path / "caps.root", columns)
    manifest = _run([path], tmp_path / "out")
    rows = {r["entry"]: r for r in _rows(tmp_path / "out")}
    assert rows[0]["n_objects"] == 0 and rows[0]["object_pid"] == []
    assert rows[1]["n_objects"] == 20 and rows[1]["object_pid"][-1] == 7
    assert np.exp(rows[1]["object_features"][-1][3]) == pytest.approx(sum(range(1, 12)), rel=1e-5)
    assert manifest["truncation"]["blobs_merged"] == 11


def test_bad_file_leaves_no_partial_output_and_keeps_other_files(tmp_path):
    good = _good(tmp_path / "good.root", n=6)
    columns = default_columns(6)
    columns["mc_intType"] = np.full(6, 1)
    sizes = [0, 0, 0, 0, 2, 0]  # entries 0-3 fine, entry 4 has blob branches of different lengths
    for axis in "XYZT":
        columns[f"MasterAnaDev_Blob{axis}"] = [[1.0] * s for s in sizes]
    columns["MasterAnaDev_BlobTotalE"] = [[1.0] * (s + (e == 4)) for e, s in enumerate(sizes)]
    bad = write_anatuple(tmp_path / "bad.root", columns)
    out = tmp_path / "out"
    with pytest.raises(InconsistentCountsError, match="bad.root.*entry 4: branch 'MasterAnaDev_Blob"):
        _run([good, bad], out, step_size=2)  # bad.root's first chunks are written before its third fails
    assert _shards(out) and all("/good-" in s for s in _shards(out))
    assert not (out / "manifest.json").exists()
    assert not list(out.rglob("*.tmp"))


def test_several_bad_files_are_all_reported(tmp_path):
    one, two = tmp_path / "one.root", tmp_path / "two.root"
    one.write_bytes(b"x" * 100)
    two.write_bytes(b"y" * 100)
    with pytest.raises(ConversionFailed) as info:
        _run([one, two], tmp_path / "out")
    assert "one.root" in str(info.value) and "two.root" in str(info.value)
    assert isinstance(info.value, ConversionError)


def test_missing_input_path(tmp_path):
    with pytest.raises(NotRootFileError, match="nowhere.root"):
        _run([tmp_path / "nowhere.root"], tmp_path / "out")


def test_cli_prints_the_error_and_returns_1(tmp_path, capsys):
    bad = tmp_path / "junk.root"
    bad.write_bytes(b"\x00" * 64)
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(["convert", str(bad), str(tmp_path / "out"), "--workers", "1", "--no-progress"])
    assert args.func(args) == 1
    assert "junk.root" in capsys.readouterr().err


# ------------------------------------------------------------------ row-level faults


def _bad_rows_file(path, n=8, bad=(2, 5)):
    """n events; entries in `bad` have one stored prong more than n_prongs says, or a blob branch one longer."""
    columns = default_columns(n)
    columns["mc_intType"] = np.full(n, 1)
    columns["n_prongs"] = np.ones(n, dtype=np.int32)
    extra = [int(e in bad[:1]) for e in range(n)]
    columns["prong_part_pid"] = [[8] * (1 + x) for x in extra]
    columns["prong_part_E"] = [[1.0, 2.0, 3.0, 50.0] * (1 + x) for x in extra]
    columns["prong_part_pos"] = [[0.0, 0.0, 0.0, 0.0] * (1 + x) for x in extra]
    columns["prong_dEdXMean"] = [[1.0] * (1 + x) for x in extra]
    columns["MasterAnaDev_BlobTotalE"] = [[5.0] * (1 + (e in bad[1:])) for e in range(n)]
    for axis in "XYZT":
        columns[f"MasterAnaDev_Blob{axis}"] = [[100.0] for _ in range(n)]
    return write_anatuple(path, columns)


def test_malformed_entries_are_named_by_file_and_entry(tmp_path):
    path = _bad_rows_file(tmp_path / "rows.root")
    with pytest.raises(BadEventError) as info:
        _run([path], tmp_path / "out", step_size=3)
    message = str(info.value)
    assert message.startswith(f"{path}: 1 malformed entry: entry 2: branch 'prong_part_E' has 2 prongs but "
                              f"n_prongs = 1")
    assert "--on-bad-event skip" in message and "\n" not in message
    with pytest.raises(BadEventError, match=r"entry 5: branch 'MasterAnaDev_BlobX' has 1 entries but "
                                            r"len\(MasterAnaDev_BlobTotalE\) = 2"):
        _run([_bad_rows_file(tmp_path / "rows2.root", bad=(99, 5))], tmp_path / "out2")


def test_skip_drops_exactly_the_bad_entries_and_lists_them(tmp_path):
    path = _bad_rows_file(tmp_path / "rows.root")
    manifest = _run([path], tmp_path / "out", step_size=3, on_bad_event="skip")
    entries = sorted(r["entry"] for r in _rows(tmp_path / "out"))
    assert entries == [0, 1, 3, 4, 6, 7]
    [source] = manifest["source_files"]
    assert [b["entry"] for b in source["bad_entries"]] == [2, 5]
    assert "prong_part_E" in source["bad_entries"][0]["reason"] and "Blob" in source["bad_entries"][1]["reason"]
    assert manifest["skipped"] == {"entries": 2} and manifest["selection"]["read"] == 6
    assert manifest["options"]["on_bad_event"] == "skip"


def test_cli_on_bad_event_option(tmp_path, capsys):
    path = _bad_rows_file(tmp_path / "rows.root")
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(["convert", str(path), str(tmp_path / "out"), "--workers", "1", "--no-progress"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rows.root" in err and "entry 2" in err
    args = parser.parse_args(["convert", str(path), str(tmp_path / "out2"), "--workers", "1", "--no-progress",
                              "--on-bad-event", "skip"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "skipped 2 malformed entries" in out


# ------------------------------------------------------------------ overflow


def test_overflow_becomes_null_and_is_counted_never_wrapped(tmp_path):
    n = 4
    columns = default_columns(n)
    columns["mc_intType"] = np.array([1, 2**32 + 1, 1, 1], dtype=np.int64)  # 2^32+1 would wrap to 1 (QE)
    columns["mc_current"] = np.ones(n)
    columns["ev_run"] = np.array([2**33 + 5, 7, 7, 7], dtype=np.int64)  # would wrap to 5
    columns["mc_incomingE"] = np.array([1e300, 3000.0, np.inf, 2000.0])
    columns["improved_nmichel"] = np.array([4294967295, 1, 0, 2], dtype=np.uint32)  # a -1 written unsigned
    columns["mc_primFSLepton"] = np.tile([0.0, 0.0, 1000.0, 1005.0], (n, 1))
    columns["n_prongs"] = np.array([1, 0, 0, 0])
    columns["prong_part_pid"] = [[8], [], [], []]
    columns["prong_part_E"] = [[1.0, 2.0, 3.0, 50.0], [], [], []]
    columns["prong_part_pos"] = [[0.0, 0.0, 0.0, 1e300], [], [], []]  # t / 1e4 overflows float32
    columns["prong_dEdXMean"] = [[1.0], [], [], []]
    path = write_anatuple(tmp_path / "overflow.root", columns,
                          types={"mc_intType": np.int64, "ev_run": np.int64, "improved_nmichel": np.uint32})
    manifest = _run([path], tmp_path / "out", selection=_keep_all())
    rows = sorted(_rows(tmp_path / "out"), key=lambda r: r["entry"])
    assert [r["int_type"] for r in rows] == [1, None, 1, 1]
    assert [r["run"] for r in rows] == [None, 7, 7, 7]
    assert rows[0]["enu"] is None and rows[2]["enu"] is None and rows[1]["enu"] == pytest.approx(3.0)
    assert [r["event_features"][6] for r in rows] == [0.0, 1.0, 0.0, 2.0]  # n_michel: the sentinel is not 4.3e9
    assert all(np.isfinite(np.asarray(r["object_features"], dtype=float)).all() for r in rows)
    assert manifest["nulled"]["enu"] == 2 and manifest["nulled"]["run"] == 1 and manifest["nulled"]["int_type"] == 1
    assert manifest["cast_invalid"] == {"ev_run": 1, "improved_nmichel": 1, "mc_intType": 1}
    assert manifest["rejected"]["float32_overflow"] == {"object_features": 1}
    assert rows[0]["object_features"][0][8] == 0.0
    default = _run([path], tmp_path / "default")  # the default int_types cut drops the null interaction type
    assert default["selection"]["int_type"] == 3


def _keep_all():
    from dataset_builder.selection import SelectionConfig

    return SelectionConfig(int_types=None)


def test_every_cli_option_has_help_and_shows_its_default():
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    data_cli.register(subparsers)
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.dest} has no help"
        text = sub.format_help()
        if name in ("generate", "convert"):
            assert "(default: " in text
    generate_help = " ".join(subparsers.choices["generate"].format_help().split())
    assert "--seed SEED random seed (same seed, same files) (default: 0)" in generate_help
    assert "(default: error)" in subparsers.choices["convert"].format_help()


def test_generate_prints_one_line_with_what_it_wrote(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(["generate", str(tmp_path / "gen"), "--events", "30", "--files", "2", "--seed", "4"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "wrote 2 synthetic" in out and "30 events" in out and "seed 4" in out
    args = parser.parse_args(["generate", str(tmp_path / "gen2"), "--events", "1", "--files", "2"])
    assert args.func(args) == 1
    assert capsys.readouterr().err.count("\n") == 1
