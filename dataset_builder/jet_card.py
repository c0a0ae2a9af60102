"""The dataset card of a generated jet corpus: Hub `configs:` (so `load_dataset(folder)` reads it as the Hub would),
how it was made, the column layout, and what it lacks compared with the real JetClass-I / JetClass-II."""

from __future__ import annotations

from pathlib import Path

import yaml

from minerva_common.atomic import write_text_atomic


def card_text(summary: dict) -> str:
    """Markdown card (YAML front matter with `configs`) from the generator's summary."""
    from dataset_builder.jets import JET_CLASS_DESCRIPTIONS, JET_CLASSES, JET_SCHEMA

    header = {
        "license": "mit", "pretty_name": "minerva-fm Pythia 8 jet corpus (JetClass-II layout)",
        "tags": ["physics", "jets", "pythia8", "fastjet"],
        "configs": [{"config_name": "default", "data_files": [
            {"split": split, "path": f"{split}/*.parquet"} for split in ("train", "validation", "test")]}],
    }
    classes = "\n".join(f"| {i} | {name} | {JET_CLASS_DESCRIPTIONS[name]} | {summary['per_class'].get(name, 0)} |"
                        for i, name in enumerate(JET_CLASSES))
    columns = ", ".join(f"`{f.name}`" for f in JET_SCHEMA)
    return f"""---
{yaml.safe_dump(header, sort_keys=False)}---

# minerva-fm jet corpus (Pythia 8, JetClass-II column layout)

{summary['jets']} large-radius jets generated with `minerva-fm generate-jets` (seed {summary['seed']},
{summary['workers']} worker(s)): Pythia 8 pp collisions at 13.6 TeV, multi-parton interactions off, anti-kT R = 0.8
(FastJet), jet pT 500-1000 GeV, |eta| < 2. Signal jets are kept when every visible decay product of the resonance
(quarks, gluons, charged leptons) lies within dR < 0.8 of the jet axis; QCD jets are all jets of QCD 2->2 events.
Splits train/validation/test 4:1:1 (as JetClass-II).

## Classes (`jet_label`, JetClass-I label order)

| jet_label | name | process | jets |
|---|---|---|---|
{classes}

## Columns

{columns}. `part_*` are per-constituent lists sorted by decreasing pT (GeV, rad); `part_deta`/`part_dphi` are
relative to the jet axis; `part_is*` are 0/1 floats as in JetClass.

## What this corpus lacks (read before comparing with JetClass)

* **No detector simulation**: constituents are generator-level final visible particles, not Delphes E-flow objects;
  no smearing, no tracking efficiency, no pile-up. `part_d0val`, `part_d0err`, `part_dzval`, `part_dzerr` are **0**
  (Pythia gives no tracks).
* **Fewer classes**: the 10 JetClass-I classes Pythia makes without extra tools (no Z->nunu-style missing classes,
  none of JetClass-II's 188 resonance/QCD sub-classes). `jet_label` indexes the table above, **not** the 188-class
  JetClass-II label table.
* **Missing JetClass-II columns**: `jet_sdmass`, `jet_tau1..4`, `genpart_*`, `genjet_*`, `aux_genpart_*`; we add
  `jet_mass` (plain constituent invariant mass, GeV).
* No underlying event (MPI off) and H->4q only via WW* (no ZZ*).
"""


def write_jet_dataset_card(out: str | Path, summary: dict) -> Path:
    """Write `README.md` (atomically) into the corpus folder."""
    path = Path(out) / "README.md"
    write_text_atomic(path, card_text(summary))
    return path


__all__ = ["card_text", "write_jet_dataset_card"]
