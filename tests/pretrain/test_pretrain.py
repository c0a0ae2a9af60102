"""The pretraining recipe on tiny data: each objective trains, the mask fraction is honoured, masked-object modelling
runs on MINERvA shards without truth (from scratch and continued from a jet backbone), resume after SIGKILL equals an
uninterrupted run, real 2-process DDP, and the backbone goes through the loopback Hub into `finetune`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from recipes_test_helpers import REPO_ROOT, copy_dataset, free_port
from recipes.config import ConfigError, load_config
from recipes.pretrain import DOMAIN_INPUT_MODULES, choose_masked, load_pretrain_config, run_pretraining

CONFIGS = REPO_ROOT / "recipes" / "configs"
PRETRAIN = REPO_ROOT / "recipes" / "pretrain.py"
QUIET = ["--train.tracker=none", "--train.progress=false", "--train.num_threads=1"]
JET_STEPS = ["--data.batch_size=16", "--data.max_eval_events=32", "--train.max_steps=10", "--train.eval_every=5",
             "--train.save_every=0", "--train.log_every=1", "--optim.lr=3e-3"]


def _cfg(name: str, data: Path, out: Path, *overrides: str):
    return load_pretrain_config(CONFIGS / name, [f"--data.path={data}", f"--train.output_dir={out}", *QUIET,
                                                 *overrides])


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train_losses(run_dir: Path, key: str = "train/loss") -> list[float]:
    return [r[key] for r in _rows(run_dir) if key in r]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}


def _decreased(losses: list[float]) -> bool:
    return sum(losses[-3:]) / 3 < losses[0]


@pytest.fixture(scope="module")
def jet_run(jet_corpus, tmp_path_factory) -> tuple[Path, dict]:
    """A tiny PET pretraining on the jet corpus: classification + masked particles (the run folder and record)."""
    out = tmp_path_factory.mktemp("jet_run")
    return out, run_pretraining(_cfg("pretrain_pet_jets_tiny.yaml", jet_corpus, out, *JET_STEPS))


def test_mask_fraction_is_honoured(jet_corpus):
    from dataset_builder.jet_collator import JetCollator
    from dataset_builder.jet_data import load_jet_split

    table = next(load_jet_split(str(jet_corpus), "train").with_format("arrow").iter(batch_size=64))
    mask = JetCollator().collate_arrow(table)["attention_mask"]
    n = mask.sum(1)
    for fraction in (0.3, 0.5, 0.75):
        masked = choose_masked(mask, fraction)
        assert not (masked & ~mask).any()  # padding is never masked
        want = torch.clamp(torch.round(fraction * n.double()).long(), min=1)
        assert torch.equal(masked.sum(1), want)
        assert abs(float(masked.sum() / mask.sum()) - fraction) < 0.02
    with pytest.raises(ConfigError, match="mask_fraction must be in"):
        load_pretrain_config(CONFIGS / "pretrain_pet_jets_tiny.yaml", ["--objectives.mask_fraction=0.9"])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("pretrain_*.yaml")), ids=lambda p: p.stem)
def test_every_pretrain_config_loads(path):
    cfg = load_pretrain_config(path)
    assert cfg.name and cfg.objectives.mix() and cfg.train.output_dir.startswith("runs/pretrain/")


def test_config_refuses_what_pretraining_cannot_do(jet_corpus):
    with pytest.raises(ConfigError, match="cannot be mixed"):
        load_pretrain_config(CONFIGS / "pretrain_pet_jets_tiny.yaml", ["--objectives.masked_objects=1"])
    with pytest.raises(ConfigError, match="starts from random weights"):
        load_pretrain_config(CONFIGS / "pretrain_pet_jets_tiny.yaml", [f"--model.init={jet_corpus}"])
    with pytest.raises(ConfigError, match="no objects to mask"):
        load_pretrain_config(CONFIGS / "pretrain_pet_jets_tiny.yaml", ["--model.backbone=mlp"])


def test_jet_classification_and_masked_particles_train_and_export(jet_run):
    import modeling

    out, record = jet_run
    assert _decreased(_train_losses(out)) and _decreased(_train_losses(out, "train/masked"))
    assert all(torch.isfinite(torch.tensor(_train_losses(out, "train/classification"))))
    rows = _rows(out)
    assert [r["step"] for r in rows if "val/loss" in r] == [5, 10]
    assert record["objectives"] == {"jet_classification": 1.0, "masked_particles": 1.0}
    assert record["steps"] == 10 and record["mask_fraction"] == 0.5 and record["init"] == {"kind": "random",
                                                                                          "seed": 0}
    assert record["tokens_seen"] == rows[-1]["compute/tokens"] and record["events_seen"] >= 10 * 16 - 16
    assert record["train_flops"] == pytest.approx(6 * record["n_params"] * record["tokens_seen"])
    assert "not JetClass" in record["corpus"]["sources"][0]["kind"]
    saved = json.loads((out / "pretrain_record.json").read_text())
    assert saved["steps"] == 10 and saved["loss"]["train"]["last"] == _train_losses(out)[-1]

    # the backbone: MINERvA layout; exactly the domain input layers are the seeded random init, the rest is trained
    folder = Path(record["output_dir"])
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].endswith("MinervaPetModel") and config["num_extra_features"] == 5
    weights = load_file(str(folder / "model.safetensors"))
    new = set(config["new_parameter_names"])
    assert new == {k for k in weights if k.startswith(DOMAIN_INPUT_MODULES["omnilearned"])}
    _, model_cls, _ = modeling.load_backbone_classes("omnilearned")
    torch.manual_seed(0)
    fresh = model_cls(model_cls.config_class.from_dict(config)).state_dict()
    assert all(torch.equal(weights[k], fresh[k]) for k in new)
    trained = [k for k in weights if k not in new and not k.endswith("norm.weight")]
    assert trained and all(not torch.equal(weights[k], fresh[k]) for k in trained if k.endswith("fc1.weight"))
    card = (folder / "README.md").read_text()
    assert "random initialisation (seed 0)" in card and "synthetic Pythia 8" in card and "not JetClass" in card
    assert (folder / "loss_curves.png").is_file() and "](loss_curves.png)" in card and record["plots"] == [
        "loss_curves.png"]
    assert f"| 10 | {record['loss']['validation'][-1]['val/loss']:.4g} |" in card  # the validation table


@pytest.mark.parametrize("objective", ["jet_classification", "masked_particles"])
def test_each_jet_objective_alone(jet_corpus, tmp_path, objective):
    other = "masked_particles" if objective == "jet_classification" else "jet_classification"
    record = run_pretraining(_cfg("pretrain_pet_jets_tiny.yaml", jet_corpus, tmp_path, *JET_STEPS,
                                  f"--objectives.{other}=0", "--train.eval_every=0"))
    losses = _train_losses(tmp_path)
    assert record["objectives"] == {objective: 1.0} and len(losses) == 10
    assert all(map(lambda v: v == v and abs(v) < 1e6, losses))
    key = "train/classification" if objective == "jet_classification" else "train/masked_pid"
    assert key in _rows(tmp_path)[0] and _decreased(losses)


@pytest.mark.parametrize("backbone, event_layer", [("particle_vit", "global_proj.weight"),
                                                    ("bert_projection", "event_proj.weight")])
def test_other_backbones_pretrain_and_fit_a_finetune_model(jet_corpus, tmp_path, backbone, event_layer):
    import modeling
    from recipes.finetune import check_init_fit

    record = run_pretraining(_cfg("pretrain_particle_vit_jets_tiny.yaml", jet_corpus, tmp_path, *JET_STEPS,
                                  f"--model.backbone={backbone}", "--train.max_steps=4", "--train.eval_every=0",
                                  "--data.max_objects=null"))
    assert _decreased(_train_losses(tmp_path)[:1] * 3 + _train_losses(tmp_path)[-3:])
    model = modeling.build_model(backbone, "regression", pretrained=record["output_dir"])
    fit = check_init_fit(model, record["output_dir"], None)
    assert fit["loaded"] > 0 and set(fit["reinitialised"]) == {"head.weight", "head.bias"}
    assert event_layer in model.config.new_parameter_names


def _strip_truth(dataset: Path) -> None:
    """Make every shard look like converted data AnaTuples: truth, baselines and weights null."""
    from dataset_builder import schema

    keep = {"source_file", "entry", "run", "subrun", "gate", "n_objects", "object_pid", "object_features",
            "event_features", "has_muon"}
    for shard in (dataset / "data").rglob("*.parquet"):
        table = pq.read_table(shard)
        for name in table.schema.names:
            if name not in keep and schema.PARQUET_SCHEMA.field(name).nullable:
                index = table.schema.get_field_index(name)
                table = table.set_column(index, name, pa.nulls(table.num_rows, table.schema.field(name).type))
        pq.write_table(table, shard)


@pytest.fixture(scope="module")
def data_without_truth(minerva_dataset, tmp_path_factory) -> Path:
    """A copy of the MINERvA fixture whose shards carry no truth (as converted data files)."""
    folder = copy_dataset(minerva_dataset, tmp_path_factory.mktemp("no_truth") / "data_run")
    _strip_truth(folder)
    return folder


def test_masked_objects_on_mc_and_data_without_truth(minerva_dataset, data_without_truth, tmp_path):
    from dataset_builder.collator import MinervaCollator

    table = pq.read_table(next((data_without_truth / "data" / "train").glob("*.parquet")))
    with pytest.raises(ValueError, match="no truth"):  # a fine-tuning collator cannot use these shards
        MinervaCollator(task="regression").collate_arrow(table)
    record = run_pretraining(_cfg("pretrain_pet_minerva_mom_tiny.yaml", data_without_truth, tmp_path,
                                  f"--data.extra_paths=[{minerva_dataset}]", "--train.max_steps=12",
                                  "--train.eval_every=6", "--train.save_every=0", "--train.log_every=1",
                                  "--optim.lr=3e-3"))
    assert _decreased(_train_losses(tmp_path)) and _decreased(_train_losses(tmp_path, "train/masked_features"))
    assert record["objectives"] == {"masked_objects": 1.0} and record["mask_fraction"] == 0.75
    assert [s["path"] for s in record["corpus"]["sources"]] == [str(data_without_truth), str(minerva_dataset)]
    assert record["new_parameter_names"] == [] and record["init"]["kind"] == "random"


def test_continued_masked_objects_from_the_jet_backbone_then_finetune(jet_run, data_without_truth, minerva_dataset,
                                                                      tmp_path):
    from recipes.finetune import train

    jet_backbone = Path(jet_run[1]["output_dir"])
    record = run_pretraining(_cfg("pretrain_pet_minerva_mom_tiny.yaml", data_without_truth, tmp_path / "mom",
                                  f"--model.init={jet_backbone}", "--train.max_steps=4", "--train.eval_every=0",
                                  "--train.save_every=0"))
    digest = hashlib.sha256((jet_backbone / "model.safetensors").read_bytes()).hexdigest()
    assert record["init"]["kind"] == "local" and record["init"]["sha256"] == {"model.safetensors": digest}
    assert record["init"]["init_record"]["objectives"] == jet_run[1]["objectives"]
    card = (Path(record["output_dir"]) / "README.md").read_text()
    assert digest in card and "a local backbone folder (not published)" in card
    assert str(tmp_path) not in card and str(data_without_truth) not in card  # no paths of the training machine
    assert "a local dataset (not published)" in card
    json_config = json.loads((Path(record["output_dir"]) / "config.json").read_text())
    assert json_config["new_parameter_names"] == []

    # frozen fine-tuning of the jet backbone: only the new input layers (and the head) move
    base = ["--data.path", str(minerva_dataset), "--train.max_steps=3", "--train.eval_every=3",
            "--train.save_every=0", *QUIET]
    frozen = tmp_path / "frozen"
    summary = train(load_config(CONFIGS / "tiny_omnilearned_cpu.yaml", [
        *base, "--model.mode=frozen", f"--model.init={jet_backbone}", f"--train.output_dir={frozen}"]))
    assert summary["init"]["unused"] == 0 and all(k.startswith("head.") for k in summary["init"]["reinitialised"])
    before, after = load_file(str(jet_backbone / "model.safetensors")), load_file(str(frozen / "model" /
                                                                                     "model.safetensors"))
    new = set(json.loads((jet_backbone / "config.json").read_text())["new_parameter_names"])
    moved = {k for k in before if not torch.equal(before[k], after[f"pet.{k}"])}
    assert moved and moved <= new
    full = train(load_config(CONFIGS / "tiny_omnilearned_cpu.yaml", [
        *base, "--model.mode=full", f"--model.init={record['output_dir']}", f"--train.output_dir={tmp_path / 'full'}"]))
    assert full["init"]["loaded"] > 0 and all(k.startswith("head.") for k in full["init"]["reinitialised"])


def test_resume_after_sigkill_equals_uninterrupted_run(jet_corpus, tmp_path):
    common = [*JET_STEPS[:2], "--train.max_steps=12", "--train.save_every=4", "--train.eval_every=6",
              "--data.shuffle_buffer=64", *QUIET]
    killed = tmp_path / "killed"
    args = ["--config", str(CONFIGS / "pretrain_pet_jets_tiny.yaml"), f"--data.path={jet_corpus}",
            f"--train.output_dir={killed}", *common]
    proc = subprocess.Popen([sys.executable, str(PRETRAIN), *args], env=_env(), cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = killed / "checkpoints" / "step-4" / "train_state.json"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill: {err.decode()[-2000:]}"
    assert not (killed / "backbone").exists()
    cli = Path(sys.executable).with_name("minerva-fm")
    resumed = subprocess.run([str(cli), "pretrain", *args, "--resume"], env=_env(), cwd=REPO_ROOT,
                             capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert b"resumed from" in resumed.stdout + resumed.stderr

    reference = tmp_path / "reference"
    run_pretraining(_cfg("pretrain_pet_jets_tiny.yaml", jet_corpus, reference, *common))
    got, want = (load_file(str(d / "backbone" / "model.safetensors")) for d in (killed, reference))
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
    val = [[r["val/loss"] for r in _rows(d) if "val/loss" in r] for d in (killed, reference)]
    assert val[0] == pytest.approx(val[1], rel=1e-5) and len(val[1]) == 2
    record = json.loads((killed / "pretrain_record.json").read_text())
    assert record["resumed_from"].endswith("step-4") and record["steps"] == 12


def test_two_process_ddp_pretraining(jet_corpus, tmp_path):
    out = tmp_path / "ddp"
    ddp = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port",
                          str(free_port()), str(PRETRAIN), "--config", str(CONFIGS / "pretrain_pet_jets_tiny.yaml"),
                          f"--data.path={jet_corpus}", f"--train.output_dir={out}", "--data.batch_size=8",
                          "--train.max_steps=4", "--train.save_every=2", "--train.eval_every=4",
                          "--data.max_eval_events=32", *QUIET], env=_env(), cwd=REPO_ROOT, capture_output=True,
                         timeout=300)
    assert ddp.returncode == 0, ddp.stderr.decode()[-3000:]
    assert sorted(p.name for p in (out / "checkpoints" / "step-2").glob("data_state_*.json")) == \
        ["data_state_0.json", "data_state_1.json"]
    record = json.loads((out / "pretrain_record.json").read_text())
    assert record["processes"] == 2 and record["global_batch"] == 16 and record["events_seen"] == 4 * 16
    n_val = sum(pq.ParquetFile(f).metadata.num_rows for f in (jet_corpus / "validation").glob("*.parquet"))
    assert [r["val/events"] for r in _rows(out) if "val/loss" in r] == [min(n_val, 32)]  # each event on one rank
    assert (out / "backbone" / "model.safetensors").is_file()


def test_push_to_hub_then_finetune_and_continue_from_the_repo(hub, jet_run, data_without_truth, minerva_dataset,
                                                             tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    from isolated_python import run_isolated
    from model_cards.publish import push_model
    from recipes.finetune import train

    run_dir, _ = jet_run
    repo = f"{hub.user}/pet-jets-tiny"
    push_model(run_dir, repo)  # the run folder: push-model publishes its backbone/ with the pretraining card
    info = HfApi().model_info(repo)
    files = {s.rfilename for s in info.siblings}
    assert {"model.safetensors", "config.json", "pretrain_record.json", "README.md", "modeling_minerva_pet.py",
            "configuration_minerva_pet.py", "loss_curves.png", "train_config.json"} <= files
    card = Path(hf_hub_download(repo, "README.md", revision=info.sha)).read_text()
    assert "random initialisation (seed 0)" in card and f'from_pretrained("{repo}"' in card
    snippet = card.split("```python\n")[1].split("```")[0]  # the card's snippet, run as printed
    run_isolated(snippet + """
