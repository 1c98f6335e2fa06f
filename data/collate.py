"""Collators: rows of token ids in, padded torch tensors out (dynamic padding per batch).

They accept what `iter_torch_batches` hands a collate function (a dict of NumPy arrays, ragged
columns as object arrays) and what a serving handler has (a dict of Python lists), so training and
serving pad the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rayformers.data.preprocess import IGNORE_INDEX

__all__ = ["MaskingCollator", "PaddingCollator", "read_columns"]

# Columns padded with the tokenizer's pad id, with 0, or with the ignored label.
_PAD_WITH_TOKEN = {"input_ids", "pair_input_ids"}
_PAD_WITH_ZERO = {
    "attention_mask",
    "token_type_ids",
    "pair_attention_mask",
    "pair_token_type_ids",
    "special_tokens_mask",
}
# One number per row that a loss reads (extractive QA's answer positions); `labels` may be one too.
_SCALARS = {"start_positions", "end_positions"}


def read_columns(available: Sequence[str], passthrough: frozenset[str] = frozenset()) -> list[str]:
    """The columns of `available` that a collator reads (with `passthrough` as evaluation asks): all a
    run needs to load from its shards. Anything else there (`truncated`, which statistics read) is
    never decoded or handed to the batches."""
    wanted = _PAD_WITH_TOKEN | _PAD_WITH_ZERO | _SCALARS | {"labels"} | passthrough
    return [c for c in available if c in wanted]


def _pad(rows: Sequence[Any], value: int, multiple: int | None) -> torch.Tensor:
    longest = max((len(r) for r in rows), default=0)
    if multiple:
        longest = -(-longest // multiple) * multiple
    out = np.full((len(rows), longest), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out)


def _plain(value: Any) -> Any:
    """A NumPy cell (Ray hands ragged columns over as object arrays) as plain Python values."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


class PaddingCollator:
    """Pads every sequence column to the longest row of the batch (optionally a multiple of N).

    Labels that are sequences (token classification, seq2seq) pad with -100 so the loss skips them;
    one label per row becomes an int64 tensor, or float32 when the labels are numbers with a fraction
    (relevance scores, regression targets). For causal LM (`causal_lm=True`) labels are the input ids
    with padding set to -100. The `passthrough` columns (what an evaluator reads that token ids lose,
    e.g. QA's example ids and contexts) come out as Python lists, never tensors; any other column is
    left out.
    """

    def __init__(
        self,
        pad_token_id: int,
        pad_to_multiple_of: int | None = None,
        causal_lm: bool = False,
        passthrough: frozenset[str] = frozenset(),
    ) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.causal_lm = causal_lm
        self.passthrough = passthrough

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, column in batch.items():
            if key in _PAD_WITH_TOKEN:
                out[key] = _pad(column, self.pad_token_id, self.pad_to_multiple_of)
            elif key in _PAD_WITH_ZERO:
                out[key] = _pad(column, 0, self.pad_to_multiple_of)
            elif key == "labels":
                first = column[0] if len(column) else 0
                if isinstance(first, (Sequence, np.ndarray)) and not isinstance(first, str):
                    out[key] = _pad(column, IGNORE_INDEX, self.pad_to_multiple_of)
                else:
                    values = np.asarray(column)
                    dtype = np.float32 if values.dtype.kind == "f" else np.int64
                    out[key] = torch.as_tensor(values.astype(dtype))
            elif key in _SCALARS:
                out[key] = torch.as_tensor(np.asarray(column, dtype=np.int64))
            elif key in self.passthrough:
                out[key] = [_plain(v) for v in column]
        if self.causal_lm and "input_ids" in out:
            labels = out["input_ids"].clone()
            labels[out["attention_mask"] == 0] = IGNORE_INDEX
            out["labels"] = labels
        return out


class MaskingCollator(PaddingCollator):
    """Pads, then masks `mlm_probability` of the non-special tokens as BERT does (80% [MASK], 10%
    a random token, 10% unchanged); only masked positions carry labels."""

    def __init__(
        self,
        pad_token_id: int,
        mask_token_id: int,
        vocab_size: int,
        mlm_probability: float = 0.15,
        pad_to_multiple_of: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(pad_token_id, pad_to_multiple_of)
        self.mask_token_id = mask_token_id
        self.vocab_size = vocab_size
        self.mlm_probability = mlm_probability
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = super().__call__(batch)
        input_ids = out["input_ids"]
        special = out.pop("special_tokens_mask", None)
        if special is None:
            special = torch.zeros_like(input_ids)
        maskable = (special == 0) & (out["attention_mask"] == 1)
        probability = torch.full(input_ids.shape, self.mlm_probability)
        chosen = torch.bernoulli(probability, generator=self.generator).bool() & maskable
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        draw = torch.rand(input_ids.shape, generator=self.generator)
        masked = input_ids.clone()
        masked[chosen & (draw < 0.8)] = self.mask_token_id
        randomized = chosen & (draw >= 0.8) & (draw < 0.9)
        random_ids = torch.randint(self.vocab_size, input_ids.shape, generator=self.generator)
        masked[randomized] = random_ids[randomized]
        out["input_ids"] = masked
        out["labels"] = labels
        return out
