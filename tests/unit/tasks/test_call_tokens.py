"""What `serve.apps[].max_call_tokens` counts (issue 12): each task's estimate of the tokens a request's
forwards hold, before anything is tokenized, set against the tokens its forwards really hold."""

from __future__ import annotations

import pytest

from rayformers.tasks.handler import estimated_tokens, texts_of


@pytest.fixture(scope="module")
def handlers(tiny_checkpoint):
    from rayformers.serving.checkpoint import build_handler, load_checkpoint

    made = {}

    def get(task):
        if task not in made:
            made[task] = build_handler(load_checkpoint(str(tiny_checkpoint(task))))
        return made[task]

    return get


def test_the_estimate_errs_high_for_english_and_counts_every_string():
    assert estimated_tokens("") == 2  # a sequence's special tokens
    assert estimated_tokens("a" * 30) == 12
    assert estimated_tokens("é" * 15) == 12  # bytes, not characters: 2 each
    assert texts_of({"question": "q", "context": ["c", {"deep": "d"}], "n": 3}) == ["q", "c", "d"]


@pytest.mark.parametrize(
    "task", ["text-classification", "token-classification", "fill-mask", "feature-extraction"]
)
def test_one_row_per_input_capped_at_max_length_and_never_below_the_real_count(handlers, task):
    handler = handlers(task)
    limit = handler.settings.max_length
    texts = ["a fine film with a plot [MASK]", "dull " * 400 + "[MASK]"]
    estimate = handler.call_tokens(texts, handler.parse_parameters({}))
    assert estimate == estimated_tokens(texts[0]) + limit  # the long text is cut at max_length
    real = sum(min(limit, len(handler.tokenizer(t)["input_ids"])) for t in texts)
    assert estimate >= real


def test_zero_shot_counts_a_row_per_candidate_label(handlers):
    handler = handlers("zero-shot-classification")
    one = handler.call_tokens(["a fine film"], handler.parse_parameters({"candidate_labels": ["good"]}))
    many = handler.call_tokens(
        ["a fine film"] * 4, handler.parse_parameters({"candidate_labels": ["good", "bad", "ugly"]})
    )
    assert one > estimated_tokens("a fine film") and many >= 12 * (one - 1)


def test_ranking_counts_a_row_per_document_and_qa_a_window_per_stretch_of_context(handlers):
    ranking = handlers("text-ranking")
    params = ranking.parse_parameters({})
    one = ranking.call_tokens([{"query": "who works", "texts": ["Alice works."]}], params)
    ten = ranking.call_tokens([{"query": "who works", "texts": ["Alice works."] * 10}], params)
    assert ten == 10 * one
    qa = handlers("question-answering")
    limit = qa.settings.max_length
    short = qa.call_tokens([{"question": "Who?", "context": "Alice works."}], qa.parse_parameters({}))
    long = qa.call_tokens([{"question": "Who?", "context": "Alice works. " * 2000}], qa.parse_parameters({}))
    assert short < limit and long >= 26_000 // 3 and long % limit == 0


def test_generation_counts_the_tokens_it_may_generate(handlers):
    generation = handlers("text-generation")
    few = generation.call_tokens(["Once"], generation.parse_parameters({"max_new_tokens": 8}))
    unbounded = generation.call_tokens(["Once"], generation.parse_parameters({"max_new_tokens": None}))
    assert few == estimated_tokens("Once") + 8 and unbounded == estimated_tokens("Once") + 1024
    summary = handlers("summarization")
    one = summary.call_tokens(["a long text"], summary.parse_parameters({"max_new_tokens": 10}))
    beams = summary.call_tokens(
        ["a long text"], summary.parse_parameters({"max_new_tokens": 10, "num_beams": 4})
    )
    assert beams == 4 * one
