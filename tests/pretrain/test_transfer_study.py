"""The transfer study on a micro grid: real fine-tuning + evaluation per cell, a study JSON that loads back through the
contract, its plots, deterministic label subsets and the contract refusing malformed files with one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from minerva_common.transfer_study import (SCHEMA, TransferStudyError, dump_transfer_study, load_transfer_study)

MICRO_GRID = [  # 3 cells: rw and MINERvA-MOM full regression on 50 labels, a frozen random backbone on classification
    {"tasks": ["regression"], "inits": ["rw", "minerva-mpm"], "modes": ["full"], "labels": [50], "seeds": [0]},
    {"tasks": ["classification"], "inits": ["rw"], "modes": ["full"], "rw_modes": ["frozen"], "labels": [None],
     "seeds": [0]},
]


def micro_config(tmp_path, data, grid=MICRO_GRID):
    """A study YAML of a few seconds: 3 steps of 16 events per cell, one in-process worker."""
    from recipes.transfer_study import TINY_CONFIG, load_study_config

    path = tmp_path / "study.yaml"
    path.write_text(json.dumps({"base": str(TINY_CONFIG), "steps": 3, "batch_size": 16, "eval_every": 0,
                                "max_eval_events": 32, "warmup_steps": 1, "workers": 1, "grid": grid,
                                "data": {"path": str(data), "data_events": 0}, "work_dir": str(tmp_path / "work"),
                                "pretraining": [{"name": "minerva-mpm", "config": "pretrain_pet_minerva_mom_tiny.yaml",
                                                 "overrides": ["--train.max_steps=3", "--train.eval_every=0",
                                                               "--train.save_every=0"]}],
                                "output": str(tmp_path / "out" / "study.json")}))
    return load_study_config(path)


@pytest.fixture(scope="module")
def micro_study(tmp_path_factory, minerva_dataset):
    from recipes.transfer_study import run_transfer_study

    tmp = tmp_path_factory.mktemp("study")
    cfg = micro_config(tmp, minerva_dataset)
    return cfg, run_transfer_study(cfg, progress=False)


def test_micro_grid_writes_a_study_that_loads_back(micro_study, minerva_dataset):
    cfg, study = micro_study
    loaded = load_transfer_study(cfg.output)
    assert json.loads(open(cfg.output).read())["schema"] == SCHEMA
    n_train = pq.read_metadata(next((minerva_dataset / "data" / "train").glob("*.parquet"))).num_rows
    got = sorted((c.task, c.init, c.mode, c.labels) for c in loaded.cells)
    assert got == [("classification", "rw", "frozen", n_train), ("regression", "minerva-mpm", "full", 50),
                   ("regression", "rw", "full", 50)]
    for cell in loaded.cells:
        assert cell.steps == 3 and cell.train_flops > 0
    pre = loaded.pretraining["minerva-mpm"]
    assert pre.steps == 3 and pre.train_flops > 0 and "masked_objects" in pre.objective
    assert (Path(pre.output_dir) / "model.safetensors").is_file() and not loaded.extra["missing_cells"]
    reg = loaded.select(task="regression")
    assert all(0 < c.metrics["iqr"] for c in reg)
    assert set(loaded.select(task="classification")[0].metrics["tpr_at_cut_fpr"]) <= \
        {"cc1pi_charged", "ccnpi_charged", "cc1pi0"}
    frozen, full = loaded.select(mode="frozen")[0], loaded.select(init="rw", mode="full")[0]
    assert frozen.n_trainable < full.n_trainable  # the frozen random backbone trains only its head
    assert "calorimetric" in loaded.baselines["regression"] and "cut" in loaded.baselines["classification"]


def test_micro_grid_plots(micro_study):
    cfg, _ = micro_study
    out = Path(cfg.output).parent
    names = sorted(p.name for p in out.glob("*.png"))
    assert "study_regression_vs_labels.png" in names and "study_classification_vs_flops.png" in names
    assert all((out / n).stat().st_size > 5000 for n in names)


def test_rerun_skips_finished_cells(micro_study):
    from recipes.transfer_study import run_transfer_study

    cfg, study = micro_study
    again = run_transfer_study(dataclasses.replace(cfg, plots=False), progress=False)  # every cell.json exists: nothing is trained again
    assert [c.metrics for c in again.cells] == [c.metrics for c in study.cells]


def test_a_finished_cell_is_not_reused_under_another_recipe(micro_study):
    from recipes.transfer_study import StudyError, run_transfer_study

    cfg, _ = micro_study
    with pytest.raises(StudyError, match=r"cell.json was trained with other settings \(steps\)"):
        run_transfer_study(dataclasses.replace(cfg, steps=4, plots=False), progress=False)


def test_label_subsets_are_deterministic_and_nested(tmp_path, minerva_dataset):
    from recipes.transfer_study import label_subset

    def entries(folder):
        return pq.read_table(folder / "data" / "train" / "labels.parquet").column("entry").to_pylist()

    a = entries(label_subset(minerva_dataset, 40, 0, tmp_path / "a"))
    assert a == entries(label_subset(minerva_dataset, 40, 0, tmp_path / "b"))
    assert a != entries(label_subset(minerva_dataset, 40, 1, tmp_path / "c"))
    assert set(entries(label_subset(minerva_dataset, 20, 0, tmp_path / "d"))) < set(a)
    assert len(a) == 40 and label_subset(minerva_dataset, 10**6, 0, tmp_path / "e") == minerva_dataset


@pytest.mark.parametrize("corrupt, field", [
    (lambda d: d["cells"][0].update(labels="many"), "cells[0].labels"),
    (lambda d: d["cells"][0]["metrics"].pop("iqr"), "cells[0].metrics.iqr"),
    (lambda d: d.update(schema="minerva-fm/eval-results"), "schema"),
    (lambda d: d["cells"][0].update(init="imagenet"), "cells[0].init"),
])
def test_contract_refuses_a_malformed_file_in_one_line(micro_study, tmp_path, corrupt, field):
    cfg, study = micro_study
    data = json.loads(open(cfg.output).read())
    data["cells"].sort(key=lambda c: c["task"] != "regression")
    corrupt(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TransferStudyError) as err:
        load_transfer_study(path)
    assert str(err.value).startswith(f"{path}: field {field}:") and "\n" not in str(err.value)
    with pytest.raises(TransferStudyError):
        dump_transfer_study(data, tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()


def test_contract_refuses_truncated_json(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"schema": "minerva-fm/transfer-study", "version": 1, "cells": [')
    with pytest.raises(TransferStudyError, match=r"cut.json: not valid JSON") as err:
        load_transfer_study(path)
    assert "\n" not in str(err.value)


def test_cli_refuses_an_unknown_grid_key(tmp_path, capsys):
    from recipes.cli import main

    path = tmp_path / "s.yaml"
    path.write_text("grid:\n  - {inits: [rw], budgets: [10]}\n")
    assert main(["transfer-study", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "grid[0]: unknown key 'budgets'" in err and "\n" not in err


def test_truthless_stand_in_keeps_only_detector_inputs(tmp_path, minerva_dataset):
    import shutil

    from recipes.transfer_study import strip_truth

    shard = tmp_path / "shard.parquet"
    shutil.copy(next((minerva_dataset / "data" / "train").glob("*.parquet")), shard)
    before = pq.read_table(shard)
    strip_truth(shard)
    after = pq.read_table(shard)
    assert after.schema == before.schema and after.num_rows == before.num_rows
    assert after.column("e_avail").null_count == after.num_rows and after.column("topology").null_count == after.num_rows
    assert after.column("object_features").equals(before.column("object_features"))


def test_cli_help_lists_the_study_config_fields():
    from recipes.cli import build_parser

    parser = build_parser()
    text = next(a for a in parser._actions if a.dest == "command").choices["transfer-study"].format_help()
    assert "--steps int" in text and "--data.events int" in text and "--paper-sizes" in text
