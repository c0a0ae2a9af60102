"""`minerva-fm` subcommands of this package: push-model, push-space, model-card."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _push_model(args: argparse.Namespace) -> int:
    from model_cards.publish import PublishError, push_model

    try:
        url = push_model(args.run_dir, args.repo_id, private=args.private, commit_message=args.message,
                         dataset_id=args.dataset)
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(url)
    return 0


def _push_space(args: argparse.Namespace) -> int:
    from model_cards.publish import PublishError, push_space

    try:
        url = push_space(args.space_repo_id, app_dir=args.app_dir, private=args.private, commit_message=args.message)
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(url)
    return 0


def _model_card(args: argparse.Namespace) -> int:
    from model_cards.render import EvalResultsError, write_model_card

    try:
        print(write_model_card(args.run_dir, repo_id=args.repo_id, dataset_id=args.dataset))
    except EvalResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    """Add push-model / push-space / model-card to the `minerva-fm` parser."""
    push = subparsers.add_parser("push-model", help="render the card and upload a run folder to a Hub model repo")
    push.add_argument("run_dir", type=Path, help="folder with the saved model (or LoRA adapter) and eval_results.json")
    push.add_argument("repo_id")
    push.add_argument("--dataset", default=None, help="Hub dataset id for the card (default: from eval_results.json)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--message", default=None, help="commit message")
    push.set_defaults(func=_push_model)

    space = subparsers.add_parser("push-space", help="upload the Gradio event explorer to a Hub Space repo")
    space.add_argument("space_repo_id")
    space.add_argument("--app-dir", type=Path, default=Path("spaces/event_explorer"))
    space.add_argument("--private", action="store_true")
    space.add_argument("--message", default=None, help="commit message")
    space.set_defaults(func=_push_space)

    card = subparsers.add_parser("model-card", help="render README.md of a run folder from its eval results")
    card.add_argument("run_dir", type=Path)
    card.add_argument("--repo-id", default=None)
    card.add_argument("--dataset", default=None)
    card.set_defaults(func=_model_card)
