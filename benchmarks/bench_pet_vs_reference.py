"""Forward+backward throughput and peak memory of MinervaPet vs the reference omnilearned 0.2.0 PET2, same weights.

Both models are built at the same config (default: small preset, MINERvA layout: event token, 5 extra features,
9 PID rows, pair bias and local pair features on), ours converted from the reference's own state dict, and fed the
same batches: N object slots with a realistic multiplicity (real objects per event drawn around the dataset mean of
11.2, at most N) and, separately, fully occupied events. Timing rounds alternate between the two models in one
process (median of rounds); peak memory is, in a fresh subprocess per model (glibc told to return large blocks to the
OS), the peak RSS of two fwd+bwd steps (kernel high-water mark reset after a warm-up step) minus the RSS before them.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_pet_vs_reference.py --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling.omnilearned_pet import MinervaPetConfig, MinervaPetForEventClassification  # noqa: E402
from modeling.omnilearned_pet.convert_omnilearned_to_hf import rename_original_keys, transfer_weights  # noqa: E402

MEAN_OBJECTS_PER_EVENT = 11.2  # minerva-data.md §6 ("tokens after caps")


def build_models(size: str, num_labels: int):
    """The reference PET2 (classifier mode) and our classification model carrying the same weights."""
    from omnilearned.network import PET2
    from omnilearned.utils import get_model_parameters

    torch.manual_seed(0)
    reference = PET2(input_dim=4, use_int=True, local_int=True, num_coord=2, K=10, pid=True, pid_dim=9, add_info=True,
                     add_dim=5, conditional=True, cond_dim=16, mode="classifier", num_classes=num_labels,
                     **get_model_parameters(size))
    config = MinervaPetConfig.from_preset(size, num_labels=num_labels, zeroed_event_features=[])
    ours = MinervaPetForEventClassification(config)
    checkpoint = {"body": reference.body.state_dict(), "classifier_head": reference.classifier.state_dict()}
    info = transfer_weights(ours, rename_original_keys(checkpoint), new_pid_embedding=False)
    assert not info["newly_initialized_keys"], info["newly_initialized_keys"]
    return reference.train(), ours.train()


def make_batch(batch_size: int, num_slots: int, occupancy: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random events without duplicate (eta, phi); `realistic` multiplicity or `full` (all slots real)."""
    generator = torch.Generator().manual_seed(seed)
    if occupancy == "full":
        counts = torch.full((batch_size,), num_slots)
    else:
        counts = torch.poisson(torch.full((batch_size,), MEAN_OBJECTS_PER_EVENT - 1), generator=generator).long() + 1
        counts = counts.clamp(max=num_slots)
        counts[0] = num_slots  # the collator pads to the longest event of the batch
    mask = torch.arange(num_slots)[None, :] < counts[:, None]
    features = torch.randn(batch_size, num_slots, 9, generator=generator)
    features[..., 2] = features[..., 2].abs() + 0.1  # log pT != 0 on real objects (the reference's padding rule)
    features = features * mask[..., None]
    pid = torch.randint(1, 9, (batch_size, num_slots), generator=generator) * mask
    events = torch.randn(batch_size, 16, generator=generator)
    labels = torch.randint(0, 5, (batch_size,), generator=generator)
    return dict(object_features=features, object_pid=pid, attention_mask=mask, event_features=events, labels=labels)


def reference_step(model, batch) -> None:
    x = batch["object_features"]
    body = model.body(x[..., :4], batch["event_features"], batch["object_pid"], x[..., 4:9], None)
    loss = torch.nn.functional.cross_entropy(model.classifier(body), batch["labels"])
    loss.backward()


def ours_step(model, batch) -> None:
    model(**batch).loss.backward()


