"""Zero-shot classification: an NLI classifier trained on (premise, hypothesis, label) rows that, when
served, scores any candidate labels. Each label becomes a hypothesis ("This example is {label}.") paired
with the text, and the entailment logits rank the labels, as transformers' `zero-shot-classification`
pipeline does."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from string import Formatter
from typing import Any

from pydantic import Field, field_validator

from rayformers.config import DataConfig
from rayformers.data.rows import DataError
from rayformers.manifest import PreprocessSettings
from rayformers.tasks.base import Playground
from rayformers.tasks.checkpoint import CheckpointError
from rayformers.tasks.handler import Handler, InputError, estimated_tokens, texts_of
from rayformers.tasks.schemas import TEXT_HINT, ParametersModel
from rayformers.tasks.text_classification import TextClassification
from rayformers.validation import ConfigIssue

__all__ = ["TASK", "ZeroShotClassification", "ZeroShotHandler", "ZeroShotParameters"]

ENTAILMENT = "entailment"
"""The label the NLI training data must have: its logit is the zero-shot score."""


class ZeroShotParameters(ParametersModel):
    candidate_labels: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Labels to choose from (a list, or one comma-separated string). Required.",
    )
    hypothesis_template: str = Field(
        default="This example is {}.", description="The hypothesis each label fills; must contain {}."
    )
    multi_label: bool = Field(
        default=False,
        description="Score labels independently (entailment vs contradiction per label) instead of "
        "making them compete in one softmax.",
    )

    @field_validator("candidate_labels", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [label.strip() for label in value.split(",") if label.strip()]
        return value

    @field_validator("candidate_labels")
    @classmethod
    def _named(cls, value: list[str]) -> list[str]:
        blank = [i for i, label in enumerate(value) if not label.strip()]
        if blank:
            raise ValueError(f"label {blank[0]} is empty; every candidate label needs a name to score")
        return value

    @field_validator("hypothesis_template")
    @classmethod
    def _has_slot(cls, value: str) -> str:
        # Exactly one bare `{}`: a template is formatted once per label, so a field name would raise
        # (or read attributes: "{0.__class__}") and a format spec ("{:>99999999}") would allocate at will.
        try:
            fields = [
                (name, spec, conv) for _, name, spec, conv in Formatter().parse(value) if name is not None
            ]
        except ValueError as err:
            raise ValueError(f"{value!r} is not a template ({err}); write braces as {{{{ and }}}}") from None
        if fields != [("", "", None)]:
            raise ValueError(
                f"{value!r} must hold exactly one bare {{}} for the label (no names, formats or other "
                "fields; braces as {{ and }}); e.g. 'This example is {}.'"
            )
        return value


class ZeroShotHandler(Handler):
    """Ranks any candidate labels for each text; one forward pass over every (text, label) pair."""

    warmup_parameters = {"candidate_labels": ["greeting", "question"]}
    shares_forward = True

    def __init__(self, loaded: Any, **options: Any) -> None:
        super().__init__(loaded, **options)
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

    def call_tokens(self, inputs: Sequence[Any], parameters: ZeroShotParameters) -> int:
        """One (text, hypothesis) row per input and candidate label."""
        limit = self.settings.max_length
        hypotheses = [
            estimated_tokens(parameters.hypothesis_template.replace("{}", label))
            for label in dict.fromkeys(parameters.candidate_labels)
        ] or [0]
        return sum(
            min(limit, estimated_tokens(*texts_of(item)) + hypothesis)
            for item in inputs
            for hypothesis in hypotheses
        )

    def _predict(self, inputs: list[str], parameters: list[ZeroShotParameters]) -> list[Any]:
        import torch

        labels = [list(dict.fromkeys(p.candidate_labels)) for p in parameters]
        if not all(labels):
            raise InputError(
                "parameters.candidate_labels",
                "no candidate labels; give at least one, e.g. ['sports', 'politics']",
            )
        # Every (text, hypothesis) pair of every input, in one set of forwards.
        pairs = [
            (text, p.hypothesis_template.format(label))
            for text, p, names in zip(inputs, parameters, labels, strict=True)
            for label in names
        ]
        columns = self.tokenize({"text": [t for t, _ in pairs], "text_pair": [h for _, h in pairs]})
        logits = self.forward_rows(columns, lambda out, rows: list(out.logits.float().cpu()))
        outputs, start = [], 0
        for text, p, names in zip(inputs, parameters, labels, strict=True):
            rows = torch.stack(logits[start : start + len(names)])
            start += len(names)
            if p.multi_label or len(names) == 1:
                scores = rows[:, [self.contradiction_id, self.entailment_id]].softmax(-1)[:, 1]
            else:
                scores = rows[:, self.entailment_id].softmax(-1)
            ranked = sorted(zip(names, scores.tolist(), strict=True), key=lambda pair: pair[1], reverse=True)
            outputs.append(
                {
                    "sequence": text,
                    "labels": [label for label, _ in ranked],
                    "scores": [float(s) for _, s in ranked],
                }
            )
        return outputs


class ZeroShotClassification(TextClassification):
    """Text classification's training (pairs, a label map, accuracy and F1), with its own serving."""

    name = "zero-shot-classification"
    summary = "Natural-language inference classifier that scores any candidate labels at serve time."
    columns = ("text", "text_pair", "label")
    optional_columns = ()
    pipeline_task = "zero-shot-classification"
    Input = str
    Parameters = ZeroShotParameters
    input_hint = TEXT_HINT
    playground = Playground(form="text-labels", result="labels")
    handler = ZeroShotHandler

    def config_issues(self, data: DataConfig) -> list[ConfigIssue]:
        if data.labels is not None and ENTAILMENT not in data.labels:
            return [
                ConfigIssue(
                    "data.labels",
                    f"task {self.name} needs an '{ENTAILMENT}' label",
                    f"add '{ENTAILMENT}' to data.labels (the NLI classes, e.g. entailment, neutral, contradiction)",
                    data.labels,
                )
            ]
        return []

    def finish_settings(
        self, settings: PreprocessSettings, values: Callable[[str], Iterable[Any]]
    ) -> PreprocessSettings:
        names = settings.labels.names if settings.labels is not None else []
        if ENTAILMENT not in names:
            raise DataError(
                f"task {self.name} needs a {ENTAILMENT!r} label, but the labels are {names}; "
                "train it on NLI data (entailment, neutral, contradiction) or map your labels"
            )
        return settings


TASK = ZeroShotClassification()
