"""Per-event predictions of a model over MC or data -> Parquet shards keyed by (source_file, entry).

    minerva-fm predict --model runs/x/model --data converted/ --out preds/
    minerva-fm predict --model user/minerva-pet-small@v1 --data user/minerva-me-fhc --split test --out preds/
    minerva-fm predict --model runs/x/model --data MasterAnaDev_*.root --out preds/       # AnaTuples (MC or data)
    accelerate launch recipes/predict.py --model ... --data ... --out preds/              # one shard per process
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/predict.py ...                # 2 CPU processes

`--data` is a converted Parquet folder, a Hub dataset id (streamed), or AnaTuple ROOT files / folders (converted on
the fly through `dataset_builder.convert`, nothing written but the predictions; data files have no truth). Output::

    OUT/<split>/<split>-<k:05d>-of-<n:05d>.parquet   one per input shard k of a split (converted folder / Hub)
    OUT/anatuples/<file stem>.parquet                one per ROOT file
    OUT/predictions.json                             model, data, shards and row counts (written last, main process)

Each shard holds the keys (source_file, entry, run, subrun, gate), the model output — `e_avail_pred` (GeV,
regression) or `probabilities` (5, schema.TOPOLOGY_NAMES order) with `score_<signal>` (summed signal probabilities,
what a tagger thresholds) and `predicted_topology` (classification) — and the baselines of `schema.BASELINE_COLUMNS`
(calorimetric E_avail, cut tags, CC-inclusive selection). The Parquet key-value metadata carries the model id,
revision (and resolved commit / weights sha256) and the data source, so `pq.read_table(OUT)` joins back onto the
input on (source_file, entry). Shards are written atomically; a rerun skips the finished ones (resume after a kill),
and refuses an output folder made with another model or data.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if __package__ in (None, ""):  # `python recipes/predict.py` / `accelerate launch recipes/predict.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset_builder import schema  # noqa: E402
from minerva_common.atomic import atomic_path, write_text_atomic  # noqa: E402

INFO_FILE = "predictions.json"
MARKER_FILE = ".predict-options.json"
METADATA_KEY = b"minerva_fm.predict"
ROOT_FOLDER = "anatuples"
KEY_COLUMNS = tuple(schema.KEY_COLUMNS)
BASELINE_COLUMNS = tuple(schema.BASELINE_COLUMNS)
PRECISIONS = ("fp32", "bf16", "fp16")
MODEL_INPUTS = ("object_pid", "object_features", "event_features")  # collator.INPUT_COLUMNS
READ_COLUMNS = (*KEY_COLUMNS, *MODEL_INPUTS, *BASELINE_COLUMNS)  # all predict reads (truth columns are not)


class PredictError(ValueError):
    """A predict run cannot start or continue (layout mismatch, foreign output folder, unknown input)."""


# ------------------------------------------------------------------------------------------------- output schema
def output_schema(task: str) -> pa.Schema:
    """Columns of a prediction shard for `task` ("regression" / "classification")."""
    keys = [pa.field(name, schema.KEY_COLUMNS[name]) for name in KEY_COLUMNS]
    if task == "regression":
        model = [pa.field("e_avail_pred", pa.float32())]
    else:
        model = [pa.field("probabilities", pa.list_(pa.float32(), schema.NUM_TOPOLOGIES)),
                 *(pa.field(f"score_{signal}", pa.float32()) for signal in schema.SIGNAL_CLASSES),
                 pa.field("predicted_topology", pa.int32())]
    baselines = [pa.field(name, schema.BASELINE_COLUMNS[name]) for name in BASELINE_COLUMNS]
    return pa.schema(keys + model + baselines)


def output_table(table: pa.Table, values: np.ndarray, task: str) -> pa.Table:
    """Keys and baselines of the input `table` next to the model `values` ((B,) GeV or (B, 5) probabilities)."""
    target = output_schema(task)
    columns = {name: table.column(name) for name in KEY_COLUMNS + BASELINE_COLUMNS}
    if task == "regression":
        columns["e_avail_pred"] = pa.array(values.astype(np.float32))
    else:
        probabilities = values.astype(np.float32)
        columns["probabilities"] = pa.FixedSizeListArray.from_arrays(pa.array(probabilities.ravel()),
                                                                     schema.NUM_TOPOLOGIES)
        for signal, classes in schema.SIGNAL_CLASSES.items():
            columns[f"score_{signal}"] = pa.array(probabilities[:, list(classes)].sum(axis=1))
        columns["predicted_topology"] = pa.array(probabilities.argmax(axis=1).astype(np.int32))
    return pa.Table.from_arrays([columns[f.name] for f in target], schema=target)


# ------------------------------------------------------------------------------------------------- model side
def parse_model_ref(ref: str) -> tuple[str, str | None]:
    """"DIR_OR_REPO[@revision]" -> (path or repo id, revision or None); a local path containing '@' stays whole."""
    if Path(ref).exists() or "@" not in ref:
        return ref, None
    name, revision = ref.rsplit("@", 1)
    return name, revision or None


def model_provenance(path_or_repo: str, revision: str | None) -> dict:
    """Model id, requested revision, resolved commit (Hub snapshot) and weights sha256 (local folder)."""
    from recipes.evaluate import resolve_model_dir

    folder = resolve_model_dir(path_or_repo, revision)
    commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) and not Path(path_or_repo).is_dir() else None
    weights = sorted(folder.glob("*.safetensors"))
    digest = hashlib.sha256()
    for path in weights:
        digest.update(path.read_bytes())
    return {"model_id": str(path_or_repo), "model_revision": revision, "model_commit": commit,
            "model_weights_sha256": digest.hexdigest() if weights else None}


def expected_layout(config) -> dict[str, int]:
    """The input widths a model config declares: object features, event features, PID vocabulary."""
    names = {"object_features": ("num_object_features",), "event_features": ("num_event_features",),
             "pid_vocab": ("pid_vocab_size", "num_pid_embeddings")}
    layout = {}
    for key, attributes in names.items():
        for attribute in attributes:
            if getattr(config, attribute, None) is not None:
                layout[key] = int(getattr(config, attribute))
                break
    if "object_features" in layout and getattr(config, "model_type", "").endswith("event_mlp"):
        layout.pop("object_features")  # the event MLP reads event features only
    return layout


def data_layout(arrow_schema: pa.Schema) -> dict[str, int]:
    """Input widths of the data from its Arrow schema (object / event feature counts; the PID vocabulary of schema.py)."""
    def width(name: str) -> int | None:
        if name not in arrow_schema.names:
            return None
        arrow_type = arrow_schema.field(name).type
        while pa.types.is_list(arrow_type) and name == "object_features":
            arrow_type = arrow_type.value_type
        return arrow_type.list_size if pa.types.is_fixed_size_list(arrow_type) else None

    return {"object_features": width("object_features"), "event_features": width("event_features"),
            "pid_vocab": schema.PID_VOCAB_SIZE}


SCHEMA_VERSION_KEY = b"minerva_fm.schema_version"


def data_schema_version(data: list[str], revision: str | None) -> int | None:
    """The converted-dataset schema version of the data: a local shard's Parquet metadata or `manifest.json`
    (local or on the Hub); ROOT inputs are converted by this code (its `schema.SCHEMA_VERSION`); None if unknown."""
    if is_root_input(data):
        return getattr(schema, "SCHEMA_VERSION", None)
    root = Path(data[0])
    if root.is_dir():
        shard = next(iter(sorted(root.glob("data/*/*.parquet"))), None)
        metadata = (pq.read_schema(shard).metadata or {}) if shard else {}
        if SCHEMA_VERSION_KEY in metadata:
            return int(metadata[SCHEMA_VERSION_KEY])
        manifest = root / "manifest.json"
        return json.loads(manifest.read_text()).get("schema_version") if manifest.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        manifest = hf_hub_download(data[0], "manifest.json", repo_type="dataset", revision=revision)
    except Exception:  # noqa: BLE001 - a Hub dataset without a manifest has no recorded version
        return None
    return json.loads(Path(manifest).read_text()).get("schema_version")


def model_schema_version(config) -> int | None:
    """The schema version a model was trained on (`config.minerva_schema_version`, set at export), if recorded."""
    value = getattr(config, "minerva_schema_version", None)
    return int(value) if value is not None else None


def check_schema_version(model_name: str, config, data_version: int | None, data_name: str) -> None:
    """Raise a one-line `PredictError` when data, this code and the model disagree on the schema version."""
    code_version = getattr(schema, "SCHEMA_VERSION", None)
    if data_version is not None and code_version is not None and data_version != code_version:
        raise PredictError(f"{data_name} was converted with schema version {data_version}; this minerva-fm reads "
                           f"version {code_version} (reconvert the data or use the matching minerva-fm)")
    model_version = model_schema_version(config)
    known = data_version if data_version is not None else code_version
    if model_version is not None and known is not None and model_version != known:
        raise PredictError(f"model {model_name} was trained on schema version {model_version}, {data_name} has "
                           f"version {known} (docs/tensor-layout.md, dataset_builder/schema.py)")


def check_layout(model_name: str, config, arrow_schema: pa.Schema, data_name: str) -> None:
    """Raise a one-line `PredictError` when the model's input layout does not match the data's columns."""
    missing = [name for name in READ_COLUMNS if name not in arrow_schema.names]
    if missing:
        raise PredictError(f"{data_name}: not converted MINERvA events (schema {schema.__name__}): "
                           f"missing columns {missing}")
    want, have = expected_layout(config), data_layout(arrow_schema)
    labels = {"object_features": "features per object", "event_features": "event features",
              "pid_vocab": "PID indices"}
    wrong = [f"{labels[k]}: model {want[k]}, data {have[k]}" for k in want if have.get(k) != want[k]]
    if wrong:
        raise PredictError(f"model {model_name} does not fit the input layout of {data_name} "
                           f"({'; '.join(wrong)}; docs/tensor-layout.md)")


# ------------------------------------------------------------------------------------------------- data side
@dataclass(frozen=True)
class Unit:
    """One output shard: shard `index` of `n` of a converted `split`, or one ROOT file (`path`)."""

    name: str
    split: str | None = None
    index: int = 0
    n: int = 1
    path: str | None = None


def is_root_input(data: list[str]) -> bool:
    """True when the inputs are ROOT files or folders holding them."""
    def rooty(item: str) -> bool:
        path = Path(item)
        return item.endswith(".root") or (path.is_dir() and not (path / "data").is_dir()
                                           and any(path.rglob("*.root")))
    return bool(data) and all(rooty(item) for item in data)


def dataset_units(data: str, splits: list[str] | None, revision: str | None) -> tuple[list[Unit], dict]:
    """(units, {split: streaming dataset}) of a converted folder or Hub dataset, one unit per input shard."""
    from dataset_builder.hf_dataset import load_events

    streams = {}
    for split in splits or schema.SPLITS:
        try:
            streams[split] = load_events(data, split, revision, streaming=True, columns=list(READ_COLUMNS))
        except (FileNotFoundError, ValueError) as err:
            if splits:  # asked for explicitly
                raise PredictError(f"{data}: cannot open split {split!r}: {err}") from err
    if not streams:
        raise PredictError(f"{data}: no split of {', '.join(schema.SPLITS)} found (a converted folder "
                           f"<dir>/data/<split>/*.parquet or a Hub dataset id)")
    units = [Unit(f"{split}/{split}-{k:05d}-of-{stream.num_shards:05d}", split, k, stream.num_shards)
             for split, stream in streams.items() for k in range(stream.num_shards)]
    return units, streams


def root_units(data: list[str]) -> list[Unit]:
    """One unit per AnaTuple ROOT file (folders searched recursively)."""
    from dataset_builder.convert import expand_inputs

    found = expand_inputs(data)
    files = found[0] if isinstance(found, tuple) else found  # (files, duplicates dropped) in newer converters
    return [Unit(f"{ROOT_FOLDER}/{path.stem}", path=str(path)) for path in files]


def converted_tables(path: str, options=None) -> Iterator[pa.Table]:
    """Converted Arrow tables of one ROOT file: `convert.iter_converted_tables` when available, else a temporary
    conversion with `convert.convert` (same rows, every split of the file, in entry order)."""
    from dataset_builder import convert

    options = options or convert.ConvertOptions()
    generator = getattr(convert, "iter_converted_tables", None)
    if generator is not None:
        yield from generator(path, options)
        return
    with tempfile.TemporaryDirectory(prefix="minerva-predict-") as tmp:
        convert.convert([path], tmp, options, workers=1, progress=False)
        shards = sorted(Path(tmp, "data").rglob("*.parquet"))
        table = pa.concat_tables([pq.read_table(s, schema=schema.PARQUET_SCHEMA) for s in shards]) if shards \
            else schema.PARQUET_SCHEMA.empty_table()
        yield table.sort_by("entry")


def rebatch(tables: Iterator[pa.Table], batch_size: int) -> Iterator[pa.Table]:
    """Slices of at most `batch_size` rows (zero-copy) of each table."""
    for table in tables:
        for start in range(0, table.num_rows, batch_size):
            yield table.slice(start, batch_size)


def unit_tables(unit: Unit, streams: dict, batch_size: int) -> Iterator[pa.Table]:
    """Arrow batches of one unit's events (a converted stream reads only `READ_COLUMNS`)."""
    from dataset_builder.hf_dataset import iter_tables

    if unit.path is not None:
        yield from rebatch(converted_tables(unit.path), batch_size)
        return
    shard = streams[unit.split].shard(num_shards=unit.n, index=unit.index)
    yield from iter_tables(shard, batch_size)


