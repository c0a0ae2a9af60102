"""The transfer study (issue 9 §3): label budget x init x fine-tuning mode x task, same step budget per cell.

    minerva-fm transfer-study --config recipes/configs/transfer_study_tiny.yaml      # CPU-sized, ~30 min on 2 cores
    minerva-fm transfer-study --paper-sizes                                           # paper grid (GPU)
    minerva-fm transfer-study --config ... --workers=2 --steps=400                    # dotted config overrides

Steps: a synthetic MINERvA sample (`dataset_builder.synthetic` + `convert`) unless `data.path` names a converted
folder -> one pretraining per init (`recipes.pretrain.run_pretraining`, reused by every cell; "rw" needs none) ->
deterministic label subsets (the first n events of a seeded permutation of the train split, so the subsets of one seed
are nested) -> one `recipes.finetune.train` per cell, evaluated on the whole test split by `recipes.evaluate` (IQR of
E_pred/E_true overall and at low q3; TPR at the cut tagger's FPR per signal) -> the study JSON
(minerva_common/transfer_study.py) + plots (recipes/study_plots.py).

Every cell writes `<work_dir>/cells/<cell>/cell.json` when it is done, and a rerun skips finished cells, so a killed
study resumes and a grid can grow (more seeds) without redoing anything. Validation (best-model selection) uses the
same `max_eval_events` validation events in every cell, also for the small label budgets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minerva_common import transfer_study as contract
from minerva_common.atomic import atomic_path, write_text_atomic

CONFIGS = Path(__file__).parent / "configs"
TINY_CONFIG = CONFIGS / "transfer_study_tiny.yaml"
PAPER_CONFIG = CONFIGS / "transfer_study_paper.yaml"
CELL_FILE = "cell.json"
PRETRAIN_RECORD = "study_pretraining.json"


class StudyError(ValueError):
    """A study config or input that cannot be used; one-line message."""


# ----------------------------------------------------------------------------------------------------------- config
@dataclass
class GridBlock:
    """One rectangular block of the grid; the study runs the union of its blocks (duplicates once)."""

    tasks: list[str] = field(default_factory=lambda: list(contract.TASKS))
    inits: list[str] = field(default_factory=lambda: list(contract.INITS))
    modes: list[str] = field(default_factory=lambda: list(contract.MODES))
    labels: list[int | None] = field(default_factory=lambda: [1000, 3000, 10_000, 30_000, None])  # None = all
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    rw_modes: list[str] = field(default_factory=lambda: ["full"])  # modes of init rw (frozen / lora: random backbone)


@dataclass
class PretrainSpec:
    """How one init is pretrained: a pretraining YAML + overrides, optionally continuing another init's backbone."""

    name: str = ""  # the init name the cells use ("jet", "minerva-mpm", "jet-minerva-mpm")
    config: str = ""  # pretraining YAML (relative to the study YAML, or recipes/configs/)
    overrides: list[str] = field(default_factory=list)  # dotted PretrainConfig overrides
    corpus: str = "minerva"  # "jets": the study's generated Pythia jet corpus; "minerva": the study's MINERvA sample
    init_from: str | None = None  # another spec's name whose backbone this one continues from
    objective: str = ""  # description for the record (default: taken from the pretraining record)


@dataclass
class StudyDataConfig:
    """The MINERvA sample of the study: a converted folder, or synthetic events generated into the work folder."""

    path: str = ""  # converted Parquet folder; empty = generate `events` synthetic events
    events: int = 20_000  # synthetic events (80 / 10 / 10 percent train / validation / test)
    seed: int = 0  # seed of the synthetic samples and the jet corpus
    origin: str = "synthetic"  # synthetic | simulation | data (recorded in the study JSON)
    # Stand-in for MINERvA *data* in the masked-object corpus: a second synthetic sample (detector-shifted, another
    # seed) converted and then stripped of truth, baselines and weights, as converted data AnaTuples are. 0 = none.
    data_events: int = 10_000
    jets: int = 2000  # Pythia jets for the "jets" corpus (only when a pretraining spec uses it)
    jet_workers: int = 2  # Pythia processes of the jet corpus


