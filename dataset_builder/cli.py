"""`minerva-fm` subcommands of the data path: generate, convert, dataset-summary, push-dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from dataset_builder.synthetic import write_anatuples

    paths = write_anatuples(args.output_dir, n_events=args.events, seed=args.seed, shifted=args.shifted,
                            n_files=args.files)
    for path in paths:
        print(path)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from dataset_builder.convert import run_convert_cli

    return run_convert_cli(args)


def _summary(args: argparse.Namespace) -> int:
    from dataset_builder.dataset_card import run_summary_cli

    return run_summary_cli(args)


def _push(args: argparse.Namespace) -> int:
    from dataset_builder.hub import run_push_dataset_cli

    return run_push_dataset_cli(args)


def register(subparsers) -> None:
    """Add generate / convert / dataset-summary / push-dataset to the `minerva-fm` parser."""
    gen = subparsers.add_parser("generate", help="write synthetic MasterAnaDev AnaTuple ROOT files")
    gen.add_argument("output_dir", type=Path)
    gen.add_argument("--events", type=int, default=10_000, help="events (reco rows) in total")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--files", type=int, default=1, help="split the events over this many files")
    gen.add_argument("--shifted", action="store_true", help="1B-like sample: He target full, shifted response")
    gen.set_defaults(func=_generate)

    conv = subparsers.add_parser("convert", help="AnaTuple ROOT files -> Parquet shards + manifest")
    conv.add_argument("inputs", nargs="+", type=Path, help="ROOT files or folders (and the output dir last)")
    conv.add_argument("output_dir", type=Path)
    conv.add_argument("--workers", type=int, default=None, help="process-pool size (default: CPU count)")
    conv.add_argument("--dask", metavar="ADDRESS", nargs="?", const="local", default=None,
                      help="run on a Dask cluster (scheduler address, or 'local' for a LocalCluster)")
    conv.add_argument("--shifted", metavar="GLOB", action="append", default=[],
                      help="input files matching GLOB go whole into the held-out 'shifted' split")
    conv.add_argument("--selection", type=Path, default=None, help="YAML selection config (default: built-in)")
    conv.add_argument("--step-size", default="100 MB", help="uproot chunk size")
    conv.add_argument("--row-group-size", type=int, default=10_000)
    conv.add_argument("--blob-origin", choices=("vertex", "detector"), default="vertex",
                      help="blob direction from the reco vertex (default) or the detector origin (reference parity)")
    conv.add_argument("--dask-threads", action="store_true", help="with --dask local: thread workers, not processes")
    conv.add_argument("--no-progress", action="store_true", help="no progress bar")
    conv.set_defaults(func=_convert)

    summ = subparsers.add_parser("dataset-summary", help="print counts and write the dataset card + plots")
    summ.add_argument("dataset_dir", type=Path)
    summ.set_defaults(func=_summary)

    push = subparsers.add_parser("push-dataset", help="upload Parquet shards + dataset card to a Hub dataset repo")
    push.add_argument("dataset_dir", type=Path)
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", default=None)
    push.set_defaults(func=_push)
