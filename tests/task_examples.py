"""Per task: requests a handler answers and the raw training rows they correspond to, shared by the
handler contract tests and the zoo of hub stand-ins."""

from __future__ import annotations

from typing import Any

__all__ = ["CASES", "TRAIN_ROWS"]

# Per task: inputs of different lengths, in an order that length-sorting changes, and parameters.
CASES: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "text-classification": (
        ["the movie was great and the cat sat on the mat", {"text": "a dog", "text_pair": "it rains"}, "bad"],
        {"top_k": None},
    ),
    "token-classification": (["Alice Smith works at Acme in Paris today.", "", "Alice"], {}),
    "question-answering": (
        [
            {"question": "Where does Alice work?", "context": "Alice Smith works at Acme in Paris. " * 8},
            {"question": "Who?", "context": "Alice sat."},
        ],
        {"top_k": 2},
    ),
    "fill-mask": (["The cat [MASK] on the mat and the dog sat too.", "A [MASK] and a [MASK]."], {"top_k": 3}),
    "text-generation": (["Once upon a time in Paris", "The"], {"max_new_tokens": 6}),
    "summarization": (["The council met on Monday and agreed a new budget.", "Rain."], {"max_new_tokens": 6}),
    "translation": (["the cat sat on the mat", "hello"], {"max_new_tokens": 6}),
    "zero-shot-classification": (
        ["I love football and tennis", "Taxes rise"],
        {"candidate_labels": ["sports", "politics", "food"]},
    ),
    "feature-extraction": (["a cat sat on the mat", "hello world", ""], {}),
    "text-ranking": (
        [
            {
                "query": "who works at acme",
                "texts": ["alice smith works at acme in paris", "a dog", "it rains"],
            },
            {"query": "the cat", "texts": ["the cat sat on the mat"]},
        ],
        {"top_n": 2},
    ),
}

# The train-mode row each task's first input corresponds to (token-id parity).
TRAIN_ROWS: dict[str, dict[str, list[Any]]] = {
    "text-classification": {"text": [CASES["text-classification"][0][0]], "label": ["positive"]},
    "token-classification": {
        "tokens": [CASES["token-classification"][0][0].split()],
        "tags": [["B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "O"]],
    },
    "question-answering": {
        "question": ["Where does Alice work?"],
        "context": ["Alice Smith works at Acme in Paris. " * 8],
        "answers": [{"text": ["Acme"], "answer_start": [21]}],
    },
    "fill-mask": {"text": [CASES["fill-mask"][0][0]]},
    "text-generation": {"text": ["Once upon a time in Paris"]},
    "summarization": {"text": [CASES["summarization"][0][0]], "target": ["A budget."]},
    "translation": {"text": ["the cat sat on the mat"], "target": ["le chat"]},
    "feature-extraction": {"text": ["a cat sat on the mat"], "text_pair": ["the cat"]},
    "zero-shot-classification": {  # one NLI pair per candidate label, with the default template
        "text": ["I love football and tennis"] * 3,
        "text_pair": [f"This example is {label}." for label in ("sports", "politics", "food")],
        "label": ["entailment", "contradiction", "contradiction"],
    },
    "text-ranking": {
        "query": ["who works at acme"] * 3,
        "document": CASES["text-ranking"][0][0]["texts"],
        "label": [2, 0, 0],
    },
}
