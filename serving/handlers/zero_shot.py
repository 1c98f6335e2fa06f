"""Zero-shot classification with an NLI model: each candidate label becomes a hypothesis
("This example is {label}.") paired with the text, and the entailment logits rank the labels, as
transformers' `zero-shot-classification` pipeline does."""

from __future__ import annotations

from typing import Any, ClassVar

from rayformers.serving import schemas
from rayformers.serving.errors import CheckpointError, InputError
from rayformers.serving.handlers.base import Handler
from rayformers.serving.schemas import ZeroShotParameters

__all__ = ["ZeroShotHandler"]


class ZeroShotHandler(Handler):
    """Ranks any candidate labels for each text; one forward pass over every (text, label) pair."""

    task: ClassVar[str] = "zero-shot-classification"
    Parameters: ClassVar[type[ZeroShotParameters]] = schemas.ZeroShotParameters
    warmup_parameters: ClassVar[dict[str, Any]] = {"candidate_labels": ["greeting", "question"]}

    def __init__(self, loaded: Any) -> None:
        super().__init__(loaded)
        names = [n.lower() for n in self.label_names()]
        found = {
            kind: next((i for i, n in enumerate(names) if n.startswith(prefix)), None)
            for kind, prefix in (("entailment", "entail"), ("contradiction", "contra"))
        }
        if found["entailment"] is None or found["contradiction"] is None:
            raise CheckpointError(
                f"{loaded.path}: zero-shot classification needs an NLI model whose labels include "
                f"'entailment' and 'contradiction'; this one has {self.label_names()}"
            )
        self.entailment_id: int = found["entailment"]  # type: ignore[assignment]
        self.contradiction_id: int = found["contradiction"]  # type: ignore[assignment]

    def _predict(self, inputs: list[str], parameters: ZeroShotParameters) -> list[Any]:
        labels = list(dict.fromkeys(parameters.candidate_labels))
        if not labels:
            raise InputError(
                "parameters.candidate_labels",
                "no candidate labels; give at least one, e.g. ['sports', 'politics']",
            )
        hypotheses = [parameters.hypothesis_template.format(label) for label in labels]
        columns = self.tokenize(
            {
                "text": [t for t in inputs for _ in labels],
                "text_pair": [h for _ in inputs for h in hypotheses],
            }
        )
        logits = (
            self.forward(self.to_batch(columns)).logits.float().cpu().reshape(len(inputs), len(labels), -1)
        )
        if parameters.multi_label or len(labels) == 1:
            pair = logits[..., [self.contradiction_id, self.entailment_id]]
            scores = pair.softmax(-1)[..., 1]
        else:
            scores = logits[..., self.entailment_id].softmax(-1)
        outputs = []
        for text, row in zip(inputs, scores.tolist(), strict=True):
            ranked = sorted(zip(labels, row, strict=True), key=lambda p: p[1], reverse=True)
            outputs.append(
                {
                    "sequence": text,
                    "labels": [label for label, _ in ranked],
                    "scores": [float(s) for _, s in ranked],
                }
            )
        return outputs
