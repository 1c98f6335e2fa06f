"""Token classification: entities whose offsets slice the input text, grouped as the pipeline groups."""

from __future__ import annotations

import pytest
import torch

from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.tasks.token_classification import group_entities

TEXT = "Alice  Smith works at Acme in Paris, unbelievably."


@pytest.fixture(scope="module")
def handler(tiny_checkpoint):
    return build_handler(load_checkpoint(str(tiny_checkpoint("token-classification"))))


def test_none_gives_every_sub_token_with_offsets_into_the_text(handler):
    (tokens,) = handler.predict([TEXT], {"aggregation_strategy": "none", "ignore_labels": []})
    words = TEXT.split()
    encoded = handler.tokenizer([words], is_split_into_words=True, return_tensors="pt")
    assert len(tokens) == encoded["input_ids"].shape[1] - 2  # every token but [CLS] and [SEP]
    with torch.inference_mode():
        logits = handler.model(**encoded).logits[0]
    names = handler.label_names()
    for token in tokens:
        assert set(token) == {"entity", "score", "index", "word", "start", "end"}
        piece = TEXT[token["start"] : token["end"]]
        assert piece and " " not in piece and piece.lower() in TEXT.lower()
        assert token["word"].removeprefix("##") == piece.lower()
        probabilities = logits[token["index"]].softmax(-1)
        assert token["entity"] == names[int(probabilities.argmax())]
        assert token["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)


@pytest.mark.parametrize("strategy", ["first", "average", "max"])
def test_word_strategies_give_whole_words(handler, strategy):
    from rayformers.tasks.token_classification import split_words

    (entities,) = handler.predict([TEXT], {"aggregation_strategy": strategy, "ignore_labels": []})
    words, spans = split_words(TEXT)  # punctuation is a word of its own, as in training corpora
    starts, ends = {a for a, _ in spans}, {b for _, b in spans}
    for entity in entities:
        assert set(entity) == {"entity_group", "score", "word", "start", "end"}
        assert entity["word"] == TEXT[entity["start"] : entity["end"]]
        # Groups join whole words: a group starts where a word starts and ends where a word ends.
        assert entity["start"] in starts and entity["end"] in ends
    covered = [w for e in entities for w in split_words(e["word"])[0]]
    assert covered == words  # nothing ignored: every word is in exactly one group


def test_first_reads_the_first_sub_token_as_training_labelled_it(handler):
    (entities,) = handler.predict(["unbelievably"], {"aggregation_strategy": "first", "ignore_labels": []})
    encoded = handler.tokenizer([["unbelievably"]], is_split_into_words=True, return_tensors="pt")
    assert encoded["input_ids"].shape[1] > 3  # the word is split into several sub-tokens
    with torch.inference_mode():
        first = handler.model(**encoded).logits[0, 1].softmax(-1)
    (entity,) = entities
    label = handler.label_names()[int(first.argmax())]
    assert entity["entity_group"] == label.removeprefix("B-").removeprefix("I-")
    assert entity["score"] == pytest.approx(float(first.max()), abs=1e-5)


def test_ignore_labels_filters_groups(handler):
    everything = handler.predict([TEXT], {"ignore_labels": []})[0]
    default = handler.predict([TEXT])[0]
    assert [e for e in everything if e["entity_group"] != "O"] == default
    groups = {e["entity_group"] for e in everything}
    assert handler.predict([TEXT], {"ignore_labels": sorted(groups)})[0] == []


def test_group_entities_follows_iob2():
    text = "Ana Lima met Bo"
    pieces = [
        {"entity": "B-PER", "score": 0.9, "start": 0, "end": 3},
        {"entity": "I-PER", "score": 0.7, "start": 4, "end": 8},
        {"entity": "O", "score": 0.8, "start": 9, "end": 12},
        {"entity": "B-PER", "score": 0.6, "start": 13, "end": 15},
    ]
    assert group_entities(pieces, text) == [
        {"entity_group": "PER", "score": pytest.approx(0.8), "word": "Ana Lima", "start": 0, "end": 8},
        {"entity_group": "O", "score": pytest.approx(0.8), "word": "met", "start": 9, "end": 12},
        {"entity_group": "PER", "score": pytest.approx(0.6), "word": "Bo", "start": 13, "end": 15},
    ]


def test_empty_and_over_long_texts(handler):
    assert handler.predict([""])[0] == []
    long = " ".join(["Paris"] * 200)
    (tokens,) = handler.predict([long], {"aggregation_strategy": "none", "ignore_labels": []})
    assert len(tokens) == handler.settings.max_length - 2  # truncated, as training truncates
