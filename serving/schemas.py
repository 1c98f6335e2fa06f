"""What each task takes over HTTP: the type of one input and the parameters model, per task.

Pure pydantic: this module imports neither torch, transformers nor the handlers, so the HTTP ingress
builds its typed request model (and OpenAPI docs) from `schema_for(task)` without loading the model
stack. The handlers take their `Input`, `Parameters` and `input_hint` from here, so the two never
disagree (a unit test checks they are the same objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "MASKED_TEXT_HINT",
    "QUESTION_CONTEXT_HINT",
    "TASK_SCHEMAS",
    "TEXT_HINT",
    "TEXT_OR_PAIR_HINT",
    "ClassificationInput",
    "ClassificationParameters",
    "FeatureExtractionParameters",
    "FillMaskParameters",
    "GenerationParameters",
    "InputModel",
    "ParametersModel",
    "QuestionAnsweringParameters",
    "QuestionContext",
    "SamplingParameters",
    "Seq2SeqParameters",
    "StopString",
    "TaskSchema",
    "TextPair",
    "TokenClassificationParameters",
    "ZeroShotParameters",
    "schema_for",
]

TEXT_HINT = "a string"
"""How a plain-text input looks, for error messages."""
TEXT_OR_PAIR_HINT = "a string or {text, text_pair}"
QUESTION_CONTEXT_HINT = "{question, context} with non-empty strings"
MASKED_TEXT_HINT = "a string containing the mask token"


class ParametersModel(BaseModel):
    """Base of every handler's `Parameters`: unknown names are errors, so a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class InputModel(BaseModel):
    """Base of structured inputs (text pairs, question + context)."""

    model_config = ConfigDict(extra="forbid")


# --- text-classification ---------------------------------------------------------------------------


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
        description="How logits become scores. Unset: sigmoid for multi-label models, else softmax.",
    )


ClassificationInput = str | TextPair
"""One text-classification input: a text, or a pair of texts."""


# --- token-classification --------------------------------------------------------------------------


class TokenClassificationParameters(ParametersModel):
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] = Field(
        default="simple",
        description="none: one entry per sub-token; simple: group sub-tokens by B-/I- tags; first, average, "
        "max: one label per word (its first sub-token's, the mean scores', or the best sub-token's), then group.",
    )
    ignore_labels: list[str] = Field(
        default_factory=lambda: ["O"], description="Labels (or entity groups) left out of the output."
    )


# --- question-answering ----------------------------------------------------------------------------


class QuestionContext(InputModel):
    question: str = Field(min_length=1, description="The question.")
    context: str = Field(min_length=1, description="The passage the answer is extracted from.")


class QuestionAnsweringParameters(ParametersModel):
    top_k: int = Field(default=1, ge=1, le=100, description="Answers to return (a list when above 1).")
    max_answer_len: int = Field(default=15, ge=1, description="Longest answer, in tokens.")
    handle_impossible_answer: bool = Field(
        default=False, description="Allow the empty answer (score from the [CLS] token) when it scores best."
    )


# --- fill-mask -------------------------------------------------------------------------------------


class FillMaskParameters(ParametersModel):
    top_k: int = Field(default=5, ge=1, le=1000, description="Candidates per mask, best first.")
    targets: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Score only these words (each mapped to its first token, as the pipeline does).",
    )


# --- text-generation -------------------------------------------------------------------------------


