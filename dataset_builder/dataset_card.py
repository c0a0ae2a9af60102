"""Dataset card (README.md with `configs:` YAML) + summary table + plots for a converted-dataset folder.

`write_dataset_card(DIR)` reads `DIR/manifest.json` and the Parquet shards `DIR/data/<split>/*.parquet`, draws
`DIR/plots/*.png` (matplotlib + mplhep) and writes `DIR/README.md` atomically. The YAML maps each split to
`data/<split>/*.parquet`, so `datasets.load_dataset(DIR)` / `load_dataset("ns/name")` find the splits, and carries
`dataset_info.features` (typed, from `hf_dataset.features()`). The card is the Jinja template
`templates/dataset_card.md` rendered by `DatasetCard.from_template`; the column documentation is data
(`templates/dataset_columns.yaml`, checked against the names in schema.py). The card says when the inputs were
synthetic (the `generator` records `minerva-fm generate` leaves in the files and the converter copies to the manifest)
and which event weight `event_weight` holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from dataset_builder import schema
from minerva_common.atomic import atomic_path, write_text_atomic

SUMMARY_COLUMNS = ("n_objects", "object_pid", "e_avail", "topology", "enu", "q3", "w", "has_muon", "calo_e_avail",
                   "passes_cc_inclusive")
QUANTILES = (0.1, 0.5, 0.9)
PLOT_NAMES = ("n_objects", "object_types", "e_avail", "topology", "enu")
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))
TEMPLATE = Path(__file__).parent / "templates" / "dataset_card.md"
COLUMN_DOCS = Path(__file__).parent / "templates" / "dataset_columns.yaml"  # column documentation, as data
REFERENCE_FIXES = (
    ("PID 0 doubled as muon and padding (frozen muon embedding)", "PID 0 is reserved for padding; muon = 1, all types "
     "shifted; the collator's `attention_mask` marks real objects (never inferred from feature values)"),
    ("Muon counted twice (muon token + its own prong)", "the prong matched to the muon track is dropped"),
    ("Blob direction taken from the detector origin (~6 m upstream)",
     "blob eta/phi point from the reconstructed vertex "
     "(converter option `blob_origin`, recorded under Truncation)"),
    ("E_avail with pi+- total energy", "`e_avail` uses the MINERvA convention (kinetic p and pi+-, total pi0/gamma/e, "
     "no neutrons); the reference convention is kept as `e_avail_reference` for parity"),
    ("Hybrid q0/q3/Q2 (true Enu, reco muon, detector axis) plotted as true", "`q0`, `q3`, `q2` are true, beam frame; "
     "the hybrid is kept as `q3_hybrid`"),
    ("True W summed over nuclei and neutrons from FSI records", "`w` excludes nuclei (PDG > 1e9) and pseudo-particles; "
     "GENIE's pre-FSI `mc_w` is kept as `w_genie`"),
    ("Pion angle |p| over (py, pz, E), detector axis", "`pion_theta` from (px, py, pz) w.r.t. the beam axis; "
     "kinetic energy stored next to total energy"),
    ("Broken truth label columns (CC pi label overwritten, multi-pion flag)", "`topology` and the `is_*` flags are "
     "re-derived from final-state pion counts"),
    ("Baselines and splits joined by position across scripts", "every row is keyed by (`source_file`, `entry`)"),
    ("Counts and PDG codes stored as floats", "integers stay integers (int32/int64), flags are booleans"),
)


# ---------------------------------------------------------------------------------------------------- reading
def split_files(dataset_dir: Path) -> dict[str, list[Path]]:
    """Parquet shards per split present in the folder, in `schema.SPLITS` order."""
    found = {split: sorted((dataset_dir / "data" / split).glob("*.parquet")) for split in schema.SPLITS}
    found = {split: files for split, files in found.items() if files}
    if not found:
        raise FileNotFoundError(f"{dataset_dir}: no Parquet shards under data/<split>/*.parquet "
                                f"(expected splits {', '.join(schema.SPLITS)})")
    return found


def read_manifest(dataset_dir: Path) -> dict:
    """manifest.json of the converted folder ({} when absent)."""
    path = dataset_dir / "manifest.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err


def read_split(files: list[Path], columns=SUMMARY_COLUMNS) -> pa.Table:
    """The summary columns of a split's shards as one table."""
    tables = []
    for path in files:
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; not a converted MINERvA shard")
        tables.append(pq.read_table(path, columns=list(columns)))
    return pa.concat_tables(tables)


