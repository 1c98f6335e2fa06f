"""Feature extraction: unit-norm sentence embeddings pooled exactly as training pooled them."""

from __future__ import annotations

import pytest
import torch

from rayformers.serving.checkpoint import load_checkpoint
from rayformers.serving.handlers.base import build_handler
from rayformers.serving.handlers.embeddings import mean_pool
from rayformers.training.evaluation import mean_pool as training_mean_pool

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
    expected = torch.nn.functional.normalize(training_mean_pool(hidden, mask), dim=-1)
    torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=0)


def test_unnormalised_and_cls_pooling(handler):
    hidden, mask = hidden_states(handler, TEXTS)
    raw = torch.tensor(handler.predict(TEXTS, {"normalize": False}))
    torch.testing.assert_close(raw, training_mean_pool(hidden, mask), atol=1e-5, rtol=0)
    cls = torch.tensor(handler.predict(TEXTS, {"pooling": "cls", "normalize": False}))
    torch.testing.assert_close(cls, hidden[:, 0], atol=1e-5, rtol=0)


def test_serving_mean_pool_is_trainings():
    hidden, mask = torch.randn(3, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), training_mean_pool(hidden, mask))


def test_default_pooling_comes_from_the_manifest(handler):
    assert handler.loaded.manifest.pooling == "mean" and handler.default_pooling == "mean"
