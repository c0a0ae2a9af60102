"""`minerva-fm` subcommands of this package: push-model, push-space, model-card."""

from __future__ import annotations

import argparse
from pathlib import Path

from minerva_common.errors import report


def _push_model(args: argparse.Namespace) -> int:
    from model_cards.publish import PublishError, push_model
    from model_cards.render import EvalResultsError

    try:
        url = push_model(args.run_dir, args.repo_id, private=args.private, commit_message=args.message,
                         dataset_id=args.dataset, onnx=args.onnx)
    except (PublishError, EvalResultsError, OSError) as err:
        return report("push-model", err)
    print(url)
    return 0


def _push_space(args: argparse.Namespace) -> int:
    from model_cards.publish import PublishError, push_space

    try:
        url = push_space(args.space_repo_id, app_dir=args.app_dir, private=args.private, commit_message=args.message)
    except (PublishError, OSError) as err:
        return report("push-space", err)
    print(url)
    return 0


def _model_card(args: argparse.Namespace) -> int:
    from model_cards.render import EvalResultsError, write_model_card

    try:
        print(write_model_card(args.run_dir, repo_id=args.repo_id, dataset_id=args.dataset))
    except (EvalResultsError, OSError) as err:
        return report("model-card", err, where=Path(args.run_dir) / "README.md")
    return 0


def register(subparsers) -> None:
    """Add push-model / push-space / model-card to the `minerva-fm` parser."""
    push = subparsers.add_parser("push-model", help="render the card and upload a run folder to a Hub model repo",
                                 description="Upload a model folder (RUN/model, RUN/adapter) or a training run folder "
                                             "RUN: weights, config, remote code, eval_results.json, plots, "
                                             "model.onnx, the TensorBoard logs (RUN/logs -> logs/), a LoRA run's "
                                             "adapter (-> adapter/) and the rendered card, in one commit.")
    push.add_argument("run_dir", type=Path, help="training run folder, or a folder with the saved model (or LoRA "
                                                 "adapter) and eval_results.json")
    push.add_argument("repo_id")
    push.add_argument("--dataset", default=None, help="Hub dataset id for the card (default: from eval_results.json)")
    push.add_argument("--onnx", action="store_true",
                      help="export model.onnx first (checked against PyTorch with onnxruntime); without it an "
                           "up-to-date model.onnx in the folder is uploaded as it is")
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
