"""`minerva-fm` subcommands for checkpoints: convert-omnilearned, convert-particle-vit, export-onnx."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

from minerva_common.errors import report

# what torch.load raises on a file that is not a PyTorch checkpoint (text, truncated zip, foreign pickle)
UNREADABLE_CHECKPOINT = (pickle.UnpicklingError, EOFError, KeyError, RuntimeError)


def _checkpoint_errors(command: str, checkpoint: Path, convert) -> int:
    """Run `convert()`; a bad checkpoint or output folder is a one-line error naming the file."""
    try:
        convert()
    except (ValueError, OSError) as err:
        return report(command, err)
    except UNREADABLE_CHECKPOINT as err:
        return report(command, ValueError(f"{checkpoint}: not a readable PyTorch checkpoint ({_load_reason(err)})"))
    return 0


def _load_reason(err: Exception) -> str:
    """The short reason of a failed torch.load (the weights-only unpickler's own line, not its advice)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        return f"refused by torch.load(weights_only=True): {reason}"
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def _convert_omnilearned(args: argparse.Namespace) -> int:
    from modeling.omnilearned_pet.convert_omnilearned_to_hf import convert_omnilearned_checkpoint

    return _checkpoint_errors("convert-omnilearned", args.checkpoint, lambda: convert_omnilearned_checkpoint(
        args.checkpoint, args.output_dir, size=args.size, use_ema=args.ema, task=args.task))


def _convert_particle_vit(args: argparse.Namespace) -> int:
    from modeling.particle_vit.convert_hyperscale_to_hf import convert_hyperscale_checkpoint

    return _checkpoint_errors("convert-particle-vit", args.checkpoint, lambda: convert_hyperscale_checkpoint(
        args.checkpoint, args.output_dir, train_config=args.train_config, task=args.task))


def _export_onnx(args: argparse.Namespace) -> int:
    from modeling.export import load_saved_model, onnx_parity, write_onnx_export

    try:
        path = write_onnx_export(args.model, args.output_dir, revision=args.revision)
    except (ValueError, OSError) as err:  # not a save_pretrained folder / Hub id, unwritable output folder
        return report("export-onnx", err, where=args.output_dir)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.check:
        worst = onnx_parity(load_saved_model(args.model, args.revision), path)
        print("onnxruntime parity (batch 1 and 4; 3/7 and 33 object slots, padded): max |diff| "
              + ", ".join(f"{name} {value:.2e}" for name, value in worst.items()))
    return 0


def register(subparsers) -> None:
    """Add the checkpoint converters to the `minerva-fm` parser."""
    tasks = ("backbone", "regression", "classification")
    pet = subparsers.add_parser("convert-omnilearned", help="original OmniLearned .pt checkpoint -> save_pretrained folder")
    pet.add_argument("checkpoint", type=Path, help="OmniLearned .pt training checkpoint")
    pet.add_argument("output_dir", type=Path, help="save_pretrained folder to write")
    pet.add_argument("--size", choices=("small", "medium", "large"), default="small",
                     help="published size of the checkpoint (default: %(default)s)")
    pet.add_argument("--ema", action="store_true", help="take the EMA weights (ema_body) instead of body")
    pet.add_argument("--task", choices=tasks, default="backbone", help="model to save (default: %(default)s)")
    pet.set_defaults(func=_convert_omnilearned)

    vit = subparsers.add_parser("convert-particle-vit", help="HyperScale pvit_final.pth -> save_pretrained folder")
    vit.add_argument("checkpoint", type=Path, help="HyperScale pvit_final.pth")
    vit.add_argument("output_dir", type=Path, help="save_pretrained folder to write")
    vit.add_argument("--train-config", type=Path, default=None,
                     help="the run's train_config.yaml (sizes; default: read the sizes from the tensors)")
    vit.add_argument("--task", choices=tasks, default="backbone", help="model to save (default: %(default)s)")
    vit.set_defaults(func=_convert_particle_vit)

    onnx = subparsers.add_parser("export-onnx", help="save_pretrained folder or Hub id -> OUT/model.onnx (dynamic "
                                 "batch and object axes) + OUT/onnx_export.json",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    onnx.add_argument("model", help="save_pretrained folder or Hub model id")
    onnx.add_argument("output_dir", type=Path, help="folder to write model.onnx into (e.g. the model folder itself)")
    onnx.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of MODEL")
    onnx.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                      help="compare onnxruntime with PyTorch on padded batches (rtol 1e-3, atol 1e-4)")
    onnx.set_defaults(func=_export_onnx)