# ------------------------------------------------------------------------------------------------- running
def autocast_context(device, precision: str):
    """`torch.autocast` for bf16/fp16, else a null context."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def model_outputs(model, batch: dict, task: str) -> np.ndarray:
    """(B,) E_avail in GeV (regression) or (B, 5) softmax probabilities (classification)."""
    import torch

    out = model(**batch)
    if task == "regression":
        return out.predictions.float().cpu().numpy()
    return torch.softmax(out.logits.float(), dim=-1).cpu().numpy()


def predict_unit(model, task: str, tables: Iterator[pa.Table], collator, device, precision: str, target: Path,
                 metadata: dict, progress) -> int:
    """Predict every batch of one unit into `target` (atomic: temp file, renamed when complete); rows written."""
    import torch

    schema_out = output_schema(task).with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    rows = 0
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema_out, compression="zstd") as writer:
        for table in tables:
            if table.num_rows == 0:
                continue
            batch = {k: v.to(device, non_blocking=True) for k, v in collator.collate_arrow(table).items()}
            with torch.inference_mode(), autocast_context(device, precision):
                values = model_outputs(model, batch, task)
            writer.write_table(output_table(table, values, task).replace_schema_metadata(schema_out.metadata))
            rows += table.num_rows
            progress.update(table.num_rows)
        if rows == 0:
            writer.write_table(schema_out.empty_table())
    return rows


def check_marker(out: Path, options: dict) -> None:
    """Write the run's options marker, or refuse an output folder written for another model / data."""
    marker = out / MARKER_FILE
    text = json.dumps(options, sort_keys=True, indent=1)
    if marker.is_file():
        previous = json.loads(marker.read_text())
        differ = [f"{k}={previous.get(k)!r} there, {options.get(k)!r} now" for k in sorted({*previous, *options})
                  if previous.get(k) != options.get(k)]
        if differ:
            raise PredictError(f"{out} holds predictions of another run ({'; '.join(differ)}); use a new --out")
        return
    write_text_atomic(marker, text)


