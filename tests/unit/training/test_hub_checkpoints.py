"""Checkpoints as users bring them from the hub, not as the project builds its own: stand-ins of real
architectures with tiny random weights, saved with `save_pretrained` as the hub has them (bf16 weights,
no pad token, a head trained on another label order or count), each loaded through `build_model`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rayformers.config import ModelConfig
from rayformers.data.tokenizer import load_tokenizer
from rayformers.manifest import LabelMap, PreprocessSettings
from rayformers.tasks import get_task
from rayformers.training.model import build_model

SAMPLES = Path(__file__).resolve().parents[3] / "data" / "samples" / "tokenizers"
TINY = {
    "bert": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "gpt2": {"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 128},
    "llama": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "intermediate_size": 64, "max_position_embeddings": 128},
    "qwen2": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "intermediate_size": 64, "max_position_embeddings": 128},
    "bart": {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
             "max_position_embeddings": 128},
    "deberta-v2": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                   "max_position_embeddings": 128},
}  # fmt: skip
TOKENIZER = {"bert": "wordpiece", "deberta-v2": "wordpiece"}
MNLI = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}


def hub_checkpoint(
    root: Path,
    architecture: str,
    *,
    dtype: torch.dtype = torch.float32,
    id2label: dict[int, str] | None = None,
) -> Path:
    """A sequence classifier saved as the hub has it: its own tokenizer beside it; decoder-only ones
    with no pad token in their config or tokenizer."""
    directory = root / f"{architecture}-{str(dtype).split('.')[-1]}-{len(id2label or {})}"
    tokenizer = AutoTokenizer.from_pretrained(SAMPLES / TOKENIZER.get(architecture, "bpe"))
    decoder_only = architecture in ("gpt2", "llama", "qwen2")
    special = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id}
    if decoder_only:
        tokenizer.pad_token = None
        special["bos_token_id"] = tokenizer.bos_token_id or tokenizer.eos_token_id
    else:
        special["pad_token_id"] = tokenizer.pad_token_id
    labels = id2label or {0: "LABEL_0", 1: "LABEL_1"}
    config = AutoConfig.for_model(
        architecture,
        **TINY[architecture],
        **special,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    if decoder_only:
        config.pad_token_id = None
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).to(dtype)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build(directory: Path, *names: str, method: str = "full") -> tuple[torch.nn.Module, object]:
    task = get_task("text-classification")
    settings = PreprocessSettings(task=task.name, max_length=32, labels=LabelMap(names=list(names)))
    tokenizer = load_tokenizer(str(directory), task.name)
    model_cfg = ModelConfig.model_validate({"task": task.name, "name": str(directory), "method": method})
    return build_model(model_cfg, task, tokenizer, settings, seed=0), tokenizer


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_a_half_precision_checkpoint_trains_with_float32_weights(tmp_path, dtype):
    """Finding 1: transformers 5 loads a checkpoint in its saved dtype; AdamW on bf16 weights has no fp32
    master copy, and fp16 weights under `mixed_precision: fp16` fail in the scaler's unscale_."""
    directory = hub_checkpoint(tmp_path, "bert", dtype=dtype)
    assert AutoModelForSequenceClassification.from_pretrained(directory).dtype == dtype  # as saved
    model, tokenizer = build(directory, "negative", "positive")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # The fp16 recipe's step (a loss scaler; CPU's here, CUDA's is the same code): unscale_ refuses fp16
    # gradients, so it would have raised on the weights as saved.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    batch = tokenizer(["a good one", "a bad one"], padding=True, return_tensors="pt")
    scaler.scale(model(**batch, labels=torch.tensor([1, 0])).loss).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "qwen2"])
