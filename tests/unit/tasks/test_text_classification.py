"""Text classification: pipeline-shaped outputs whose scores are the model's own."""

from __future__ import annotations

import pytest
import torch

from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.tasks.text_classification import TextPair

TEXTS = ["the movie was great", "a bad dog sat on the mat in paris", "it rains"]


@pytest.fixture(scope="module")
def handler(tiny_checkpoint):
    return build_handler(load_checkpoint(str(tiny_checkpoint("text-classification"))))


def direct_logits(handler, texts, pairs=None) -> torch.Tensor:
    encoded = handler.tokenizer(
        texts, pairs, padding=True, truncation=True, max_length=48, return_tensors="pt"
    )
    with torch.inference_mode():
        return handler.model(**encoded).logits


def test_top_label_is_the_models_argmax_and_scores_are_probabilities(handler):
    outputs = handler.predict(TEXTS)
    probabilities = direct_logits(handler, TEXTS).softmax(-1)
    for output, row in zip(outputs, probabilities, strict=True):
        assert set(output) == {"label", "score"}
        assert output["label"] == ["negative", "positive"][int(row.argmax())]
        assert output["score"] == pytest.approx(float(row.max()), abs=1e-5)


def test_all_labels_sorted_and_summing_to_one(handler):
    for ranked in handler.predict(TEXTS, {"top_k": None}):
        assert {r["label"] for r in ranked} == {"negative", "positive"}
        assert ranked[0]["score"] >= ranked[1]["score"]
        assert sum(r["score"] for r in ranked) == pytest.approx(1.0, abs=1e-6)
    best = handler.predict(TEXTS)
    for k in (2, 5):  # k above the label count gives every label
        for ranked, top in zip(handler.predict(TEXTS, {"top_k": k}), best, strict=True):
            assert isinstance(ranked, list) and len(ranked) == 2 and ranked[0] == top


def test_function_to_apply(handler):
    logits = direct_logits(handler, TEXTS[:1])[0]
    raw = handler.predict(TEXTS[:1], {"top_k": None, "function_to_apply": "none"})[0]
    assert sorted(r["score"] for r in raw) == pytest.approx(sorted(logits.tolist()), abs=1e-5)
    sigmoid = handler.predict(TEXTS[:1], {"top_k": None, "function_to_apply": "sigmoid"})[0]
    assert sorted(r["score"] for r in sigmoid) == pytest.approx(sorted(logits.sigmoid().tolist()), abs=1e-5)


def test_multi_label_models_default_to_sigmoid(tiny_checkpoint):
    loaded = load_checkpoint(str(tiny_checkpoint("text-classification")))
    loaded.model.config.problem_type = "multi_label_classification"
    handler = build_handler(loaded)
    logits = direct_logits(handler, TEXTS[:1])[0]
    scores = sorted(r["score"] for r in handler.predict(TEXTS[:1], {"top_k": None})[0])
    assert scores == pytest.approx(sorted(logits.sigmoid().tolist()), abs=1e-5)


def test_sentence_pairs_mixed_with_single_texts(handler):
    pair = {"text": "the movie was great", "text_pair": "it rains"}
    mixed = handler.predict([TEXTS[0], pair, TextPair(**pair)], {"top_k": None})
    pair_probabilities = direct_logits(handler, [pair["text"]], [pair["text_pair"]]).softmax(-1)[0]
    for output in mixed[1:]:
        by_label = {r["label"]: r["score"] for r in output}
        assert [by_label["negative"], by_label["positive"]] == pytest.approx(
            pair_probabilities.tolist(), abs=1e-5
        )
    assert mixed[0] != mixed[1]


def test_malformed_pair_names_the_input(handler):
    from rayformers.serving.errors import InputError

    with pytest.raises(InputError, match=r"inputs\[0\].*text_pair") as caught:
        handler.predict([{"text": "a", "pair": "b"}])
    assert caught.value.field == "inputs[0]"


def test_long_text_is_truncated_to_max_length(handler):
    long = " ".join(["great"] * 500)
    (output,) = handler.predict([long])
    truncated = direct_logits(handler, [long]).softmax(-1)[0]
    assert output["score"] == pytest.approx(float(truncated.max()), abs=1e-5)


def test_a_checkpoint_trained_without_truncation_still_truncates_requests(tiny_checkpoint):
    """Issue 12: `data.truncation: false` (over-long training rows were bad rows) was served untruncated,
    so a long request overran the model's 128 positions: a RuntimeError in the forward, a 500 and a
    health strike for the client's text. Served, it is cut at the training max_length."""
    loaded = load_checkpoint(str(tiny_checkpoint("text-classification")))
    loaded.settings = loaded.settings.model_copy(update={"truncation": False})
    handler = build_handler(loaded)
    long = " ".join(["great"] * 600)  # about 1,800 tokens
    (output,) = handler.predict([long])
    (expected,) = build_handler(load_checkpoint(str(tiny_checkpoint("text-classification")))).predict([long])
    assert output == expected and output["label"]


def test_a_one_logit_head_scores_with_a_sigmoid_as_transformers_does(tmp_path):
    """A reranker or binary scorer with one output: a softmax over one logit is always 1.0."""
    from tests.checkpoint_factory import make_checkpoint

    one = build_handler(
        load_checkpoint(str(make_checkpoint("text-classification", tmp_path / "one", labels=["relevant"])))
    )
    texts = ["the movie was great", "it rains all day long on the plain"]
    answers = one.predict(texts, {"top_k": None})
    expected = direct_logits(one, texts)[:, 0].sigmoid().tolist()
    assert [a[0]["score"] for a in answers] == pytest.approx(expected, abs=1e-5)
    assert len({round(a[0]["score"], 6) for a in answers}) == 2  # scores, not a constant 1.0
    # and as transformers' pipeline scores the same checkpoint
    from transformers import pipeline

    theirs = pipeline("text-classification", model=str(tmp_path / "one"))(texts)
    assert [t["score"] for t in theirs] == pytest.approx(expected, abs=1e-5)
