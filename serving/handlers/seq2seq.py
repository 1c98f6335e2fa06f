"""Summarization and translation with an encoder-decoder model.

transformers 5 dropped both pipelines; outputs keep their keys, one dict per input:
`{"summary_text": ...}` / `{"translation_text": ...}` (the old pipelines returned a one-item list per
input; a single dict is what a client of one input wants, and a batch is a list of them). The
recorded `source_prefix` (e.g. "summarize: ") is added by the preprocessing function, as in training.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from rayformers.serving import schemas
from rayformers.serving.handlers.base import Handler
from rayformers.serving.schemas import Seq2SeqParameters

__all__ = ["Seq2SeqHandler", "SummarizationHandler", "TranslationHandler"]


class Seq2SeqHandler(Handler):
    """Encodes the inputs once (right-padded), generates every output in one `generate` call."""

    output_key: ClassVar[str]
    Parameters: ClassVar[type[Seq2SeqParameters]] = schemas.Seq2SeqParameters
    warmup_parameters: ClassVar[dict[str, Any]] = {"max_new_tokens": 2}

    def _predict(self, inputs: list[str], parameters: Seq2SeqParameters) -> list[Any]:
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
        return [{self.output_key: text.strip()} for text in texts]


class SummarizationHandler(Seq2SeqHandler):
    task: ClassVar[str] = "summarization"
    output_key: ClassVar[str] = "summary_text"


class TranslationHandler(Seq2SeqHandler):
    task: ClassVar[str] = "translation"
    output_key: ClassVar[str] = "translation_text"
