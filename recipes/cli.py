"""The `minerva-fm` command line: one subcommand per step of the data flow, each defined next to its code."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)` and keeps its heavy imports inside the command handlers,
# so `minerva-fm --help` stays fast.
COMMAND_MODULES = (
    "dataset_builder.cli",  # generate, convert, dataset-summary, push-dataset
    "modeling.cli",  # convert-omnilearned, convert-particle-vit
    "recipes.commands",  # finetune, evaluate, demo
    "recipes.predict",  # predict
    "model_cards.cli",  # push-model, push-space
    "recipes.pretrain_cli",  # generate-jets, pretrain
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="minerva-fm", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the chosen subcommand (each sets `func` via `set_defaults`).

    A subcommand that sets `accepts_overrides` receives the arguments it does not define as `args.overrides`
    (finetune's `--section.key=value` config overrides); any other subcommand refuses them.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "accepts_overrides", False):
        args.overrides = extra
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
