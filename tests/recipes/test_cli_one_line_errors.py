"""One-line errors of the checkpoint and evaluation commands (issue 11): wrong-structure, unreadable and malicious
`.pt` files, folders that are not models, and evaluation inputs that do not exist, each without a traceback."""

from __future__ import annotations

import json
import os

import pytest
import torch


class _Payload:
    def __reduce__(self):  # what a malicious checkpoint carries: a call run at unpickling time
        return (os.system, (f"touch {os.environ['MINERVA_PWNED']}",))


def _one_line(argv: list[str], capsys) -> str:
    from recipes.cli import main

    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith(f"minerva-fm {argv[0]}: error: "), err[-3000:]
    return lines[0]


@pytest.mark.parametrize("command", ["convert-omnilearned", "convert-particle-vit"])
def test_bad_checkpoint_files_are_one_line_errors(tmp_path, capsys, monkeypatch, command):
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    torch.save([1, 2], tmp_path / "list.pt")
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("MINERVA_PWNED", str(pwned))
    import pickle

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"body": _Payload()}))
    out = str(tmp_path / "out")
    assert f"{tmp_path / 'text.pt'}: not a readable PyTorch checkpoint" in _one_line(
        [command, str(tmp_path / "text.pt"), out], capsys)
    assert "weights_only=True" in _one_line([command, str(tmp_path / "evil.pt"), out], capsys)
    assert not pwned.exists()
    assert "list.pt" in _one_line([command, str(tmp_path / "list.pt"), out], capsys)
    assert "missing.pt" in _one_line([command, str(tmp_path / "missing.pt"), out], capsys)
    assert not (tmp_path / "out" / "config.json").exists()


def test_export_onnx_of_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "minerva_event_mlp"}))
    line = _one_line(["export-onnx", str(tmp_path), str(tmp_path / "out")], capsys)
    assert f"{tmp_path}: config.json names no `architectures`" in line


def test_evaluate_of_a_missing_model_or_split(tmp_path, capsys, tiny_dataset):
    line = _one_line(["evaluate", "--model", str(tmp_path), "--data", str(tiny_dataset)], capsys)
    assert f"{tmp_path}/config.json is missing" in line
    line = _one_line(["evaluate", "--model", "./no-such-model", "--data", str(tiny_dataset)], capsys)
    assert "no-such-model" in line
