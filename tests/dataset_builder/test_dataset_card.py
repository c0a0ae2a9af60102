"""Dataset card: YAML configs/features that `datasets` honours, counts that match the Parquet, plots, CLI."""

from __future__ import annotations

import argparse
import shutil

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from dataset_builder import schema
from dataset_builder.cli import register
from dataset_builder.dataset_card import size_category, write_dataset_card
from dataset_builder.hf_dataset import features


@pytest.fixture
def dataset_dir(fake_dataset_dir, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(fake_dataset_dir, root)
    return root


def cli(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_summary_cli_writes_card_and_plots(dataset_dir, capsys):
    assert cli(["dataset-summary", str(dataset_dir)]) == 0
    out = capsys.readouterr().out
    train = pq.read_table(dataset_dir / "data/train", columns=["topology", "n_objects", "e_avail"])
    expected_nc = np.mean(train["topology"].to_numpy() == 4)
    train_line = next(line for line in out.splitlines() if line.startswith("train "))
    numbers = train_line.split()
    assert numbers[1] == "240" and float(numbers[6]) == pytest.approx(expected_nc, abs=5e-4)
    assert float(numbers[7]) == pytest.approx(np.mean(train["n_objects"].to_numpy()), abs=5e-3)
    assert float(numbers[10]) == pytest.approx(np.quantile(train["e_avail"].to_numpy(), 0.5), abs=5e-4)
    assert "total" in out and "400" in out

    card = DatasetCard.load(dataset_dir / "README.md")
    data = card.data.to_dict()
    assert data["configs"] == [{"config_name": "default", "data_files": [
        {"split": s, "path": f"data/{s}/*.parquet"} for s in schema.SPLITS]}]
    assert datasets.Features._from_yaml_list(data["dataset_info"]["features"]) == features()
    assert data["license"] == "cc-by-4.0" and "neutrino" in data["tags"] and data["size_categories"] == ["n<1K"]
    text = card.text
    assert "| `q2` | `float` | GeV² |" in text and "| `pion_theta` | `float` | rad |" in text
    assert "true 3-momentum transfer \\|p_nu - p_lepton\\|" in text  # schema.py comment, table-escaped
    assert "PID 0 is reserved for padding" in text and "(`source_file`, `entry`)" in text
    assert "| train | 240 |" in text and "| shifted | 40 |" in text
    for name in ("n_objects", "object_types", "e_avail", "topology", "enu"):
        png = dataset_dir / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"](plots/{name}.png)" in text
    assert not [p for p in dataset_dir.rglob("*.tmp")]


def test_card_on_data_without_truth(tmp_path):
    from fake_data import fake_table

    (tmp_path / "data" / "test").mkdir(parents=True)
    pq.write_table(fake_table(30, seed=5, with_truth=False), tmp_path / "data/test/part-0.parquet")
    write_dataset_card(tmp_path, plots=True)
    card = DatasetCard.load(tmp_path / "README.md")
    assert card.data.to_dict()["configs"][0]["data_files"] == [{"split": "test", "path": "data/test/*.parquet"}]
    assert "| test | 30 | — | — |" in card.text


def test_errors_and_size_categories(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Parquet shards"):
        write_dataset_card(tmp_path)
    assert [size_category(n) for n in (10, 5_000, 2_000_000)] == ["n<1K", "1K<n<10K", "1M<n<10M"]
