"""`minerva-fm export-onnx`: model.onnx with dynamic batch and object axes, onnxruntime parity with PyTorch (rtol 1e-3,
atol 1e-4, as weaver-core) at batch 1 and 4, short and full object counts, padded, for every backbone x task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from backbone_helpers import ALL_BACKBONES, TASKS, build_tiny

from modeling.export import INPUT_NAMES, PARITY_CASES, example_inputs, onnx_parity, output_names, write_onnx_export

ROOT = Path(__file__).resolve().parents[2]
FAST = {("mlp", "regression")}  # one case in the quick suite; every backbone x task in the slow one
CASES = [pytest.param(b, t, marks=() if (b, t) in FAST else pytest.mark.slow) for b in ALL_BACKBONES for t in TASKS]


@pytest.mark.parametrize("backbone, task", CASES)
def test_onnx_export_matches_pytorch(backbone, task, tmp_path):
    """save_pretrained -> model.onnx; onnxruntime equals the PyTorch model on padded batches of every case."""
    import onnxruntime

    model = build_tiny(backbone, task, seed=4)
    model.save_pretrained(tmp_path / "model")
    path = write_onnx_export(tmp_path / "model", tmp_path / "model")
    assert path == tmp_path / "model" / "model.onnx"
    info = json.loads((tmp_path / "model" / "onnx_export.json").read_text())
    assert info["outputs"] == list(output_names(model)) and info["architecture"] == type(model).__name__
    worst = onnx_parity(model, path)
    assert set(worst) == set(output_names(model))

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dims = {i.name: i.shape for i in session.get_inputs()}
    assert dims["event_features"][0] == "batch"
    if "object_features" in dims:  # the event MLP's exporter drops the object inputs it never reads
        assert dims["object_features"][:2] == ["batch", "objects"]
    for batch_size, num_objects in PARITY_CASES:  # our own comparison, independent of onnx_parity
        inputs = example_inputs(model.config, batch_size, num_objects, seed=11)
        got = session.run(None, {name: inputs[name].numpy() for name in dims})
        with torch.no_grad():
            outputs = model(**inputs)
        for name, value in zip(output_names(model), got):
            np.testing.assert_allclose(value, outputs[name].numpy(), rtol=1e-3, atol=1e-4, err_msg=name)
    assert set(dims) <= set(INPUT_NAMES)


def test_cli_export_onnx_writes_and_checks(tmp_path):
    """`minerva-fm export-onnx MODEL OUT` (recipes.cli) writes OUT/model.onnx and reports the parity check."""
    model = build_tiny("mlp", "classification", seed=1)
    model.save_pretrained(tmp_path / "model")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "recipes.cli", "export-onnx", str(tmp_path / "model"),
                             str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "model.onnx").is_file() and "onnxruntime parity" in result.stdout
    help_text = subprocess.run([sys.executable, "-m", "recipes.cli", "export-onnx", "--help"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120).stdout
    assert "--revision" in help_text and "default: True" in help_text


def test_export_of_a_folder_without_architectures_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "minerva_event_mlp"}))
    with pytest.raises(ValueError, match="names no `architectures`"):
        write_onnx_export(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()
