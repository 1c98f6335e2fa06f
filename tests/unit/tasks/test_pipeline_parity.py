"""A checkpoint of every task `transformers.pipeline` still has loads there as any Hugging Face model
does, and the pipeline answers exactly as rayformers' own handler (the training stage's preprocessing
and model class) does on the same checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import pipeline

from rayformers.serving.checkpoint import build_handler, load_checkpoint

TEXTS = ["a great film", "Alice Novak flew to Toronto ."]


def ours(checkpoint, inputs, parameters):
    return build_handler(load_checkpoint(str(checkpoint))).predict(inputs, parameters)


def close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-4


def test_text_classification(tiny_checkpoint):
    directory = tiny_checkpoint("text-classification")
    theirs = pipeline("text-classification", model=str(directory), device="cpu")(TEXTS, top_k=None)
    mine = ours(directory, TEXTS, {"top_k": None})
    for a, b in zip(theirs, mine, strict=True):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        assert all(close(x["score"], y["score"]) for x, y in zip(a, b, strict=True))


def test_token_classification(tiny_checkpoint):
    directory = tiny_checkpoint("token-classification")
    theirs = pipeline("token-classification", model=str(directory), device="cpu")(
        TEXTS, aggregation_strategy="simple"
    )
    mine = ours(directory, TEXTS, {"aggregation_strategy": "simple"})
    for a, b in zip(theirs, mine, strict=True):
        assert [(x["entity_group"], x["start"], x["end"]) for x in a] == [
            (x["entity_group"], x["start"], x["end"]) for x in b
        ]
        assert all(close(x["score"], y["score"]) for x, y in zip(a, b, strict=True))


def test_fill_mask(tiny_checkpoint):
    directory = tiny_checkpoint("fill-mask")
    text = "the film was [MASK] ."
    theirs = pipeline("fill-mask", model=str(directory), device="cpu")(text, top_k=5)
    (mine,) = ours(directory, [text], {"top_k": 5})
    assert [x["token"] for x in theirs] == [x["token"] for x in mine]
    assert [x["sequence"] for x in theirs] == [x["sequence"] for x in mine]
    assert all(close(x["score"], y["score"]) for x, y in zip(theirs, mine, strict=True))


def test_text_generation_continues_the_prompt_as_serving_does(tiny_checkpoint):
    directory = tiny_checkpoint("text-generation")
    theirs = pipeline("text-generation", model=str(directory), device="cpu")(
        "the film was", max_new_tokens=8, do_sample=False
    )
    (mine,) = ours(directory, ["the film was"], {"max_new_tokens": 8})
    assert theirs[0]["generated_text"] == mine[0]["generated_text"]


def test_zero_shot_classification(tiny_checkpoint):
    directory = tiny_checkpoint("zero-shot-classification")
    labels = ["sports", "politics", "cooking"]
    theirs = pipeline("zero-shot-classification", model=str(directory), device="cpu")(
        TEXTS, candidate_labels=labels
    )
    mine = ours(directory, TEXTS, {"candidate_labels": labels})
    for a, b in zip(theirs, mine, strict=True):
        assert a["labels"] == b["labels"]
        assert all(close(x, y) for x, y in zip(a["scores"], b["scores"], strict=True))


@pytest.mark.parametrize("text", TEXTS)
def test_feature_extraction_is_the_mean_of_the_pipelines_token_vectors(tiny_checkpoint, text):
    directory = tiny_checkpoint("feature-extraction")
    tokens = np.asarray(pipeline("feature-extraction", model=str(directory), device="cpu")(text))[0]
    (mine,) = ours(directory, [text], {"normalize": False})
    assert np.allclose(tokens.mean(axis=0), np.asarray(mine), atol=1e-5)
