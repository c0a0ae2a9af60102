"""Subcommands of `minerva-fm` for our own foundation models: generate-jets and pretrain (heavy imports stay in the
handlers)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _generate_jets(args: argparse.Namespace) -> int:
    import json

    from dataset_builder.jets import generate_jets

    summary = generate_jets(args.out, args.jets, seed=args.seed, classes=tuple(args.classes), workers=args.workers,
                            jets_per_file=args.jets_per_file, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "files"}, indent=2))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from recipes.pretrain import run_from_args

    return run_from_args(args, list(args.overrides))


def register(subparsers) -> None:
    """Add generate-jets and pretrain to the `minerva-fm` parser."""
    from dataset_builder.jets import JET_CLASSES

    gen = subparsers.add_parser("generate-jets", help="Pythia 8 + FastJet jet corpus as Parquet in the JetClass-II "
                                                      "layout, with a dataset card")
    gen.add_argument("out", type=Path, help="output folder (train/ validation/ test/ Parquet + README.md)")
    gen.add_argument("--jets", type=int, default=10_000, help="jets in total, equal per class and worker "
                                                               "(default: 10000)")
    gen.add_argument("--seed", type=int, default=0, help="corpus seed; with the worker index it seeds Pythia "
                                                         "(default: 0)")
    gen.add_argument("--classes", nargs="+", choices=JET_CLASSES, default=list(JET_CLASSES),
                     help=f"jet classes (default: all {len(JET_CLASSES)})")
    gen.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    gen.add_argument("--jets-per-file", type=int, default=100_000, help="jets per Parquet file (default: 100000)")
    gen.add_argument("--no-progress", action="store_true", help="hide the tqdm bars (default: shown)")
    gen.set_defaults(func=_generate_jets)

    from recipes.pretrain import add_arguments as add_pretrain_arguments

    pre = subparsers.add_parser(
        "pretrain", help="pretrain a backbone on jets (classification, masked particles) or on MINERvA events "
                         "(masked objects, no labels); run under `accelerate launch` / torchrun for several processes",
        description="Pretrain a backbone; the same arguments as `accelerate launch recipes/pretrain.py`. Extra "
                    "arguments are dotted config overrides, e.g. --objectives.mask_fraction=0.75")
    add_pretrain_arguments(pre)
    pre.set_defaults(func=_pretrain, accepts_overrides=True)