def time_steps(models: dict, batch, rounds: int, steps_per_round: int) -> dict[str, float]:
    """Median seconds per fwd+bwd step of each model, rounds alternating between the models."""
    steps = {"reference": reference_step, "ours": ours_step}
    for name, model in models.items():  # warm-up
        steps[name](model, batch)
        model.zero_grad(set_to_none=True)
    samples = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                steps[name](model, batch)
                model.zero_grad(set_to_none=True)
            samples[name].append((time.perf_counter() - start) / steps_per_round)
    return {name: statistics.median(values) for name, values in samples.items()}


def peak_memory_worker(which: str, size: str, batch_size: int, num_slots: int, occupancy: str) -> None:
    """Print the peak-RSS growth (MiB) of two fwd+bwd steps of one model (run in a fresh subprocess)."""
    reference, ours = build_models(size, 5)
    model = reference if which == "reference" else ours
    del reference, ours
    batch = make_batch(batch_size, num_slots, occupancy)
    step = reference_step if which == "reference" else ours_step
    step(model, batch)  # warm-up: lazily allocated buffers, thread pools
    model.zero_grad(set_to_none=True)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark (Linux >= 4.0)
    for _ in range(2):
        step(model, batch)
        model.zero_grad(set_to_none=True)
    print(json.dumps({"peak_rss_growth_mib": (_status_kib("VmHWM") - before) / 1024}))


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(which: str, args, occupancy: str) -> float:
    cmd = [sys.executable, __file__, "--memory-worker", which, "--size", args.size, "--batch-size",
           str(args.batch_size), "--num-slots", str(args.num_slots), "--occupancy", occupancy]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_growth_mib"]


def max_abs_difference(models: dict, batch) -> float:
    """Max |logit difference| of the two models in eval mode on `batch` (parity kept while benchmarking)."""
    with torch.no_grad():
        x = batch["object_features"]
        ref = models["reference"].eval()
        expected = ref.classifier(ref.body(x[..., :4], batch["event_features"], batch["object_pid"], x[..., 4:9], None))
        got = models["ours"].eval()(**batch).logits
    for model in models.values():
        model.train()
    return (expected - got).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=("small", "medium", "large"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-slots", type=int, default=33)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument("--occupancy", default="realistic", choices=("realistic", "full"))
    parser.add_argument("--memory-worker", choices=("reference", "ours"))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.memory_worker:
        peak_memory_worker(args.memory_worker, args.size, args.batch_size, args.num_slots, args.occupancy)
        return
    torch.manual_seed(0)
    reference, ours = build_models(args.size, 5)
    models = {"reference": reference, "ours": ours}
    results = []
    for occupancy in ("realistic", "full"):
        batch = make_batch(args.batch_size, args.num_slots, occupancy)
        seconds = time_steps(models, batch, args.rounds, args.steps_per_round)
        row = {
            "occupancy": occupancy,
            "mean_real_objects": batch["attention_mask"].sum(1).float().mean().item(),
            "max_abs_logit_difference_eval": max_abs_difference(models, batch),
            "reference_events_per_s": args.batch_size / seconds["reference"],
            "ours_events_per_s": args.batch_size / seconds["ours"],
            "speedup": seconds["reference"] / seconds["ours"],
            "reference_peak_rss_growth_mib": peak_memory("reference", args, occupancy),
            "ours_peak_rss_growth_mib": peak_memory("ours", args, occupancy),
        }
        print(json.dumps(row))
        results.append(row)
    record = {
        "benchmark": "pet-vs-omnilearned fwd+bwd (classification head, cross entropy), train mode, fp32, CPU",
        "size": args.size, "batch_size": args.batch_size, "num_slots": args.num_slots, "rounds": args.rounds,
        "steps_per_round": args.steps_per_round, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "results": results,
    }
    torch_tag = "".join(torch.__version__.split("+")[0].split(".")[:2])
    output = args.output or Path(__file__).parent / "results" / f"pet-vs-omnilearned-fwdbwd-fp32-pt{torch_tag}-cpu.json"
    tmp = output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, output)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