@dataclass
class PredictConfig:
    """Options of one predict run (the command line, typed)."""

    model: str
    data: list[str]
    out: str
    split: list[str] | None = None
    data_revision: str | None = None
    batch_size: int = 4096
    precision: str = "fp32"
    cpu: bool = False
    progress: bool = True


def build_accelerator(cpu: bool):
    """An `Accelerator` on CPU when asked, with `ACCELERATE_USE_CPU` or without CUDA (gloo under torchrun)."""
    import torch
    from accelerate import Accelerator

    use_cpu = cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes", "on") \
        or not torch.cuda.is_available()
    return Accelerator(cpu=use_cpu)


def open_data(cfg: PredictConfig, model_id: str, config) -> tuple[list[Unit], dict, int | None]:
    """(units, {split: stream}, data schema version) of `cfg.data`, after the layout and version checks."""
    roots = is_root_input(cfg.data)
    if not roots and len(cfg.data) != 1:
        raise PredictError(f"--data takes one converted folder / Hub dataset id, or ROOT files; got {cfg.data}")
    data_name = ", ".join(cfg.data) if roots else cfg.data[0]
    units, streams = (root_units(cfg.data), {}) if roots else dataset_units(cfg.data[0], cfg.split, cfg.data_revision)
    data_version = data_schema_version(cfg.data, cfg.data_revision)
    check_schema_version(model_id, config, data_version, data_name)
    arrow_schema = next(iter(streams.values())).features.arrow_schema if streams else schema.PARQUET_SCHEMA
    check_layout(model_id, config, arrow_schema, data_name)
    return units, streams, data_version


