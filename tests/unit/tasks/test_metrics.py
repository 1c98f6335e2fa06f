"""Offline metrics agree with the definitions the hub's evaluate scripts use."""

from __future__ import annotations

import numpy as np
import pytest

from rayformers.tasks.evaluation import perplexity
from rayformers.tasks.feature_extraction import recall_at_1
from rayformers.tasks.question_answering import qa_metrics
from rayformers.tasks.summarization import rouge_metrics
from rayformers.tasks.text_classification import classification_metrics
from rayformers.tasks.token_classification import sequence_labeling_metrics
from rayformers.tasks.translation import bleu_metrics


def test_classification_accuracy_and_f1():
    m = classification_metrics([1, 1, 0, 0], [1, 0, 0, 0], num_labels=2)
    assert m["accuracy"] == 0.75 and m["f1"] == pytest.approx(2 / 3)  # F1 of the positive class
    macro = classification_metrics([0, 1, 2, 2], [0, 1, 2, 1], num_labels=3)
    assert macro["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


@pytest.mark.parametrize(
    ("predictions", "references"),
    [([0, 2, 2, 0], [0, 2, 2, 0]), ([0, 1, 3, 3, 0], [0, 3, 3, 3, 1]), ([2, 2, 1], [0, 2, 1])],
)
def test_macro_f1_is_scikit_learns_when_a_class_is_absent(predictions, references):
    from sklearn.metrics import f1_score

    got = classification_metrics(predictions, references, num_labels=4)["f1"]
    assert got == pytest.approx(f1_score(references, predictions, average="macro", zero_division=0))


def test_seqeval_is_entity_level():
    refs = [["B-PER", "I-PER", "O", "B-LOC"]]
    m = sequence_labeling_metrics(
        [["B-PER", "O", "O", "B-LOC"]], refs
    )  # the person is cut short: wrong entity
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["accuracy"] == 0.75


def test_squad_exact_match_and_f1_normalize_articles_and_punctuation():
    m = qa_metrics(["The Eiffel tower.", "in paris"], [["Eiffel Tower"], ["Paris", "France"]])
    assert m["exact_match"] == 50.0
    assert m["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_rouge_and_bleu():
    assert rouge_metrics(["the cat sat"], ["the cat sat"])["rougeL"] == pytest.approx(1.0)
    assert rouge_metrics(["a dog"], ["the cat sat"])["rouge1"] == 0.0
    assert bleu_metrics(["the cat sat on the mat"], ["the cat sat on the mat"])["bleu"] == pytest.approx(
        100.0
    )
    assert bleu_metrics(["dog"], ["the cat sat on the mat"])["bleu"] < 1.0


def test_perplexity_and_retrieval():
    assert perplexity(total_loss=2 * np.log(4.0), tokens=2)["perplexity"] == pytest.approx(4.0)
    a = np.eye(3)
    assert recall_at_1(a, a + 0.1)["recall_at_1"] == 1.0
    assert recall_at_1(a, a[[1, 2, 0]])["recall_at_1"] == 0.0


SHARE_RIGHT = """
import datasets
import evaluate


class ShareRight(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="share of exact matches", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"share_right": sum(p == r for p, r in zip(predictions, references)) / len(references), "n": len(references)}
"""


def test_a_local_evaluate_module_scores_predictions_offline_and_ranks_by_its_first_value(tmp_path):
    from rayformers.config import TrainConfig
    from rayformers.tasks.evaluation import module_metrics

    path = tmp_path / "share_right.py"
    path.write_text(SHARE_RIGHT)
    assert TrainConfig(metric=str(path)).metric_module == str(path)
    assert TrainConfig(metric="accuracy").metric_module is None and TrainConfig().metric_module is None
    found = module_metrics(str(path), [1, 0, 1, 1], [1, 1, 1, 0])
    assert found == {str(path): 0.5, "share_right/share_right": 0.5, "share_right/n": 4.0}
