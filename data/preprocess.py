"""What every task's preprocessing shares: the three modes, the encoding call, truncation flags.

Each task's own preprocessing lives in its task module (`Task.preprocess`): one function, three modes.
`mode="train"` adds what the loss needs (labels, answer positions); `mode="evaluate"` (the validation
split) is training's columns plus what a metric needs that token ids lose (for QA: a global example id,
the context and the gold answer texts); `mode="inference"` keeps what a handler needs to map predictions
back to text (offsets, word ids). Serving calls the same function, so a raw example gets identical token
ids on both sides. A preprocessing function takes a batch as columns of Python values (task-side column
names) and returns columns: per-row lists, or Arrow arrays (what `encode_inputs` gives the pipeline's
modes, built from the Rust encodings without a Python list per row); every output also carries
`truncated` so statistics can report the truncation rate. Rows are assumed valid: `data.rows` checks
them first.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from rayformers.manifest import PreprocessSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "IGNORE_INDEX",
    "Columns",
    "Mode",
    "encode",
    "encode_inputs",
    "int_lists",
    "model_inputs",
    "truncated_rows",
]

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


def int_lists(rows: Sequence[Sequence[int]]) -> pa.ListArray:
    """Rows of ints as an Arrow list<int32> column, flattened through NumPy: `pa.array` on nested Python
    lists costs about 0.6 us per int, this about 0.02."""
    lengths = np.fromiter(map(len, rows), np.int64, len(rows))
    offsets = np.zeros(len(rows) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(rows), np.int32, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def encode_inputs(
    tokenizer: PreTrainedTokenizerBase,
    settings: PreprocessSettings,
    texts: list[str],
    pairs: list[str] | None,
    mode: Mode,
) -> Columns:
    """`model_inputs` and `truncated` of texts (and pairs), exactly as `encode` would give them, read
    straight off the Rust encodings: Arrow columns in the pipeline's modes, Python lists in `inference`
    (handlers index rows). Skips transformers' per-row conversion, the largest cost after the Rust
    encoding itself."""
    padding, truncation, max_length, _ = tokenizer._get_padding_truncation_strategies(
        padding=False,
        truncation=settings.truncation,
        max_length=settings.max_length if settings.truncation else None,
    )
    tokenizer.set_truncation_and_padding(  # type: ignore[attr-defined]
        padding_strategy=padding,
        truncation_strategy=truncation,
        max_length=max_length,
        stride=0,
        pad_to_multiple_of=None,
        padding_side=None,
    )
    backend = tokenizer.backend_tokenizer  # type: ignore[attr-defined]
    if backend.encode_special_tokens != tokenizer.split_special_tokens:  # type: ignore[attr-defined]
        backend.encode_special_tokens = tokenizer.split_special_tokens  # type: ignore[attr-defined]
    # The same encodings without character offsets, which no caller of this function reads: about a
    # third faster (tokenizers >= 0.20).
    encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)
    encodings = encode_batch(
        list(zip(texts, pairs, strict=True)) if pairs is not None else texts, add_special_tokens=True
    )
    ids = int_lists([e.ids for e in encodings])
    out: Columns = {"input_ids": ids}  # type: ignore[dict-item]
    if "token_type_ids" in tokenizer.model_input_names:
        out["token_type_ids"] = int_lists([e.type_ids for e in encodings])  # type: ignore[assignment]
    if "attention_mask" in tokenizer.model_input_names:
        # Nothing is padded here, so every position is attended: ones over the ids' offsets.
        ones = pa.array(np.ones(len(ids.values), np.int32))
        out["attention_mask"] = pa.ListArray.from_arrays(ids.offsets, ones)  # type: ignore[assignment]
    out["truncated"] = pa.array([bool(e.overflowing) for e in encodings])  # type: ignore[assignment]
    if mode == "inference":
        return {k: v.to_pylist() for k, v in out.items()}  # type: ignore[attr-defined]
    return out
