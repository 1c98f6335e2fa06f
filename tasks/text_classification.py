"""Text classification: one label per text, or per pair of texts (paraphrase, entailment, similarity).

Training reads `text` (and `text_pair` when the data has it) and `label`, mapped through the recorded
label map. Serving answers as transformers' `text-classification` pipeline does: `{label, score}` per
input, or the `top_k` best as a list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from rayformers.data.preprocess import Columns, Mode, encode_inputs
from rayformers.manifest import PreprocessSettings, label_key
from rayformers.tasks.base import Playground, Task
from rayformers.tasks.evaluation import PairEvaluator
from rayformers.tasks.handler import Handler
from rayformers.tasks.schemas import InputModel, ParametersModel

if TYPE_CHECKING:
    import torch

__all__ = [
    "TASK",
    "ClassificationEvaluator",
    "ClassificationParameters",
    "TextClassification",
    "TextClassificationHandler",
    "TextPair",
    "classification_metrics",
    "scores_from_logits",
    "tokenize_classification",
]

TEXT_OR_PAIR_HINT = "a string or {text, text_pair}"


class TextPair(InputModel):
    """Two texts classified together (paraphrase, entailment, similarity), encoded as training encoded
    its `text` and `text_pair` columns."""

    text: str = Field(description="The first text.")
    text_pair: str = Field(description="The second text.")


class ClassificationParameters(ParametersModel):
    top_k: int | None = Field(
        default=1,
        ge=1,
        description="Labels to return: 1 gives one {label, score}; k gives the k best as a list; null gives all.",
    )
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = Field(
        default=None,
        description="How logits become scores. Unset: as transformers' pipeline: none for regression, sigmoid "
        "for multi-label and one-logit models, else softmax.",
    )


def tokenize_classification(
    batch: Mapping[str, Sequence[Any]], tokenizer: Any, settings: PreprocessSettings, mode: Mode = "train"
) -> Columns:
    """Single texts, or sentence pairs when the batch has `text_pair` (also NLI for zero-shot)."""
    texts = list(batch["text"])
    pairs = list(batch["text_pair"]) if batch.get("text_pair") is not None else None
    out = encode_inputs(tokenizer, settings, texts, pairs, mode)
    if mode != "inference":
        label2id = settings.label2id
        out["labels"] = [label2id[label_key(v)] for v in batch["label"]]
    return out


def classification_metrics(
    predictions: Sequence[int], references: Sequence[int], num_labels: int
) -> dict[str, float]:
    """Accuracy, and F1: of label 1 for two classes (as GLUE reports it), else macro-averaged over the
    classes that occur in the references or the predictions (as scikit-learn's `average="macro"`: a
    class absent from both has no F1, rather than an F1 of 0)."""
    preds, refs = np.asarray(predictions), np.asarray(references)
    if len(refs) == 0:
        return {"accuracy": 0.0, "f1": 0.0}
    accuracy = float((preds == refs).mean())
    classes = [1] if num_labels == 2 else sorted({*preds.tolist(), *refs.tolist()})
    scores = []
    for c in classes:
        tp = float(((preds == c) & (refs == c)).sum())
        fp = float(((preds == c) & (refs != c)).sum())
        fn = float(((preds != c) & (refs == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": accuracy, "f1": float(np.mean(scores))}


def default_function(config: Any) -> Literal["softmax", "sigmoid", "none"]:
    """How a model's logits become scores when the request does not say, as transformers' pipeline decides:
    raw for regression, independent sigmoids for multi-label heads and one-logit heads (a reranker or a
    binary scorer, whose softmax would always be 1.0), else softmax."""
    problem = getattr(config, "problem_type", None)
    if problem == "regression":
        return "none"
    if problem == "multi_label_classification" or getattr(config, "num_labels", 2) == 1:
        return "sigmoid"
    return "softmax"


def scores_from_logits(logits: torch.Tensor, function: str) -> torch.Tensor:
    """Scores as the pipeline computes them: softmax over labels, independent sigmoids, or raw logits."""
    logits = logits.float()
    if function == "softmax":
        return logits.softmax(-1)
    if function == "sigmoid":
        return logits.sigmoid()
    return logits


class ClassificationEvaluator(PairEvaluator):
    """(predicted id, label id) per row: accuracy and F1 over the label map."""

    def record(self, out: Any, batch: Mapping[str, Any], collated: Mapping[str, Any]) -> None:
        self.rows.extend(
            zip(out.logits.argmax(-1).cpu().tolist(), batch["labels"].cpu().tolist(), strict=True)
        )

    def score(self, rows: list[Any]) -> dict[str, float]:
        n = len(self.settings.labels) if self.settings.labels else 2
        return classification_metrics([p for p, _ in rows], [r for _, r in rows], n)


class TextClassificationHandler(Handler):
    """Labels for single texts and sentence pairs; a batch may mix both, and requests with different
    parameters (which only read the scores differently) share its forwards."""

    shares_forward = True

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

    def _predict(self, inputs: list[str | TextPair], parameters: list[ClassificationParameters]) -> list[Any]:
        logits = self.forward_rows(self.encode(inputs), lambda out, rows: list(out.logits.float().cpu()))
        default = default_function(self.model.config)
        names = self.label_names()
        outputs: list[Any] = []
        for row, params in zip(logits, parameters, strict=True):
            scores = scores_from_logits(row, params.function_to_apply or default).tolist()
            ranked = sorted(
                (
                    {"label": names[i] if i < len(names) else f"LABEL_{i}", "score": float(s)}
                    for i, s in enumerate(scores)
                ),
                key=lambda r: r["score"],
                reverse=True,
            )
            if params.top_k == 1:
                outputs.append(ranked[0])
            else:
                outputs.append(ranked if params.top_k is None else ranked[: params.top_k])
        return outputs


class TextClassification(Task):
    name = "text-classification"
    summary = "Label a text, or a pair of texts (paraphrase, entailment, similarity)."
    columns = ("text", "label")
    optional_columns = ("text_pair",)
    text_columns = ("text", "text_pair")
    label_column = "label"
    label_kind = "sequence"
    auto_model = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    head_modules = ("classifier", "pre_classifier", "score", "classification_head")
    metrics = ("accuracy", "f1")
    default_metric = "accuracy"
    pipeline_task = "text-classification"
    Input = str | TextPair
    Parameters = ClassificationParameters
    input_hint = TEXT_OR_PAIR_HINT
    playground = Playground(form="text-pair", result="labels", parameters={"top_k": None})
    handler = TextClassificationHandler
    preprocess = staticmethod(tokenize_classification)
    evaluator_class = ClassificationEvaluator


TASK = TextClassification()
