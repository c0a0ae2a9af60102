"""Portable exports of a saved minerva-fm model: `torch.export` programs and ONNX (`minerva-fm export-onnx`).

Inputs are the docs/tensor-layout.md batch with a dynamic batch axis and a dynamic object axis; outputs are named:
`logits` (+ `predictions` in GeV for regression) for heads, `last_hidden_state` and `pooler_output` for bare models.
Not Hub remote code (it imports the registry); the onnx packages are imported only when exporting to ONNX.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

INPUT_NAMES = ("object_features", "object_pid", "attention_mask", "event_features")
MAX_OBJECTS = 1024  # upper bound of the dynamic object axis (an event has at most 33 objects)
MAX_BATCH = 1 << 20
ONNX_FILE = "model.onnx"
ONNX_OPSET = 18


def output_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the exported outputs, in order."""
    if not hasattr(model, "head"):
        return ("last_hidden_state", "pooler_output")
    return ("logits", "predictions") if getattr(model.config, "problem_type", None) == "regression" else ("logits",)


class ExportableModel(nn.Module):
    """`model` with positional tensor inputs and a tuple of named outputs (what exporters want)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.names = output_names(model)

    def forward(self, object_features, object_pid, attention_mask, event_features):
        outputs = self.model(object_features=object_features, object_pid=object_pid, attention_mask=attention_mask,
                             event_features=event_features, return_dict=True)
        return tuple(outputs[name] for name in self.names)


def max_objects(config) -> int:
    """The largest object count the model takes (BERT-projection: its positions minus the event token)."""
    bert_config = getattr(config, "bert_config", None)
    return MAX_OBJECTS if bert_config is None else min(MAX_OBJECTS, bert_config.max_position_embeddings - 1)


def dynamic_shapes(config) -> dict:
    """`torch.export` dynamic shapes of the four inputs: batch and object axes."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    objects = torch.export.Dim("objects", min=1, max=max_objects(config))
    return {"object_features": {0: batch, 1: objects}, "object_pid": {0: batch, 1: objects},
            "attention_mask": {0: batch, 1: objects}, "event_features": {0: batch}}


