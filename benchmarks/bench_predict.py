"""`minerva-fm predict` throughput: events/s of the whole pass (stream -> collate -> forward -> Parquet) next to the
model's forward alone and the data path alone, on the same events in one run.

    PYTHONPATH=. python benchmarks/bench_predict.py [--backbone omnilearned] [--size small] [--events 8000]
        [--batch-size 2048] [--device cpu] [--precision fp32] [--tiny]

Writes benchmarks/results/predict-<device>-<backbone>-<size|tiny>-<precision>-torch<version>.json. The model has
random weights (throughput does not depend on them); the events are random valid rows of the converted schema
(tests/dataset_builder/fake_data.py), written as 4 shards. The ratio predict / forward-only says how much the data
path and the Parquet writing cost on top of the model (goal: inference is the bottleneck, not I/O).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "dataset_builder")]

import torch  # noqa: E402

from minerva_common.atomic import write_text_atomic  # noqa: E402

TINY = {"omnilearned": dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, num_local_layers=1,
                            num_neighbors=4, use_pair_bias=False, num_head_layers=1),
        "particle_vit": dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64),
        "bert_projection": dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64),
        "mlp": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2)}


def write_events(root: Path, n_events: int, shards: int = 4) -> Path:
    """`root/data/test/part-XXXXX.parquet`: `n_events` random valid events in `shards` files."""
    import pyarrow.parquet as pq
    from fake_data import fake_table

    (root / "data" / "test").mkdir(parents=True)
    per = n_events // shards
    for k in range(shards):
        pq.write_table(fake_table(per, seed=k, source_file=f"bench_{k}.root"),
                       root / "data" / "test" / f"part-{k:05d}.parquet", row_group_size=10_000)
    return root


def save_model(folder: Path, backbone: str, size: str, tiny: bool) -> Path:
    """A random-weight regression model of `backbone` saved with save_pretrained."""
    from modeling import build_model

    build_model(backbone, "regression", size, **(TINY[backbone] if tiny else {})).save_pretrained(folder)
    return folder


def forward_rate(model_dir: Path, data_dir: Path, batch_size: int, device: str, precision: str) -> float:
    """Events/s of the model's forward alone on one pre-collated batch (repeated), after a warm-up."""
    import pyarrow.parquet as pq

    from dataset_builder.collator import MinervaCollator
    from recipes.evaluate import load_model
    from recipes.predict import autocast_context, model_outputs

    model, info = load_model(str(model_dir))
    model = model.to(device)
    table = pq.read_table(next((data_dir / "data" / "test").glob("*.parquet"))).slice(0, batch_size)
    batch = {k: v.to(device) for k, v in MinervaCollator().collate_arrow(table).items()}
    dev = torch.device(device)
    with torch.inference_mode(), autocast_context(dev, precision):
        model_outputs(model, batch, info["task"])
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 3.0 or n < 2 * table.num_rows:
            model_outputs(model, batch, info["task"])
            n += table.num_rows
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def data_rate(data_dir: Path, batch_size: int) -> float:
    """Events/s of the data path alone: stream -> Arrow batches -> collate_arrow."""
    from dataset_builder.collator import MinervaCollator
    from dataset_builder.hf_dataset import iter_tables, load_events

    from recipes.predict import READ_COLUMNS

    collator = MinervaCollator()
    start, n = time.perf_counter(), 0
    for table in iter_tables(load_events(str(data_dir), "test", columns=list(READ_COLUMNS)), batch_size):
        n += collator.collate_arrow(table)["object_features"].shape[0]
    return n / (time.perf_counter() - start)


def predict_rate(model_dir: Path, data_dir: Path, out: Path, batch_size: int, device: str, precision: str) -> dict:
    """Events/s of the whole `run_predict` pass, with and without its start-up (imports, model load, data lookup)."""
    from recipes.predict import PredictConfig, run_predict

    start = time.perf_counter()
    info = run_predict(PredictConfig(model=str(model_dir), data=[str(data_dir)], out=str(out), batch_size=batch_size,
                                     precision=precision, cpu=device == "cpu", progress=False))
    wall, timing = time.perf_counter() - start, info["timing_main_process"]
    return {"events": info["n_events"], "wall_s": round(wall, 2), "startup_s": round(timing["startup_s"], 2),
            "events_per_s": info["n_events"] / wall, "events_per_s_after_startup": timing["events"] / timing["predict_s"]}


def result_name(device: str, backbone: str, label: str, precision: str) -> str:
    """File name saying what was measured."""
    gpu = torch.cuda.get_device_name().replace(" ", "_") if device.startswith("cuda") else "cpu"
    return f"predict-{gpu}-{backbone}-{label}-{precision}-torch{torch.__version__.split('+')[0]}.json"


def main(argv: list[str] | None = None) -> dict:
    """Measure, write the results JSON, print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="omnilearned", choices=sorted(TINY), help="default: %(default)s")
    parser.add_argument("--size", default="small", help="preset (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="the tiny CPU test sizes instead of the preset")
    parser.add_argument("--events", type=int, default=8000, help="events predicted (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=2048, help="default: %(default)s")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="default: %(default)s")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results", help="default: %(default)s")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    label = "tiny" if args.tiny else args.size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = write_events(tmp / "data", args.events)
        model_dir = save_model(tmp / "model", args.backbone, args.size, args.tiny)
        whole = predict_rate(model_dir, data_dir, tmp / "preds", args.batch_size, args.device, args.precision)
        forward = forward_rate(model_dir, data_dir, args.batch_size, args.device, args.precision)
        data = data_rate(data_dir, args.batch_size)
    result = {
        "benchmark": "minerva-fm predict: whole pass vs model forward alone vs data path alone, same events",
        "backbone": args.backbone, "size": label, "precision": args.precision, "device": args.device,
        "batch_size": args.batch_size, "events": whole["events"], "predict_wall_s": whole["wall_s"],
        "predict_startup_s": whole["startup_s"],
        "events_per_s": {"predict_after_startup": round(whole["events_per_s_after_startup"]),
                         "predict_with_startup": round(whole["events_per_s"]), "forward_only": round(forward),
                         "data_only": round(data)},
        "ratio_predict_over_forward_only": round(whole["events_per_s_after_startup"] / forward, 3),
        "ratio_predict_over_data_only": round(whole["events_per_s_after_startup"] / data, 3),
        "hours_for_1e7_events": round(1e7 / whole["events_per_s_after_startup"] / 3600, 2),
        "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads, "python": platform.python_version(),
                    "torch": torch.__version__, "processor": platform.processor() or platform.machine(),
                    "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
    }
    path = args.output_dir / result_name(args.device, args.backbone, label, args.precision)
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
