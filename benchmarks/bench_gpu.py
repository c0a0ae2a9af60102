"""GPU benchmark (issue 12 §7): fine-tuning events/s of PET-small and ParticleViT-small at the paper's batch 2048 in
fp32, bf16 autocast and torch.compile, ours vs the reference omnilearned 0.2.0 PET2 (same config, same weights, same
GPU, one run), plus `minerva-fm predict` throughput.

    PYTHONPATH=. python benchmarks/bench_gpu.py                                     # on the GPU machine
    PYTHONPATH=. python benchmarks/bench_gpu.py --device cpu --tiny --batch-size 16 --steps 2 --predict-events 256

On a lent GPU with a 10-minute limit per command, run `--modes fp32,bf16` and `--modes compile` as two commands
(each mode's file is written as soon as that mode finishes; compilation takes minutes per model).

One fine-tuning step = forward + backward + AdamW step on a batch of `--batch-size` events with realistic
multiplicity (mean 11.2 real objects of 33 slots, the collator pads to the longest event). Modes: `fp32`; `bf16`
(torch.autocast, bf16 activations, fp32 weights); `compile` (torch.compile of the model, bf16 autocast). Each model
is timed after `--warmup` steps over `--steps` steps, with CUDA synchronised; peak memory is
`torch.cuda.max_memory_allocated`. Writes one file per mode:
benchmarks/results/gpu-<GPU name>-<mode>-torch<version>.json. Anchor (issue 12): the reference ran ~14k events/s
(Transformer2) to ~57k events/s (BERT-tiny) on one A100 at batch 2048 (from its job walltimes). `--tiny` swaps the
presets for the CPU test sizes so the script runs in seconds anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests" / "dataset_builder")]

import torch  # noqa: E402

from minerva_common.atomic import write_text_atomic  # noqa: E402

MODES = ("fp32", "bf16", "compile")
TINY = {"omnilearned": dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=1, num_local_layers=1,
                            num_head_layers=1),
        "particle_vit": dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=1)}
ANCHORS = {"reference_a100_transformer2_events_per_s": 14_000, "reference_a100_bert_tiny_events_per_s": 57_000}


def build_models(tiny: bool) -> dict[str, torch.nn.Module]:
    """{"pet_ours", "pet_omnilearned", "particle_vit_ours"}: classification models, the two PETs sharing weights."""
    from modeling.omnilearned_pet import MinervaPetConfig, MinervaPetForEventClassification
    from modeling.omnilearned_pet.convert_omnilearned_to_hf import rename_original_keys, transfer_weights
    from modeling.particle_vit.configuration_minerva_particle_vit import MinervaParticleViTConfig
    from modeling.particle_vit.modeling_minerva_particle_vit import MinervaParticleViTForEventClassification

    torch.manual_seed(0)
    pet_config = MinervaPetConfig.from_preset("small", num_labels=5, zeroed_event_features=[],
                                              **(TINY["omnilearned"] if tiny else {}))
    models = {"pet_ours": MinervaPetForEventClassification(pet_config)}
    with contextlib.suppress(ImportError):
        from omnilearned.network import PET2

        reference = PET2(input_dim=4, use_int=True, local_int=True, num_coord=2, K=pet_config.num_neighbors, pid=True,
                         pid_dim=9, add_info=True, add_dim=5, conditional=True, cond_dim=16, mode="classifier",
                         num_classes=5, base_dim=pet_config.hidden_size, num_transformers=pet_config.num_hidden_layers,
                         num_transformers_head=pet_config.num_head_layers, num_tokens=pet_config.num_class_tokens,
                         num_heads=pet_config.num_attention_heads, mlp_ratio=pet_config.mlp_ratio)
        checkpoint = {"body": reference.body.state_dict(), "classifier_head": reference.classifier.state_dict()}
        info = transfer_weights(models["pet_ours"], rename_original_keys(checkpoint), new_pid_embedding=False)
        if info["newly_initialized_keys"]:
            raise RuntimeError(f"reference weights do not cover our PET: {info['newly_initialized_keys'][:5]}")
        models["pet_omnilearned"] = reference
    vit_config = MinervaParticleViTConfig.from_preset("small", num_labels=5, **(TINY["particle_vit"] if tiny else {}))
    models["particle_vit_ours"] = MinervaParticleViTForEventClassification(vit_config)
    return models


def make_batch(batch_size: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random valid events, realistic multiplicity, padded to the longest (33 slots at batch 2048)."""
    from bench_pet_vs_reference import make_batch as reference_batch

    batch = reference_batch(batch_size, 33, "realistic", seed)
    return {k: v.to(device) for k, v in batch.items()}


def loss_of(name: str, model, batch) -> torch.Tensor:
    """The classification loss of one step (the reference PET2 is called as its training loop does)."""
    if name == "pet_omnilearned":
        x = batch["object_features"]
        logits = model.body(x[..., :4], batch["event_features"], batch["object_pid"], x[..., 4:9], None)
        return torch.nn.functional.cross_entropy(model.classifier(logits).float(), batch["labels"])
    return model(**batch).loss


