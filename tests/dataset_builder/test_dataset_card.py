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


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    """`minerva-fm generate` files (seed 11) converted: the manifest carries their generator records."""
    from dataset_builder.convert import ConvertOptions, convert
    from dataset_builder.synthetic import write_anatuples

    root = tmp_path_factory.mktemp("synthetic_card")
    convert(write_anatuples(root / "raw", n_events=150, seed=11), root / "out", ConvertOptions(), workers=1,
            progress=False)
    return root / "out"


def test_synthetic_inputs_are_said_to_be_synthetic_with_their_seed_and_weight(synthetic_dir):
    import json

    manifest = json.loads((synthetic_dir / "manifest.json").read_text())
    assert [s["generator"]["seed"] for s in manifest["source_files"]] == [11]
    card = DatasetCard.load(write_dataset_card(synthetic_dir, plots=False, repo_id="tester/synthetic-events"))
    text = card.text
    assert "> **Synthetic data.** Every event in this dataset" in text and "`minerva-fm generate` (seed 11)" in text
    assert text.lstrip().startswith("# Synthetic MINERvA-like events") and "synthetic" in card.data.tags
    assert "branch `mc_cvweight_total`" in text and "plausible stand-in" in text
    assert 'load_dataset("tester/synthetic-events", split="train")' in text


def test_card_without_generator_records_claims_no_synthetic_origin(dataset_dir):
    text = DatasetCard.load(write_dataset_card(dataset_dir, plots=False)).text
    assert "Synthetic data" not in text and "synthetic" not in DatasetCard.load(dataset_dir / "README.md").data.tags
    assert "input files not listed in manifest.json: origin not recorded" in text  # the fixture lists no inputs


def test_mixed_inputs_count_the_synthetic_files():
    from dataset_builder.dataset_card import data_origin

    origin = data_origin({"source_files": [{"name": "a.root", "is_mc": True, "generator": {"seed": 2}},
                                           {"name": "b.root", "is_mc": True}]})
    assert origin["synthetic"] and not origin["all_synthetic"] and origin["n_synthetic"] == 1


def test_every_file_the_card_cites_is_in_the_repository(synthetic_dir):
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    text = DatasetCard.load(write_dataset_card(synthetic_dir, plots=False)).text
    cited = set(re.findall(r"[\w./-]+\.(?:md|py|yaml)\b", text))
    assert cited and "minerva-data.md" not in text
    missing = [name for name in cited if not list(repo.glob(f"**/{name}"))]
    assert not missing, missing


def test_column_docs_are_data_checked_against_the_schema(tmp_path, monkeypatch):
    import yaml

    from dataset_builder import dataset_card

    docs = dataset_card.column_docs()
    assert list(docs["columns"]) == schema.PARQUET_SCHEMA.names
    assert docs["columns"]["q3"] == {"unit": "GeV", "description": "true 3-momentum transfer |p_nu - p_lepton|"}
    del docs["event_features"]["n_michel"]
    bad = tmp_path / "columns.yaml"
    bad.write_text(yaml.safe_dump(docs, sort_keys=False))
    monkeypatch.setattr(dataset_card, "COLUMN_DOCS", bad)
    with pytest.raises(ValueError, match=r"columns\.yaml: field event_features: documents .* schema\.py defines"):
        dataset_card.column_docs()


def test_card_snippet_runs_as_printed_against_the_hub(hub, dataset_dir, tmp_path):
    """The card's python block, in a clean interpreter without the project, on the pushed dataset."""
    import re

    from isolated_python import run_isolated

    from dataset_builder.hub import push_dataset

    repo_id = f"{hub.user}/dataset-card-snippet"
    write_dataset_card(dataset_dir, plots=False, repo_id=repo_id)
    push_dataset(dataset_dir, repo_id)
    (code,) = re.findall(r"^```python\n(.*?)^```$", (dataset_dir / "README.md").read_text(), flags=re.S | re.M)
    printed = run_isolated(code, cwd=tmp_path).stdout.split()
    train = pq.read_table(dataset_dir / "data/train")
    assert printed[:2] == [str(train.num_rows), str(train["n_objects"][0].as_py())]
