"""Batched serving's two promises to speed, checked by what the forwards held rather than by the clock:
a batch of mixed lengths is cut into length-sorted forwards under the token budget, so little of what
they hold is padding; and requests whose parameters only change how outputs are read (`top_k`) share
their forwards, while each still gets exactly its own answer."""

from __future__ import annotations

import random

import pytest

from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.tasks.handler import micro_batches

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "dogs",
    "ran",
    "over",
    "hills",
    "and",
    "rivers",
    "under",
    "grey",
    "skies",
]
# Padding over real tokens the forwards may hold. Padding every row of such a batch to its longest
# holds about twice the real tokens (measured below as `padded_to_longest`).
MAX_PADDING = 0.2


def _texts(count: int, seed: int, longest: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, longest))) for _ in range(count)]


def test_micro_batches_cover_every_row_once_and_stay_under_the_budget():
    rng = random.Random(3)
    lengths = [rng.randint(3, 130) for _ in range(200)] + [700]  # one row longer than the budget
    batches = micro_batches(lengths, 512)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        padded = max(lengths[i] for i in batch) * len(batch)
        assert padded <= 512 or batch == [len(lengths) - 1]  # an over-long row goes alone
    real = sum(lengths)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert (padded - real) / real < MAX_PADDING


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint):
    loaded = load_checkpoint(str(tiny_checkpoint("text-classification")))
    return build_handler(loaded, max_batch_tokens=4 * loaded.settings.max_length)


def test_a_mixed_batch_is_forwarded_in_micro_batches_with_little_padding(classifier):
    # lengths from 1 word to the checkpoint's max_length, as in the benchmark's 5-120 words
    texts = _texts(64, seed=1, longest=classifier.settings.max_length // 3)
    classifier.predict(texts, {})
    stats = classifier.stats
    lengths = [len(ids) for ids in classifier.tokenize({"text": texts})["input_ids"]]
    padded_to_longest = max(lengths) * len(lengths)
    assert stats.rows == len(texts) and stats.tokens == sum(lengths)
    assert stats.forwards > 1 and stats.padded_tokens <= classifier.max_batch_tokens * stats.forwards
    assert (stats.padded_tokens - stats.tokens) / stats.tokens < MAX_PADDING
    assert padded_to_longest > 1.5 * stats.tokens  # what one padded forward would have held


def test_requests_differing_only_in_top_k_share_one_forward_and_keep_their_answers(classifier, monkeypatch):
    texts = _texts(3, seed=2, longest=20)
    requests = [([texts[0]], {"top_k": 1}), ([texts[1], texts[2]], {"top_k": None}), ([texts[2]], {})]
    alone = [classifier.predict(inputs, parameters) for inputs, parameters in requests]
    forwards: list[int] = []
    original = classifier.forward

    def counting(batch):
        forwards.append(len(batch["input_ids"]))
        return original(batch)

    monkeypatch.setattr(classifier, "forward", counting)
    together = classifier.predict_many(requests)
    assert forwards == [4]  # all four inputs in one forward
    assert together == alone
    labels = len(classifier.label_names())
    assert set(together[0][0]) == {"label", "score"}  # top_k 1: the best label
    assert len(together[1][0]) == labels  # top_k None: every label