def autocast(device: torch.device, mode: str):
    """bf16 autocast for `bf16` and `compile`, nothing for `fp32`."""
    if mode == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(name: str, model, batch, device, mode: str, warmup: int, steps: int) -> dict:
    """Events/s and peak memory of `steps` fine-tuning steps (forward, backward, AdamW) after `warmup` steps."""
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_model = model
    if mode == "compile":
        step_model = torch.compile(model) if name != "pet_omnilearned" else model
        if name == "pet_omnilearned":  # compile the two submodules the training loop calls
            model.body, model.classifier = torch.compile(model.body), torch.compile(model.classifier)

    def step() -> None:
        with autocast(device, mode):
            loss = loss_of(name, step_model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    compile_start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - compile_start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    wall = time.perf_counter() - start
    batch_size = batch["labels"].shape[0]
    return {"events_per_s": round(batch_size * steps / wall, 1), "s_per_step": round(wall / steps, 5),
            "warmup_s": round(warmup_s, 2), "steps": steps,
            "peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda"
            else None, "parameters": sum(p.numel() for p in model.parameters())}


def predict_throughput(device: torch.device, mode: str, tiny: bool, events: int, batch_size: int) -> dict:
    """`minerva-fm predict` events/s (whole pass and forward alone) of PET-small regression on random events."""
    from bench_predict import forward_rate, predict_rate, save_model, write_events

    precision = "fp32" if mode == "fp32" else "bf16"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = write_events(tmp / "data", events)
        model_dir = save_model(tmp / "model", "omnilearned", "small", tiny)
        whole = predict_rate(model_dir, data_dir, tmp / "preds", batch_size, str(device), precision)
        forward = forward_rate(model_dir, data_dir, batch_size, str(device), precision)
    return {"precision": precision, "events": whole["events"], "startup_s": whole["startup_s"],
            "events_per_s_after_startup": round(whole["events_per_s_after_startup"]),
            "events_per_s_forward_only": round(forward),
            "hours_for_1e7_events": round(1e7 / whole["events_per_s_after_startup"] / 3600, 3)}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def result_path(output_dir: Path, device: torch.device, mode: str, tiny: bool) -> Path:
    """gpu-<GPU name>-<mode>-torch<version>[-tiny].json"""
    name = device_name(device).replace(" ", "_").replace("/", "_")
    return output_dir / f"gpu-{name}-{mode}-torch{torch.__version__.split('+')[0]}{'-tiny' if tiny else ''}.json"


def run_mode(mode: str, args, device: torch.device) -> dict:
    """Every model in one mode, then predict; the results dict of that mode."""
    batch = make_batch(args.batch_size, device)
    training = {}
    for name, model in build_models(args.tiny).items():
        if args.models and name not in args.models.split(","):
            continue
        try:  # one failing model/mode (e.g. a torch.compile graph break) must not lose the others on a lent GPU
            training[name] = time_training(name, model, batch, device, mode, args.warmup, args.steps)
        except Exception as err:  # noqa: BLE001 - recorded in the results, the run goes on
            training[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ratios = {}
    if all("events_per_s" in training.get(k, {}) for k in ("pet_ours", "pet_omnilearned")):
        ratios["pet_ours_over_omnilearned"] = round(training["pet_ours"]["events_per_s"]
                                                    / training["pet_omnilearned"]["events_per_s"], 3)
    result = {
        "benchmark": "fine-tuning steps/s (fwd+bwd+AdamW) and predict throughput on one device, one run",
        "mode": mode, "batch_size": args.batch_size, "tiny": args.tiny, "training": training, "ratios": ratios,
        "predict": predict_throughput(device, mode, args.tiny, args.predict_events, args.batch_size)
        if args.predict_events else None,
        "anchors": ANCHORS,
        "machine": {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "python": platform.python_version(), "cpus": os.cpu_count(),
                    "omnilearned": _version("omnilearned"), "transformers": _version("transformers")},
    }
    return result


def _version(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> list[Path]:
    """Run the chosen modes, write one results JSON per mode, print a summary; return the files written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: %(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated of fp32,bf16,compile "
                                                                  "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=2048, help="events per step (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model (default: %(default)s)")
    parser.add_argument("--predict-events", type=int, default=100_000,
                        help="events for the predict throughput, 0 to skip (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="tiny CPU test sizes instead of the small presets")
    parser.add_argument("--models", default=None, help="comma-separated subset of pet_ours,pet_omnilearned,"
                                                       "particle_vit_ours (default: all)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results", help="default: %(default)s")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    written = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; choose from {MODES}")
        result = run_mode(mode, args, device)
        path = write_text_atomic(result_path(args.output_dir, device, mode, args.tiny), json.dumps(result, indent=2) + "\n")
        written.append(path)
        print(json.dumps({"mode": mode, "events_per_s": {k: v.get("events_per_s", v.get("error"))
                                                         for k, v in result["training"].items()},
                          "ratios": result["ratios"], "predict": result["predict"], "file": str(path)}))
    return written


if __name__ == "__main__":
    main()
