"""Per-task preprocessing: raw columns in, model inputs out. One function per task, two modes.

`mode="train"` adds what the loss needs (labels, answer positions); `mode="evaluate"` (the validation
split) is training's columns plus what a metric needs that token ids lose (for QA: a global example
id, the context and the gold answer texts); `mode="inference"` keeps what a handler needs to map
predictions back to text (offsets, word ids). Serving calls these same
functions, so a raw example gets identical token ids on both sides. Each function takes a batch as
columns of Python values (task-side column names) and returns columns of per-row lists; every
output column also carries `truncated` so statistics can report the truncation rate. Rows are
assumed valid: `data.rows` checks them first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from rayformers.manifest import PreprocessSettings, label_key

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "IGNORE_INDEX",
    "Mode",
    "example_id",
    "split_words",
    "tokenize_causal_lm",
    "tokenize_classification",
    "tokenize_embedding_pairs",
    "tokenize_language_modeling",
    "tokenize_question_answering",
    "tokenize_seq2seq",
    "tokenize_token_classification",
]

Mode = Literal["train", "evaluate", "inference"]
Columns = dict[str, list[Any]]
IGNORE_INDEX = -100
"""Label value the loss ignores (special tokens, continuation sub-tokens, padding)."""

_WORD = re.compile(r"\S+")


def _truncated(encoding: Any, max_length: int, n: int) -> list[bool]:
    """Which rows lost tokens to truncation. Fast tokenizers record the cut pieces exactly."""
    encodings = getattr(encoding, "encodings", None)
    if encodings:
        return [bool(e.overflowing) for e in encodings]
    return [len(ids) >= max_length for ids in encoding["input_ids"][:n]]


def _encode(
    tokenizer: PreTrainedTokenizerBase, settings: PreprocessSettings, *args: Any, **kwargs: Any
) -> Any:
    return tokenizer(
        *args,
        truncation=settings.truncation,
        max_length=settings.max_length if settings.truncation else None,
        **kwargs,
    )


def _inputs(encoding: Any) -> Columns:
    return {k: list(v) for k, v in encoding.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def tokenize_classification(
    batch: Mapping[str, Sequence[Any]],
    tokenizer: PreTrainedTokenizerBase,
    settings: PreprocessSettings,
    mode: Mode = "train",
) -> Columns:
    """Single texts, or sentence pairs when the batch has `text_pair` (also NLI for zero-shot)."""
    texts = list(batch["text"])
    pairs = list(batch["text_pair"]) if batch.get("text_pair") is not None else None
    encoding = _encode(tokenizer, settings, texts, pairs)
    out = _inputs(encoding)
    out["truncated"] = _truncated(encoding, settings.max_length, len(texts))
    if mode != "inference":
        label2id = settings.label2id
        out["labels"] = [label2id[label_key(v)] for v in batch["label"]]
    return out


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Whitespace words of `text` and their character spans: how raw text meets pre-split training data."""
    matches = list(_WORD.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def tokenize_token_classification(
    batch: Mapping[str, Sequence[Any]],
    tokenizer: PreTrainedTokenizerBase,
    settings: PreprocessSettings,
    mode: Mode = "train",
) -> Columns:
    """Pre-split words in training (`tokens`, `tags`); raw `text` split on whitespace at inference.

    Training labels sit on each word's first sub-token; continuation sub-tokens and special tokens get
    -100 (or, with `label_all_tokens`, the word's label with B- turned into I-).
    """
    if mode != "inference":
        words = [list(w) for w in batch["tokens"]]
        spans: list[list[tuple[int, int]]] = []
    else:
        split = [split_words(t) for t in batch["text"]]
        words, spans = [w for w, _ in split], [s for _, s in split]
    encoding = _encode(
        tokenizer, settings, words, is_split_into_words=True, return_offsets_mapping=mode == "inference"
    )
    out = _inputs(encoding)
    out["truncated"] = _truncated(encoding, settings.max_length, len(words))
    word_ids = [[-1 if w is None else w for w in encoding.word_ids(i)] for i in range(len(words))]
    if mode == "inference":
        out["word_ids"] = word_ids
        # Offsets of split words are relative to each word: shift them to character positions in the text.
        out["offset_mapping"] = [
            [
                (spans[i][w][0] + s, spans[i][w][0] + e) if w >= 0 else (-1, -1)
                for w, (s, e) in zip(ids, offs, strict=True)
            ]
            for i, (ids, offs) in enumerate(zip(word_ids, encoding["offset_mapping"], strict=True))
        ]
        return out
    label2id = settings.label2id
    labels = []
    for row, ids in zip(batch["tags"], word_ids, strict=True):
        tags = [label_key(t) for t in row]
        previous = -1
        row_labels = []
        for w in ids:
            if w < 0:
                row_labels.append(IGNORE_INDEX)
            elif w != previous:
                row_labels.append(label2id[tags[w]])
            elif settings.label_all_tokens:
                tag = tags[w]
                inside = "I-" + tag[2:] if tag.startswith("B-") else tag
                row_labels.append(label2id.get(inside, label2id[tag]))
            else:
                row_labels.append(IGNORE_INDEX)
            previous = w
        labels.append(row_labels)
    out["labels"] = labels
    return out


def tokenize_question_answering(
    batch: Mapping[str, Sequence[Any]],
    tokenizer: PreTrainedTokenizerBase,
    settings: PreprocessSettings,
    mode: Mode = "train",
) -> Columns:
    """Question + context in overflow windows of `max_length` sharing `stride` tokens.

    Each window records the example it came from and the character offsets of its context tokens
    ((-1, -1) elsewhere), which span decoding needs; in training each window also gets the answer's
    start and end token, or the first token's index when the answer is not inside the window.
    """
    questions = [q.lstrip() for q in batch["question"]]
    contexts = list(batch["context"])
    pad_on_right = tokenizer.padding_side == "right"
    encoding = tokenizer(
        questions if pad_on_right else contexts,
        contexts if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=settings.max_length,
        stride=settings.stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    example_index = list(encoding["overflow_to_sample_mapping"])
    context_id = 1 if pad_on_right else 0
    offsets: list[list[tuple[int, int]]] = []
    for i, row_offsets in enumerate(encoding["offset_mapping"]):
        sequence_ids = encoding.sequence_ids(i)
        offsets.append(
            [
                tuple(o) if s == context_id else (-1, -1)
                for o, s in zip(row_offsets, sequence_ids, strict=True)
            ]  # type: ignore[misc]
        )
    out = _inputs(encoding)
    out["example_index"] = example_index
    out["offset_mapping"] = offsets
    # A window that ends before its context does means the example needed more than one window.
    counts: dict[int, int] = {}
    for e in example_index:
        counts[e] = counts.get(e, 0) + 1
    out["truncated"] = [counts[e] > 1 for e in example_index]
    if mode == "evaluate":
        # Windows of one example may land in different batches and on different workers: the id lets
        # evaluation regroup them and score the best span's text against every gold answer.
        out["example_id"] = [example_id(questions[e], contexts[e]) for e in example_index]
        out["context"] = [contexts[e] for e in example_index]
        out["answer_texts"] = [
            [str(t) for t in ((batch["answers"][e] or {}).get("text") or [])] for e in example_index
        ]
    if mode != "inference":
        starts, ends = [], []
        for i, window in enumerate(offsets):
            answers = batch["answers"][example_index[i]] or {}
            start, end = _answer_tokens(window, answers)
            starts.append(start)
            ends.append(end)
        out["start_positions"] = starts
        out["end_positions"] = ends
    return out


def example_id(question: str, context: str) -> str:
    """A stable id of one QA example, the same on every worker and in every batch."""
    digest = hashlib.blake2b(f"{question}\x00{context}".encode(), digest_size=8)
    return digest.hexdigest()


def _answer_tokens(window: list[tuple[int, int]], answers: Mapping[str, Any]) -> tuple[int, int]:
    texts, starts = list(answers.get("text") or []), list(answers.get("answer_start") or [])
    if not texts:
        return 0, 0
    start_char = int(starts[0])
    end_char = start_char + len(texts[0])
    context = [i for i, (s, _) in enumerate(window) if s >= 0]
    if not context or window[context[0]][0] > start_char or window[context[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in context if window[i][1] > start_char)
    end = next(i for i in reversed(context) if window[i][0] < end_char)
    return start, end


def tokenize_language_modeling(
    batch: Mapping[str, Sequence[Any]],
    tokenizer: PreTrainedTokenizerBase,
    settings: PreprocessSettings,
    mode: Mode = "train",
) -> Columns:
    """Masked LM: texts with their special-token mask; masking itself happens per batch at collate time."""
    texts = list(batch["text"])
    encoding = _encode(tokenizer, settings, texts, return_special_tokens_mask=True)
    out = _inputs(encoding)
    out["special_tokens_mask"] = list(encoding["special_tokens_mask"])
    out["truncated"] = _truncated(encoding, settings.max_length, len(texts))
    return out


def tokenize_causal_lm(
    batch: Mapping[str, Sequence[Any]],
    tokenizer: PreTrainedTokenizerBase,
    settings: PreprocessSettings,
    mode: Mode = "train",
) -> Columns:
    """Causal LM. Training appends EOS to each text; with `packing`, a batch's texts are concatenated
    and cut into blocks of `max_length` (the last, shorter block is kept, so no token is lost)."""
    texts = list(batch["text"])
    if mode == "inference":
        encoding = tokenizer(
            texts,
            add_special_tokens=True,
            truncation=settings.truncation,
            max_length=settings.max_length if settings.truncation else None,
        )
        out = _inputs(encoding)
        out["truncated"] = _truncated(encoding, settings.max_length, len(texts))
        return out
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None:
        ids = [row if row and row[-1] == eos else [*row, eos] for row in ids]
    size = settings.max_length
    if settings.packing:
        stream = [t for row in ids for t in row]
        blocks = [stream[i : i + size] for i in range(0, len(stream), size)]
        truncated = [False] * len(blocks)
    else:
        truncated = [len(row) > size for row in ids]
        blocks = [row[:size] for row in ids]
    return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks], "truncated": truncated}


def tokenize_seq2seq(
    batch: Mapping[str, Sequence[Any]],
    tokenizer: PreTrainedTokenizerBase,
    settings: PreprocessSettings,
    mode: Mode = "train",
) -> Columns:
    """Summarization and translation: `source_prefix` + text as input; `target` as labels in training."""
    texts = [settings.source_prefix + t for t in batch["text"]]
    encoding = _encode(tokenizer, settings, texts)
    out = _inputs(encoding)
    out["truncated"] = _truncated(encoding, settings.max_length, len(texts))
    if mode != "inference":
        targets = tokenizer(
            text_target=list(batch["target"]), truncation=True, max_length=settings.max_target_length
        )
        out["labels"] = list(targets["input_ids"])
    return out


def tokenize_embedding_pairs(
    batch: Mapping[str, Sequence[Any]],
    tokenizer: PreTrainedTokenizerBase,
    settings: PreprocessSettings,
    mode: Mode = "train",
) -> Columns:
    """Feature extraction: each text alone; in training also its positive `text_pair`, encoded
    separately (as `pair_*` columns) for an in-batch contrastive loss."""
    texts = list(batch["text"])
    encoding = _encode(tokenizer, settings, texts)
    out = _inputs(encoding)
    out["truncated"] = _truncated(encoding, settings.max_length, len(texts))
    if mode != "inference":
        pairs = _encode(tokenizer, settings, list(batch["text_pair"]))
        for key, value in _inputs(pairs).items():
            out[f"pair_{key}"] = value
    return out
