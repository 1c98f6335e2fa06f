"""`data preview` on the project's sample set of every task, through the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayformers.data.pipeline import build_tokenized
from rayformers.data.preview import preview, preview_sample
from rayformers.loading import load_config

pytestmark = pytest.mark.usefixtures("ray_cluster")
REPO = Path(__file__).resolve().parents[2]
CONFIGS = ["text-classification/full.yaml", "text-classification/pair.yaml"] + [
    f"{task}/full.yaml"
    for task in (
        "token-classification", "question-answering", "fill-mask", "text-generation",
        "summarization", "translation", "zero-shot-classification", "feature-extraction",
    )
]  # fmt: skip


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the shipped configs name paths relative to the repository


@pytest.mark.parametrize("name", CONFIGS)
def test_preview_of_every_task(name):
    cfg = load_config(REPO / "configs" / name, ["data.limit=64", "data.batch_size=64"])
    tokenized = build_tokenized(cfg.data, cfg.model.task, cfg.model.tokenizer_source)
    report = preview(tokenized, rows=2)
    train, validation = report["splits"]["train"], report["splits"]["validation"]
    assert (
        train["stats"]["rows"] >= 64 if cfg.model.task == "question-answering" else train["stats"]["rows"] > 0
    )
    assert validation["stats"]["rows"] > 0
    assert report["bad_rows"] == {s: {"counts": {}, "examples": {}} for s in ("train", "validation")}
    row = train["rows"][0]
    assert row["tokens"] and row["length"] == len(row["tokens"]) <= cfg.data.max_length
    task = cfg.model.task
    if task == "text-classification":
        expected = {"negative", "positive"} if "full" in name else {"different", "paraphrase"}
        assert set(report["labels"]) == expected == set(train["stats"]["labels"])
        assert row["label"] in expected and row["tokens"][0] == "[CLS]"
        if "pair" in name:
            assert row["tokens"].count("[SEP]") == 2
    elif task == "token-classification":
        assert {"B-PER", "I-PER", "O"} <= set(report["labels"])
        assert len(row["labels"]) == row["length"] and row["labels"][0] is None
    elif task == "question-answering":
        answers = [r["answer"] for r in train["rows"]]
        assert all(a is None or a.strip() for a in answers)
    elif task == "text-generation":
        assert train["stats"]["longest"] == cfg.data.max_length  # packed into full blocks
    elif task in ("summarization", "translation"):
        assert row["target"].strip()
    elif task == "zero-shot-classification":
        assert set(report["labels"]) == {"contradiction", "entailment", "neutral"}
    elif task == "feature-extraction":
        assert row["pair_tokens"][0] == "[CLS]"


@pytest.mark.parametrize("name", [*CONFIGS, "text-ranking/full.yaml"])
def test_the_in_process_preview_counts_what_the_ray_pipeline_does(name):
    """`data preview` tokenizes without Ray; on a sample set it reads whole, its statistics are the
    Ray pipeline's over every row."""
    cfg = load_config(REPO / "configs" / name, [])
    tokenized = build_tokenized(cfg.data, cfg.model.task, cfg.model.tokenizer_source)
    ray_report = preview(tokenized, rows=1)
    local = preview_sample(cfg.data, cfg.model.task, cfg.model.tokenizer_source, rows=1)
    assert local["sample"]["complete"] == {"train": True, "validation": True}
    assert local.get("labels") == ray_report.get("labels")
    assert local["bad_rows"] == ray_report["bad_rows"]
    for split in ("train", "validation"):
        ours, theirs = local["splits"][split]["stats"], ray_report["splits"][split]["stats"]
        if cfg.data.packing:  # blocks are cut per batch: the row count follows the batch boundaries
            ours, theirs = ours["tokens"], theirs["tokens"]
        assert ours == theirs, split
