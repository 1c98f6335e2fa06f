"""What every task's preprocessing shares: the three modes, the encoding call, truncation flags.

Each task's own preprocessing lives in its task module (`Task.preprocess`): one function, three modes.
`mode="train"` adds what the loss needs (labels, answer positions); `mode="evaluate"` (the validation
split) is training's columns plus what a metric needs that token ids lose (for QA: a global example id,
the context and the gold answer texts); `mode="inference"` keeps what a handler needs to map predictions
back to text (offsets, word ids). Serving calls the same function, so a raw example gets identical token
ids on both sides. A preprocessing function takes a batch as columns of Python values (task-side column
names) and returns columns of per-row lists; every output also carries `truncated` so statistics can
report the truncation rate. Rows are assumed valid: `data.rows` checks them first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from rayformers.manifest import PreprocessSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["IGNORE_INDEX", "Columns", "Mode", "encode", "model_inputs", "truncated_rows"]

Mode = Literal["train", "evaluate", "inference"]
Columns = dict[str, list[Any]]
IGNORE_INDEX = -100
"""Label value the loss ignores (special tokens, continuation sub-tokens, padding)."""


def truncated_rows(encoding: Any, max_length: int, n: int) -> list[bool]:
    """Which rows lost tokens to truncation. Fast tokenizers record the cut pieces exactly."""
    encodings = getattr(encoding, "encodings", None)
    if encodings:
        return [bool(e.overflowing) for e in encodings]
    return [len(ids) >= max_length for ids in encoding["input_ids"][:n]]


def encode(
    tokenizer: PreTrainedTokenizerBase, settings: PreprocessSettings, *args: Any, **kwargs: Any
) -> Any:
    """The tokenizer called with the recorded truncation settings."""
    return tokenizer(
        *args,
        truncation=settings.truncation,
        max_length=settings.max_length if settings.truncation else None,
        **kwargs,
    )


def model_inputs(encoding: Any) -> Columns:
    """The columns of an encoding a model's forward takes."""
    return {k: list(v) for k, v in encoding.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
