"""benchmarks/bench_gpu.py runs end to end on CPU at tiny sizes (it is meant for the GPU machine): every model of
every mode timed, ours and omnilearned 0.2.0 on the same weights, predict throughput, files named by what they hold."""

from __future__ import annotations

import json
import sys

import torch

from recipes_test_helpers import REPO_ROOT


def test_bench_gpu_tiny_on_cpu(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import bench_gpu

    written = bench_gpu.main(["--device", "cpu", "--tiny", "--batch-size", "8", "--warmup", "1", "--steps", "1",
                              "--predict-events", "64", "--modes", "fp32,bf16", "--output-dir", str(tmp_path)])
    version = torch.__version__.split("+")[0]
    assert [p.name for p in written] == [f"gpu-cpu-{m}-torch{version}-tiny.json" for m in ("fp32", "bf16")]
    for path in written:
        result = json.loads(path.read_text())
        assert set(result["training"]) == {"pet_ours", "pet_omnilearned", "particle_vit_ours"}
        assert all(v["events_per_s"] > 0 for v in result["training"].values()), result["training"]
        assert result["ratios"]["pet_ours_over_omnilearned"] > 0
        assert result["predict"]["events"] == 64 and result["predict"]["events_per_s_after_startup"] > 0
        # the two PETs carry the same weights: equal parameter counts
        assert result["training"]["pet_ours"]["parameters"] == result["training"]["pet_omnilearned"]["parameters"]
