"""Subcommands of `minerva-fm` defined by recipes: finetune, evaluate, demo (heavy imports stay in the handlers)."""

from __future__ import annotations

import argparse
from pathlib import Path

from minerva_common.errors import report


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default after its help; descriptions kept as written."""


def _finetune(args: argparse.Namespace) -> int:
    from recipes.finetune import run_from_args

    return run_from_args(args, list(args.overrides))


def _evaluate(args: argparse.Namespace) -> int:
    from model_cards.publish import PublishError
    from recipes.evaluate import run_from_args

    try:
        run_from_args(args)
    except (OSError, ValueError, PublishError) as err:  # no such model/data/split, wrong task, unwritable --out
        return report("evaluate", err, where=args.out)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from recipes.demo import run_demo

    try:
        run_demo(args.out, n_events=args.events, steps=args.steps, paper_sizes=args.paper_sizes,
                 tasks=tuple(args.tasks), seed=args.seed, init=args.init, pretrain_steps=args.pretrain_steps)
    except OSError as err:  # read-only or full output disk
        return report("demo", err, where=args.out)
    return 0


def register(subparsers) -> None:
    """Add finetune / evaluate / demo to the `minerva-fm` parser."""
    from recipes.finetune import add_arguments as add_finetune_arguments

    fine = subparsers.add_parser(
        "finetune", help="fine-tune a backbone (run under `accelerate launch` or torchrun for several processes)",
        description="Fine-tune a backbone; the same arguments as `accelerate launch recipes/finetune.py`. Extra "
                    "arguments are dotted config overrides, e.g. --optim.lr=3e-4 --model.mode lora")
    add_finetune_arguments(fine)
    fine.set_defaults(func=_finetune, accepts_overrides=True)

    from recipes.evaluate import add_arguments

    ev = subparsers.add_parser("evaluate", formatter_class=_HelpFormatter,
                               help="metrics of a model vs the calorimetric / cut baselines -> eval_results.json + "
                                    "plots")
    add_arguments(ev)
    ev.set_defaults(func=_evaluate)

    demo = subparsers.add_parser("demo", formatter_class=_HelpFormatter,
                                 help="synthetic sample -> Parquet -> pretrain PET -> fine-tune PET (rw, full, frozen, "
                                      "LoRA) + MLP -> evaluate vs baselines (test, shifted) -> plots + model cards, on "
                                      "CPU in about ten minutes")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder of the whole demo")
    demo.add_argument("--events", type=int, default=30_000,
                      help="synthetic events (plus 10%% in the shifted sample)")
    demo.add_argument("--steps", type=int, default=None,
                      help="optimizer steps of every PET run (None: 1500 regression, 500 classification; the "
                           "MLP gets min(steps, 1000))")
    demo.add_argument("--pretrain-steps", type=int, default=None,
                      help="steps of the masked-object pretraining (None: 300)")
    demo.add_argument("--paper-sizes", action="store_true", help="use the paper's small PET preset (slow on CPU)")
    demo.add_argument("--tasks", nargs="+", choices=("regression", "classification"),
                      default=["regression", "classification"], help="tasks to run")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic sample")
    demo.add_argument("--init", default=None, help="PET weights (folder / Hub id) for the full, frozen and LoRA runs "
                                                   "instead of the demo's own pretraining; None: pretrain first")
    demo.set_defaults(func=_demo)
