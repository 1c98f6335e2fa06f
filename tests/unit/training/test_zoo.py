"""Every task on every architecture it applies to, from stand-ins of the hub checkpoints users bring
(tests/zoo.py): the training stage's own code builds the model, takes optimizer steps on the task's
preprocessed rows, writes the checkpoint, resumes it (`load_model`, as a resumed run does, with every
weight back), and serving's own code loads it and answers one request.

Without Ray: the loop's distribution is covered by the integration tests; here the subject is what each
architecture and tokenizer does to each task (pad tokens, token type ids, heads, label orders, shards)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rayformers.config import ModelConfig
from rayformers.data.tokenizer import load_tokenizer
from rayformers.manifest import CheckpointManifest, LabelMap, PreprocessSettings, package_versions
from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.tasks import get_task
from rayformers.tasks.checkpoint import BASE_MODEL_DIR, embeds_base, load_model, read_manifest
from rayformers.training.checkpoint import save_clean_base, write_checkpoint
from rayformers.training.model import build_model
from tests.task_examples import CASES, TRAIN_ROWS
from tests.zoo import MNLI, SHARDED, standin

ENCODERS = ["bert", "distilbert", "roberta", "deberta-v2", "modernbert"]
DECODERS = ["gpt2", "llama", "qwen2", "mixtral"]
# task -> the architectures it applies to (what the hub offers for it)
APPLIES: dict[str, list[str]] = {
    "text-classification": [*ENCODERS, *DECODERS, "bart", "t5"],
    "token-classification": ENCODERS,
    "question-answering": [*ENCODERS, "bart"],
    "fill-mask": ENCODERS,
    "text-generation": DECODERS,
    "summarization": ["bart", "t5"],
    "translation": ["bart", "t5"],
    "zero-shot-classification": ["roberta-mnli", "bert"],
    "feature-extraction": ENCODERS,
    "text-ranking": ["bert", "roberta", "modernbert"],
}
LORA = {("text-classification", a) for a in APPLIES["text-classification"]} | {
    ("text-generation", "llama"), ("token-classification", "deberta-v2"), ("zero-shot-classification", "roberta-mnli"),
    ("summarization", "t5"), ("question-answering", "modernbert"),
}  # fmt: skip
CASES_RUN = [
    pytest.param(task, arch, method, id=f"{task}-{arch}-{method}")
    for task, archs in APPLIES.items()
    for arch in archs
    for method in (("full", "lora") if (task, arch) in LORA else ("full",))
]
TOKEN_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


@pytest.fixture(scope="session")
def zoo() -> Path:
    return Path(tempfile.mkdtemp(prefix="rayformers-zoo-"))


def _settings(task_name: str, rows: dict[str, list[Any]]) -> PreprocessSettings:
    task = get_task(task_name)
    labels = None
    if task.label_column is not None and task.label_kind != "none":
        values = TOKEN_LABELS if task.label_kind == "token" else rows[task.label_column]
        labels = LabelMap.from_values([v for v in values if isinstance(v, str)]) if values else None
    if task_name == "zero-shot-classification":
        labels = LabelMap.from_values(["entailment", "neutral", "contradiction"])
    if task_name == "text-classification":
        labels = LabelMap.from_values(["negative", "positive"])
    settings = PreprocessSettings(
        task=task_name, max_length=64, max_target_length=16, stride=16, labels=labels,
        source_prefix="summarize: " if task_name == "summarization" else "",
    )  # fmt: skip
    return task.finish_settings(settings, lambda column: rows[column])


def _as_batch(columns: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """Columns as Ray Data hands the collator a batch: ragged int lists as object arrays of int32."""
    out = {}
    for name, values in columns.items():
        if values and isinstance(values[0], list | np.ndarray):
            column = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                column[i] = np.asarray(v, dtype=np.int32)
            out[name] = column
        else:
            out[name] = np.asarray(values)
    return out


def _request(task_name: str, tokenizer: Any) -> tuple[list[Any], dict[str, Any]]:
    inputs, parameters = CASES[task_name]
    if task_name == "fill-mask":
        inputs = [text.replace("[MASK]", tokenizer.mask_token) for text in inputs]
    if task_name == "token-classification":  # every word answered, so the labels are checked
        parameters = {**parameters, "ignore_labels": []}
    return inputs[:1], parameters


@pytest.mark.parametrize(("task_name", "architecture", "method"), CASES_RUN)
def test_build_train_checkpoint_resume_serve(zoo, tmp_path, task_name, architecture, method):
    task = get_task(task_name)
    source = standin(architecture, zoo)
    if architecture in SHARDED:  # the hub has it in parts: no model.safetensors, an index of shards
        assert (
            not (source / "model.safetensors").exists() and (source / "model.safetensors.index.json").exists()
        )
    rows = {k: v * 4 for k, v in TRAIN_ROWS[task_name].items()}
    settings = _settings(task_name, rows)
    tokenizer = load_tokenizer(str(source), task_name)
    cfg = ModelConfig.model_validate({"task": task_name, "name": str(source), "method": method})
    model = build_model(cfg, task, tokenizer, settings, seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # bf16 hub weights train in fp32

    base_dir = None
    if embeds_base(method, False, task, settings):
        base_dir = tmp_path / "base"
        save_clean_base(model, base_dir)

    # A few optimizer steps, as the loop takes them: the task's rows, collator and loss.
    batch = task.collator(tokenizer, seed=0)(_as_batch(task.preprocess(rows, tokenizer, settings, "train")))
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        loss = task.loss(model, batch, settings)
        assert math.isfinite(loss.item()), (task_name, architecture, loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert changed, "no trainable weight moved"
    if method == "lora":  # the task's head trains with the adapter when the head is new
        assert any("lora_" in n for n in changed)

    directory = tmp_path / "checkpoint"
    manifest = CheckpointManifest(
        task=task_name, method=method, base_model=str(source), architecture=model.config.model_type,
        auto_model=task.auto_model, preprocessing=settings, pooling=task.pooling, metrics={"loss": loss.item()},
        step=2, epoch=1, data_fingerprint="zoo", versions=package_versions(),
    )  # fmt: skip
    state = {"step": 2, "epoch": 1, "history": [], "resumed_from": []}
    write_checkpoint(directory, model, tokenizer, manifest, {}, state, base_dir, str(directory))
    assert (directory / BASE_MODEL_DIR).is_dir() == (base_dir is not None)

    # Resume: every weight comes back, as trained.
    resumed = load_model(read_manifest(directory), directory, dtype=torch.float32, trainable=True)
    ours, theirs = model.state_dict(), resumed.state_dict()
    assert set(ours) == set(theirs)
    # peft's stand-by copy of a head the checkpoint did not hold (`original_module`, used only with the
    # adapter disabled) is drawn anew by each load of a hub base; the head the adapter trains is saved.
    # With the base embedded, even that copy must come back.
    stand_by = base_dir is None
    different = [
        k for k in ours if not torch.equal(ours[k], theirs[k]) and not (stand_by and ".original_module." in k)
    ]
    assert not different, different[:5]

    # Serve: one request through serving's loader and the task's handler.
    loaded = load_checkpoint(str(directory))
    inputs, parameters = _request(task_name, loaded.tokenizer)
    [answer] = build_handler(loaded).predict(inputs, parameters)
    names = set(settings.labels.names) if settings.labels is not None else set()
    if task_name == "text-classification":
        assert {a["label"] for a in answer} == names
    elif task_name == "token-classification":
        assert answer and all(e["entity_group"] in {n.split("-")[-1] for n in names} for e in answer)
    elif task_name == "zero-shot-classification":
        assert sorted(answer["labels"]) == sorted(parameters["candidate_labels"])
    else:
        assert answer not in (None, [], {})


def test_the_mnli_stand_in_has_mnlis_label_order(zoo):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(standin("roberta-mnli", zoo))
    assert config.id2label == MNLI