@dataclass
class TransferStudyConfig:
    """The whole study: grid, fine-tuning recipe per cell, pretraining per init, data, output."""

    name: str = "transfer_study_pet_tiny_cpu"  # study name (plot titles)
    finetune_config: str = "tiny_omnilearned_cpu.yaml"  # the cells' base finetune YAML (relative as `config`)
    finetune_overrides: list[str] = field(default_factory=list)  # extra dotted FinetuneConfig overrides
    steps: int = 150  # optimizer steps of every cell
    batch_size: int = 128  # events per optimizer step of every cell
    lr: float = 5e-3  # peak learning rate of every cell (cosine to 0)
    warmup_steps: int = 8  # linear warm-up steps of every cell
    eval_every: int = 75  # validation / best-model selection cadence of every cell
    max_eval_events: int = 1024  # validation events per evaluation (the same for every label budget)
    test_max_events: int | None = None  # test events of the final metrics (None: the whole test split)
    grid: list[dict[str, Any]] = field(default_factory=lambda: [{}])  # GridBlock fields per block
    pretraining: list[dict[str, Any]] = field(default_factory=list)  # PretrainSpec fields per pretrained init
    data: StudyDataConfig = field(default_factory=StudyDataConfig)
    work_dir: str = "runs/transfer_study"  # data, pretraining, label subsets and one folder per cell
    output: str = "benchmarks/results/transfer_study_pet_tiny_cpu.json"  # study JSON; plots beside it
    workers: int = 2  # cells trained in parallel (one process each)
    threads_per_worker: int = 1  # torch threads of each cell and of each pretraining
    keep_models: bool = False  # keep every cell's exported model (default: only cell.json and the eval JSON)
    run_cells: bool = True  # false: only collect the finished cells into the JSON (the rest listed as missing)
    plots: bool = True  # write the study plots beside the JSON

    def __post_init__(self) -> None:
        if self.steps < 1 or self.workers < 1 or self.threads_per_worker < 1:
            raise ValueError(f"need steps, workers, threads_per_worker >= 1; got {self.steps}, {self.workers}, "
                             f"{self.threads_per_worker}")

    def blocks(self) -> list[GridBlock]:
        """The grid blocks, typed and checked."""
        return [_typed_block(values, f"grid[{i}]") for i, values in enumerate(self.grid)]

    def specs(self) -> list[PretrainSpec]:
        """The pretraining specs, typed and checked, in an order where `init_from` comes first."""
        specs = [_typed(PretrainSpec, values, f"pretraining[{i}]") for i, values in enumerate(self.pretraining)]
        names = [s.name for s in specs]
        for spec in specs:
            if spec.name not in contract.INITS or spec.name == "rw":
                raise ValueError(f"pretraining: name {spec.name!r} must be one of {list(contract.INITS[1:])}")
            if spec.init_from is not None and spec.init_from not in names:
                raise ValueError(f"pretraining {spec.name}: init_from {spec.init_from!r} is no other spec {names}")
            if spec.corpus not in ("jets", "minerva"):
                raise ValueError(f"pretraining {spec.name}: corpus must be 'jets' or 'minerva', got {spec.corpus!r}")
        return sorted(specs, key=lambda s: s.init_from is not None)


def _typed(cls, values: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; valid: {sorted(known)}")
    return cls(**values)


def _typed_block(values: dict, where: str) -> GridBlock:
    block = _typed(GridBlock, values, where)
    for key, allowed in (("tasks", contract.TASKS), ("inits", contract.INITS), ("modes", contract.MODES),
                         ("rw_modes", contract.MODES)):
        bad = [v for v in getattr(block, key) if v not in allowed]
        if bad:
            raise ValueError(f"{where}.{key}: {bad[0]!r} is not one of {list(allowed)}")
    if any(n is not None and n < 1 for n in block.labels):
        raise ValueError(f"{where}.labels: budgets must be >= 1 or null (all), got {block.labels}")
    return block


def load_study_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None
                      ) -> TransferStudyConfig:
    """The study config: defaults <- YAML (with `base:`) <- dotted overrides; blocks and specs checked."""
    from recipes.config import ConfigError, load_typed_config

    cfg = load_typed_config(TransferStudyConfig, path, overrides)
    try:
        cfg.blocks(), cfg.specs()
    except ValueError as err:
        raise ConfigError(f"{path or 'command line'}: {err}") from None
    cfg._source = str(path) if path else None  # where relative YAML names resolve
    return cfg


