"""Feature extraction: unit-norm sentence embeddings pooled exactly as training pooled them."""

from __future__ import annotations

import pytest
import torch

from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.tasks.checkpoint import pool
from rayformers.tasks.feature_extraction import embed_pair

TEXTS = ["a cat sat on the mat", "hello world", "the movie was great and the dog sat in paris"]


@pytest.fixture(scope="module")
def handler(tiny_checkpoint):
    return build_handler(load_checkpoint(str(tiny_checkpoint("feature-extraction"))))


def hidden_states(handler, texts):
    encoded = handler.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return handler.model(**encoded).last_hidden_state, encoded["attention_mask"]


def test_embeddings_are_unit_norm_mean_pools_of_the_hidden_states(handler):
    vectors = torch.tensor(handler.predict(TEXTS))
    assert vectors.shape == (3, handler.model.config.hidden_size)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))
    hidden, mask = hidden_states(handler, TEXTS)
    expected = torch.nn.functional.normalize(pool(hidden, mask, "mean"), dim=-1)
    torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=0)


def test_unnormalised_and_cls_pooling(handler):
    hidden, mask = hidden_states(handler, TEXTS)
    raw = torch.tensor(handler.predict(TEXTS, {"normalize": False}))
    torch.testing.assert_close(raw, pool(hidden, mask, "mean"), atol=1e-5, rtol=0)
    cls = torch.tensor(handler.predict(TEXTS, {"pooling": "cls", "normalize": False}))
    torch.testing.assert_close(cls, hidden[:, 0], atol=1e-5, rtol=0)


def test_mean_pooling_averages_only_the_tokens_the_mask_keeps():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    pooled = pool(hidden, mask, "mean")
    torch.testing.assert_close(pooled[0], (hidden[0, 0] + hidden[0, 1]) / 2)
    torch.testing.assert_close(pooled[1], torch.zeros(2))  # nothing kept: zeros, not NaN
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0])


def test_training_embeds_a_text_exactly_as_serving_does(handler):
    encoded = handler.tokenizer(TEXTS, padding=True, return_tensors="pt")
    batch = {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "pair_input_ids": encoded["input_ids"],
        "pair_attention_mask": encoded["attention_mask"],
    }
    with torch.inference_mode():
        trained, _ = embed_pair(handler.model, batch)
    served = torch.tensor(handler.predict(TEXTS, {"normalize": False}))
    torch.testing.assert_close(served, trained, atol=1e-5, rtol=0)


def test_default_pooling_comes_from_the_manifest(handler):
    assert handler.loaded.manifest.pooling == "mean" and handler.default_pooling == "mean"


def test_recall_at_1_is_taken_in_chunks_and_shares_without_an_n_by_n_matrix():
    import numpy as np

    from rayformers.tasks.feature_extraction import recall_at_1

    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(101, 8)).astype(np.float32)
    positives = anchors + rng.normal(scale=1.2, size=anchors.shape).astype(np.float32)
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    p = positives / np.linalg.norm(positives, axis=1, keepdims=True)
    expected = float(((a @ p.T).argmax(axis=1) == np.arange(101)).mean())
    assert 0.1 < expected < 0.95  # neither trivial nor hopeless
    assert recall_at_1(anchors, positives, chunk=7)["recall_at_1"] == pytest.approx(expected)
    # Each of 3 ranks scores its share: the shares' hits add up to the whole split's.
    shares = [recall_at_1(anchors, positives, chunk=5, share=(r, 3))["recall_at_1"] for r in range(3)]
    assert sum(shares) == pytest.approx(expected)
