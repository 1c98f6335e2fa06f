"""What summarization and translation share: an encoder-decoder model (the task's Auto class is
`AutoModelForSeq2SeqLM`) that reads `source_prefix` + text and is trained to write `target`.

Evaluation generates greedily and scores the texts with the task's metric (ROUGE, BLEU); serving encodes
the inputs once (right-padded) and generates every output in one `generate` call. transformers 5 dropped
both pipelines; outputs keep their keys, one dict per input: `{"summary_text": ...}` /
`{"translation_text": ...}` (the old pipelines returned a one-item list per input; a single dict is what
a client of one input wants, and a batch is a list of them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import Field

from rayformers.data.preprocess import IGNORE_INDEX, Columns, Mode, encode, model_inputs, truncated_rows
from rayformers.manifest import PreprocessSettings
from rayformers.tasks.base import Playground, Task
from rayformers.tasks.evaluation import PairEvaluator
from rayformers.tasks.handler import Handler
from rayformers.tasks.schemas import SamplingParameters

__all__ = ["Seq2SeqEvaluator", "Seq2SeqHandler", "Seq2SeqParameters", "Seq2SeqTask", "tokenize_seq2seq"]


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


def tokenize_seq2seq(
    batch: Mapping[str, Sequence[Any]], tokenizer: Any, settings: PreprocessSettings, mode: Mode = "train"
) -> Columns:
    """Summarization and translation: `source_prefix` + text as input; `target` as labels in training."""
    texts = [settings.source_prefix + t for t in batch["text"]]
    encoding = encode(tokenizer, settings, texts)
    out = model_inputs(encoding)
    out["truncated"] = truncated_rows(encoding, settings.max_length, len(texts))
    if mode != "inference":
        targets = tokenizer(
            text_target=list(batch["target"]), truncation=True, max_length=settings.max_target_length
        )
        out["labels"] = list(targets["input_ids"])
    return out


def _seq2seq_texts(
    model: Any, batch: Mapping[str, Any], tokenizer: Any, max_new_tokens: int
) -> tuple[list[str], list[str]]:
    """Greedy generations for a batch, and its targets, as text."""
    generated = model.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        max_new_tokens=max_new_tokens,
        num_beams=1,
        do_sample=False,
    )
    labels = batch["labels"].clone()
    labels[labels == IGNORE_INDEX] = tokenizer.pad_token_id
    return (
        tokenizer.batch_decode(generated, skip_special_tokens=True),
        tokenizer.batch_decode(labels, skip_special_tokens=True),
    )


class Seq2SeqEvaluator(PairEvaluator):
    """(generated text, target text) per row; the task scores the texts (`Seq2SeqTask.text_metrics`)."""

    def add(self, model: Any, batch: Mapping[str, Any], collated: Mapping[str, Any]) -> None:
        self.count_loss(model(**batch), len(batch["input_ids"]))
        predictions, references = _seq2seq_texts(
            model, batch, self.tokenizer, self.settings.max_target_length
        )
        self.rows.extend(zip(predictions, references, strict=True))

    def score(self, rows: list[Any]) -> dict[str, float]:
        return self.task.text_metrics([p for p, _ in rows], [r for _, r in rows])  # type: ignore[attr-defined, no-any-return]


class Seq2SeqHandler(Handler):
    """Encodes the inputs once (right-padded), generates every output in one `generate` call."""

    warmup_parameters = {"max_new_tokens": 2}

    def call_tokens(self, inputs: Sequence[Any], parameters: Seq2SeqParameters) -> int:
        """Each input and the tokens it may generate, once per beam."""
        new = max(parameters.max_new_tokens or self.settings.max_target_length, parameters.min_length or 0)
        return sum((self.row_tokens(item) + new) * parameters.num_beams for item in inputs)

    def _predict(self, inputs: list[str], parameters: list[Seq2SeqParameters]) -> list[Any]:
        import torch

        parameters = parameters[0]  # type: ignore[assignment] (one generate call: all are the same)

        batch = self.to_batch(self.tokenize({"text": inputs}))
        defaults = parameters.model_copy(
            update={"max_new_tokens": parameters.max_new_tokens or self.settings.max_target_length}
        )
        kwargs = defaults.generate_kwargs()
        kwargs["num_beams"] = parameters.num_beams
        for name in ("min_length", "length_penalty", "no_repeat_ngram_size"):
            if getattr(parameters, name) is not None:
                kwargs[name] = getattr(parameters, name)
        if parameters.seed is not None:
            torch.manual_seed(parameters.seed)
        with torch.inference_mode():
            generated = self.model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [{self.task.output_key: text.strip()} for text in texts]


class Seq2SeqTask(Task):
    """An encoder-decoder task; subclasses name their output key and score their texts."""

    columns = ("text", "target")
    text_columns = ("text", "target")
    auto_model = "AutoModelForSeq2SeqLM"
    peft_task_type = "SEQ_2_SEQ_LM"
    Parameters = Seq2SeqParameters
    playground = Playground(form="prompt", result="text")
    handler = Seq2SeqHandler
    preprocess = staticmethod(tokenize_seq2seq)
    evaluator_class = Seq2SeqEvaluator
    output_key: ClassVar[str]
    """The key of each served output, as the removed pipelines named it (e.g. `summary_text`)."""

    def text_metrics(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        """The task's metrics of generated texts against their references."""
        raise NotImplementedError
