"""Summarization and translation: the model's own generation, with the recorded source prefix."""

from __future__ import annotations

import pytest
import torch

from rayformers.serving.checkpoint import build_handler, load_checkpoint

DOCUMENT = "The council met on Monday and agreed a new budget for the town."


@pytest.fixture(scope="module")
def summarizer(tiny_checkpoint):
    return build_handler(load_checkpoint(str(tiny_checkpoint("summarization"))))


def test_summary_is_the_models_greedy_output_with_the_prefix(summarizer):
    assert summarizer.settings.source_prefix == "summarize: "
    (output,) = summarizer.predict([DOCUMENT], {"max_new_tokens": 8})
    encoded = summarizer.tokenizer(["summarize: " + DOCUMENT], return_tensors="pt")
    with torch.inference_mode():
        direct = summarizer.model.generate(**encoded, max_new_tokens=8, num_beams=1, do_sample=False)
    assert output == {
        "summary_text": summarizer.tokenizer.decode(direct[0], skip_special_tokens=True).strip()
    }


def test_default_length_is_the_training_target_length(summarizer):
    calls = []

    def spy(**kwargs):  # records what the handler asks for; the decoding itself is tested above
        calls.append(kwargs)
        return torch.tensor([[summarizer.tokenizer.eos_token_id]])

    summarizer.model.generate = spy
    try:
        summarizer.predict([DOCUMENT], {"num_beams": 2, "min_length": 3, "no_repeat_ngram_size": 2})
    finally:
        del summarizer.model.generate
    (kwargs,) = calls
    assert kwargs["max_new_tokens"] == summarizer.settings.max_target_length
    assert (kwargs["num_beams"], kwargs["min_length"], kwargs["no_repeat_ngram_size"]) == (2, 3, 2)
    assert kwargs["do_sample"] is False and "temperature" not in kwargs


def test_translation_output_key_and_lora(tiny_checkpoint):
    for method in ("full", "lora"):
        translator = build_handler(load_checkpoint(str(tiny_checkpoint("translation", method=method))))
        outputs = translator.predict(["the cat sat", "hello"], {"max_new_tokens": 4})
        assert [set(o) for o in outputs] == [{"translation_text"}] * 2
        assert all(isinstance(o["translation_text"], str) for o in outputs)


def test_seeded_sampling_repeats(summarizer):
    parameters = {"max_new_tokens": 8, "do_sample": True, "top_p": 0.9, "seed": 3}
    assert summarizer.predict([DOCUMENT], parameters) == summarizer.predict([DOCUMENT], parameters)
