"""Fine-tuning refuses what would end in wrong results: bad targets, a non-finite loss, an init of another size,
typos in model overrides, a resume under a changed config; it falls back past a corrupt checkpoint; every user error
is one line and a non-zero exit; `minerva-fm finetune` and `recipes/finetune.py` take the same arguments; trackio
logs offline; event weights enter the loss; library noise stays out of the output."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from recipes_test_helpers import REPO_ROOT, copy_dataset, set_column
from recipes.config import ConfigError, load_config
from recipes.finetune import (TrainingError, build_finetune_model, check_model_overrides, configure_threads,
                              train)

CONFIGS = REPO_ROOT / "recipes" / "configs"
FINETUNE = REPO_ROOT / "recipes" / "finetune.py"
MLP = str(CONFIGS / "tiny_mlp_cpu.yaml")


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"--data.path={data}", f"--train.output_dir={out}", "--train.tracker=none", "--train.progress=false",
            "--train.max_steps=4", "--train.eval_every=4", "--train.save_every=0", *extra]


def _cfg(data: Path, out: Path, *extra: str):
    return load_config(MLP, _args(data, out, *extra))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path, rtol: float = 1e-5) -> None:
    got, want = _weights(a), _weights(b)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=rtol, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def mlp_init(tmp_path_factory) -> Path:
    """A save_pretrained event-MLP regression checkpoint (random weights, seed 7)."""
    import modeling

    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("mlp_init")
    modeling.build_model("mlp", "regression", "small", zeroed_event_features=[2]).save_pretrained(str(folder))
    return folder


# --------------------------------------------------------------------------------------------------- bad targets
@pytest.mark.parametrize("task, column, values, message", [
    ("regression", "e_avail", {0: np.nan, 1: np.nan, 5: np.inf, 9: -0.5}, r"'e_avail' has 2 NaN, 1 \+-Inf, "
                                                                          r"1 negative of 256 events \(first at row 0\)"),
    ("classification", "topology", {3: -1, 4: 7}, r"'topology' has 1 negative, 1 non-class .* of 256 events "
                                                  r"\(first at row 3\)"),
])
def test_bad_targets_fail_up_front_naming_column_and_count(tiny_dataset, tmp_path, task, column, values, message):
    data = copy_dataset(tiny_dataset, tmp_path / "data")

    def poisoned(table):
        out = table.column(column).to_numpy().copy()
        for row, value in values.items():
            out[row] = value
        return out

    set_column(data, "train", column, poisoned)
    with pytest.raises(TrainingError, match=message):
        train(_cfg(data, tmp_path / "run", f"--model.task={task}"))
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_non_finite_loss_stops_with_an_error_and_no_export(tiny_dataset, tmp_path):
    cfg = _cfg(tiny_dataset, tmp_path, "--optim.lr=1e30", "--optim.grad_clip=0", "--optim.warmup_steps=0",
               "--train.max_steps=50", "--train.eval_every=0")
    with pytest.raises(TrainingError, match=r"loss became (inf|nan) at step \d+ .*stopping without export"):
        train(cfg)
    assert not (tmp_path / "model").exists() and not (tmp_path / "train_summary.json").exists()


# --------------------------------------------------------------------------------------------------- init / overrides
def test_init_of_another_size_fails_but_a_new_task_head_is_expected(mlp_init):
    report = {}
    cfg = load_config(MLP, ["--model.mode=full", f"--model.init={mlp_init}", "--model.task=classification"])
    model = build_finetune_model(cfg.model, report=report)
    assert sorted(report["reinitialised"]) == ["head.bias", "head.weight"]  # 1 -> 5 outputs: the expected head
    assert report["loaded"] == len(model.state_dict()) - 2 and report["unused"] == 0
    wider = load_config(MLP, ["--model.mode=full", f"--model.init={mlp_init}",
                              "--model.overrides.intermediate_size=64"])
    with pytest.raises(TrainingError, match=r"9 of 28 tensors would be re-initialised outside the task head .*"
                                            r"event_mlp.blocks.0.fc1.weight: checkpoint \[256, 128\] vs model "
                                            r"\[64, 128\]"):
        build_finetune_model(wider.model)


def test_new_parameter_names_may_be_reinitialised(tmp_path):
    import modeling

    overrides = dict(hidden_size=16, num_attention_heads=2, num_hidden_layers=1, num_local_layers=0,
                     num_head_layers=1, use_pair_bias=False)
    modeling.build_model("omnilearned", "regression", "small", **overrides).save_pretrained(str(tmp_path / "a"))
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    # a checkpoint whose event embedding is declared new (as convert-omnilearned declares new input layers)
    from safetensors.torch import load_file as load, save_file

    tensors = load(str(tmp_path / "a" / "model.safetensors"))
    dropped = sorted(k for k in tensors if k.startswith("pet.event_embedding."))
    assert dropped
    save_file({k: v for k, v in tensors.items() if k not in dropped}, str(tmp_path / "a" / "model.safetensors"),
              metadata={"format": "pt"})
    cfg = load_config(None, ["--model.mode=full", f"--model.init={tmp_path / 'a'}",
                             *[f"--model.overrides.{k}={v}" for k, v in overrides.items()]])
    with pytest.raises(TrainingError, match="pet.event_embedding"):
        build_finetune_model(cfg.model)
    config["new_parameter_names"] = [k[len("pet."):] for k in dropped]
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    report = {}
    build_finetune_model(cfg.model, report=report)
    assert sorted(report["reinitialised"]) == dropped


def test_typo_in_model_overrides_is_an_error_with_close_matches():
    cfg = load_config(None, ["--model.overrides.hiden_size=64"])
    with pytest.raises(ConfigError, match=r"'hiden_size' is no field of MinervaPetConfig; close matches: "
                                          r"\['hidden_size'"):
        check_model_overrides(cfg.model)
    check_model_overrides(load_config(None, ["--model.overrides.hidden_size=64", "--model.overrides.num_labels=5"])
                          .model)


# --------------------------------------------------------------------------------------------------- resume
def test_resume_refuses_a_changed_config_unless_allowed_and_records_it(tiny_dataset, tmp_path):
    common = ["--train.max_steps=8", "--train.save_every=4", "--train.eval_every=4"]
    data = tiny_dataset
    train(_cfg(data, tmp_path / "run", *common))  # leaves checkpoints/step-4 (none at the final step)
    with pytest.raises(ConfigError, match=r"config differs from the checkpoint .*step-4 \(optim.lr: 0.001 -> 0.002, "
                                          r"train.seed: 0 -> 3\).*--allow-config-change"):
        train(_cfg(data, tmp_path / "run", *common, "--optim.lr=2e-3", "--train.seed=3"), resume=True)
    summary = train(_cfg(data, tmp_path / "run", *common, "--optim.lr=2e-3"), resume=True, allow_config_change=True)
    changes = json.loads((tmp_path / "run" / "config_changes.json").read_text())
    assert [(c["step"], c["changed"]) for c in changes] == [(4, {"optim.lr": [0.001, 0.002]})]
    assert summary["config_changes"] == changes and summary["resumed_from"].endswith("step-4")
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["optim"]["lr"] == 0.002


@pytest.mark.parametrize("damage", ["model.safetensors", "optimizer.bin", "train_state.json"])
def test_resume_falls_back_past_a_corrupt_last_checkpoint(tiny_dataset, tmp_path, capsys, damage):
    run = tmp_path / "run"
    common = ["--train.max_steps=12", "--train.save_every=4", "--train.eval_every=6", "--train.keep_last=3"]
    train(_cfg(tiny_dataset, run, *common))
    shutil.copytree(run / "model", tmp_path / "reference")
    target = run / "checkpoints" / "step-8" / damage
    target.write_bytes(target.read_bytes()[: max(len(target.read_bytes()) // 3, 1)])
    summary = train(_cfg(tiny_dataset, run, *common), resume=True)
    out = capsys.readouterr().out
    assert "step-8 is unreadable" in out and "falling back to the previous complete checkpoint" in out
    assert summary["resumed_from"].endswith("step-4") and summary["skipped_checkpoints"][0].endswith("step-8")
    _assert_same_weights(run / "model", tmp_path / "reference")


# --------------------------------------------------------------------------------------------------- CLI
def test_minerva_fm_finetune_takes_the_script_arguments(tiny_dataset, tmp_path):
    from recipes.cli import main as cli_main
    from recipes.finetune import main as script_main

    assert cli_main(["finetune", "--config", MLP, *_args(tiny_dataset, tmp_path / "cli"), "--optim.lr", "2e-3"]) == 0
    assert script_main(["--config", MLP, *_args(tiny_dataset, tmp_path / "script"), "--optim.lr", "2e-3"]) == 0
    _assert_same_weights(tmp_path / "cli" / "model", tmp_path / "script" / "model", rtol=0)
    with pytest.raises(SystemExit):  # other subcommands still refuse unknown arguments
        cli_main(["demo", "--data.path=x"])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("finetune: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("setup, extra, message", [
    (lambda d: (d / "a.yaml").write_text("base: b.yaml\n") and (d / "b.yaml").write_text("base: a.yaml\n"),
     ["--config", "{d}/a.yaml"], "config base chain loops"),
    (None, ["--config", MLP, "--optim.learning_rate=1"], "unknown config key 'optim.learning_rate'"),
    (None, ["--config", MLP, "--train.max_steps=ten"], "train.max_steps"),
    (None, ["--config", MLP, "--model.mode=full"], "needs model.init"),
    (lambda d: (d / "init").mkdir() or (d / "init" / "config.json").write_text('{"model_type": "minerva_event_mlp"}')
     or (d / "init" / "model.safetensors").write_bytes(b"\x00" * 64),
     ["--config", MLP, "--model.mode=full", "--model.init={d}/init"], "model.init"),
])
def test_user_errors_are_one_line_and_exit_non_zero(tiny_dataset, tmp_path, capsys, setup, extra, message):
    from recipes.cli import main

    if setup:
        setup(tmp_path)
    extra = [e.replace("{d}", str(tmp_path)) for e in extra]
    rc = main(["finetune", *_args(tiny_dataset, tmp_path / "run"), *extra])
    assert rc == 2 and message in _one_line_error(capsys)


def _in_own_mount(mount_options: str, out: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run `argv` with a fresh tmpfs (`mount_options`) mounted on `out` (user + mount namespace: no real root)."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no user/mount namespaces here (unshare -rm)")
    out.mkdir()
    script = f'mount -t tmpfs -o {mount_options} tmpfs "{out}" && exec "$@"'
    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(out.parent)}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *argv], env=env, cwd=REPO_ROOT,
                          capture_output=True, timeout=300)


@pytest.mark.parametrize("mount_options, errno", [("ro", 30), ("size=300k", 28)])
def test_read_only_and_full_disk_are_one_line_errors(tiny_dataset, tmp_path, mount_options, errno):
    out = tmp_path / "out"
    proc = _in_own_mount(mount_options, out, [sys.executable, str(FINETUNE), "--config", MLP,
                                              *_args(tiny_dataset, out)])
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("finetune: error: cannot write") and f"(errno {errno})" in last, err[-2000:]


# --------------------------------------------------------------------------------------------------- trackio
def test_trackio_logs_offline_into_the_run_folder(tiny_dataset, tmp_path):
    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRACKIO_SPACE_ID": "someone/space"}
    args = [a for a in _args(tiny_dataset, tmp_path / "run") if a != "--train.tracker=none"]
    proc = subprocess.run([sys.executable, str(FINETUNE), "--config", MLP, *args, "--train.tracker=trackio",
                           "--train.log_every=2", "--name=trackio-probe"], env=env, cwd=REPO_ROOT,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    databases = list((tmp_path / "run" / "logs" / "trackio").glob("*.db"))
    assert databases, list((tmp_path / "run" / "logs").rglob("*"))
    with sqlite3.connect(databases[0]) as conn:
        rows = conn.execute("SELECT step, metrics FROM metrics ORDER BY id").fetchall()
    logged = {step: json.loads(metrics) for step, metrics in rows}
    assert {2, 4} <= set(logged) and "train/loss" in logged[2] and "val/loss" in logged[4]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["trackio_dir"] == str(tmp_path / "run" / "logs" / "trackio")


# --------------------------------------------------------------------------------------------------- event weights
def test_event_weights_enter_the_loss(tiny_dataset, tmp_path):
    import pyarrow as pa

    base = train(_cfg(tiny_dataset, tmp_path / "plain"))
    weighted = {}
    for name, values in {"constant": lambda t: np.full(t.num_rows, 3.0, np.float32),
                         "nulls": lambda t: pa.nulls(t.num_rows, pa.float32()),
                         "varied": lambda t: np.random.default_rng(0).uniform(0, 2, t.num_rows).astype(np.float32)
                         }.items():
        data = copy_dataset(tiny_dataset, tmp_path / f"data-{name}")
        for split in ("train", "validation", "test"):
            set_column(data, split, "event_weight", values, dtype=pa.float32())
        train(_cfg(data, tmp_path / name, "--train.use_event_weights=true"))
        weighted[name] = tmp_path / name / "model"
    assert base["step"] == 4
    _assert_same_weights(weighted["constant"], tmp_path / "plain" / "model", rtol=1e-4)  # a constant weight cancels
    _assert_same_weights(weighted["nulls"], tmp_path / "plain" / "model", rtol=1e-4)  # null = data = weight 1
    varied, plain = _weights(weighted["varied"]), _weights(tmp_path / "plain" / "model")
    assert not torch.allclose(varied["head.weight"], plain["head.weight"], rtol=1e-4)

    data = copy_dataset(tiny_dataset, tmp_path / "data-negative")
    set_column(data, "train", "event_weight", lambda t: np.r_[-1.0, np.ones(t.num_rows - 1)], dtype=pa.float32())
    with pytest.raises(TrainingError, match="'event_weight' has 1 negative of 256 events"):
        train(_cfg(data, tmp_path / "negative", "--train.use_event_weights=true"))
    missing = copy_dataset(tiny_dataset, tmp_path / "data-missing")  # a schema-v1 dataset without the column
    for shard in (missing / "data").glob("*/*.parquet"):
        table = pq.read_table(shard)
        if "event_weight" in table.schema.names:
            pq.write_table(table.drop_columns(["event_weight"]), shard)
    with pytest.raises((TrainingError, ValueError), match=r"missing columns \['event_weight'\]"):
        train(_cfg(missing, tmp_path / "missing", "--train.use_event_weights=true"))


# --------------------------------------------------------------------------------------------------- output / threads
def test_default_cpu_threads_follow_the_usable_cores(monkeypatch):
    import os

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    try:
        got = configure_threads(load_config(None), on_cpu=True)
        assert got["torch_num_threads"] == len(os.sched_getaffinity(0)) == torch.get_num_threads()
        assert configure_threads(load_config(None, ["--train.num_threads=1"]), on_cpu=True) == \
            {"torch_num_threads": 1, "source": "train.num_threads"}
    finally:
        torch.set_num_threads(before)


def test_lora_head_swap_prints_no_load_report_or_weight_bars(tiny_dataset, mlp_init, tmp_path, capfd):
    train(_cfg(tiny_dataset, tmp_path, "--model.mode=lora", f"--model.init={mlp_init}",
               "--model.task=classification", "--train.progress=true"))
    out, err = capfd.readouterr()
    text = out + err
    assert "LOAD REPORT" not in text and "Loading weights" not in text and "Writing model shards" not in text
    assert "finetune mlp-tiny (classification, mlp-small, lora)" in err  # the progress bar names task and model
    assert "re-initialised 2 (task head / new input layers: head.weight, head.bias)" in out


def test_every_recipes_cli_option_has_help_with_its_default():
    from recipes.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("finetune", "demo"):
        sub = subparsers[name]
        text = sub.format_help()
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
        assert text.count("(default:") >= len([a for a in sub._actions if a.dest != "help"])
    assert "--optim.lr float" in subparsers["finetune"].format_help()  # the config fields are listed too
