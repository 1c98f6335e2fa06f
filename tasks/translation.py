"""Translation: translate a text (an encoder-decoder model, scored by sacreBLEU)."""

from __future__ import annotations

from rayformers.tasks.seq2seq import Seq2SeqTask

__all__ = ["TASK", "Translation", "bleu_metrics"]


def bleu_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU (sacreBLEU, as `evaluate`'s sacrebleu)."""
    import sacrebleu

    return {"bleu": float(sacrebleu.corpus_bleu(predictions, [references]).score)}


class Translation(Seq2SeqTask):
    name = "translation"
    summary = "Sequence to sequence: translate a text."
    metrics = ("bleu",)
    default_metric = "bleu"
    output_key = "translation_text"

    def text_metrics(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return bleu_metrics(predictions, references)


TASK = Translation()
