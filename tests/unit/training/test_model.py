"""Model building from an architecture config, and the LoRA switch."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rayformers.config import ModelConfig
from rayformers.manifest import LabelMap, PreprocessSettings
from rayformers.tasks import get_task
from rayformers.training.model import ModelError, build_model, parameter_counts

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def settings(*names: str) -> PreprocessSettings:
    return PreprocessSettings(task="text-classification", max_length=32, labels=LabelMap(names=list(names)))


def cfg(wordpiece_dir, **kw):
    return ModelConfig.model_validate(
        {
            "task": "text-classification",
            "from_scratch": {"architecture": "bert", "tokenizer": str(wordpiece_dir), "config": TINY_BERT},
            **kw,
        }
    )


def test_from_scratch_classifier_records_labels_and_tokenizer_ids(wordpiece_dir):
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    labels = settings("negative", "positive")
    model = build_model(cfg(wordpiece_dir), get_task("text-classification"), tok, labels, seed=0)
    assert model.config.num_labels == 2 and model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.vocab_size == len(tok) and model.config.pad_token_id == tok.pad_token_id
    again = build_model(cfg(wordpiece_dir), get_task("text-classification"), tok, labels, seed=0)
    assert all(
        (a == b).all() for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_lora_trains_adapters_and_the_head_only(wordpiece_dir):
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    model = build_model(
        cfg(wordpiece_dir, method="lora"),
        get_task("text-classification"),
        tok,
        settings("a", "b"),
        seed=0,
    )
    trainable, total = parameter_counts(model)
    assert 0 < trainable < total / 5
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in names) and any("classifier" in n for n in names)
    assert not any("word_embeddings" in n for n in names)


def test_unknown_lora_target_lists_the_real_ones(wordpiece_dir):
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    bad = cfg(wordpiece_dir, method="lora", lora={"target_modules": ["q_proj"]})
    with pytest.raises(ModelError) as err:
        build_model(bad, get_task("text-classification"), tok, settings("a", "b"), seed=0)
    assert "q_proj" in str(err.value) and "query" in str(err.value) and "value" in str(err.value)


def test_the_clean_base_of_a_from_scratch_lora_run_is_the_adapters_base(wordpiece_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from rayformers.training.checkpoint import save_clean_base

    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    model = build_model(
        cfg(wordpiece_dir, method="lora"), get_task("text-classification"), tok, settings("a", "b"), seed=0
    )
    save_clean_base(model, tmp_path)
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    batch = tok(["the cat sat", "a dog"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        expected = model(**batch).logits
    # the base's own head, not the adapter's trainable copy: peft keeps the original beside it
    assert torch.allclose(base(**batch).logits, expected, atol=1e-6)
