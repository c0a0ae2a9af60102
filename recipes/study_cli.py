"""Subcommand of `minerva-fm` for the transfer study: transfer-study (heavy imports stay in the handler)."""

from __future__ import annotations

import argparse


def _transfer_study(args: argparse.Namespace) -> int:
    from recipes.transfer_study import run_from_args

    return run_from_args(args, list(args.overrides))


def register(subparsers) -> None:
    """Add transfer-study to the `minerva-fm` parser."""
    from recipes.transfer_study import add_arguments

    study = subparsers.add_parser(
        "transfer-study", help="label budget x init (rw, jet, MINERvA-MPM, jet->MINERvA-MPM) x mode x task: "
                               "pretrain once per init, fine-tune every cell, JSON + plots",
        description="The transfer study (issue 9). Extra arguments are dotted study-config overrides, e.g. "
                    "--steps=400 --workers=2 --data.events=20000 --output=out/study.json")
    add_arguments(study)
    study.set_defaults(func=_transfer_study, accepts_overrides=True)
