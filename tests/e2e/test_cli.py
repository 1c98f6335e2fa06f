"""The CLI as a user runs it: exit codes, messages without tracebacks, real files. (`data preview`, `train`
and `serve --checkpoint` are run from an installed wheel in test_wheel.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def rayformers(*args, timeout=300):
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rayformers.cli", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def test_validate_accepts_every_shipped_config():
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        out = rayformers("validate", path)
        assert out.returncode == 0, out.stderr
        assert "OK" in out.stdout


def test_validate_lists_three_mistakes_and_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "data:\n  train: {path: x.jsonl}\n  max_lenght: 64\n"
        "model:\n  task: text-classification\n  name: m\n"
        "train:\n  learning_rate: fast\n  scheduler: cosin\n"
    )
    out = rayformers("validate", bad)
    assert out.returncode == 1
    for path in ("data.max_lenght", "train.learning_rate", "train.scheduler"):
        assert path in out.stderr
    assert "3 problems" in out.stderr and "did you mean" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_bad_data_gets_one_clear_error(tmp_path):
    config = REPO / "configs/text-classification/full.yaml"
    out = rayformers(
        "data", "preview", config, "--set", "data.columns.text=sentence", "--set", "data.validation=null"
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "'sentence'" in last and "label, text" in last
    assert "Traceback" not in out.stderr
    missing = rayformers("data", "preview", config, "--set", "data.train.path=nope.jsonl")
    assert missing.returncode == 1 and "does not exist" in missing.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_tokenize_and_train_tokenizer_write_what_they_say(tmp_path):
    out = rayformers("data", "tokenize", "configs/token-classification/lora.yaml", "--out", tmp_path / "tok")
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((tmp_path / "tok" / "manifest.json").read_text())
    assert (
        manifest["splits"]["train"]["rows"] == 1200
        and manifest["preprocessing"]["task"] == "token-classification"
    )
    assert sorted(p.suffix for p in (tmp_path / "tok" / "train").iterdir()) and "manifest:" in out.stdout
    again = rayformers(
        "data", "tokenize", "configs/token-classification/lora.yaml", "--out", tmp_path / "tok"
    )
    assert again.returncode == 1 and "not empty" in again.stderr
    trained = rayformers(
        "data",
        "train-tokenizer",
        "configs/fill-mask/full.yaml",
        "--out",
        tmp_path / "bpe",
        "--kind",
        "bpe",
        "--vocab-size",
        "500",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "bpe")
    assert (
        len(tok) == 500
        and tok.decode(tok("the movie was great")["input_ids"], skip_special_tokens=True).strip()
        == "the movie was great"
    )
    # --from: the tokenizer just trained, retrained on the same corpus with a smaller vocabulary.
    again = rayformers(
        "data", "train-tokenizer", "configs/fill-mask/full.yaml", "--out", tmp_path / "re", "--from", tmp_path / "bpe",
        "--vocab-size", "400",
    )  # fmt: skip
    assert again.returncode == 0 and "retrained" in again.stdout, again.stderr[-3000:]
    retrained = AutoTokenizer.from_pretrained(tmp_path / "re")
    assert len(retrained) <= 400 and retrained.all_special_tokens == tok.all_special_tokens


def test_help_lists_only_public_commands_and_runs_lists_a_storage_path(tmp_path):
    """Issue 13: `--help` showed `serve-build ==SUPPRESS==`; `runs list` / `runs show` read run summaries."""
    shown = rayformers("--help")
    assert shown.returncode == 0 and "SUPPRESS" not in shown.stdout and "serve-build" not in shown.stdout
    assert "runs" in shown.stdout
    run = tmp_path / "demo"
    (run / "checkpoint_000012").mkdir(parents=True)
    summary = {
        "config": {"model": {"task": "fill-mask", "name": "distilroberta-base", "method": "full"}},
        "metric": "perplexity", "mode": "min", "best_checkpoint": str(run / "checkpoint_000012"),
        "best_metrics": {"perplexity": 12.5}, "started_at": 100.0, "finished_at": 160.0,
    }  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    listed = rayformers("runs", "list", "--storage", tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, line = listed.stdout.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "STATUS", "TASK"]
    assert line.split()[:6] == [
        "demo",
        "finished",
        "fill-mask",
        "distilroberta-base",
        "full",
        "perplexity=12.5000",
    ]
    assert "60s" in line and line.endswith("checkpoint_000012")
    shown = rayformers("runs", "show", "demo", "--storage", tmp_path)
    assert json.loads(shown.stdout)["summary"]["best_metrics"] == {"perplexity": 12.5}
    missing = rayformers("runs", "show", "nope", "--storage", tmp_path)
    assert (
        missing.returncode == 1 and "runs there: demo" in missing.stderr and "Traceback" not in missing.stderr
    )