def run_predict(cfg: PredictConfig) -> dict:
    """Predict every unit assigned to this process; the main process writes `predictions.json`; return it."""
    from tqdm.auto import tqdm

    from dataset_builder.collator import MinervaCollator
    from recipes.evaluate import load_model

    if cfg.precision not in PRECISIONS:
        raise PredictError(f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    started = time.perf_counter()
    accelerator = build_accelerator(cfg.cpu)
    model_id, revision = parse_model_ref(cfg.model)
    model, info = load_model(model_id, revision)
    task = info["task"]
    provenance = {**model_provenance(model_id, revision), "task": task, "backbone": info.get("backbone"),
                  "model_name": info.get("name")}
    units, streams, data_version = open_data(cfg, model_id, model.config)
    out = Path(cfg.out)
    run_options = {**provenance, "data": cfg.data, "data_revision": cfg.data_revision, "split": cfg.split,
                   "data_schema_version": data_version, "topology_names": list(schema.TOPOLOGY_NAMES)}
    if accelerator.is_main_process:
        check_marker(out, run_options)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        check_marker(out, run_options)

    collator = MinervaCollator(task=None)
    model = model.to(accelerator.device).eval()
    mine = units[accelerator.process_index::accelerator.num_processes]
    bar = tqdm(desc=f"predict {info.get('name')} [{accelerator.process_index}]", unit="ev", unit_scale=True,
               disable=not cfg.progress, position=accelerator.process_index)
    loop_start, rows = time.perf_counter(), 0
    for unit in mine:
        target = out / f"{unit.name}.parquet"
        if target.is_file():
            continue
        metadata = {**run_options, "unit": unit.name, "split_of_input": unit.split, "input_file": unit.path,
                    "process_index": accelerator.process_index, "num_processes": accelerator.num_processes}
        tables = unit_tables(unit, streams, cfg.batch_size)
        if unit.path is not None:
            tables = _checked_root_tables(tables, model_id, model.config, unit.path)
        rows += predict_unit(model, task, tables, collator, accelerator.device, cfg.precision, target, metadata, bar)
    bar.close()
    timing = {"startup_s": loop_start - started, "predict_s": time.perf_counter() - loop_start, "events": rows}
    accelerator.wait_for_everyone()
    summary = {}
    if accelerator.is_main_process:
        summary = write_info(out, units, run_options)
        summary["timing_main_process"] = timing  # this run only (skipped shards not counted); not in the JSON
    accelerator.wait_for_everyone()
    return summary


def _checked_root_tables(tables: Iterator[pa.Table], model_id: str, config, path: str) -> Iterator[pa.Table]:
    """Pass the converted tables through after checking the first one's layout against the model."""
    for index, table in enumerate(tables):
        if index == 0:
            check_layout(model_id, config, table.schema, path)
        yield table


def write_info(out: Path, units: list[Unit], run_options: dict) -> dict:
    """`predictions.json`: the run's options, every shard with its row count, the total (written last)."""
    shards = []
    for unit in units:
        path = out / f"{unit.name}.parquet"
        if not path.is_file():
            raise PredictError(f"{path} is missing after every process finished")
        shards.append({"path": f"{unit.name}.parquet", "split": unit.split, "input_file": unit.path,
                       "rows": pq.read_metadata(path).num_rows})
    info = {**run_options, "n_events": sum(s["rows"] for s in shards), "shards": shards,
            "columns": output_schema(run_options["task"]).names}
    write_text_atomic(out / INFO_FILE, json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


# ------------------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The predict command-line options (shared by this script and `minerva-fm predict`)."""
    parser.add_argument("--model", required=True,
                        help="save_pretrained / LoRA adapter folder or Hub model id, optionally @revision (required)")
    parser.add_argument("--data", required=True, nargs="+",
                        help="a converted Parquet folder, a Hub dataset id, or AnaTuple ROOT files / folders (required)")
    parser.add_argument("--out", required=True, help="output folder of the Parquet prediction shards (required)")
    parser.add_argument("--split", nargs="+", default=None,
                        help="splits of a converted / Hub dataset to predict (default: every split present)")
    parser.add_argument("--data-revision", default=None, help="Hub revision of --data (default: %(default)s = main)")
    parser.add_argument("--batch-size", type=int, default=4096, help="events per forward pass (default: %(default)s)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="autocast precision on the accelerator (default: %(default)s)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present (default: off)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")
    return parser


def config_from_args(args: argparse.Namespace) -> PredictConfig:
    """`PredictConfig` from parsed arguments."""
    return PredictConfig(model=args.model, data=list(args.data), out=args.out, split=args.split,
                         data_revision=args.data_revision, batch_size=args.batch_size, precision=args.precision,
                         cpu=args.cpu, progress=not args.no_progress)


def run_from_args(args: argparse.Namespace) -> int:
    """Run predict; print one line with what was written, or one error line (exit status 1)."""
    from dataset_builder.convert import ConversionError

    try:
        info = run_predict(config_from_args(args))
    except (PredictError, ConversionError, FileNotFoundError) as err:
        print(f"minerva-fm predict: error: {err}", file=sys.stderr)
        return 1
    if info:
        print(f"wrote {len(info['shards'])} prediction shards ({info['n_events']} events) and "
              f"{Path(args.out) / INFO_FILE}")
    return 0


def register(subparsers) -> None:
    """Add `predict` to the `minerva-fm` parser."""
    parser = subparsers.add_parser("predict", help="per-event predictions of a model over converted / Hub / AnaTuple "
                                                   "data -> Parquet shards keyed by (source_file, entry)")
    add_arguments(parser)
    parser.set_defaults(func=run_from_args)


def main(argv: list[str] | None = None) -> int:
    """`python recipes/predict.py --model ... --data ... --out ...` (also under accelerate launch / torchrun)."""
    return run_from_args(add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
