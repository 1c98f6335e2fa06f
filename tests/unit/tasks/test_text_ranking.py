"""Text ranking: pairs encoded together, relevance decided from the labels (binary: BCE and a sigmoid;
graded: MSE and the raw score), list metrics per query, and a handler that ranks each input's texts."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoTokenizer

from rayformers.manifest import PreprocessSettings
from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.tasks import get_task
from rayformers.tasks.text_ranking import QueryTexts, ranking_metrics, relevance_loss, relevance_of

TASK = get_task("text-ranking")
QUERY = "who founded the cat"
TEXTS = ["alice smith works at acme", "the cat sat on the mat", "a dog", "it rains in paris ."]


def settings(relevance: str = "graded", lists: bool = True) -> PreprocessSettings:
    return PreprocessSettings(
        task="text-ranking", max_length=32, task_options={"relevance": relevance, "lists": lists}
    )


def test_pairs_are_encoded_together_and_labels_are_floats(wordpiece_dir):
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    batch = {
        "query": ["the cat", "the cat", "a dog"],
        "document": ["sat .", "a mat", "it rains"],
        "label": [2, "0.5", 0],
    }
    out = TASK.preprocess(batch, tok, settings(), "evaluate")
    assert out["input_ids"][0] == tok("the cat", "sat .")["input_ids"]
    assert out["token_type_ids"][0] == tok("the cat", "sat .")["token_type_ids"]
    assert out["labels"] == [2.0, 0.5, 0.0]
    assert out["query_id"][0] == out["query_id"][1] != out["query_id"][2]
    assert "labels" not in TASK.preprocess(batch, tok, settings(), "inference")
    assert "query_id" not in TASK.preprocess(batch, tok, settings(), "train")


def test_relevance_and_lists_are_decided_from_the_training_labels():
    def finish(labels, queries):
        columns = {"label": labels, "query": queries}
        return TASK.finish_settings(settings(), lambda column: iter(columns[column])).task_options

    assert finish([0, 1, 1.0, True, "0"], ["a", "a", "b", "b", "c"]) == {"relevance": "binary", "lists": True}
    assert finish([0, 2, 1], ["a", "b", "c"]) == {"relevance": "graded", "lists": False}
    assert finish([0.25, 1], ["a", "a"])["relevance"] == "graded"
    assert finish([1, "high", 0], ["a", "b", "c"])["relevance"] == "binary"  # a bad row decides nothing
    assert relevance_of([]) == "binary"


def test_the_model_has_one_output_and_says_how_to_score_it():
    assert TASK.model_kwargs(settings("graded")) == {"num_labels": 1, "problem_type": "regression"}
    assert TASK.model_kwargs(settings("binary")) == {
        "num_labels": 1,
        "problem_type": "multi_label_classification",
    }


def test_binary_relevance_learns_with_bce_and_graded_with_mse():
    logits, labels = torch.tensor([[0.3], [-1.2], [2.0]]), torch.tensor([1.0, 0.0, 1.0])
    binary = relevance_loss(logits, labels, settings("binary"))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels)
    torch.testing.assert_close(binary, expected)
    graded = relevance_loss(logits, torch.tensor([2.0, 0.0, 1.0]), settings("graded"))
    torch.testing.assert_close(graded, ((logits[:, 0] - torch.tensor([2.0, 0.0, 1.0])) ** 2).mean())


def test_rows_need_texts_and_a_finite_number():
    columns = ("query", "document", "label")
    ok = {"query": "q", "document": "d", "label": "1.5"}
    assert TASK.row_problem(ok, columns, settings()) is None
    assert TASK.row_problem({**ok, "label": "high"}, columns, settings())[0] == "bad relevance"
    assert TASK.row_problem({**ok, "label": float("nan")}, columns, settings())[0] == "bad relevance"
    assert TASK.row_problem({**ok, "label": None}, columns, settings())[0] == "bad relevance"
    assert TASK.row_problem({**ok, "document": " "}, columns, settings())[0] == "empty document"


def test_list_metrics_by_hand():
    # Query a: the best document (2) ranked second, behind a 1: DCG = 1 + 2/log2(3); ideal = 2 + 1/log2(3).
    # Query b: its one relevant document first. Query c has no relevant document and is left out.
    rows = [
        ("a", 0.9, 1.0), ("a", 0.5, 2.0), ("a", 0.1, 0.0),
        ("b", 0.7, 2.0), ("b", 0.2, 0.0),
        ("c", 0.3, 0.0), ("c", 0.4, 0.0),
    ]  # fmt: skip
    found = ranking_metrics(rows)
    ndcg_a = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert found["ndcg_at_10"] == pytest.approx((ndcg_a + 1.0) / 2)
    # Relevant for MRR: above half the top label (2), so a's 1 does not count and its 2 is second.
    assert found["mrr_at_10"] == pytest.approx((1 / 2 + 1) / 2)
    scores, labels = [s for _, s, _ in rows], [g for _, _, g in rows]
    mean_s, mean_l = sum(scores) / 7, sum(labels) / 7
    cov = sum((s - mean_s) * (g - mean_l) for s, g in zip(scores, labels, strict=True))
    norm = math.sqrt(sum((s - mean_s) ** 2 for s in scores) * sum((g - mean_l) ** 2 for g in labels))
    assert found["pearson"] == pytest.approx(cov / norm)
    assert ranking_metrics([("x", 1.0, 0.0), ("y", 2.0, 1.0), ("z", 3.0, 2.0)])["spearman"] == pytest.approx(
        1.0
    )
    assert set(ranking_metrics(rows, lists=False)) == {"pearson", "spearman"}


def test_the_checkpoint_metric_follows_the_data():
    assert TASK.default_metric_for(settings(lists=True)) == "ndcg_at_10"
    assert TASK.default_metric_for(settings(lists=False)) == "spearman"


@pytest.fixture(scope="module")
def handler(tiny_checkpoint):
    return build_handler(load_checkpoint(str(tiny_checkpoint("text-ranking"))))


def raw_scores(handler, query, texts) -> list[float]:
    encoded = handler.tokenizer([query] * len(texts), texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return handler.model(**encoded).logits[:, 0].tolist()


def test_each_input_gets_its_texts_ranked_best_first(handler):
    other = {"query": "a dog", "texts": ["the movie was great", "a cat"]}
    answers = handler.predict([{"query": QUERY, "texts": TEXTS}, other], {"return_text": True})
    expected = raw_scores(handler, QUERY, TEXTS)  # graded relevance: the raw output is the score
    first = answers[0]
    assert [a["index"] for a in first] == sorted(range(4), key=lambda i: expected[i], reverse=True)
    assert [a["score"] for a in first] == pytest.approx(sorted(expected, reverse=True), abs=1e-5)
    assert [a["text"] for a in first] == [TEXTS[a["index"]] for a in first]
    alone = handler.predict([other])[0]
    assert [a["index"] for a in alone] == [a["index"] for a in answers[1]]
    assert [a["score"] for a in alone] == pytest.approx([a["score"] for a in answers[1]], abs=1e-5)
    top = handler.predict([{"query": QUERY, "texts": TEXTS}], {"top_n": 2})[0]
    assert [a["index"] for a in top] == [a["index"] for a in first[:2]] and set(top[0]) == {"index", "score"}


def test_scores_are_the_models_output_unless_a_probability_is_asked_for(tiny_checkpoint):
    binary = tiny_checkpoint(
        "text-ranking", preprocessing={"task_options": {"relevance": "binary", "lists": True}}
    )
    handler = build_handler(load_checkpoint(str(binary)))
    assert handler.model.config.problem_type == "multi_label_classification"

    def scores(**parameters) -> dict[int, float]:
        return {
            a["index"]: a["score"] for a in handler.predict([{"query": QUERY, "texts": TEXTS}], parameters)[0]
        }

    raw = scores()
    assert raw == pytest.approx(dict(enumerate(raw_scores(handler, QUERY, TEXTS))), abs=1e-5)
    probability = {i: 1 / (1 + math.exp(-r)) for i, r in raw.items()}
    assert scores(function_to_apply="sigmoid") == pytest.approx(probability, abs=1e-6)
    assert scores(function_to_apply="auto") == pytest.approx(probability, abs=1e-6)  # binary relevance
    graded = build_handler(load_checkpoint(str(tiny_checkpoint("text-ranking"))))
    (ranked,) = graded.predict([{"query": QUERY, "texts": TEXTS}], {"function_to_apply": "auto"})
    assert [a["score"] for a in ranked] == pytest.approx(
        sorted(raw_scores(graded, QUERY, TEXTS), reverse=True)
    )


def test_usage_counts_every_pairs_tokens(handler):
    outputs, usage = handler.predict_with_usage([{"query": QUERY, "texts": TEXTS}])
    expected = sum(len(handler.tokenizer(QUERY, t)["input_ids"]) for t in TEXTS)
    assert usage[0].prompt_tokens == expected and len(outputs[0]) == 4


def test_inputs_need_a_query_and_texts():
    QueryTexts(query="q", texts=["a"])
    for bad in (
        {"query": "", "texts": ["a"]},
        {"query": "q", "texts": []},
        {"query": "q", "texts": ["a"] * 257},
    ):
        with pytest.raises(ValueError):
            QueryTexts.model_validate(bad)