class SamplingParameters(ParametersModel):
    """Decoding controls shared by every generating task."""

    max_new_tokens: int = Field(default=32, ge=1, le=1024, description="Most tokens to generate.")
    do_sample: bool = Field(default=False, description="Sample (true) or decode greedily (false).")
    temperature: float | None = Field(
        default=None, ge=0.0, le=100.0, description="Sampling temperature; 0 decodes greedily."
    )
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int | None = Field(default=None, ge=0, description="Sample among the k likeliest tokens (0: all).")
    repetition_penalty: float | None = Field(default=None, gt=0.0, description="Above 1 discourages repeats.")
    seed: int | None = Field(
        default=None, description="Seed for sampling, for repeatable outputs of one batch."
    )

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.generate`; sampling knobs only when sampling (temperature 0 is
        greedy, as OpenAI-style clients expect), so greedy calls do not warn about ignored settings."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        sample = self.do_sample and self.temperature != 0.0
        kwargs["do_sample"] = sample
        if sample:
            for name in ("temperature", "top_p", "top_k"):
                if getattr(self, name) is not None:
                    kwargs[name] = getattr(self, name)
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs


StopString = Annotated[str, Field(min_length=1)]


class GenerationParameters(SamplingParameters):
    stop: list[StopString] = Field(
        default_factory=list, max_length=16, description="Cut the text at the first of these strings."
    )
    return_full_text: bool = Field(default=True, description="Prefix the prompt to the generated text.")


# --- summarization, translation --------------------------------------------------------------------


class Seq2SeqParameters(SamplingParameters):
    max_new_tokens: int | None = Field(  # type: ignore[assignment]
        default=None,
        ge=1,
        le=1024,
        description="Most tokens to generate. Unset: the target length training used (max_target_length).",
    )
    min_length: int | None = Field(default=None, ge=0, le=1024, description="Fewest tokens to generate.")
    num_beams: int = Field(default=1, ge=1, le=16, description="Beam search width (1: greedy or sampling).")
    length_penalty: float | None = Field(
        default=None, description="Beam search: above 0 favours longer outputs."
    )
    no_repeat_ngram_size: int | None = Field(
        default=None, ge=0, description="Never repeat n-grams of this size."
    )


# --- zero-shot-classification ----------------------------------------------------------------------


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

    @field_validator("hypothesis_template")
    @classmethod
    def _has_slot(cls, value: str) -> str:
        if "{}" not in value:
            raise ValueError(f"{value!r} has no {{}} for the label; e.g. 'This example is {{}}.'")
        return value


# --- feature-extraction ----------------------------------------------------------------------------


class FeatureExtractionParameters(ParametersModel):
    pooling: Literal["mean", "cls"] | None = Field(
        default=None, description="mean or cls (first token). Unset: what the checkpoint was trained with."
    )
    normalize: bool = Field(default=True, description="Scale each embedding to unit L2 norm.")


# --- the table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSchema:
    """What one request input and the request's parameters of a task look like."""

    input: Any
    """The pydantic-compatible type of ONE input (e.g. `str`, or `str | TextPair`)."""
    parameters: type[ParametersModel]
    input_hint: str = TEXT_HINT
    """How one input looks, for error messages."""


TASK_SCHEMAS: dict[str, TaskSchema] = {
    "text-classification": TaskSchema(
        input=ClassificationInput, parameters=ClassificationParameters, input_hint=TEXT_OR_PAIR_HINT
    ),
    "token-classification": TaskSchema(input=str, parameters=TokenClassificationParameters),
    "question-answering": TaskSchema(
        input=QuestionContext,
        parameters=QuestionAnsweringParameters,
        input_hint=QUESTION_CONTEXT_HINT,
    ),
    "fill-mask": TaskSchema(input=str, parameters=FillMaskParameters, input_hint=MASKED_TEXT_HINT),
    "text-generation": TaskSchema(input=str, parameters=GenerationParameters),
    "summarization": TaskSchema(input=str, parameters=Seq2SeqParameters),
    "translation": TaskSchema(input=str, parameters=Seq2SeqParameters),
    "zero-shot-classification": TaskSchema(input=str, parameters=ZeroShotParameters),
    "feature-extraction": TaskSchema(input=str, parameters=FeatureExtractionParameters),
}


def schema_for(task: str) -> TaskSchema:
    """The schema of `task`, or a KeyError that lists the known tasks."""
    try:
        return TASK_SCHEMAS[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(TASK_SCHEMAS)}") from None