def test_a_decoder_only_classifier_without_a_pad_token_takes_padded_batches(tmp_path, architecture):
    directory = hub_checkpoint(tmp_path, architecture, dtype=torch.bfloat16)
    assert AutoConfig.from_pretrained(directory).pad_token_id is None
    model, tokenizer = build(directory, "negative", "positive")
    batch = tokenizer(
        ["a short one", "a much longer text than the first one is"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 2) and model.config.pad_token_id == tokenizer.pad_token_id
    alone = model(**tokenizer(["a short one"], return_tensors="pt")).logits
    assert torch.allclose(logits[0], alone[0], atol=1e-5)  # the padded row is scored at its own last token


def test_a_head_trained_on_another_label_order_is_reordered_not_relabeled(tmp_path):
    directory = hub_checkpoint(tmp_path, "bert", id2label=MNLI)
    original = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    model, tokenizer = build(directory, "contradiction", "entailment", "neutral")  # the data's sorted order
    batch = tokenizer(["the cat sat", "a dog ran"], padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs, ours = original(**batch).logits, model.eval()(**batch).logits
    assert model.config.id2label == {0: "contradiction", 1: "entailment", 2: "neutral"}
    # each of our labels scores what the checkpoint's head scored for the same name
    assert torch.allclose(ours, theirs[:, [0, 2, 1]], atol=1e-5)


def test_a_head_with_another_number_of_labels_starts_new(tmp_path):
    directory = hub_checkpoint(tmp_path, "bert", id2label=MNLI)
    model, _ = build(directory, "negative", "positive")
    assert model.config.num_labels == 2 and model.classifier.out_features == 2


@pytest.mark.parametrize(
    ("architecture", "head"), [("bart", "classification_head"), ("deberta-v2", "pooler")]
)
def test_lora_trains_the_heads_an_architecture_builds_new(tmp_path, architecture, head):
    directory = hub_checkpoint(tmp_path, architecture)
    model, _ = build(directory, "negative", "positive", method="lora")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(f".{head}." in n and "lora_" not in n for n in trainable), trainable


def test_a_lora_checkpoint_of_a_hub_decoder_serves_padded_batches(tmp_path):
    from rayformers.manifest import CheckpointManifest
    from rayformers.serving.checkpoint import build_handler, load_checkpoint
    from rayformers.training.checkpoint import write_checkpoint

    directory = hub_checkpoint(tmp_path, "gpt2", dtype=torch.bfloat16, id2label=MNLI)
    model, tokenizer = build(directory, "negative", "positive", method="lora")
    task = get_task("text-classification")
    settings = PreprocessSettings(
        task=task.name, max_length=32, labels=LabelMap(names=["negative", "positive"])
    )
    manifest = CheckpointManifest(
        task=task.name, method="lora", base_model=str(directory), architecture="gpt2",
        auto_model=task.auto_model, preprocessing=settings, data_fingerprint="x",
    )  # fmt: skip
    checkpoint = write_checkpoint(tmp_path / "ckpt", model, tokenizer, manifest, {}, {"step": 0})
    handler = build_handler(load_checkpoint(str(checkpoint)))
    texts = ["a short one", "a much longer text than the first one is"]
    together = handler.predict(texts, {})
    assert [o["label"] for o in together] == [handler.predict([t], {})[0]["label"] for t in texts]
    assert {o["label"] for o in together} <= {"negative", "positive"}


def test_a_sharded_moe_checkpoint_comes_back_with_every_weight(tmp_path):
    """Mixtral's experts are converted on save and load by transformers 5; a checkpoint written in
    several shards has no model.safetensors. Resume, export and serving read it through load_model."""
    from rayformers.manifest import CheckpointManifest
    from rayformers.tasks.checkpoint import load_model

    tokenizer = AutoTokenizer.from_pretrained(SAMPLES / "bpe")
    config = AutoConfig.for_model(
        "mixtral", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, vocab_size=len(tokenizer),
        max_position_embeddings=128,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    assert not (tmp_path / "model.safetensors").exists()
    task = get_task("text-generation")
    manifest = CheckpointManifest(
        task=task.name, method="full", base_model="mixtral", architecture="mixtral", auto_model=task.auto_model,
        preprocessing=PreprocessSettings(task=task.name, max_length=32), data_fingerprint="x",
    )  # fmt: skip
    back = load_model(manifest, tmp_path, dtype=torch.float32, trainable=True).state_dict()
    saved = model.state_dict()
    assert set(back) == set(saved) and all(torch.equal(back[k], saved[k]) for k in saved)


def test_a_checkpoint_missing_a_weight_is_refused_naming_it(tmp_path):
    """Finding 6/7: transformers only warns on a missing weight and starts it random; a checkpoint this
    project wrote that lost one (a shard cut off, edited) must not resume or serve as if whole."""
    from safetensors.torch import load_file, save_file

    from rayformers.manifest import CheckpointManifest
    from rayformers.tasks.checkpoint import CheckpointError, load_model

    tokenizer = AutoTokenizer.from_pretrained(SAMPLES / "wordpiece")
    config = AutoConfig.for_model("bert", vocab_size=len(tokenizer), num_labels=2, **TINY["bert"])
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    task = get_task("text-classification")
    manifest = CheckpointManifest(
        task=task.name, method="full", base_model="bert", architecture="bert", auto_model=task.auto_model,
        preprocessing=PreprocessSettings(task=task.name, max_length=32, labels=LabelMap(names=["a", "b"])),
        data_fingerprint="x",
    )  # fmt: skip
    load_model(manifest, tmp_path)  # whole: loads
    weights = load_file(tmp_path / "model.safetensors")
    del weights["classifier.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing classifier\.weight"):
        load_model(manifest, tmp_path, dtype=torch.float32, trainable=True)
    # A plain Hugging Face folder (no manifest: a user's hub model) still loads as transformers does.
    assert load_model(None, tmp_path, task=task) is not None
