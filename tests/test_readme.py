"""The README's promises: every Python snippet runs as printed (placeholders replaced by local / loopback targets),
every `minerva-fm` command and option it names exists, and what `.ci/run` sets beyond the test command is stated.

The run-folder block is checked against a real demo run in tests/recipes/test_demo.py.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
from isolated_python import run_isolated

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
# the placeholders the README documents next to its snippets
DATASET_PLACEHOLDER = "path/to/converted"
MODEL_PLACEHOLDER = "user/minerva-pet-small"
COMMIT_PLACEHOLDER = "<commit>"


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced ```language blocks of a Markdown text, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def snippet_with(marker: str) -> str:
    """The one Python block of the README that contains `marker`."""
    found = [block for block in code_blocks(README, "python") if marker in block]
    assert len(found) == 1, f"expected one README python block with {marker!r}, found {len(found)}"
    return found[0]


def test_every_python_block_is_one_of_the_tested_snippets():
    blocks = code_blocks(README, "python")
    assert len(blocks) == 2 and all(any(m in b for m in (DATASET_PLACEHOLDER, MODEL_PLACEHOLDER)) for b in blocks)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A small dataset made by the real chain: synthetic AnaTuples (uproot) -> the converter -> the dataset card
    (whose `configs` name the splits, as in the demo's dataset/)."""
    from dataset_builder.convert import ConvertOptions, convert
    from dataset_builder.dataset_card import write_dataset_card
    from dataset_builder.synthetic import write_anatuples

    root = tmp_path_factory.mktemp("readme_data")
    files = write_anatuples(root / "root", n_events=200, seed=3, n_files=1)
    shifted = write_anatuples(root / "root", n_events=40, seed=4, shifted=True)
    convert(files + shifted, root / "converted", ConvertOptions(shifted_globs=tuple(p.name for p in shifted)),
            workers=1, progress=False)
    write_dataset_card(root / "converted", plots=False)
    return root / "converted"


def test_dataset_snippet_runs_as_printed_in_a_clean_interpreter(converted, tmp_path):
    """Plain `datasets` without the project; a fresh interpreter, so an abort at exit (rc 134) fails the test."""
    snippet = snippet_with(DATASET_PLACEHOLDER).replace(DATASET_PLACEHOLDER, str(converted))
    for attempt in range(3):  # the streaming reader once aborted at interpreter exit in 3 of 6 runs
        result = run_isolated(snippet + "print(repr((sorted(ds), len(event['object_pid']))))\n", tmp_path)
        splits, n_objects = ast.literal_eval(result.stdout.strip().splitlines()[-1])
        assert splits == ["shifted", "test", "train", "validation"] and n_objects >= 1, attempt


def test_model_snippet_runs_as_printed_against_the_loopback_hub(hub, tmp_path):
    """A tiny PET pushed to the loopback Hub loads in a clean interpreter with the README's lines."""
    from huggingface_hub import HfApi

    import modeling

    folder = tmp_path / "model"
    modeling.build_model("omnilearned", "classification", "tiny").save_pretrained(folder)
    repo_id = f"{hub.user}/minerva-pet-small-readme"
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder)).oid
    snippet = snippet_with(MODEL_PLACEHOLDER).replace(MODEL_PLACEHOLDER, repo_id).replace(COMMIT_PLACEHOLDER, commit)
    assert snippet.count(repo_id) == 1 and snippet.count(commit) == 1
    result = run_isolated(snippet + "print(type(model).__name__, model.config.num_labels)\n", tmp_path)
    assert result.stdout.split()[-2:] == ["MinervaPetForEventClassification", "5"]


def readme_commands() -> list[list[str]]:
    """Every `minerva-fm ...` command line the README shows (inline code and bash blocks), as tokens."""
    spans = re.findall(r"`([^`\n]*minerva-fm [^`\n]*)`", README)
    for block in code_blocks(README, "bash"):
        spans += [line.split("#")[0] for line in block.replace("\\\n", " ").splitlines() if "minerva-fm " in line]
    commands = []
    for span in spans:
        for part in re.split(r",\s*(?=`?(?:\.venv/bin/)?minerva-fm )|&&", span):
            tokens = shlex.split(part.replace("[", " ").replace("]", " ").replace("...", " "))
            for i, token in enumerate(tokens):
                if token.endswith("minerva-fm") and i + 1 < len(tokens):
                    commands.append(tokens[i + 1:])
    return commands


def test_every_readme_command_and_option_exists():
    from recipes.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    commands = readme_commands()
    named = {c[0] for c in commands}
    assert {"demo", "generate", "convert", "evaluate", "model-card", "pretrain", "transfer-study"} <= named
    for command in commands:
        assert command[0] in subparsers, f"README names `minerva-fm {command[0]}`, which the CLI does not have"
        options = {s for a in subparsers[command[0]]._actions for s in a.option_strings}
        for token in command[1:]:
            if token.startswith("--"):
                assert token.split("=")[0] in options, f"`minerva-fm {command[0]}` has no option {token}"


def test_readme_paths_and_config_globs_exist():
    for pattern in sorted(set(re.findall(r"(recipes/configs/[\w*]+\.yaml|recipes/\w+\.py|\.ci/\w+)", README))):
        assert list(REPO_ROOT.glob(pattern)), f"README names {pattern}, which matches nothing"


def test_readme_states_what_ci_run_sets_beyond_the_test_command():
    ci_run = (REPO_ROOT / ".ci" / "run").read_text()
    test_command = next(b for b in code_blocks(README, "bash") if "pytest" in b).strip()
    assert all(part.strip() in ci_run for part in test_command.split("&&"))
    exported = re.findall(r"^export (\w+=\S+)", ci_run, flags=re.M)
    assert exported, ".ci/run exports nothing: update this test and the README together"
    for assignment in exported:
        assert f"`{assignment}`" in README, f".ci/run sets {assignment}; the README does not say so"