def resolve_yaml(name: str, cfg: TransferStudyConfig) -> Path:
    """A config file named in the study YAML: as given, relative to the study YAML, or under recipes/configs/."""
    source = getattr(cfg, "_source", None)
    for candidate in (Path(name), *([Path(source).parent / name] if source else []), CONFIGS / name):
        if candidate.is_file():
            return candidate
    raise StudyError(f"config file {name!r} not found (as given, beside the study config or in {CONFIGS})")


# ------------------------------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class CellKey:
    """One point of the grid."""

    task: str
    init: str
    mode: str
    labels: int  # actual labelled events (budget capped at the train split)
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.task}/{self.init}-{self.mode}/labels-{self.labels}/seed-{self.seed}"


def grid_cells(cfg: TransferStudyConfig, n_train: int) -> list[CellKey]:
    """Every cell of the union of the blocks, budgets capped at `n_train` (duplicates after capping once)."""
    seen: dict[CellKey, None] = {}
    for block in cfg.blocks():
        budgets = sorted({min(n or n_train, n_train) for n in block.labels})
        for task in block.tasks:
            for init in block.inits:
                for mode in (block.rw_modes if init == "rw" else block.modes):
                    for labels in budgets:
                        for seed in block.seeds:
                            seen[CellKey(task, init, mode, labels, seed)] = None
    return list(seen)


