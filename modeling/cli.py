"""`minerva-fm` subcommands for checkpoint conversion: convert-omnilearned, convert-particle-vit."""

from __future__ import annotations

import argparse
from pathlib import Path


def _convert_omnilearned(args: argparse.Namespace) -> int:
    from modeling.omnilearned_pet.convert_omnilearned_to_hf import convert_omnilearned_checkpoint

    convert_omnilearned_checkpoint(args.checkpoint, args.output_dir, size=args.size, use_ema=args.ema, task=args.task)
    return 0


def _convert_particle_vit(args: argparse.Namespace) -> int:
    from modeling.particle_vit.convert_hyperscale_to_hf import convert_hyperscale_checkpoint

    convert_hyperscale_checkpoint(args.checkpoint, args.output_dir, train_config=args.train_config, task=args.task)
    return 0


def register(subparsers) -> None:
    """Add the checkpoint converters to the `minerva-fm` parser."""
    tasks = ("backbone", "regression", "classification")
    pet = subparsers.add_parser("convert-omnilearned", help="original OmniLearned .pt checkpoint -> save_pretrained folder")
    pet.add_argument("checkpoint", type=Path)
    pet.add_argument("output_dir", type=Path)
    pet.add_argument("--size", choices=("small", "medium", "large"), default="small")
    pet.add_argument("--ema", action="store_true", help="take the EMA weights (ema_body) instead of body")
    pet.add_argument("--task", choices=tasks, default="backbone")
    pet.set_defaults(func=_convert_omnilearned)

    vit = subparsers.add_parser("convert-particle-vit", help="HyperScale pvit_final.pth -> save_pretrained folder")
    vit.add_argument("checkpoint", type=Path)
    vit.add_argument("output_dir", type=Path)
    vit.add_argument("--train-config", type=Path, default=None, help="the run's train_config.yaml (sizes)")
    vit.add_argument("--task", choices=tasks, default="backbone")
    vit.set_defaults(func=_convert_particle_vit)
