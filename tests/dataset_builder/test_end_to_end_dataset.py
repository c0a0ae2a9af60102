"""generate (synthetic AnaTuples) -> convert -> dataset card -> load_dataset -> collate, on real ROOT files."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest

from dataset_builder import schema
from dataset_builder.collator import MinervaCollator, iter_batches
from dataset_builder.hf_dataset import features

convert_module = pytest.importorskip("dataset_builder.convert")
synthetic = pytest.importorskip("dataset_builder.synthetic")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    synthetic.write_anatuples(root / "raw", n_events=200, seed=3, n_files=2)
    shifted = synthetic.write_anatuples(root / "raw", n_events=40, seed=4, shifted=True)
    options = convert_module.ConvertOptions(shifted_globs=(shifted[0].name,))
    manifest = convert_module.convert([root / "raw"], root / "out", options, workers=1, progress=False)
    return root / "out", manifest


def test_generate_convert_load_collate(converted, tmp_path):
    from dataset_builder.dataset_card import write_dataset_card

    out, manifest = converted
    write_dataset_card(out, plots=False)
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path))
    assert {split: ds[split].num_rows for split in ds} == {k: v for k, v in manifest["events_per_split"].items() if v}
    assert ds["shifted"].num_rows == 40
    for split in ds:
        assert ds[split].features == features()

    stream = datasets.load_dataset(str(out), split="train", streaming=True)
    n_objects = pq.read_table(out / "data" / "train", columns=["n_objects"])["n_objects"].to_numpy()
    seen = 0
    for batch in iter_batches(stream, 64, MinervaCollator(task="classification")):
        b = batch["labels"].shape[0]
        assert batch["object_features"].shape[1:] == (batch["object_pid"].shape[1], schema.NUM_OBJECT_FEATURES)
        assert batch["object_pid"].shape[1] <= schema.MAX_OBJECTS and batch["event_features"].shape == (b, 16)
        np.testing.assert_array_equal(batch["attention_mask"].sum(1).numpy(), n_objects[seen:seen + b])
        assert batch["object_pid"][batch["attention_mask"]].min() >= 1
        assert batch["labels"].min() >= 0 and batch["labels"].max() < schema.NUM_TOPOLOGIES
        seen += b
    assert seen == ds["train"].num_rows
    regression = MinervaCollator(task="regression")(list(ds["validation"].select(range(8))))
    assert regression["labels"].dtype.is_floating_point and regression["labels"].shape == (8,)
