"""A run name that already holds another run's shards or checkpoint is refused, naming what differs,
instead of mixing the two: a new tokenizer or model with an unchanged data section is noticed."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayformers.data.tokenizer import load_tokenizer, tokenizer_fingerprint
from rayformers.loading import load_config
from rayformers.manifest import CheckpointManifest, DataManifest, PreprocessSettings
from rayformers.training.checkpoint import resume_differences
from rayformers.training.trainer import _fingerprint, shard_differences

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "configs" / "text-classification" / "full.yaml"


def shards_of(cfg) -> DataManifest:
    tokenizer = load_tokenizer(cfg.model.tokenizer_source, cfg.model.task)
    return DataManifest(
        source=cfg.data.model_dump(mode="json"), tokenizer=cfg.model.tokenizer_source,
        tokenizer_hash=tokenizer_fingerprint(tokenizer),
        preprocessing=PreprocessSettings(task=cfg.model.task, max_length=cfg.data.max_length),
        splits={}, columns=["input_ids"], versions={},
    )  # fmt: skip


def test_shards_of_this_run_are_reused_and_another_tokenizers_are_not(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(CONFIG)
    assert shard_differences(shards_of(cfg), cfg) == []
    other = load_config(CONFIG, overrides=["model.from_scratch.tokenizer=data/samples/tokenizers/bpe"])
    assert other.data == cfg.data  # the data section alone would not tell them apart
    differences = shard_differences(shards_of(cfg), other)
    assert len(differences) == 1 and differences[0].startswith("tokenizer:")


def test_a_checkpoint_of_another_run_is_not_resumed(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(CONFIG)
    manifest = CheckpointManifest(
        task=cfg.model.task, method="full", base_model="bert", architecture="bert", auto_model="x",
        preprocessing=PreprocessSettings(task=cfg.model.task, max_length=64), data_fingerprint=_fingerprint(cfg),
    )  # fmt: skip
    assert resume_differences(manifest, _fingerprint(cfg), "bert", "full") == []
    other = load_config(CONFIG, overrides=["model.from_scratch.tokenizer=data/samples/tokenizers/bpe"])
    found = resume_differences(manifest, _fingerprint(other), "roberta", "lora")
    assert [d.split(":")[0] for d in found] == ["data", "model", "method"]


def test_the_tokenizer_loads_at_the_models_revision(monkeypatch, tmp_path):
    from rayformers.config import ModelConfig
    from rayformers.data.storage import Location
    from rayformers.training import trainer

    monkeypatch.chdir(REPO)
    cfg = load_config(CONFIG)
    hub = ModelConfig.model_validate({"task": cfg.model.task, "name": "org/model", "revision": "v1.2"})
    seen = {}

    def fake_build(data, task, source, **kwargs):
        seen.update(source=source, **kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(trainer, "build_tokenized", fake_build)
    with pytest.raises(RuntimeError, match="stop here"):
        trainer._tokenize_once(cfg.model_copy(update={"model": hub}), Location.parse(tmp_path))
    assert seen["source"] == "org/model" and seen["revision"] == "v1.2"
    own = hub.model_copy(update={"tokenizer": "org/other-tokenizer"})
    assert own.tokenizer_revision is None  # a tokenizer of its own loads at its default revision
