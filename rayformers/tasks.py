"""The task registry: one table, keyed by task name, that every stage reads.

Each entry says which columns the task reads, how an example is tokenized (one function with a
train and an inference mode, so serving runs exactly what training ran), which Auto model class
builds it, how batches are collated and which metrics judge it. Heavy
objects are named by import path and resolved on demand: this module imports neither torch nor ray.
Adding a task means adding one entry here and the functions it names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = ["TASKS", "TASK_NAMES", "TaskName", "TaskSpec", "get_task"]

TaskName = Literal[
    "text-classification",
    "token-classification",
    "question-answering",
    "fill-mask",
    "text-generation",
    "summarization",
    "translation",
    "zero-shot-classification",
    "feature-extraction",
]
TASK_NAMES: tuple[str, ...] = get_args(TaskName)


@dataclass(frozen=True)
class TaskSpec:
    """What one task is, for every stage."""

    name: str
    summary: str
    columns: tuple[str, ...]
    """Columns a training row must have (task-side names; `data.columns` maps the user's names)."""
    optional_columns: tuple[str, ...]
    """Columns used when present (e.g. `text_pair` for sentence-pair classification)."""
    inference_columns: tuple[str, ...]
    """Columns an inference request provides."""
    preprocess: str
    """`module:function` of the preprocessing function (train and inference modes)."""
    auto_model: str
    """Name of the transformers Auto class that builds the model."""
    collator: str
    """`module:Class` of the collator that pads (and for fill-mask, masks) batches."""
    label_column: str | None
    """Column holding labels mapped through the recorded label map; None: no label map."""
    label_kind: Literal["sequence", "token", "none"]
    metrics: tuple[str, ...]
    default_metric: str
    metric_mode: Literal["max", "min"]
    pipeline_task: str | None
    """The transformers `pipeline()` task that loads its checkpoints, where transformers 5 has one."""
    handler: str
    """`module:Class` of the serving handler that answers requests for this task."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def all_columns(self) -> tuple[str, ...]:
        return self.columns + self.optional_columns

    def load_preprocess(self) -> Any:
        """The preprocessing function (imports the data stage)."""
        return _resolve(self.preprocess)

    def load_collator(self) -> Any:
        """The collator class (imports the data stage)."""
        return _resolve(self.collator)

    def load_handler(self) -> Any:
        """The serving handler class (imports the serving stage)."""
        return _resolve(self.handler)

    def load_auto_model(self) -> Any:
        """The transformers Auto model class (imports transformers)."""
        transformers = importlib.import_module("transformers")
        return getattr(transformers, self.auto_model)


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


_CLASSIFY = "rayformers.data.preprocess:tokenize_classification"
_PAD = "rayformers.data.collate:PaddingCollator"

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="text-classification",
            summary="Label a text, or a pair of texts (paraphrase, entailment, similarity).",
            columns=("text", "label"),
            optional_columns=("text_pair",),
            inference_columns=("text",),
            preprocess=_CLASSIFY,
            auto_model="AutoModelForSequenceClassification",
            collator=_PAD,
            label_column="label",
            label_kind="sequence",
            metrics=("accuracy", "f1"),
            default_metric="accuracy",
            metric_mode="max",
            pipeline_task="text-classification",
            handler="rayformers.serving.handlers.classification:TextClassificationHandler",
        ),
        TaskSpec(
            name="token-classification",
            summary="Label every word of a pre-split sentence (named entities, parts of speech).",
            columns=("tokens", "tags"),
            optional_columns=(),
            inference_columns=("text",),
            preprocess="rayformers.data.preprocess:tokenize_token_classification",
            auto_model="AutoModelForTokenClassification",
            collator=_PAD,
            label_column="tags",
            label_kind="token",
            metrics=("precision", "recall", "f1", "accuracy"),
            default_metric="f1",
            metric_mode="max",
            pipeline_task="token-classification",
            handler="rayformers.serving.handlers.tokens:TokenClassificationHandler",
        ),
        TaskSpec(
            name="question-answering",
            summary="Extract the answer span to a question from a context passage (SQuAD format).",
            columns=("question", "context", "answers"),
            optional_columns=("id",),
            inference_columns=("question", "context"),
            preprocess="rayformers.data.preprocess:tokenize_question_answering",
            auto_model="AutoModelForQuestionAnswering",
            collator=_PAD,
            label_column=None,
            label_kind="none",
            metrics=("exact_match", "f1"),
            default_metric="f1",
            metric_mode="max",
            pipeline_task=None,
            handler="rayformers.serving.handlers.answers:QuestionAnsweringHandler",
        ),
        TaskSpec(
            name="fill-mask",
            summary="Masked language modelling: predict masked tokens.",
            columns=("text",),
            optional_columns=(),
            inference_columns=("text",),
            preprocess="rayformers.data.preprocess:tokenize_language_modeling",
            auto_model="AutoModelForMaskedLM",
            collator="rayformers.data.collate:MaskingCollator",
            label_column=None,
            label_kind="none",
            metrics=("perplexity",),
            default_metric="perplexity",
            metric_mode="min",
            pipeline_task="fill-mask",
            handler="rayformers.serving.handlers.fill_mask:FillMaskHandler",
        ),
        TaskSpec(
            name="text-generation",
            summary="Causal language modelling: continue a text.",
            columns=("text",),
            optional_columns=(),
            inference_columns=("text",),
            preprocess="rayformers.data.preprocess:tokenize_causal_lm",
            auto_model="AutoModelForCausalLM",
            collator=_PAD,
            label_column=None,
            label_kind="none",
            metrics=("perplexity",),
            default_metric="perplexity",
            metric_mode="min",
            pipeline_task="text-generation",
            handler="rayformers.serving.handlers.generation:TextGenerationHandler",
        ),
        TaskSpec(
            name="summarization",
            summary="Sequence to sequence: write a short summary of a document.",
            columns=("text", "target"),
            optional_columns=(),
            inference_columns=("text",),
            preprocess="data.preprocess:tokenize_seq2seq",
            auto_model="AutoModelForSeq2SeqLM",
            collator=_PAD,
            label_column=None,
            label_kind="none",
            metrics=("rouge1", "rouge2", "rougeL"),
            default_metric="rougeL",
            metric_mode="max",
            pipeline_task=None,
            handler="serving.handlers.seq2seq:SummarizationHandler",
        ),
        TaskSpec(
            name="translation",
            summary="Sequence to sequence: translate a text.",
            columns=("text", "target"),
            optional_columns=(),
            inference_columns=("text",),
            preprocess="data.preprocess:tokenize_seq2seq",
            auto_model="AutoModelForSeq2SeqLM",
            collator=_PAD,
            label_column=None,
            label_kind="none",
            metrics=("bleu",),
            default_metric="bleu",
            metric_mode="max",
            pipeline_task=None,
            handler="serving.handlers.seq2seq:TranslationHandler",
        ),
        TaskSpec(
            name="zero-shot-classification",
            summary="Natural-language inference classifier that scores any candidate labels at serve time.",
            columns=("text", "text_pair", "label"),
            optional_columns=(),
            inference_columns=("text",),
            preprocess=_CLASSIFY,
            auto_model="AutoModelForSequenceClassification",
            collator=_PAD,
            label_column="label",
            label_kind="sequence",
            metrics=("accuracy", "f1"),
            default_metric="accuracy",
            metric_mode="max",
            pipeline_task="zero-shot-classification",
            handler="rayformers.serving.handlers.zero_shot:ZeroShotHandler",
            extra={"required_label": "entailment"},
        ),
        TaskSpec(
            name="feature-extraction",
            summary="Sentence embeddings, trained contrastively on (text, text_pair) positive pairs.",
            columns=("text", "text_pair"),
            optional_columns=(),
            inference_columns=("text",),
            preprocess="rayformers.data.preprocess:tokenize_embedding_pairs",
            auto_model="AutoModel",
            collator=_PAD,
            label_column=None,
            label_kind="none",
            metrics=("recall_at_1",),
            default_metric="recall_at_1",
            metric_mode="max",
            pipeline_task="feature-extraction",
            handler="rayformers.serving.handlers.embeddings:FeatureExtractionHandler",
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """The registry entry for `name`, or a KeyError that lists the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}") from None
