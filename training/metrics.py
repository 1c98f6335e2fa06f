"""Metrics, computed offline with the libraries `evaluate` itself wraps (its hub scripts are not
reachable offline): accuracy and F1, seqeval, SQuAD exact match and F1, ROUGE, sacreBLEU,
perplexity and in-batch retrieval recall. A path to a local `evaluate` module also works."""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "bleu_metrics",
    "classification_metrics",
    "evaluate_module_metrics",
    "perplexity",
    "qa_metrics",
    "recall_at_1",
    "rouge_metrics",
    "sequence_labeling_metrics",
]


def classification_metrics(
    predictions: Sequence[int], references: Sequence[int], num_labels: int
) -> dict[str, float]:
    """Accuracy, and F1: of label 1 for two classes (as GLUE reports it), macro-averaged otherwise."""
    preds, refs = np.asarray(predictions), np.asarray(references)
    if len(refs) == 0:
        return {"accuracy": 0.0, "f1": 0.0}
    accuracy = float((preds == refs).mean())
    classes = [1] if num_labels == 2 else list(range(num_labels))
    scores = []
    for c in classes:
        tp = float(((preds == c) & (refs == c)).sum())
        fp = float(((preds == c) & (refs != c)).sum())
        fn = float(((preds != c) & (refs == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": accuracy, "f1": float(np.mean(scores))}


def sequence_labeling_metrics(predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (seqeval, IOB2) and token accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {
        "precision": float(precision_score(references, predictions, zero_division=0)),
        "recall": float(recall_score(references, predictions, zero_division=0)),
        "f1": float(f1_score(references, predictions, zero_division=0)),
        "accuracy": float(accuracy_score(references, predictions)),
    }


def _normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, truth: str) -> float:
    pred, gold = _normalize_answer(prediction).split(), _normalize_answer(truth).split()
    if not pred or not gold:
        return float(pred == gold)
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def qa_metrics(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    """SQuAD v1 exact match and F1 (in percent), each prediction against its best gold answer."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for prediction, golds in zip(predictions, answers, strict=True):
        golds = golds or [""]
        em += max(float(_normalize_answer(prediction) == _normalize_answer(g)) for g in golds)
        f1 += max(_f1(prediction, g) for g in golds)
    return {"exact_match": 100 * em / len(predictions), "f1": 100 * f1 / len(predictions)}


def rouge_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """ROUGE-1/2/L F-measures (rouge_score, as `evaluate`'s rouge), mean over examples."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references, strict=True):
        for key, score in scorer.score(reference, prediction).items():
            totals[key] += score.fmeasure
    n = max(len(predictions), 1)
    return {key: value / n for key, value in totals.items()}


def bleu_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU (sacreBLEU, as `evaluate`'s sacrebleu)."""
    import sacrebleu

    return {"bleu": float(sacrebleu.corpus_bleu(predictions, [references]).score)}


def perplexity(total_loss: float, tokens: int) -> dict[str, float]:
    """exp(mean token loss), from the summed loss over `tokens` predicted tokens."""
    mean = total_loss / max(tokens, 1)
    return {"perplexity": float(math.exp(min(mean, 50.0))), "loss": float(mean)}


def recall_at_1(anchors: np.ndarray, positives: np.ndarray) -> dict[str, float]:
    """How often each anchor's nearest positive (cosine) is its own pair, over the whole split."""
    if len(anchors) == 0:
        return {"recall_at_1": 0.0}
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True).clip(1e-12)
    p = positives / np.linalg.norm(positives, axis=1, keepdims=True).clip(1e-12)
    nearest = (a @ p.T).argmax(axis=1)
    return {"recall_at_1": float((nearest == np.arange(len(a))).mean())}


def is_module_path(metric: str | None) -> bool:
    """A `train.metric` that names a local `evaluate` module rather than a built-in metric."""
    return metric is not None and ("/" in metric or metric.endswith(".py"))


def module_metrics(path: str, predictions: Any, references: Any) -> dict[str, float]:
    """A user's module's results as reported metrics: each value under `<module>/<key>`, and the first
    one also under `path` itself, which is what ranks checkpoints when `train.metric` is that path."""
    found = evaluate_module_metrics(path, predictions, references)
    if not found:
        return {}
    name = Path(path.rstrip("/")).stem
    return {path: next(iter(found.values())), **{f"{name}/{k}": v for k, v in found.items()}}


def evaluate_module_metrics(path: str, predictions: Any, references: Any) -> dict[str, float]:
    """A user's local `evaluate` metric module (a directory or .py file), computed as evaluate does."""
    import evaluate

    module = evaluate.load(path)
    result = module.compute(predictions=predictions, references=references) or {}
    return {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}
