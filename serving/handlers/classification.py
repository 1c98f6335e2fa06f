"""Text classification: one label (or a ranked list) per text or text pair, as transformers'
`text-classification` pipeline answers."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from rayformers.serving import schemas
from rayformers.serving.handlers.base import Columns, Handler
from rayformers.serving.schemas import ClassificationParameters, TextPair

__all__ = ["TextClassificationHandler", "scores_from_logits"]


def scores_from_logits(logits: torch.Tensor, function: str) -> torch.Tensor:
    """Scores as the pipeline computes them: softmax over labels, independent sigmoids, or raw logits."""
    logits = logits.float()
    if function == "softmax":
        return logits.softmax(-1)
    if function == "sigmoid":
        return logits.sigmoid()
    return logits


class TextClassificationHandler(Handler):
    """Labels for single texts and sentence pairs; a batch may mix both, in one forward pass."""

    task: ClassVar[str] = "text-classification"
    Parameters: ClassVar[type[ClassificationParameters]] = schemas.ClassificationParameters
    Input: ClassVar[Any] = schemas.ClassificationInput
    input_hint: ClassVar[str] = schemas.TEXT_OR_PAIR_HINT

    def length(self, input: str | TextPair) -> int:
        return len(input) if isinstance(input, str) else len(input.text) + len(input.text_pair)

    def encode(self, inputs: list[str | TextPair]) -> Columns:
        """Token columns for `inputs`, in order: single texts and pairs are tokenized as two groups
        (the preprocessing function takes `text_pair` for all rows of a batch or none)."""
        singles = [i for i, x in enumerate(inputs) if isinstance(x, str)]
        pairs = [i for i, x in enumerate(inputs) if not isinstance(x, str)]
        rows: list[dict[str, Any]] = [{} for _ in inputs]
        if singles:
            self._scatter(rows, singles, self.tokenize({"text": [inputs[i] for i in singles]}))
        if pairs:
            columns = {
                "text": [inputs[i].text for i in pairs],  # type: ignore[union-attr]
                "text_pair": [inputs[i].text_pair for i in pairs],  # type: ignore[union-attr]
            }
            self._scatter(rows, pairs, self.tokenize(columns))
        keys = sorted(set().union(*(r.keys() for r in rows)))
        return {k: [r.get(k, []) for r in rows] for k in keys}

    @staticmethod
    def _scatter(rows: list[dict[str, Any]], positions: list[int], columns: Columns) -> None:
        for j, i in enumerate(positions):
            rows[i].update({k: v[j] for k, v in columns.items()})

    def _predict(self, inputs: list[str | TextPair], parameters: ClassificationParameters) -> list[Any]:
        logits = self.forward(self.to_batch(self.encode(inputs))).logits
        function = parameters.function_to_apply or (
            "sigmoid"
            if getattr(self.model.config, "problem_type", None) == "multi_label_classification"
            else "softmax"
        )
        scores = scores_from_logits(logits, function).cpu().tolist()
        names = self.label_names()
        outputs: list[Any] = []
        for row in scores:
            ranked = sorted(
                (
                    {"label": names[i] if i < len(names) else f"LABEL_{i}", "score": float(s)}
                    for i, s in enumerate(row)
                ),
                key=lambda r: r["score"],
                reverse=True,
            )
            if parameters.top_k == 1:
                outputs.append(ranked[0])
            else:
                outputs.append(ranked if parameters.top_k is None else ranked[: parameters.top_k])
        return outputs
