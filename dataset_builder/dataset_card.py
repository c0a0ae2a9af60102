"""Dataset card (README.md with `configs:` YAML) + summary table + plots for a converted-dataset folder.

`write_dataset_card(DIR)` reads `DIR/manifest.json` and the Parquet shards `DIR/data/<split>/*.parquet`, draws
`DIR/plots/*.png` (matplotlib + mplhep) and writes `DIR/README.md` atomically. The YAML maps each split to
`data/<split>/*.parquet`, so `datasets.load_dataset(DIR)` / `load_dataset("ns/name")` find the splits, and carries
`dataset_info.features` (typed, from `hf_dataset.features()`). Column documentation is read from the comments in
`schema.py`, the one place the units are defined.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import tokenize
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataset_builder import schema
from minerva_common.atomic import atomic_path, write_text_atomic

SUMMARY_COLUMNS = ("n_objects", "object_pid", "e_avail", "topology", "enu", "q3", "w", "has_muon", "calo_e_avail",
                   "passes_cc_inclusive")
QUANTILES = (0.1, 0.5, 0.9)
PLOT_NAMES = ("n_objects", "object_types", "e_avail", "topology", "enu")
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))
# Descriptions for columns that carry no comment in schema.py (bookkeeping, not physics).
EXTRA_DESCRIPTIONS = {
    "source_file": "AnaTuple file name the event comes from (with `entry`, the row key)",
    "entry": "entry number in the source file's tree",
    "run": "run number", "subrun": "subrun number", "gate": "gate (spill) number",
    "n_objects": "number of objects (tokens) stored for this event, at most 33",
    "object_pid": "PID index per object (table below); 0 is never stored (reserved for padding)",
    "object_features": "9 features per object (table below)",
    "event_features": "16 event-level features (list below)",
    "has_muon": "a MINOS-matched muon is reconstructed (the muon object is present)",
    "nu_pdg": "PDG code of the incoming neutrino", "lepton_pdg": "PDG code of the primary final-state lepton",
    "n_pi_plus": "final-state pi+ count", "n_pi_minus": "final-state pi- count", "n_pi0": "final-state pi0 count",
    "pion_kinetic_energy": "kinetic energy of the single pion used for binning (0: none)",
    "is_cc1pi_charged": "topology == CC1pi_charged", "is_ccnpi_charged": "topology in (CC1pi_charged, CCNpi_charged)",
    "is_cc1pi0": "topology == CC1pi0",
    "tag_cc1pi_charged": "cut-based tagger decision (baseline)", "tag_ccnpi_charged": "cut-based tagger decision",
    "tag_cc1pi0": "cut-based tagger decision",
}
UNIT_OVERRIDES = {"q2": "GeV²", "pion_theta": "rad", "calo_e_avail": "GeV", "object_features": "see below",
                  "event_features": "see below"}
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
def schema_comments() -> dict[str, str]:
    """`"name": ...,  # comment` pairs of schema.py (the single source of units and definitions)."""
    tokens = tokenize.generate_tokens(io.StringIO(inspect.getsource(schema)).readline)
    last_string, comments = {}, {}
    for tok in tokens:
        if tok.type == tokenize.STRING:
            last_string[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT and tok.start[0] in last_string:
            comments[ast.literal_eval(last_string[tok.start[0]])] = tok.string.lstrip("# ").strip()
    return comments


def _unit(field: pa.Field) -> str:
    if field.name in UNIT_OVERRIDES:
        return UNIT_OVERRIDES[field.name]
    if pa.types.is_floating(field.type) and field.name in {**schema.TRUTH_COLUMNS, **schema.BASELINE_COLUMNS}:
        return "GeV"
    return "—"


def size_category(n_events: int) -> str:
    """Hub `size_categories` label for a number of rows."""
    return next((label for bound, label in SIZE_CATEGORIES if n_events < bound), "n>1T")


def card_data(summary: dict, license: str = "cc-by-4.0"):
    """`DatasetCardData` with split configs, typed features, license, tags, size category."""
    from huggingface_hub import DatasetCardData

    from dataset_builder.hf_dataset import features, split_pattern

    total = sum(s["events"] for s in summary.values())
    return DatasetCardData(
        license=license,
        pretty_name="MINERvA ME FHC neutrino events (minerva-fm)",
        language=["en"],
        tags=["physics", "particle-physics", "neutrino", "minerva", "point-cloud", "minerva-fm"],
        task_categories=["tabular-classification", "tabular-regression"],
        size_categories=[size_category(total)],
        configs=[{"config_name": "default", "data_files": [{"split": split, "path": split_pattern(split)}
                                                            for split in summary]}],
        dataset_info={"features": features()._to_yaml_list()},
    )


def card_body(summary: dict, manifest: dict, plots: list[Path]) -> str:
    """Markdown body: usage, splits, schema with units, definitions, selection, truncation, fixes, plots."""
    comments = schema_comments()
    parts = [
        "# MINERvA medium-energy FHC events for foundation-model fine-tuning",
        "One row per reconstructed event from the MINERvA MasterAnaDev AnaTuples, converted by `minerva-fm convert`: "
        "a variable-length list of up to 33 detector objects (muon, photons, blobs, prongs) with 9 features each, "
        "16 event-level features, true targets (available energy, q0, q3, W, pion counts, 5-class topology) and the "
        "reference cut-based baselines. Produced for the reproduction of arXiv 2604.12364.",
        "## Usage\n\n```python\nfrom datasets import load_dataset\n"
        "ds = load_dataset(\"<this repo>\", streaming=True)\n\n"
        "from dataset_builder.collator import MinervaCollator, iter_batches\n"
        "collator = MinervaCollator(task=\"regression\")  # or \"classification\" / None\n"
        "for batch in iter_batches(ds[\"train\"], 256, collator):\n"
        "    ...  # dict of tensors, docs/tensor-layout.md\n```",
        "## Splits and counts\n\n" + _splits_table(summary),
        "## Columns\n\n| column | type | unit | description |\n|---|---|---|---|\n" + "\n".join(
            f"| `{f.name}` | `{f.type}` | {_unit(f)} "
            f"| {_cell(comments.get(f.name) or EXTRA_DESCRIPTIONS.get(f.name, ''))} |"
            for f in schema.PARQUET_SCHEMA),
        "Truth columns are null for data (non-simulated) files. Energies, momenta and masses are in GeV unless noted.",
        "### Object features (`object_features[i]`, in this order)\n\n| # | name | definition |\n|---|---|---|\n"
        + "\n".join(f"| {i} | `{n}` | {_cell(comments.get(n, ''))} |"
                    for i, n in enumerate(schema.OBJECT_FEATURE_NAMES))
        + "\n\nKinematics are w.r.t. the detector z axis; eta/phi are absolute (nothing subtracted).",
        "### Object PID index (`object_pid[i]`)\n\n| index | type |\n|---|---|\n"
        + "\n".join(f"| {i} | {n}{' — ' + comments[n].split(':', 1)[1].strip() if ':' in comments.get(n, '') else ''} |"
                    for i, n in enumerate(schema.PID_NAMES)),
        "### Event features (`event_features`, reference order)\n\n" + "\n".join(
            f"{i}. `{n}`" + (f" — {comments[n]}" if n in comments else "")
            for i, n in enumerate(schema.EVENT_FEATURE_NAMES)),
        "## Definitions\n\n" + _definitions(),
        "## Selection\n\n" + _selection(manifest, summary),
        "## Truncation\n\n" + _truncation(manifest),
        "## Fixes relative to the reference code\n\nKnown problems of the reference preprocessing "
        "(minerva-data.md §7) and how this conversion handles them:\n\n| reference problem | here |\n|---|---|\n"
        + "\n".join(f"| {_cell(problem)} | {_cell(fix)} |" for problem, fix in REFERENCE_FIXES),
    ]
    if plots:
        parts.append("## Distributions\n\n" + "\n\n".join(f"![{p.stem}](plots/{p.name})" for p in plots))
    provenance = _provenance(manifest)
    if provenance:
        parts.append("## Provenance (manifest.json)\n\n" + provenance)
    return "\n\n".join(parts) + "\n"


def _cell(text: str) -> str:
    """Markdown-table-safe text."""
    return text.replace("|", "\\|")


def _splits_table(summary: dict) -> str:
    head = ("| split | events | " + " | ".join(schema.TOPOLOGY_NAMES)
            + " | mean objects | muon | E_avail q10 / q50 / q90 [GeV] |")
    rows = [head, "|" + "---|" * (len(schema.TOPOLOGY_NAMES) + 5)]
    for split, s in summary.items():
        fractions = " | ".join(f"{v:.3f}" if v is not None else "—" for v in s["class_fractions"].values())
        quant = " / ".join(f"{v:.3f}" for v in s["e_avail_quantiles"].values()) if s["e_avail_quantiles"] else "—"
        rows.append(f"| {split} | {s['events']} | {fractions} | {s['mean_objects']:.2f} | {s['muon_fraction']:.2f} "
                    f"| {quant} |")
    note = ("\n\n`shifted` holds whole held-out files with a different (1B-like) detector configuration: an "
            "out-of-distribution test, never used for training or model selection." if "shifted" in summary else "")
    return "\n".join(rows) + note


def _definitions() -> str:
    classes = "\n".join(f"  - {i} `{n}`" for i, n in enumerate(schema.TOPOLOGY_NAMES))
    signals = ", ".join(f"`{k}` = classes {list(v)}" for k, v in schema.SIGNAL_CLASSES.items())
    return (
        "- **Available energy** `e_avail` (regression target, GeV): MINERvA convention — kinetic energy of protons and "
        "charged pions, total energy of pi0, photons and electrons; neutrons excluded. `e_avail_reference` is the "
        "reference code's convention (charged pions at total energy, ~140 MeV higher per pi+-).\n"
        "- **q0 / q3 / Q2**: true energy transfer Enu − E_lepton, true 3-momentum transfer |p_nu − p_lepton|, and "
        "−(p_nu − p_lepton)², all with the beam-rotated true lepton.\n"
        "- **W**: hadronic invariant mass from the final-state particles, nuclei and pseudo-particles excluded.\n"
        "- **Topology** (5 classes, from final-state pion counts; no W or kinetic-energy threshold):\n" + classes +
        "\n  Rules: NC if not charged current; CC with exactly one pi+- → 0; CC with more than one pi+- → 1; CC, no "
        "pi+- and exactly one pi0 → 2; other CC → 3.\n"
        f"- **Signal definitions** (sum of softmax over classes): {signals}.\n"
        "- **`passes_cc_inclusive`**: reconstructed muon within 20° of the detector axis, 1.5 < p_mu < 20 GeV and "
        "positive CC-inclusive hadronic recoil — the regression-evaluation subset of the reference."
    )


def _selection(manifest: dict, summary: dict) -> str:
    text = ("Rows are kept raw (including NC and events without a reconstructed muon); filters are applied as views "
            "downstream.")
    config = (manifest.get("options") or {}).get("selection")
    if config:
        text += "\n\nSelection configuration used by the converter:\n\n" + _json_block(config)
    if manifest.get("selection"):
        text += "\n\nEvent counts through the selection (converter cut flow):\n\n" + _json_block(manifest["selection"])
    if manifest.get("rejected"):
        text += "\n\nValues rejected or repaired while reading (counts per reason and branch):\n\n" + \
                _json_block(manifest["rejected"])
    counts = ", ".join(f"{split}: {s['events']} events ({s['passes_cc_inclusive']} pass the CC-inclusive "
                       f"evaluation selection)" for split, s in summary.items())
    return text + "\n\nCounts in the Parquet shards: " + counts + "."


def _json_block(value) -> str:
    return "```json\n" + json.dumps(value, indent=1, default=str) + "\n```"


def _truncation(manifest: dict) -> str:
    text = (f"At most {schema.MAX_MUONS} muon, {schema.MAX_PHOTONS} photons, {schema.MAX_BLOBS} blobs and "
            f"{schema.MAX_PRONGS} prongs per event ({schema.MAX_OBJECTS} objects, in that order). Blobs and prongs "
            "beyond the cap are not dropped: their 4-vectors are summed into one aggregated object (PID 7 / 8) that "
            "takes the last slot.")
    tokens = (manifest.get("options") or {}).get("tokens")
    if tokens:
        text += "\n\nObject-building options used by the converter:\n\n" + _json_block(tokens)
    info = manifest.get("truncation") or manifest.get("truncations")
    if info:
        text += "\n\nObjects merged or dropped (counts over the whole dataset):\n\n" + _json_block(info)
    return text


def _provenance(manifest: dict) -> str:
    """Converter version, POT, inputs and shard count from the manifest (long lists summarised)."""
    shown = {"selection", "truncation", "truncations", "rejected", "schema", "shards", "source_files", "splits"}
    info = {k: v for k, v in manifest.items() if k not in shown and k != "options"}
    if manifest.get("options"):
        info["options"] = {k: v for k, v in manifest["options"].items() if k not in ("selection", "tokens")}
    sources = manifest.get("source_files") or []
    if sources:
        names = [s.get("name", "?") if isinstance(s, dict) else str(s) for s in sources]
        info["source_files"] = f"{len(names)} files: " + ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    if manifest.get("shards"):
        info["shards"] = f"{len(manifest['shards'])} Parquet shards (paths, rows and sha256 in manifest.json)"
    return _json_block(info) if info else ""


def build_card(dataset_dir: Path, license: str = "cc-by-4.0", plots: bool = True):
    """(DatasetCard, summary) for a converted folder; draws the plots when `plots`."""
    from huggingface_hub import DatasetCard

    dataset_dir = Path(dataset_dir)
    summary, tables = summarize(dataset_dir)
    manifest = read_manifest(dataset_dir)
    plot_paths = make_plots(dataset_dir, tables) if plots else []
    content = f"---\n{card_data(summary, license).to_yaml()}\n---\n\n{card_body(summary, manifest, plot_paths)}"
    return DatasetCard(content), summary


def write_dataset_card(dataset_dir: Path, license: str = "cc-by-4.0", plots: bool = True) -> Path:
    """Write `dataset_dir/README.md` (atomically) and the plots; returns the README path."""
    card, _ = build_card(dataset_dir, license, plots)
    return write_text_atomic(Path(dataset_dir) / "README.md", str(card))


def run_summary_cli(args) -> int:
    """`minerva-fm dataset-summary DIR`: print the summary table, write README.md + plots."""
    dataset_dir = Path(args.dataset_dir)
    card, summary = build_card(dataset_dir, plots=not getattr(args, "no_plots", False))
    print(format_summary(summary))
    path = write_text_atomic(dataset_dir / "README.md", str(card))
    print(f"wrote {path} and {dataset_dir / 'plots'}/")
    return 0
