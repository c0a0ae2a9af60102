"""`minerva-fm` subcommands of the data path: generate, convert, dataset-summary, push-dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from minerva_common.errors import report


def _generate(args: argparse.Namespace) -> int:
    from dataset_builder.synthetic import write_anatuples

    try:
        paths = write_anatuples(args.output_dir, n_events=args.events, seed=args.seed, shifted=args.shifted,
                                n_files=args.files)
    except (ValueError, OSError) as err:
        return report("generate", err, where=args.output_dir)
    size = sum(p.stat().st_size for p in paths) / 1e6
    kind = "shifted (1B-like)" if args.shifted else "1A-like"
    print(f"wrote {len(paths)} synthetic {kind} AnaTuple file(s), {args.events} events, {size:.1f} MB, seed "
          f"{args.seed}, to {args.output_dir}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from dataset_builder.convert import run_convert_cli

    return run_convert_cli(args)


def _require_events(dataset_dir: Path) -> None:
    """A converted folder whose manifest counts 0 events has nothing to summarise or push: ValueError naming it."""
    manifest = dataset_dir / "manifest.json"
    if not manifest.is_file():
        return
    try:
        counts = json.loads(manifest.read_text(encoding="utf-8")).get("events_per_split") or {}
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{manifest}: not a converter manifest ({err})") from None
    if not sum(counts.values()):
        raise ValueError(f"{dataset_dir}: 0 events in every split ({manifest.name}: events_per_split {counts}); "
                         "convert AnaTuples that hold events first")


def _summary(args: argparse.Namespace) -> int:
    from dataset_builder.dataset_card import run_summary_cli
    from dataset_builder.hub import check_shards

    try:
        _require_events(args.dataset_dir)
        check_shards(args.dataset_dir)
        return run_summary_cli(args)
    except (OSError, ValueError) as err:  # missing shards, read-only folder, full disk, unreadable manifest
        return report("dataset-summary", err, where=args.dataset_dir)


def _push(args: argparse.Namespace) -> int:
    from dataset_builder.hub import run_push_dataset_cli

    try:
        _require_events(args.dataset_dir)
        return run_push_dataset_cli(args)
    except (OSError, ValueError) as err:  # no token, refused token, no shards, unreachable Hub
        return report("push-dataset", err)


def register(subparsers) -> None:
    """Add generate / convert / dataset-summary / push-dataset to the `minerva-fm` parser."""
    defaults = argparse.ArgumentDefaultsHelpFormatter
    gen = subparsers.add_parser("generate", help="write synthetic MasterAnaDev AnaTuple ROOT files",
                                formatter_class=defaults)
    gen.add_argument("output_dir", type=Path, help="folder for the ROOT files")
    gen.add_argument("--events", type=int, default=10_000, help="events (reco rows) in total")
    gen.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    gen.add_argument("--files", type=int, default=1, help="split the events over this many files")
    gen.add_argument("--shifted", action="store_true", help="1B-like sample: He target full, shifted response")
    gen.set_defaults(func=_generate)

    conv = subparsers.add_parser("convert", help="AnaTuple ROOT files -> Parquet shards + manifest",
                                 formatter_class=defaults)
    conv.add_argument("inputs", nargs="+", type=Path, help="ROOT files or folders (and the output dir last)")
    conv.add_argument("output_dir", type=Path, help="output folder (empty, new, or written by an earlier convert)")
    conv.add_argument("--workers", type=int, default=None, help="process-pool size (None: CPU count)")
    conv.add_argument("--dask", metavar="ADDRESS", nargs="?", const="local", default=None,
                      help="run on a Dask cluster (scheduler address, or 'local' for a LocalCluster)")
    conv.add_argument("--shifted", metavar="GLOB", action="append", default=[],
                      help="input files matching GLOB go whole into the held-out 'shifted' split (repeatable)")
    conv.add_argument("--selection", type=Path, default=None, help="YAML selection config (None: built-in)")
    conv.add_argument("--step-size", default="100 MB", help="uproot chunk size: bytes like '100 MB' or entries")
    conv.add_argument("--row-group-size", type=int, default=10_000, help="Parquet rows per row group")
    conv.add_argument("--blob-origin", choices=("vertex", "detector"), default="vertex",
                      help="blob direction from the reco vertex or the detector origin (reference parity)")
    conv.add_argument("--on-bad-event", choices=("error", "skip"), default="error",
                      help="a malformed entry fails its file (error) or is dropped and listed in the manifest (skip)")
    conv.add_argument("--overwrite", action="store_true",
                      help="replace the conversion in a folder written with other options or not by convert")
    conv.add_argument("--dask-threads", action="store_true", help="with --dask local: thread workers, not processes")
    conv.add_argument("--no-progress", action="store_true", help="no progress bar")
    conv.set_defaults(func=_convert)

    summ = subparsers.add_parser("dataset-summary", help="print counts and write the dataset card + plots",
                                 formatter_class=defaults)
    summ.add_argument("dataset_dir", type=Path, help="a folder written by minerva-fm convert")
    summ.set_defaults(func=_summary)

    push = subparsers.add_parser("push-dataset", help="upload Parquet shards + dataset card to a Hub dataset repo",
                                 formatter_class=defaults)
    push.add_argument("dataset_dir", type=Path, help="a folder written by minerva-fm convert")
    push.add_argument("repo_id", help="Hub dataset repository, e.g. user/minerva-events")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", default=None, help="branch to push to (None: the default branch)")
    push.set_defaults(func=_push)