def split_summary(table: pa.Table) -> dict:
    """Counts, class fractions, mean objects per type, E_avail quantiles for one split."""
    n = table.num_rows
    topology = table["topology"].to_numpy(zero_copy_only=False)
    has_truth = table["topology"].null_count < n
    pids = pc.list_flatten(table["object_pid"]).to_numpy(zero_copy_only=False)
    pid_counts = np.bincount(pids, minlength=schema.PID_VOCAB_SIZE) if len(pids) else np.zeros(schema.PID_VOCAB_SIZE)
    e_avail = table["e_avail"].drop_null().to_numpy(zero_copy_only=False)
    return {
        "events": n,
        "has_truth": bool(has_truth),
        "class_fractions": {name: float(np.mean(topology == i)) if has_truth and n else None
                            for i, name in enumerate(schema.TOPOLOGY_NAMES)},
        "mean_objects": float(pc.mean(table["n_objects"]).as_py() or 0.0),
        "mean_objects_per_type": {name: float(pid_counts[i] / max(n, 1)) for i, name in enumerate(schema.PID_NAMES)
                                  if i},
        "muon_fraction": float(np.mean(table["has_muon"].to_numpy(zero_copy_only=False))) if n else 0.0,
        "e_avail_quantiles": {f"q{int(q * 100)}": float(np.quantile(e_avail, q)) for q in QUANTILES}
        if len(e_avail) else None,
        "passes_cc_inclusive": int(pc.sum(table["passes_cc_inclusive"]).as_py() or 0),
    }


def summarize(dataset_dir: Path) -> tuple[dict, dict[str, pa.Table]]:
    """Per-split summaries and the summary-column tables (for plots)."""
    tables = {split: read_split(files) for split, files in split_files(Path(dataset_dir)).items()}
    return {split: split_summary(t) for split, t in tables.items()}, tables