# -------------------------------------------------------------------------------------------------------------- data
def prepare_data(cfg: TransferStudyConfig, work: Path) -> Path:
    """The converted MINERvA folder of the study (generated once into work/data when `data.path` is empty)."""
    if cfg.data.path:
        if not Path(cfg.data.path).is_dir():
            raise StudyError(f"data.path {cfg.data.path!r} is not a converted Parquet folder")
        return Path(cfg.data.path)
    data = work / "data"
    if (data / "manifest.json").is_file():
        return data
    from dataset_builder.convert import ConvertOptions, convert
    from dataset_builder.synthetic import write_anatuples

    files = write_anatuples(work / "root", n_events=cfg.data.events, seed=cfg.data.seed,
                            n_files=max(1, min(4, cfg.data.events // 10_000)))
    convert(files, data, ConvertOptions(), workers=1, progress=False)
    return data


def split_parquet(data: Path, split: str) -> list[Path]:
    """The Parquet shards of one split of a converted folder."""
    from dataset_builder.hf_dataset import split_files

    return [Path(p) for p in split_files(data, split)]


def count_events(data: Path, split: str) -> int:
    """Events of one split (Parquet footers only)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in split_parquet(data, split))


def label_subset(data: Path, n: int, seed: int, root: Path) -> Path:
    """A dataset folder whose train split is the first `n` events of the seed's permutation of `data`'s train split
    (validation / test linked to the originals); the whole folder itself when `n` covers the split."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    n_train = count_events(data, "train")
    if n >= n_train:
        return data
    folder = root / f"seed-{seed}" / f"labels-{n}"
    target = folder / "data" / "train" / "labels.parquet"
    if target.is_file():
        return folder
    table = pa.concat_tables([pq.read_table(p) for p in split_parquet(data, "train")])
    chosen = np.sort(np.random.default_rng(seed).permutation(n_train)[:n])
    for split in ("validation", "test"):
        link = folder / "data" / split
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to((data / "data" / split).resolve(), target_is_directory=True)
    with atomic_path(target) as tmp:
        pq.write_table(table.take(chosen), tmp)
    return folder


def truthless_sample(cfg: TransferStudyConfig, work: Path) -> Path | None:
    """The "data" part of the masked-object corpus (made once into work/data-notruth): a shifted synthetic sample
    whose truth, baseline and weight columns are null, so nothing but the detector inputs can be learnt from it."""
    if cfg.data.data_events <= 0:
        return None
    out = work / "data-notruth"
    if (out / "manifest.json").is_file():
        return out
    from dataset_builder.convert import ConvertOptions, convert
    from dataset_builder.synthetic import write_anatuples

    files = write_anatuples(work / "root-data", n_events=cfg.data.data_events, seed=cfg.data.seed + 1, shifted=True)
    staging = work / ".data-notruth"
    convert(files, staging, ConvertOptions(), workers=1, progress=False)
    for shard in (staging / "data").rglob("*.parquet"):
        strip_truth(shard)
    os.replace(staging, out)
    return out


def strip_truth(shard: Path) -> None:
    """Null every nullable non-input column of one converted shard (what a converted data file carries), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataset_builder import schema

    inputs = {*schema.KEY_COLUMNS, *schema.OBJECT_COLUMNS}
    table = pq.read_table(shard)
    for name in table.schema.names:
        if name not in inputs and schema.PARQUET_SCHEMA.field(name).nullable:
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, pa.nulls(table.num_rows, table.schema.field(name).type))
    with atomic_path(shard) as tmp:
        pq.write_table(table, tmp)


# -------------------------------------------------------------------------------------------------------- pretraining
def generate_jet_corpus(cfg: TransferStudyConfig, work: Path) -> Path:
    """The study's Pythia jet corpus (generated once into work/jets)."""
    out = work / "jets"
    if (out / "README.md").is_file():
        return out
    from dataset_builder.jets import generate_jets

    generate_jets(out, cfg.data.jets, seed=cfg.data.seed, workers=cfg.data.jet_workers, progress=False)
    return out


def pretrain_inits(cfg: TransferStudyConfig, work: Path, data: Path, needed: set[str]) -> dict[str, dict]:
    """{init: record with "backbone_dir"} for every pretrained init the grid uses; each pretrained once and reused."""
    records: dict[str, dict] = {}
    specs = {s.name: s for s in cfg.specs()}
    missing = sorted(needed - set(specs) - {"rw"})
    if missing:
        raise StudyError(f"the grid uses init {missing[0]!r} but no pretraining spec names it "
                         f"(pretraining: {sorted(specs)})")
    wanted = _with_parents(needed, specs)
    for spec in cfg.specs():
        if spec.name in wanted:
            records[spec.name] = pretrain_one(cfg, spec, work, data, records)
    return {k: v for k, v in records.items() if k in needed}


def _finished_pretraining(work: Path, needed: set[str]) -> dict[str, dict]:
    """The pretraining records already on disk (collect-only runs)."""
    paths = {name: work / "pretrain" / name / PRETRAIN_RECORD for name in needed - {"rw"}}
    return {name: json.loads(p.read_text()) for name, p in paths.items() if p.is_file()}


def _with_parents(needed: set[str], specs: dict[str, PretrainSpec]) -> set[str]:
    out = set()
    for name in needed - {"rw"}:
        while name is not None:
            out.add(name)
            name = specs[name].init_from
    return out


def pretrain_one(cfg: TransferStudyConfig, spec: PretrainSpec, work: Path, data: Path, done: dict) -> dict:
    """Pretrain one init (or reuse work/pretrain/<name> when its record exists); the record of the study JSON."""
    out = work / "pretrain" / spec.name
    record_path = out / PRETRAIN_RECORD
    if record_path.is_file():
        return json.loads(record_path.read_text())
    from recipes.config import load_typed_config
    from recipes.pretrain import PretrainConfig, run_pretraining

    corpus = generate_jet_corpus(cfg, work) if spec.corpus == "jets" else data
    overrides = [*spec.overrides, *pretrain_io_overrides(corpus, out / "run", cfg.threads_per_worker)]
    extra = truthless_sample(cfg, work) if spec.corpus == "minerva" else None
    if extra is not None:
        overrides.append(f"--data.extra_paths=[{extra}]")
    if spec.init_from:
        overrides.append(f"--model.init={done[spec.init_from]['backbone_dir']}")
    pre_cfg = load_typed_config(PretrainConfig, resolve_yaml(spec.config, cfg), overrides)
    start = time.time()
    result = run_pretraining(pre_cfg)
    sources = "; ".join(f"{s.get('kind')}: {s.get('path')}" for s in result.get("corpus", {}).get("sources", []))
    record = {"steps": int(result["steps"]), "train_flops": float(result["train_flops"]),
              "corpus": sources or str(corpus), "objective": spec.objective or _objective_text(result),
              "mask_fraction": result.get("mask_fraction"), "events_seen": result.get("events_seen"),
              "output_dir": str(result["output_dir"]), "backbone_dir": str(result["output_dir"]),
              "init_from": spec.init_from, "config": spec.config, "overrides": spec.overrides,
              "wall_seconds": round(time.time() - start, 1)}
    write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
    return record


def _objective_text(record: dict) -> str:
    """"jet_classification x1 + masked_particles x1 (mask 50 %)" from a pretraining record."""
    mix = " + ".join(f"{k} x{v:g}" for k, v in (record.get("objectives") or {}).items())
    fraction = record.get("mask_fraction")
    return mix + (f" (mask {fraction:.0%})" if fraction else "") if mix else "see config"


def pretrain_io_overrides(corpus: Path, output_dir: Path, threads: int) -> list[str]:
    """The pretraining overrides the study owns: corpus, output folder, CPU threads, no progress bars."""
    return [f"--data.path={corpus}", f"--train.output_dir={output_dir}", f"--train.num_threads={threads}",
            "--train.progress=false", "--train.tracker=none"]


def random_backbone(cfg: TransferStudyConfig, work: Path) -> Path:
    """A saved random-weights backbone of the cells' model (init rw for mode frozen / lora), made once."""
    out = work / "pretrain" / "rw-random"
    if (out / "config.json").is_file():
        return out
    import modeling
    from recipes.config import load_config

    base = load_config(resolve_yaml(cfg.finetune_config, cfg), [*cfg.finetune_overrides, "--data.path=x"])
    model = modeling.build_model(base.model.backbone, "backbone", base.model.size, **base.model.overrides)
    from minerva_common.atomic import atomic_dir

    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
    return out


# ---------------------------------------------------------------------------------------------------------- one cell
def cell_overrides(cfg: TransferStudyConfig, key: CellKey, data: Path, out: Path, init: str | None) -> list[str]:
    """The FinetuneConfig overrides of one cell: data subset, task, mode / init, the shared step budget."""
    finetune_mode = "rw" if key.init == "rw" and key.mode == "full" else key.mode
    return [*cfg.finetune_overrides, f"--data.path={data}", f"--train.output_dir={out}",
            f"--model.task={key.task}", f"--model.mode={finetune_mode}",
            f"--model.init={init if finetune_mode != 'rw' else 'null'}", f"--train.max_steps={cfg.steps}",
            f"--train.seed={key.seed}", f"--data.batch_size={cfg.batch_size}", f"--optim.lr={cfg.lr}",
            f"--optim.warmup_steps={cfg.warmup_steps}", f"--train.eval_every={cfg.eval_every}",
            "--train.save_every=0", f"--train.log_every={max(cfg.steps // 5, 1)}",
            f"--data.max_eval_events={cfg.max_eval_events}", f"--train.num_threads={cfg.threads_per_worker}",
            "--train.progress=false", "--train.tracker=none", f"--name={key.init}-{key.mode}"]


def run_cell(job: dict) -> dict:
    """Train + evaluate one cell (in a worker process); writes and returns its cell.json."""
    import shutil

    import torch

    from recipes.config import load_config
    from recipes.evaluate import evaluate
    from recipes.finetune import train

    torch.set_num_threads(job["threads"])
    key, out = CellKey(**job["key"]), Path(job["out"])
    start = time.time()
    cfg = load_config(job["finetune_config"], job["overrides"])
    summary = train(cfg)
    results = evaluate(summary["model_dir"], job["test_data"], "test", out_dir=str(out / "eval"), n_bootstrap=0,
                       make_plots=False, max_events=job["test_max_events"],
                       device="cpu" if cfg.train.cpu else None)
    cell = {**dataclasses.asdict(key), "backbone": cfg.model.backbone, "size": cfg.model.size,
            "finetune_mode": cfg.model.mode, "steps": int(summary["step"]),
            "train_flops": float(summary["compute/flops"]), "n_trainable": int(summary["n_trainable"]),
            "n_params": int(summary["n_params"]), "events_seen": int(summary["compute/events"]),
            "best_step": int(summary["best_step"]), "wall_seconds": round(time.time() - start, 1),
            "metrics": cell_metrics(key.task, results), "baselines": baseline_metrics(key.task, results),
            "recipe": job["recipe"]}
    if not job["keep_models"]:
        for name in ("model", "adapter", "best", "checkpoints", "logs"):
            shutil.rmtree(out / name, ignore_errors=True)
    write_text_atomic(out / CELL_FILE, json.dumps(contract_ready(cell), indent=2) + "\n")
    return cell


def contract_ready(values: Any) -> Any:
    """numpy / NaN-free nested values (the results contract's json_safe)."""
    from minerva_common.results import json_safe

    return json_safe(values)


def cell_metrics(task: str, results: dict) -> dict:
    """The paper's numbers of the model in one eval_results dict."""
    entry = results["models"][results["primary_model"]][task]
    if task == "regression":
        return {"iqr": entry["overall"]["iqr"], "iqr_low_q3": entry["low_q3"]["iqr"],
                "mpv": entry["overall"]["mpv"], "iqr_over_mpv": entry["overall"]["iqr_over_mpv"],
                "n_test": entry["overall"]["n"]}
    return {"tpr_at_cut_fpr": {s: b["tpr_model"] for s, b in entry.items()},
            "auroc": {s: b["auroc"] for s, b in entry.items()}}


def baseline_metrics(task: str, results: dict) -> dict:
    """The calorimetric / cut-tagger numbers on the same test events."""
    if task == "regression":
        entry = results["baselines"]["calorimetric"]["regression"]
        return {"calorimetric": {"iqr": entry["overall"]["iqr"], "iqr_low_q3": entry["low_q3"]["iqr"]}}
    entry = results["baselines"]["cut"]["classification"]
    return {"cut": {"tpr_at_cut_fpr": {s: b["tpr_cut"] for s, b in entry.items()},
                    "fpr_cut": {s: b["fpr_cut"] for s, b in entry.items()}}}


# ------------------------------------------------------------------------------------------------------- the study
def run_transfer_study(cfg: TransferStudyConfig, progress: bool = True) -> contract.TransferStudy:
    """Data -> pretraining per init -> every unfinished cell (parallel workers) -> study JSON + plots."""
    start = time.time()
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg, work)
    n_train = count_events(data, "train")
    cells = grid_cells(cfg, n_train)
    if not cfg.run_cells:
        pretrained = _finished_pretraining(work, {c.init for c in cells})
    else:
        todo = sorted((k for k in cells if not cell_done(cfg, work, k)), key=cell_priority)
        scratch = [k for k in todo if k.init == "rw" and k.mode == "full"]
        with CellPool(cfg.workers, progress, len(todo)) as pool:
            pool.submit([cell_job(cfg, k, data, work, None) for k in scratch])  # they train while the inits pretrain
            pretrained = pretrain_inits(cfg, work, data, {c.init for c in cells})
            inits = {name: record["backbone_dir"] for name, record in pretrained.items()}
            if any(c.init == "rw" and c.mode != "full" for c in cells):
                inits["rw"] = str(random_backbone(cfg, work))
            pool.submit([cell_job(cfg, k, data, work, inits[k.init]) for k in todo if k not in scratch])
            pool.wait()
    study = collect(cfg, work, data, n_train, cells, pretrained, time.time() - start)
    contract.dump_transfer_study(study, cfg.output)
    if cfg.plots:
        from recipes.study_plots import plot_transfer_study

        plot_transfer_study(study, Path(cfg.output).parent, Path(cfg.output).stem)
    return study


def cell_recipe(cfg: TransferStudyConfig) -> dict:
    """The settings every cell of a study shares (stored in cell.json: a finished cell is reused only under it)."""
    return {k: getattr(cfg, k) for k in ("finetune_config", "finetune_overrides", "steps", "batch_size", "lr",
                                         "warmup_steps", "eval_every", "max_eval_events", "test_max_events")}


def cell_done(cfg: TransferStudyConfig, work: Path, key: CellKey) -> bool:
    """Whether the cell's cell.json exists; one made under another recipe is an error (use another work_dir)."""
    path = work / "cells" / key.folder / CELL_FILE
    if not path.is_file():
        return False
    recipe = json.loads(path.read_text()).get("recipe")
    if recipe is not None and recipe != contract_ready(cell_recipe(cfg)):
        changed = sorted(k for k in recipe if recipe[k] != contract_ready(cell_recipe(cfg)).get(k))
        raise StudyError(f"{path} was trained with other settings ({', '.join(changed)}); use another work_dir or "
                         f"delete {work / 'cells'}")
    return True


def cell_priority(key: CellKey) -> tuple:
    """Order of the cells: first seed, mode full, the smallest budget first (a study stopped early keeps the most
    informative cells)."""
    return key.seed, contract.MODES.index(key.mode), key.labels, contract.INITS.index(key.init), key.task


def cell_job(cfg: TransferStudyConfig, key: CellKey, data: Path, work: Path, init: str | None) -> dict:
    """The picklable job of one cell (its label subset is made here, in the main process)."""
    subset = label_subset(data, key.labels, key.seed, work / "subsets")
    out = work / "cells" / key.folder
    return {"key": dataclasses.asdict(key), "out": str(out), "test_data": str(data),
            "finetune_config": str(resolve_yaml(cfg.finetune_config, cfg)),
            "overrides": cell_overrides(cfg, key, subset, out, init), "threads": cfg.threads_per_worker,
            "test_max_events": cfg.test_max_events, "keep_models": cfg.keep_models, "recipe": cell_recipe(cfg)}


class CellPool:
    """Cells run by `workers` spawned processes (no forked torch / datasets state), or in this process at `wait()`
    when workers == 1; a failed cell raises after the running ones finish."""

    def __init__(self, workers: int, progress: bool, total: int):
        from tqdm.auto import tqdm

        self.workers, self.pool, self.futures, self.queued = workers, None, [], []
        self.bar = tqdm(total=total, desc="transfer-study cells", disable=not progress or not total,
                        dynamic_ncols=True)

    def __enter__(self) -> CellPool:
        if self.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(max_workers=self.workers, max_tasks_per_child=64,
                                            mp_context=multiprocessing.get_context("spawn"))
        return self

    def submit(self, jobs: list[dict]) -> None:
        """Queue cells (started at once by the worker processes)."""
        if self.pool is None:
            self.queued += jobs
        else:
            self.futures += [self.pool.submit(run_cell, job) for job in jobs]

    def wait(self) -> None:
        """Block until every submitted cell is done."""
        from concurrent.futures import as_completed

        for job in self.queued:
            self._done(run_cell(job))
        self.queued = []
        for future in as_completed(self.futures):
            self._done(future.result())
        self.futures = []

    def _done(self, cell: dict) -> None:
        self.bar.update(1)
        self.bar.set_postfix_str(f"{cell['task'][:5]} {cell['init']}-{cell['mode']} n={cell['labels']}")

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
        self.bar.close()


def collect(cfg: TransferStudyConfig, work: Path, data: Path, n_train: int, cells: list[CellKey],
            pretrained: dict, wall: float) -> contract.TransferStudy:
    """The study record from the finished cells of this grid."""
    records, baselines, missing = [], {}, []
    for key in cells:
        path = work / "cells" / key.folder / CELL_FILE
        if not path.is_file() or (key.init != "rw" and key.init not in pretrained):
            missing.append(key.folder)
            continue
        cell = json.loads(path.read_text())
        baselines.setdefault(key.task, cell.pop("baselines"))
        records.append(cell)
    pretraining = {name: {k: v for k, v in record.items() if k != "backbone_dir"}
                   for name, record in pretrained.items()}
    dataset = {"path": str(data), "origin": cfg.data.origin, "train_events": n_train,
               "validation_events": count_events(data, "validation"), "test_events": count_events(data, "test"),
               "generated": not cfg.data.path, "synthetic_events": cfg.data.events if not cfg.data.path else None}
    config = {k: v for k, v in dataclasses.asdict(cfg).items()}
    compute = {"wall_seconds": round(wall, 1), "wall_seconds_note": "this invocation only: finished cells and "
               "pretrainings in work_dir are reused", "workers": cfg.workers, "threads_per_worker": cfg.threads_per_worker,
               "cell_wall_seconds_sum": round(sum(c.get("wall_seconds") or 0 for c in records), 1),
               "pretrain_wall_seconds_sum": round(sum(r.get("wall_seconds") or 0 for r in pretraining.values()), 1),
               "finetune_flops_sum": sum(c["train_flops"] for c in records),
               "pretrain_flops_sum": sum(r["train_flops"] for r in pretraining.values()),
               "device": "cpu", "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    return contract.TransferStudy.from_dict(contract_ready({
        "schema": contract.SCHEMA, "version": contract.VERSION, "config": config, "dataset": dataset,
        "pretraining": pretraining, "baselines": baselines, "cells": records, "compute": compute,
        "missing_cells": missing}), cfg.output)


