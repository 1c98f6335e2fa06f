"""Summarization: write a short summary of a document (an encoder-decoder model, scored by ROUGE)."""

from __future__ import annotations

from rayformers.tasks.seq2seq import Seq2SeqTask

__all__ = ["TASK", "Summarization", "rouge_metrics"]


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


class Summarization(Seq2SeqTask):
    name = "summarization"
    summary = "Sequence to sequence: write a short summary of a document."
    metrics = ("rouge1", "rouge2", "rougeL")
    default_metric = "rougeL"
    output_key = "summary_text"

    def text_metrics(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return rouge_metrics(predictions, references)


TASK = Summarization()
