"""Forward+backward training throughput (events/s) of every backbone on CPU, one batch shape, measured in one run.

Usage: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_backbones.py [--batch 64] [--objects 33] [--seconds 4]`
Writes benchmarks/results/backbones-fwd-bwd-cpu-b<batch>-n<objects>-fp32-pt<torch>.json. Each model gets one
warm-up step, then steps until `--seconds` have passed (at least `--min-steps`); the whole run stays under ~3 minutes
on one core. Regression head, gradients only (no optimiser step), fixed seed; ~11 real objects per event (MINERvA mean).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import modeling  # noqa: E402

# name -> (backbone, size, config overrides); bert-tiny shape is built from a BertConfig (no download needed).
MODELS = {
    "particle_vit-small": ("particle_vit", "small", {}),
    "particle_vit-medium": ("particle_vit", "medium", {}),
    "bert_projection-bert-tiny": ("bert_projection", "small", {}),  # "small" is the bert-tiny shape (paper: BERT-small)
    "mlp": ("mlp", "small", {}),
    "omnilearned-small": ("omnilearned", "small", {}),
    "omnilearned-medium": ("omnilearned", "medium", {}),
}


def synthetic_batch(batch: int, objects: int, seed: int = 0) -> dict:
    """A padded batch in the docs/tensor-layout.md layout with ~11 real objects per event."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.clamp(torch.poisson(torch.full((batch,), 11.0), generator=g).long(), 1, objects)
    mask = torch.arange(objects)[None] < lengths[:, None]
    features = torch.randn(batch, objects, 9, generator=g)
    features[..., 2:4] = features[..., 2:4].abs() * 3 + 1
    return {
        "object_features": features.masked_fill(~mask[..., None], 0.0),
        "object_pid": torch.randint(1, 9, (batch, objects), generator=g).masked_fill(~mask, 0),
        "attention_mask": mask,
        "event_features": torch.randn(batch, 16, generator=g),
        "labels": torch.rand(batch, generator=g) * 3,
    }


def measure(model: torch.nn.Module, batch: dict, seconds: float, min_steps: int) -> dict:
    """Time forward+backward steps after one warm-up step."""
    model.train()
    model(**batch).loss.backward()
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while steps < min_steps or time.perf_counter() - start < seconds:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        steps += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    events = steps * batch["labels"].shape[0]
    # events per CPU-second is the steadier number on a shared machine (wall time includes waiting for a core)
    return {"steps": steps, "seconds": round(elapsed, 3), "cpu_seconds": round(cpu, 3),
            "events_per_second": round(events / elapsed, 1), "events_per_cpu_second": round(events / cpu, 1),
            "ms_per_step": round(1000 * elapsed / steps, 2)}


def git_commit() -> str | None:
    """The checkout's commit, if any."""
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> int:
    """Run every available backbone and write one JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--objects", type=int, default=33)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--min-steps", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    torch.manual_seed(0)
    batch = synthetic_batch(args.batch, args.objects)
    rows = []
    for name in args.models:
        backbone, size, overrides = MODELS[name]
        try:
            model = modeling.build_model(backbone, "regression", size=size, **overrides)
        except (ImportError, ValueError) as error:
            rows.append({"model": name, "skipped": f"{type(error).__name__}: {error}"})
            print(f"{name:28s} skipped: {error}")
            continue
        params = sum(p.numel() for p in model.parameters())
        row = {"model": name, "backbone": backbone, "size": size, "parameters": params,
               **measure(model, batch, args.seconds, args.min_steps)}
        rows.append(row)
        print(f"{name:28s} {params / 1e6:7.2f} M params  {row['events_per_second']:9.1f} events/s  "
              f"{row['events_per_cpu_second']:9.1f} events/cpu-s  "
              f"{row['ms_per_step']:8.1f} ms/step")
    result = {
        "what": "forward+backward (regression head, Huber loss) events/s on CPU, fp32",
        "batch": args.batch, "objects": args.objects, "mean_real_objects": float(batch["attention_mask"].sum(1)
                                                                                     .float().mean()),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu": platform.processor() or platform.machine(),
        "git_commit": git_commit(), "results": rows,
    }
    out = ROOT / "benchmarks" / "results" / (
        f"backbones-fwd-bwd-cpu-b{args.batch}-n{args.objects}-fp32-pt{torch.__version__.split('+')[0]}.json")
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