# ---------------------------------------------------------------------------------------------------- summary table
def summary_rows(study: contract.TransferStudy) -> list[dict]:
    """Mean (and spread) over seeds per (task, init, mode, labels): the numbers of the study table."""
    import numpy as np

    groups: dict[tuple, list] = {}
    for c in study.cells:
        groups.setdefault((c.task, c.init, c.mode, c.labels), []).append(c)
    rows = []
    for (task, init, mode, labels), cells in sorted(groups.items(), key=lambda kv: (
            kv[0][0], contract.INITS.index(kv[0][1]) if kv[0][1] in contract.INITS else 99, kv[0][2], kv[0][3])):
        row = {"task": task, "init": init, "mode": mode, "labels": labels, "seeds": len(cells),
               "train_flops": float(np.mean([c.train_flops for c in cells]))}
        for name, values in metric_values(task, cells).items():
            finite = [v for v in values if v is not None]
            row[name] = float(np.mean(finite)) if finite else None
            row[f"{name}_std"] = float(np.std(finite)) if len(finite) > 1 else None
        rows.append(row)
    return rows


def metric_values(task: str, cells: list) -> dict[str, list]:
    """{metric name: per-cell values}: iqr, iqr_low_q3 (regression) or tpr_<signal> (classification)."""
    if task == "regression":
        return {k: [c.metrics.get(k) for c in cells] for k in contract.REGRESSION_METRICS}
    signals = sorted({s for c in cells for s in c.metrics["tpr_at_cut_fpr"]})
    return {f"tpr_{s}": [c.metrics["tpr_at_cut_fpr"].get(s) for c in cells] for s in signals}