import torch
mask = torch.ones(2, 5, dtype=torch.bool)
out = backbone(object_features=torch.randn(2, 5, 9), object_pid=torch.full((2, 5), 3), attention_mask=mask,
               event_features=torch.zeros(2, 16))
assert type(backbone).__name__ == "MinervaPetModel" and out.last_hidden_state.shape[-1] == 32
""", cwd=tmp_path, env={"HF_ENDPOINT": hub.endpoint})

    summary = train(load_config(CONFIGS / "tiny_omnilearned_cpu.yaml", [
        "--data.path", str(minerva_dataset), "--model.mode=full", f"--model.init={repo}",
        f"--model.revision={info.sha}", "--train.max_steps=2", "--train.eval_every=2", "--train.save_every=0",
        f"--train.output_dir={tmp_path / 'ft'}", *QUIET]))
    assert summary["init"]["init"] == repo and all(k.startswith("head.") for k in summary["init"]["reinitialised"])
    record = run_pretraining(_cfg("pretrain_pet_minerva_mom_tiny.yaml", data_without_truth, tmp_path / "mom",
                                  f"--model.init={repo}", "--train.max_steps=2", "--train.eval_every=0",
                                  "--train.save_every=0"))
    assert record["init"]["kind"] == "hub" and record["init"]["revision"] == info.sha
    card = (Path(record["output_dir"]) / "README.md").read_text()
    assert f"`{repo}` @ `{info.sha}`" in card and "pet-jets-tiny" in card


def test_pretrains_on_jetclass1_root_files_in_bf16(jet_corpus, tmp_path):
    from test_jet_loading import _corpus_table, _write_jetclass1_root

    root = tmp_path / "JetClass"
    for split, folder in (("train", "train_100M"), ("validation", "val_5M")):
        (root / folder).mkdir(parents=True)
        _write_jetclass1_root(root / folder / "HToBB_000.root", _corpus_table(jet_corpus, split), 16)
    record = run_pretraining(_cfg("pretrain_pet_jets_tiny.yaml", root, tmp_path / "run", "--data.batch_size=8",
                                  "--data.shuffle_buffer=0", "--train.max_steps=3", "--train.eval_every=0",
                                  "--train.save_every=0", "--train.log_every=1", "--optim.mixed_precision=bf16"))
    assert record["corpus"]["sources"][0]["kind"] == "JetClass-I ROOT files" and record["mixed_precision"] == "bf16"
    assert record["events_seen"] == 3 * 8 and all(v == v for v in _train_losses(tmp_path / "run"))


def test_cli_errors_are_one_line(jet_corpus, capsys):
    from recipes.cli import main

    code = main(["pretrain", "--config", str(CONFIGS / "pretrain_pet_jets_tiny.yaml"), f"--data.path={jet_corpus}",
                 "--objectives.mask_fraction=0.95"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("pretrain: error:") and "objectives.mask_fraction" in err and "\n" not in err
    from recipes.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["pretrain"]
    assert "--objectives.mask_fraction float" in sub.format_help() and "--data.extra_paths" in sub.format_help()


def test_streams_the_jet_corpus_from_a_hub_dataset_repo(hub, jet_corpus, tmp_path):
    from huggingface_hub import HfApi

    repo = f"{hub.user}/pretrain-jets"
    api = HfApi()
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    sha = api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=str(jet_corpus)).oid
    record = run_pretraining(_cfg("pretrain_pet_jets_tiny.yaml", repo, tmp_path, "--data.batch_size=8",
                                  "--train.max_steps=2", "--train.eval_every=0", "--train.save_every=0"))
    source = record["corpus"]["sources"][0]
    assert source["path"] == repo and source["revision"] == sha and "not JetClass" in source["kind"]
    assert record["events_seen"] == 16
