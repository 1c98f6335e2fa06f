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


def _pairs(n: int = 101):
    import numpy as np

    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(n, 8)).astype(np.float32)
    positives = anchors + rng.normal(scale=1.2, size=anchors.shape).astype(np.float32)
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    p = positives / np.linalg.norm(positives, axis=1, keepdims=True)
    return anchors, positives, float(((a @ p.T).argmax(axis=1) == np.arange(n)).mean())


def test_recall_at_1_is_taken_in_chunks_without_an_n_by_n_matrix():
    from rayformers.tasks.feature_extraction import recall_at_1, recall_hits

    anchors, positives, expected = _pairs()
    assert 0.1 < expected < 0.95  # neither trivial nor hopeless
    assert recall_at_1(anchors, positives, chunk=7)["recall_at_1"] == pytest.approx(expected)
    # A rank's own anchors (rows 40..69) against every positive: their pairs sit at the rank's offset.
    whole = round(expected * len(anchors))
    parts = [(0, 40), (40, 70), (70, 101)]
    assert sum(recall_hits(anchors[a:b], positives, offset=a, chunk=5) for a, b in parts) == whole


def test_embedding_evaluation_sends_only_positives_across_ranks_and_scores_the_whole_split(monkeypatch):
    """Three ranks in threads, with a gather that meets all three: each scores its own anchors, only the
    positives are gathered, and every rank reports the whole split's recall@1."""
    import threading

    import numpy as np
    import torch

    from rayformers.tasks import feature_extraction as fe

    anchors, positives, expected = _pairs()
    shares = [(0, 30), (30, 31), (31, 101)]  # uneven, one rank with a single row
    local = threading.local()
    barrier = threading.Barrier(3)
    slots: list = [None] * 3
    sent: list = []

    def gather(items):
        slots[local.rank] = items
        sent.append(items)
        barrier.wait()
        out = [x for part in slots for x in part]
        barrier.wait()
        return out

    monkeypatch.setattr(fe, "gather", gather)
    monkeypatch.setattr(fe, "rank_share", lambda: (local.rank, 3))
    monkeypatch.setattr(fe, "embed_pair", lambda model, batch: (batch["a"], batch["p"]))
    results = [None] * 3

    def rank(r: int) -> None:
        local.rank = r
        evaluator = fe.EmbeddingEvaluator(fe.TASK, None, None, None)
        a, b = shares[r]
        for start in range(a, b, 16):  # batches of up to 16 rows
            end = min(start + 16, b)
            batch = {"a": torch.from_numpy(anchors[start:end]), "p": torch.from_numpy(positives[start:end])}
            evaluator.add(None, batch, batch)
        results[r] = evaluator.result()["recall_at_1"]

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [pytest.approx(expected)] * 3
    arrays = [x for items in sent for x in items if isinstance(x, np.ndarray)]
    assert sum(len(x) for x in arrays) == len(positives)  # each positive sent once; no anchor sent
    assert all(any(np.array_equal(x, positives[a:b]) for a, b in shares) for x in arrays)