def example_inputs(config, batch_size: int = 4, num_objects: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    """A valid padded batch (event i has 1 + i % num_objects real objects) in the docs/tensor-layout.md layout."""
    generator = torch.Generator().manual_seed(seed)
    lengths = 1 + torch.arange(batch_size) % num_objects
    lengths[0] = num_objects
    mask = torch.arange(num_objects)[None, :] < lengths[:, None]
    features = torch.randn(batch_size, num_objects, 9, generator=generator)
    features[..., 2:4] = features[..., 2:4].abs() * 3 + 1  # log pT, log E (log MeV) of real objects
    return {
        "object_features": features * mask[..., None],
        "object_pid": torch.randint(1, 9, (batch_size, num_objects), generator=generator) * mask,
        "attention_mask": mask,
        "event_features": torch.randn(batch_size, getattr(config, "num_event_features", 16), generator=generator),
    }


def export_program(model: nn.Module) -> torch.export.ExportedProgram:
    """`torch.export` of `model` (eval mode) with dynamic batch and object axes."""
    inputs = example_inputs(model.config, num_objects=min(7, max_objects(model.config)))
    return torch.export.export(ExportableModel(model.eval()), tuple(inputs[name] for name in INPUT_NAMES),
                               dynamic_shapes=tuple(dynamic_shapes(model.config)[name] for name in INPUT_NAMES))


def load_saved_model(path_or_repo: str, revision: str | None = None) -> nn.Module:
    """A `save_pretrained` folder or Hub id as its saved class (old head names included), eval mode, float32."""
    from transformers import PreTrainedConfig

    from modeling import model_class_for_architecture

    config_dict, _ = PreTrainedConfig.get_config_dict(str(path_or_repo), revision=revision)
    architectures = config_dict.get("architectures") or []
    if not architectures:
        raise ValueError(f"{path_or_repo}: config.json names no `architectures`; is it a save_pretrained folder?")
    _, cls = model_class_for_architecture(architectures[0])
    return cls.from_pretrained(str(path_or_repo), revision=revision, dtype=torch.float32).eval()


def export_onnx(model: nn.Module, output_dir: str | Path) -> Path:
    """Write `output_dir/model.onnx` (dynamo exporter, dynamic batch and object axes) and return its path.

    The file is first written next to the target and renamed into place, so a failed export leaves no partial file.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / ONNX_FILE
    temporary = output_dir / f".{ONNX_FILE}.partial"
    implementation = model.config._attn_implementation
    if getattr(model, "_supports_sdpa", False):  # plain MatMul/Softmax nodes: decomposed SDPA trips over PET's strides
        model.set_attn_implementation("eager")
    try:
        program = export_program(model)
        onnx_program = torch.onnx.export(program, f=None, dynamo=True, input_names=list(INPUT_NAMES),
                                         output_names=list(output_names(model)), opset_version=ONNX_OPSET,
                                         external_data=False)
    finally:
        if getattr(model, "_supports_sdpa", False):
            model.set_attn_implementation(implementation)
    onnx_program.save(str(temporary))
    _name_dynamic_axes(temporary)
    temporary.replace(target)
    return target


def _name_dynamic_axes(path: Path) -> None:
    """Rename the exporter's symbolic dims (s0, s1, ...) to "batch" and "objects" in the saved ONNX file."""
    import onnx

    proto = onnx.load(str(path))
    dims = {value.name: value.type.tensor_type.shape.dim for value in proto.graph.input}
    names = {dims["event_features"][0].dim_param: "batch"}
    if "object_features" in dims:
        names[dims["object_features"][1].dim_param] = "objects"
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    onnx.save(proto, str(path))


PARITY_CASES = ((1, 3), (1, 33), (4, 7), (4, 33))  # (batch size, object slots): short and full events, padded
PARITY_TOLERANCE = dict(rtol=1e-3, atol=1e-4)  # as weaver-core's export test


def onnx_parity(model: nn.Module, path: str | Path, cases=PARITY_CASES) -> dict[str, float]:
    """Run `path` with onnxruntime next to `model` on padded example batches; raise AssertionError beyond
    PARITY_TOLERANCE. Returns the largest absolute difference per output."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds_used = [i.name for i in session.get_inputs()]  # an exporter may drop inputs a model ignores (event MLP)
    worst = {name: 0.0 for name in output_names(model)}
    for batch_size, num_objects in cases:
        inputs = example_inputs(model.config, batch_size, min(num_objects, max_objects(model.config)), seed=batch_size)
        got = session.run(list(worst), {name: inputs[name].numpy() for name in feeds_used})
        with torch.no_grad():
            expected = ExportableModel(model.eval())(*(inputs[name] for name in INPUT_NAMES))
        for name, value, reference in zip(worst, got, expected):
            np.testing.assert_allclose(value, reference.numpy(), **PARITY_TOLERANCE,
                                       err_msg=f"{name} at batch {batch_size}, {num_objects} object slots")
            worst[name] = max(worst[name], float(np.abs(value - reference.numpy()).max()))
    return worst


def onnx_metadata(model: nn.Module) -> dict:
    """What the ONNX file holds (for cards and users): inputs, outputs, dynamic axes."""
    return {"file": ONNX_FILE, "inputs": list(INPUT_NAMES), "outputs": list(output_names(model)),
            "dynamic_axes": {"batch": "axis 0 of every input", "objects": "axis 1 of the object inputs"},
            "max_objects": max_objects(model.config), "opset": ONNX_OPSET,
            "architecture": type(model).__name__, "problem_type": getattr(model.config, "problem_type", None)}


def write_onnx_export(path_or_repo: str, output_dir: str | Path, revision: str | None = None) -> Path:
    """Load a saved model and write `model.onnx` plus `onnx_export.json` (its inputs/outputs) into `output_dir`."""
    model = load_saved_model(path_or_repo, revision)
    target = export_onnx(model, output_dir)
    info = Path(output_dir) / "onnx_export.json"
    temporary = info.with_name(f".{info.name}.partial")
    temporary.write_text(json.dumps(onnx_metadata(model), indent=2) + "\n", encoding="utf-8")
    temporary.replace(info)
    return target
