"""Question answering: spans decoded over every overflow window, with offsets into the context."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.serving.errors import InputError
from rayformers.tasks.question_answering import best_spans

FILLER = "The weather in Cairo was mild on Thursday. "
QUESTION = "Who is the mayor of Tokyo?"


class Peaked:
    """The real model, with start/end logits raised on chosen tokens: a model that "knows" the answer,
    so the test checks span decoding across windows rather than random weights."""

    def __init__(self, model: Any, start_id: int, end_id: int, context_only: bool = True) -> None:
        self.model, self.start_id, self.end_id, self.context_only = model, start_id, end_id, context_only
        self.calls: list[int] = []
        self.config = model.config

    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        out = self.model(**batch)
        ids = batch["input_ids"]
        self.calls.append(len(ids))
        # The question's copy of a word is no answer; [CLS] (the null answer) sits in the question segment.
        question = (batch["token_type_ids"] == 0) & self.context_only
        start = out.start_logits + 20.0 * ((ids == self.start_id) & ~question)
        end = out.end_logits + 20.0 * ((ids == self.end_id) & ~question)
        return SimpleNamespace(start_logits=start, end_logits=end)


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_checkpoint(str(tiny_checkpoint("question-answering")))


@pytest.fixture
def handler(loaded):
    return build_handler(loaded)


def peak(handler, start_word: str, end_word: str, context_only: bool = True) -> Peaked:
    ids = [handler.tokenizer.convert_tokens_to_ids(w) for w in (start_word, end_word)]
    handler.model = Peaked(handler.model, *ids, context_only=context_only)
    return handler.model


def test_answer_is_the_context_slice(handler):
    context = "The current mayor of Tokyo is Rosa Larsen. " + FILLER
    (answer,) = handler.predict([{"question": QUESTION, "context": context}])
    assert set(answer) == {"score", "start", "end", "answer"}
    assert 0 <= answer["start"] < answer["end"] <= len(context)
    assert answer["answer"] == context[answer["start"] : answer["end"]]
    assert 0.0 < answer["score"] <= 1.0


def test_a_span_in_a_late_window_of_a_long_context_is_found(handler):
    context = FILLER * 12 + "The current mayor of Tokyo is Rosa Larsen. " + FILLER * 3
    windows = handler.tokenize({"question": [QUESTION], "context": [context]})["example_index"]
    assert len(windows) >= 4  # the context needs several windows of max_length tokens
    model = peak(handler, "rosa", "larsen")
    (answer,) = handler.predict([{"question": QUESTION, "context": context}])
    assert answer["answer"] == "Rosa Larsen" == context[answer["start"] : answer["end"]]
    assert answer["start"] == context.index("Rosa Larsen")
    assert model.calls == [len(windows)]  # every window of the batch in one forward pass
    assert answer["score"] > 0.9


def test_top_k_lists_distinct_spans_best_first(handler):
    context = FILLER * 6 + "Rosa Larsen is mayor. " + FILLER * 6
    peak(handler, "rosa", "larsen")
    answers = handler.predict([{"question": QUESTION, "context": context}], {"top_k": 4})[0]
    assert len(answers) == 4 and answers[0]["answer"] == "Rosa Larsen"
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
    assert len({(a["start"], a["end"]) for a in answers}) == 4  # overlapping windows do not repeat a span


def test_max_answer_len_bounds_the_span(handler):
    context = "Rosa went to the market in Cairo with Larsen. " + FILLER
    peak(handler, "rosa", "larsen")
    unbounded = handler.predict([{"question": QUESTION, "context": context}], {"max_answer_len": 30})[0]
    assert unbounded["answer"] == "Rosa went to the market in Cairo with Larsen"
    bounded = handler.predict([{"question": QUESTION, "context": context}], {"max_answer_len": 3})[0]
    assert len(handler.tokenizer(bounded["answer"], add_special_tokens=False)["input_ids"]) <= 3


def test_impossible_answer_when_the_null_span_wins(handler):
    context = "Rosa Larsen is mayor. " + FILLER
    peak(handler, "[CLS]", "[CLS]", context_only=False)
    answer = handler.predict([{"question": QUESTION, "context": context}], {"handle_impossible_answer": True})
    plain = handler.predict([{"question": QUESTION, "context": context}])
    assert answer[0]["answer"] == "" and answer[0]["score"] > 0.9
    assert plain[0]["answer"] != ""


def test_best_spans_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 24
        start, end = rng.normal(size=n) * 3, rng.normal(size=n) * 3
        context = np.zeros(n, dtype=bool)
        context[8:22] = True
        spans, _ = best_spans(start, end, context, top_k=3, max_answer_len=5)
        allowed = context.copy()
        allowed[0] = True
        p_start = np.exp(np.where(allowed, start, -1e4))
        p_start /= p_start.sum()
        p_end = np.exp(np.where(allowed, end, -1e4))
        p_end /= p_end.sum()
        brute = sorted(
            (
                (float(p_start[s] * p_end[e]), s, e)
                for s in range(n)
                for e in range(s, min(s + 5, n))
                if context[s] and context[e]
            ),
            reverse=True,
        )[:3]
        assert [(s, e) for s, e, _ in spans] == [(s, e) for _, s, e in brute]
        assert [score for _, _, score in spans] == pytest.approx([b[0] for b in brute])


def test_question_too_long_for_a_window_names_the_question(handler):
    question = " ".join(["mayor"] * 80) + "?"
    with pytest.raises(InputError, match="shorten it") as caught:
        handler.predict([{"question": "ok?", "context": FILLER}, {"question": question, "context": FILLER}])
    assert caught.value.field == "inputs[1].question"


def test_empty_context_is_an_input_error(handler):
    with pytest.raises(InputError, match=r"inputs\[0\].*context"):
        handler.predict([{"question": QUESTION, "context": ""}])