def summary_markdown(study: contract.TransferStudy) -> str:
    """The study table as Markdown (mean ± std over seeds), one table per task."""
    lines = []
    rows = summary_rows(study)
    for task in contract.TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        metrics = [k for k in task_rows[0] if k not in ("task", "init", "mode", "labels", "seeds", "train_flops")
                   and not k.endswith("_std")]
        lines += [f"### {task}", "", "| init | mode | labels | seeds | FLOPs | " + " | ".join(metrics) + " |",
                  "|" + "---|" * (5 + len(metrics))]
        for r in task_rows:
            values = [_pm(r[m], r[f"{m}_std"]) for m in metrics]
            lines.append(f"| {r['init']} | {r['mode']} | {r['labels']} | {r['seeds']} | {r['train_flops']:.2e} | "
                         + " | ".join(values) + " |")
        base = study.baselines.get(task, {})
        lines += ["", f"baseline: {json.dumps(base)}", ""]
    return "\n".join(lines)


def _pm(value, std) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None else "")


# ------------------------------------------------------------------------------------------------------ command line
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option; the config-field list kept as printed."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--config`, `--paper-sizes`; every other `--key=value` is a TransferStudyConfig override (listed in the help)."""
    from recipes.config import config_help

    parser.formatter_class = _HelpFormatter
    parser.epilog = "Config overrides: --key=VALUE or --section.key=VALUE (YAML values).\n\n" + \
        config_help(TransferStudyConfig)
    parser.add_argument("--config", default=None, help=f"study YAML (None: {TINY_CONFIG.name}, CPU-sized)")
    parser.add_argument("--paper-sizes", action="store_true",
                        help=f"use {PAPER_CONFIG.name}: the paper's PET-small and the whole grid (GPU-sized)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run_from_args(args: argparse.Namespace, overrides: list[str]) -> int:
    """Run the study from the command line; prints the summary table; errors are one line, exit code 2."""
    import sys

    from recipes.config import ConfigError
    from recipes.finetune import TrainingError

    path = args.config or (PAPER_CONFIG if args.paper_sizes else TINY_CONFIG)
    try:
        cfg = load_study_config(path, overrides)
        study = run_transfer_study(cfg, progress=not args.no_progress)
    except (ConfigError, StudyError, TrainingError, contract.TransferStudyError, FileNotFoundError) as err:
        if os.environ.get("MINERVA_FM_TRACEBACK"):
            raise
        print(f"transfer-study: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(summary_markdown(study))
    print(f"wrote {cfg.output} ({len(study.cells)} cells) and its plots in {Path(cfg.output).parent}")
    return 0


__all__ = ["TINY_CONFIG", "PAPER_CONFIG", "TransferStudyConfig", "GridBlock", "PretrainSpec", "StudyDataConfig", "CellKey", "load_study_config",
           "grid_cells", "label_subset", "run_transfer_study", "run_cell", "summary_rows", "summary_markdown",
           "StudyError"]
