"""The converted MINERvA events as a `datasets` builder with typed features (local folder or `hf://` Hub path).

    from dataset_builder.hf_dataset import MinervaEvents
    builder = MinervaEvents(data_dir="converted/")                 # or "hf://datasets/ns/name[@rev]"
    stream = builder.as_streaming_dataset(split="train")           # IterableDataset, typed features
    builder.download_and_prepare(); ds = builder.as_dataset()      # map-style, Arrow cache

A converted folder also loads without this module: `datasets.load_dataset(DIR)` reads the splits from the
dataset card's YAML `configs:` (see `dataset_card.py`). Layout: `DIR/data/<split>/*.parquet` with
`schema.PARQUET_SCHEMA`, `DIR/manifest.json`.
"""

from __future__ import annotations

import dataclasses

import datasets
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.builder import Key
from datasets.data_files import resolve_pattern
from datasets.table import table_cast

from dataset_builder import schema

DESCRIPTION = "MINERvA medium-energy FHC neutrino events (MasterAnaDev AnaTuples) converted to one row per event."


def split_pattern(split: str) -> str:
    """Glob (relative to the dataset root) of a split's Parquet shards."""
    return f"data/{split}/*.parquet"


def _feature_for(arrow_type: pa.DataType) -> datasets.features.FeatureType:
    """The `datasets` feature for one column type of `schema.PARQUET_SCHEMA` (lists stay `List`, not `Sequence`)."""
    if pa.types.is_fixed_size_list(arrow_type):
        return datasets.List(_feature_for(arrow_type.value_type), length=arrow_type.list_size)
    if pa.types.is_list(arrow_type):
        return datasets.List(_feature_for(arrow_type.value_type))
    return datasets.Value(str(arrow_type) if arrow_type != pa.string() else "string")


def features() -> datasets.Features:
    """Typed `datasets.Features` mirroring `schema.PARQUET_SCHEMA` column by column."""
    return datasets.Features({field.name: _feature_for(field.type) for field in schema.PARQUET_SCHEMA})


dataset_features = features


@dataclasses.dataclass
class MinervaEventsConfig(datasets.BuilderConfig):
    """`data_dir`: converted-dataset root (local or `hf://datasets/ns/name[@rev]`); `batch_size`: rows per table;
    `columns`: read only these (e.g. `MinervaCollator(...).columns`), default all."""

    batch_size: int = 10_000
    columns: list[str] | None = None


class MinervaEvents(datasets.ArrowBasedBuilder):
    """Parquet shards -> Arrow tables cast to `features()`; splits train/validation/test/shifted (those present)."""

    BUILDER_CONFIG_CLASS = MinervaEventsConfig
    BUILDER_CONFIGS = [MinervaEventsConfig(name="default", description=DESCRIPTION)]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=DESCRIPTION, features=self._features(), license="cc-by-4.0")

    def _features(self) -> datasets.Features:
        full = features()
        columns = self.config.columns  # set by attribute on a copy of the default config: check here
        unknown = sorted(set(columns or ()) - set(full))
        if unknown:
            raise ValueError(f"unknown columns {unknown}; the converted dataset has {list(full)}")
        return datasets.Features({k: v for k, v in full.items() if k in columns}) if columns else full

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        root = self.config.data_dir
        if not root:
            raise ValueError("MinervaEvents needs data_dir= (a converted-dataset folder or hf://datasets/ns/name)")
        generators = []
        for split in schema.SPLITS:
            try:
                files = resolve_pattern(split_pattern(split), base_path=str(root))
            except FileNotFoundError:
                continue
            generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"files": sorted(files)}))
        if not generators:
            raise FileNotFoundError(f"no Parquet shards matching data/<split>/*.parquet under {root} "
                                    f"(splits {', '.join(schema.SPLITS)})")
        return generators

    def _generate_shards(self, files):
        yield from files

    def _generate_tables(self, files):
        target = self._features().arrow_schema
        for file_idx, path in enumerate(files):
            with fsspec.open(path, "rb") as fh:
                parquet = pq.ParquetFile(fh)
                _check_columns(parquet.schema_arrow, target, path)
                for batch_idx, batch in enumerate(parquet.iter_batches(batch_size=self.config.batch_size,
                                                                       columns=target.names)):
                    yield Key(file_idx, batch_idx), table_cast(pa.Table.from_batches([batch]), target)


def _check_columns(found: pa.Schema, expected: pa.Schema, path: str) -> None:
    """Raise naming the file and the columns when a shard does not carry the converted-dataset schema."""
    missing = [name for name in expected.names if name not in found.names]
    wrong = [f"{f.name}: {found.field(f.name).type} (expected {f.type})" for f in expected
             if f.name in found.names and found.field(f.name).type != f.type]
    if missing or wrong:
        raise ValueError(f"{path}: not a converted MINERvA shard; missing columns {missing}, wrong types {wrong}")
