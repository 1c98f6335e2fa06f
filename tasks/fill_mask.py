"""Fill-mask (masked language modelling): predict the tokens hidden behind mask tokens.

Preprocessing keeps each text's special-token mask; masking happens per batch in the collator (so every
epoch masks anew), as BERT does. Evaluation reports perplexity over the masked tokens. Serving answers in
the shapes of transformers' `fill-mask` pipeline: the most likely tokens for each mask (a list per input;
a list of lists when the text has several masks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from rayformers.data.preprocess import Columns, Mode, encode, model_inputs, truncated_rows
from rayformers.data.rows import DataError
from rayformers.manifest import PreprocessSettings
from rayformers.tasks.base import Playground, Task
from rayformers.tasks.checkpoint import CheckpointError
from rayformers.tasks.evaluation import LanguageModelEvaluator
from rayformers.tasks.handler import Handler, InputError
from rayformers.tasks.schemas import ParametersModel

__all__ = ["TASK", "FillMask", "FillMaskHandler", "FillMaskParameters", "tokenize_language_modeling"]

MASKED_TEXT_HINT = "a string containing the mask token"


class FillMaskParameters(ParametersModel):
    top_k: int = Field(default=5, ge=1, le=1000, description="Candidates per mask, best first.")
    targets: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Score only these words (each mapped to its first token, as the pipeline does).",
    )


def tokenize_language_modeling(
    batch: Mapping[str, Sequence[Any]], tokenizer: Any, settings: PreprocessSettings, mode: Mode = "train"
) -> Columns:
    """Masked LM: texts with their special-token mask; masking itself happens per batch at collate time."""
    texts = list(batch["text"])
    encoding = encode(tokenizer, settings, texts, return_special_tokens_mask=True)
    out = model_inputs(encoding)
    out["special_tokens_mask"] = list(encoding["special_tokens_mask"])
    out["truncated"] = truncated_rows(encoding, settings.max_length, len(texts))
    return out


class FillMaskHandler(Handler):
    """Candidates for every mask token; scores are softmax probabilities over the whole vocabulary."""

    shares_forward = True

    def __init__(self, loaded: Any, **options: Any) -> None:
        super().__init__(loaded, **options)
        if self.tokenizer.mask_token_id is None:
            raise CheckpointError(f"{loaded.path}: its tokenizer has no mask token, so it cannot fill masks")
        self.warmup_inputs = [f"Hello {self.tokenizer.mask_token}."]

    def _predict(self, inputs: list[str], parameters: list[FillMaskParameters]) -> list[Any]:
        mask, mask_id = self.tokenizer.mask_token, self.tokenizer.mask_token_id
        for i, text in enumerate(inputs):
            if mask not in text:
                raise InputError(
                    f"inputs[{i}]", f"{text!r} has no mask token; put {mask} where a word should go"
                )
        columns = self.tokenize({"text": inputs})
        for i, ids in enumerate(columns["input_ids"]):
            if mask_id not in ids:
                reason = (
                    f"the mask token lies beyond the first {self.settings.max_length} tokens the model reads; "
                    "shorten the text before it"
                    if columns["truncated"][i]
                    else f"the tokenizer did not read {mask} as the mask token; write it exactly, with spaces around it"
                )
                raise InputError(f"inputs[{i}]", reason)
        masks = [[i for i, t in enumerate(ids) if t == mask_id] for ids in columns["input_ids"]]
        probabilities = self.forward_rows(
            columns,
            lambda out, rows: [out.logits[j, masks[i]].float().softmax(-1).cpu() for j, i in enumerate(rows)],
        )
        outputs = []
        for row, (ids, params) in enumerate(zip(columns["input_ids"], parameters, strict=True)):
            targets = self._target_ids(params.targets) if params.targets else None
            found = [
                self._candidates(ids, p, probabilities[row][j], targets, params.top_k)
                for j, p in enumerate(masks[row])
            ]
            outputs.append(found[0] if len(found) == 1 else found)
        return outputs

    def _candidates(
        self,
        ids: list[int],
        position: int,
        probabilities: Any,
        targets: list[int] | None,
        top_k: int,
    ) -> list[dict[str, Any]]:
        if targets is not None:
            values = probabilities[targets]
            order = values.argsort(descending=True)[:top_k]
            picks = [(targets[int(i)], float(values[i])) for i in order]
        else:
            values, indices = probabilities.topk(min(top_k, len(probabilities)))
            picks = [(int(i), float(v)) for i, v in zip(indices, values, strict=True)]
        return [
            {
                "score": score,
                "token": token,
                "token_str": self.tokenizer.decode([token]),
                "sequence": self._sequence(ids, position, token),
            }
            for token, score in picks
        ]

    def _sequence(self, ids: list[int], position: int, token: int) -> str:
        """The text with this mask filled; other masks stay visible (the pipeline shows [CLS] and
        [SEP] too when a text has several masks: here only the masks are kept)."""
        filled = list(ids)
        filled[position] = token
        special = set(self.tokenizer.all_special_ids) - {self.tokenizer.mask_token_id}
        kept = [t for i, t in enumerate(filled) if t not in special or (i == position)]
        return self.tokenizer.decode(kept, skip_special_tokens=False).strip()  # type: ignore[no-any-return]

    def _target_ids(self, targets: list[str]) -> list[int]:
        vocab = self.tokenizer.get_vocab()
        ids: list[int] = []
        for target in targets:
            token = vocab.get(target)
            if token is None:
                pieces = self.tokenizer(target, add_special_tokens=False)["input_ids"]
                if not pieces:
                    raise InputError(
                        "parameters.targets", f"{target!r} has no token in this vocabulary; drop it"
                    )
                token = pieces[0]
            if token not in ids:
                ids.append(token)
        return ids


class FillMask(Task):
    name = "fill-mask"
    summary = "Masked language modelling: predict masked tokens."
    columns = ("text",)
    auto_model = "AutoModelForMaskedLM"
    metrics = ("perplexity",)
    default_metric = "perplexity"
    lower_is_better = frozenset({"loss", "perplexity"})
    pipeline_task = "fill-mask"
    Parameters = FillMaskParameters
    input_hint = MASKED_TEXT_HINT
    playground = Playground(form="text", result="fills")
    handler = FillMaskHandler
    preprocess = staticmethod(tokenize_language_modeling)
    evaluator_class = LanguageModelEvaluator

    def collator(
        self,
        tokenizer: Any,
        *,
        pad_to_multiple_of: int | None = None,
        mlm_probability: float = 0.15,
        seed: int | None = None,
        evaluation: bool = False,
    ) -> Any:
        from rayformers.data.collate import MaskingCollator

        if tokenizer.mask_token_id is None:
            raise DataError(
                "fill-mask needs a tokenizer with a mask token (e.g. [MASK] or <mask>); this one has none: "
                "set model.tokenizer to one that has"
            )
        return MaskingCollator(
            tokenizer.pad_token_id,
            tokenizer.mask_token_id,
            len(tokenizer),
            mlm_probability,
            pad_to_multiple_of,
            seed,
        )


TASK = FillMask()