def format_summary(summary: dict) -> str:
    """Plain-text table: events, class fractions, mean objects, E_avail quantiles per split."""
    short = {"CC1pi_charged": "CC1pi+-", "CCNpi_charged": "CCNpi+-", "CC1pi0": "CC1pi0", "CC_other": "CCother",
             "NC": "NC"}
    header = (f"{'split':<11}{'events':>9}" + "".join(f"{short[n]:>9}" for n in schema.TOPOLOGY_NAMES)
              + f"{'<objects>':>11}{'muon':>7}" + "".join(f"{'Eavail q' + str(int(q * 100)):>12}" for q in QUANTILES))
    lines = [header, "-" * len(header)]
    for split, s in summary.items():
        fractions = "".join(f"{v:>9.3f}" if v is not None else f"{'-':>9}" for v in s["class_fractions"].values())
        quantiles = "".join(f"{v:>12.3f}" for v in s["e_avail_quantiles"].values()) if s["e_avail_quantiles"] \
            else "".join(f"{'-':>12}" for _ in QUANTILES)
        lines.append(f"{split:<11}{s['events']:>9d}{fractions}{s['mean_objects']:>11.2f}{s['muon_fraction']:>7.2f}"
                     f"{quantiles}")
    lines.append(f"{'total':<11}{sum(s['events'] for s in summary.values()):>9d}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- plots
def _save_atomic(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")


def make_plots(dataset_dir: Path, tables: dict[str, pa.Table]) -> list[Path]:
    """Key distributions per split as PNGs in `dataset_dir/plots/` (returns the written paths)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep as hep

    plt.style.use(hep.style.ROOT)
    out_dir = Path(dataset_dir) / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []

    def hist(name: str, column: str, bins, xlabel: str, log: bool = False) -> None:
        filled = {split: t[column].drop_null().to_numpy(zero_copy_only=False) for split, t in tables.items()}
        filled = {split: values for split, values in filled.items() if len(values)}
        if not filled:  # e.g. truth columns of data files
            return
        fig, ax = plt.subplots(figsize=(7, 5))
        for split, values in filled.items():
            counts, edges = np.histogram(np.clip(values, bins[0], bins[-1]), bins=bins)
            hep.histplot(counts / max(counts.sum(), 1), edges, ax=ax, label=split)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction of events")
        if log:
            ax.set_yscale("log")
        ax.legend()
        _save_atomic(fig, out_dir / f"{name}.png")
        plt.close(fig)
        written.append(out_dir / f"{name}.png")

    def bars(name: str, labels: list[str], values: dict[str, np.ndarray], ylabel: str) -> None:
        if not values:
            return
        fig, ax = plt.subplots(figsize=(8, 5))
        width = 0.8 / max(len(values), 1)
        for k, (split, heights) in enumerate(values.items()):
            ax.bar(np.arange(len(labels)) + k * width, heights, width=width, label=split)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=30, ha="right", fontsize=11)
        ax.set_ylabel(ylabel)
        ax.legend()
        _save_atomic(fig, out_dir / f"{name}.png")
        plt.close(fig)
        written.append(out_dir / f"{name}.png")

    hist("n_objects", "n_objects", np.arange(0, schema.MAX_OBJECTS + 2) - 0.5, "objects per event")
    per_type = {split: np.bincount(pc.list_flatten(t["object_pid"]).to_numpy(zero_copy_only=False),
                                   minlength=schema.PID_VOCAB_SIZE)[1:] / max(t.num_rows, 1)
                for split, t in tables.items()}
    bars("object_types", list(schema.PID_NAMES[1:]), per_type, "mean objects per event")
    hist("e_avail", "e_avail", np.linspace(0, 3, 61), r"true $E_\mathrm{avail}$ [GeV]", log=True)
    with_truth = {split: t for split, t in tables.items() if t["topology"].null_count < t.num_rows}
    topo = {split: np.bincount(t["topology"].drop_null().to_numpy(zero_copy_only=False),
                               minlength=schema.NUM_TOPOLOGIES) / max(len(t["topology"].drop_null()), 1)
            for split, t in with_truth.items()}
    bars("topology", list(schema.TOPOLOGY_NAMES), topo, "fraction of events")
    hist("enu", "enu", np.linspace(0, 20, 41), r"true $E_\nu$ [GeV]")
    return written


# ---------------------------------------------------------------------------------------------------- card
def column_docs() -> dict[str, dict]:
    """The column documentation (templates/dataset_columns.yaml), checked against the names in schema.py."""
    docs = yaml.safe_load(COLUMN_DOCS.read_text(encoding="utf-8"))
    expected = {"columns": list(schema.PARQUET_SCHEMA.names), "object_features": list(schema.OBJECT_FEATURE_NAMES),
                "pid": list(schema.PID_NAMES), "event_features": list(schema.EVENT_FEATURE_NAMES)}
    for section, names in expected.items():
        if list(docs.get(section) or {}) != names:
            raise ValueError(f"{COLUMN_DOCS}: field {section}: documents {list(docs.get(section) or {})}, schema.py "
                             f"defines {names} (same names, same order)")
    return docs


def size_category(n_events: int) -> str:
    """Hub `size_categories` label for a number of rows."""
    return next((label for bound, label in SIZE_CATEGORIES if n_events < bound), "n>1T")


def data_origin(manifest: dict) -> dict:
    """Whether the inputs were synthetic (`generator` records the converter copied from `minerva-fm generate` files),
    MC simulation or detector data, from the manifest's source files."""
    sources = [s for s in manifest.get("source_files") or [] if isinstance(s, dict)]
    generators = [s["generator"] for s in sources if s.get("generator")]
    seeds = sorted({g["seed"] for g in generators if g.get("seed") is not None})
    n_mc = sum(1 for s in sources if s.get("is_mc"))
    if generators:
        description = "synthetic MINERvA-like AnaTuples made by `minerva-fm generate`"
    elif sources:
        description = ("MINERvA MasterAnaDev AnaTuples (" + ", ".join(
            part for part in (f"{n_mc} MC simulation files" if n_mc else "",
                              f"{len(sources) - n_mc} detector-data files" if len(sources) > n_mc else "") if part)
            + ")")
    else:
        description = "MINERvA-format AnaTuples (" + ("input files not listed in manifest.json" if manifest else
                                                      "no manifest.json") + ": origin not recorded)"
    return {"synthetic": bool(generators), "all_synthetic": bool(sources) and len(generators) == len(sources),
            "n_synthetic": len(generators), "n_files": len(sources), "description": description,
            "generator_text": (f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}" if seeds
                               else "seed not recorded")}


def card_data(summary: dict, license: str = "cc-by-4.0", synthetic: bool = False):
    """`DatasetCardData` with split configs, typed features, license, tags, size category."""
    from huggingface_hub import DatasetCardData

    from dataset_builder.hf_dataset import features, split_pattern

    total = sum(s["events"] for s in summary.values())
    return DatasetCardData(
        license=license,
        pretty_name=("Synthetic MINERvA-like" if synthetic else "MINERvA ME FHC") + " neutrino events (minerva-fm)",
        language=["en"],
        tags=["physics", "particle-physics", "neutrino", "minerva", "point-cloud", "minerva-fm"]
        + (["synthetic"] if synthetic else []),
        task_categories=["tabular-classification", "tabular-regression"],
        size_categories=[size_category(total)],
        configs=[{"config_name": "default", "data_files": [{"split": split, "path": split_pattern(split)}
                                                            for split in summary]}],
        dataset_info={"features": features()._to_yaml_list()},
    )


def card_context(summary: dict, manifest: dict, plots: list[Path], repo_id: str | None = None) -> dict:
    """Everything the template shows, as data: splits, column docs, definitions, selection, truncation, provenance."""
    docs = column_docs()
    origin = data_origin(manifest)
    return {
        "title": ("Synthetic MINERvA-like" if origin["synthetic"] else "MINERvA medium-energy FHC")
        + " events for foundation-model fine-tuning",
        "origin": origin, "repo_id": repo_id or "<user>/<repo>", "first_split": next(iter(summary)),
        "max_objects": schema.MAX_OBJECTS,
        "caps": {"muons": schema.MAX_MUONS, "photons": schema.MAX_PHOTONS, "blobs": schema.MAX_BLOBS,
                 "prongs": schema.MAX_PRONGS},
        "topology_names": schema.TOPOLOGY_NAMES, "signal_classes": schema.SIGNAL_CLASSES,
        "splits": [_split_row(split, s) for split, s in summary.items()], "has_shifted": "shifted" in summary,
        "weights_text": _weights_text(manifest),
        "columns": [{"name": f.name, "type": str(f.type), "unit": docs["columns"][f.name]["unit"] or "—",
                     "description": _cell(docs["columns"][f.name]["description"])} for f in schema.PARQUET_SCHEMA],
        "object_features": [{"name": n, "description": _cell(d)} for n, d in docs["object_features"].items()],
        "pids": [{"name": n, "description": _cell(d)} for n, d in docs["pid"].items()],
        "event_features": [{"name": n, "description": _cell(d)} for n, d in docs["event_features"].items()],
        "selection_blocks": _blocks(manifest, (
            ("Selection configuration used by the converter", (manifest.get("options") or {}).get("selection")),
            ("Event counts through the selection (converter cut flow)", manifest.get("selection")),
            ("Values rejected or repaired while reading (counts per reason and branch)", manifest.get("rejected")))),
        "truncation_blocks": _blocks(manifest, (
            ("Object-building options used by the converter", (manifest.get("options") or {}).get("tokens")),
            ("Objects merged or dropped (counts over the whole dataset)",
             manifest.get("truncation") or manifest.get("truncations")))),
        "reference_fixes": [(_cell(problem), _cell(fix)) for problem, fix in REFERENCE_FIXES],
        "plots": [p.stem for p in plots], "provenance": _provenance(manifest),
    }


def _cell(text: str) -> str:
    """Markdown-table-safe text."""
    return str(text).replace("|", "\\|")


def _split_row(split: str, s: dict) -> dict:
    return {"split": split, "events": s["events"], "mean_objects": f"{s['mean_objects']:.2f}",
            "muon": f"{s['muon_fraction']:.2f}", "passes_cc_inclusive": s["passes_cc_inclusive"],
            "fractions": [f"{v:.3f}" if v is not None else "—" for v in s["class_fractions"].values()],
            "quantiles": " / ".join(f"{v:.3f}" for v in s["e_avail_quantiles"].values())
            if s["e_avail_quantiles"] else "—"}


def _weights_text(manifest: dict) -> str:
    """Which event weight the `event_weight` column holds (from the manifest's converter record)."""
    record = manifest.get("event_weight") or {}
    branch = record.get("branch")
    if not record:
        return "Not recorded (no manifest.json): `event_weight` is whatever the converter stored, null when absent."
    if not branch:
        return ("No input file carried a central-value weight branch: `event_weight` is null everywhere and every "
                "event counts once.")
    branches = ", ".join(f"`{b}`" for b in ([branch] if isinstance(branch, str) else branch))
    stand_in = (" In files made by `minerva-fm generate` it is the generator's plausible stand-in for the MINERvA "
                "tune's weight, not a physics weight." if data_origin(manifest)["synthetic"] else "")
    return (f"`event_weight` is the MC central-value weight read from the AnaTuple branch {branches} (input files "
            f"with it: {record.get('files_with_weight', '?')}, without: {record.get('files_without_weight', '?')}; "
            "null there and on data).{stand_in} minerva-fm's evaluation weights its metrics with it when present "
            "(`eval_results.json` records whether it did); training uses it only with `train.use_event_weights`. "
            "Flux and GENIE systematic universes are not converted.").replace("{stand_in}", stand_in)


def _blocks(manifest: dict, entries) -> list[dict]:
    return [{"title": title, "json": json.dumps(value, indent=1, default=str)} for title, value in entries if value]


def _provenance(manifest: dict) -> str:
    """Converter version, POT, inputs and shard count from the manifest (long lists summarised, no local paths)."""
    shown = {"selection", "truncation", "truncations", "rejected", "schema", "shards", "source_files", "splits",
             "event_weight"}
    info = {k: v for k, v in manifest.items() if k not in shown and k != "options"}
    if manifest.get("options"):
        info["options"] = {k: v for k, v in manifest["options"].items() if k not in ("selection", "tokens")}
    sources = manifest.get("source_files") or []
    if sources:
        names = [s.get("name", "?") if isinstance(s, dict) else Path(str(s)).name for s in sources]
        info["source_files"] = f"{len(names)} files: " + ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    if manifest.get("shards"):
        info["shards"] = f"{len(manifest['shards'])} Parquet shards (paths, rows and sha256 in manifest.json)"
    return json.dumps(info, indent=1, default=str) if info else ""


def build_card(dataset_dir: Path, license: str = "cc-by-4.0", plots: bool = True, repo_id: str | None = None):
    """(DatasetCard, summary) for a converted folder (templates/dataset_card.md); draws the plots when `plots`."""
    from huggingface_hub import DatasetCard

    dataset_dir = Path(dataset_dir)
    summary, tables = summarize(dataset_dir)
    manifest = read_manifest(dataset_dir)
    plot_paths = make_plots(dataset_dir, tables) if plots else []
    context = card_context(summary, manifest, plot_paths, repo_id)
    data = card_data(summary, license, synthetic=context["origin"]["synthetic"])
    card = DatasetCard.from_template(data, template_path=str(TEMPLATE), **context)
    return DatasetCard(re.sub(r"\n{3,}", "\n\n", str(card))), summary  # template tags leave extra blank lines


def write_dataset_card(dataset_dir: Path, license: str = "cc-by-4.0", plots: bool = True,
                       repo_id: str | None = None) -> Path:
    """Write `dataset_dir/README.md` (atomically) and the plots; returns the README path."""
    card, _ = build_card(dataset_dir, license, plots, repo_id)
    return write_text_atomic(Path(dataset_dir) / "README.md", str(card))


def run_summary_cli(args) -> int:
    """`minerva-fm dataset-summary DIR`: print the summary table, write README.md + plots."""
    dataset_dir = Path(args.dataset_dir)
    card, summary = build_card(dataset_dir, plots=not getattr(args, "no_plots", False))
    print(format_summary(summary))
    path = write_text_atomic(dataset_dir / "README.md", str(card))
    print(f"wrote {path} and {dataset_dir / 'plots'}/")
    return 0
