"""Dynamic padding and MLM masking, on the inputs both training (NumPy object arrays from Ray Data)
and serving (Python lists) hand the collators."""

from __future__ import annotations

import numpy as np
import torch

from rayformers.data.collate import MaskingCollator, PaddingCollator
from rayformers.data.preprocess import IGNORE_INDEX


def ragged(*rows):
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        out[i] = np.asarray(row, dtype=np.int32)
    return out


def test_pads_to_longest_row_of_the_batch():
    batch = {
        "input_ids": ragged([5, 6, 7], [8]),
        "attention_mask": ragged([1, 1, 1], [1]),
        "labels": np.array([1, 0]),
    }
    out = PaddingCollator(pad_token_id=0)(batch)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [1, 0]
    assert out["input_ids"].dtype == torch.int64


def test_pads_to_a_multiple_and_ignores_non_model_columns():
    batch = {
        "input_ids": [[1, 2, 3]],
        "attention_mask": [[1, 1, 1]],
        "truncated": [False],
        "offset_mapping": [[(0, 1)]],
    }
    out = PaddingCollator(pad_token_id=9, pad_to_multiple_of=8)(batch)
    assert out["input_ids"].tolist() == [[1, 2, 3, 9, 9, 9, 9, 9]]
    assert set(out) == {"input_ids", "attention_mask"}


def test_sequence_labels_pad_with_ignore_index():
    out = PaddingCollator(0)(
        {"input_ids": [[1, 2], [3]], "attention_mask": [[1, 1], [1]], "labels": [[4, 5, 6], [7]]}
    )
    assert out["labels"].tolist() == [[4, 5, 6], [7, IGNORE_INDEX, IGNORE_INDEX]]


def test_causal_lm_labels_are_inputs_with_padding_ignored():
    out = PaddingCollator(2, causal_lm=True)(
        {"input_ids": [[4, 5, 2], [6]], "attention_mask": [[1, 1, 1], [1]]}
    )
    assert out["labels"].tolist() == [[4, 5, 2], [6, IGNORE_INDEX, IGNORE_INDEX]]


def test_masking_masks_only_ordinary_tokens_and_labels_only_masked_positions():
    rows = 64
    ids = [[2, *range(10, 40), 3] for _ in range(rows)]
    special = [[1, *([0] * 30), 1] for _ in range(rows)]
    batch = {"input_ids": ids, "attention_mask": [[1] * 32] * rows, "special_tokens_mask": special}
    out = MaskingCollator(pad_token_id=0, mask_token_id=4, vocab_size=50, mlm_probability=0.15, seed=0)(batch)
    labels, inputs = out["labels"], out["input_ids"]
    chosen = labels != IGNORE_INDEX
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    rate = chosen[:, 1:-1].float().mean().item()
    assert 0.11 < rate < 0.19
    original = torch.tensor(ids)
    assert torch.equal(labels[chosen], original[chosen])
    assert torch.equal(inputs[~chosen], original[~chosen])
    masked_share = (inputs[chosen] == 4).float().mean().item()
    assert 0.7 < masked_share < 0.9
    assert "special_tokens_mask" not in out


def test_each_task_builds_its_own_collator(wordpiece_dir):
    from transformers import AutoTokenizer

    from rayformers.tasks import get_task

    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    assert type(get_task("fill-mask").collator(tok)) is MaskingCollator
    causal = get_task("text-generation").collator(tok)
    assert type(causal) is PaddingCollator and causal.causal_lm
    assert not get_task("text-classification").collator(tok).causal_lm
    qa = get_task("question-answering")
    assert qa.collator(tok).passthrough == frozenset()
    assert qa.collator(tok, evaluation=True).passthrough == qa.evaluation_columns


def test_one_label_per_row_keeps_its_kind():
    batch = {"input_ids": [[1], [2]], "attention_mask": [[1], [1]]}
    ids = PaddingCollator(0)({**batch, "labels": np.array([1, 0], dtype=np.int32)})["labels"]
    scores = PaddingCollator(0)({**batch, "labels": [0.25, 1.0]})["labels"]
    assert ids.dtype == torch.int64 and scores.dtype == torch.float32
    assert scores.tolist() == [0.25, 1.0]


def test_evaluation_columns_pass_through_as_python_values_only_when_asked():
    offsets = np.empty(2, dtype=object)
    offsets[0] = np.array([[-1, -1], [0, 5]], dtype=np.int32)
    offsets[1] = np.array([[-1, -1]], dtype=np.int32)
    batch = {
        "input_ids": ragged([5, 6], [8]),
        "attention_mask": ragged([1, 1], [1]),
        "example_id": np.array(["a", "b"], dtype=object),
        "answer_texts": np.array(
            [np.array(["x", "y"], dtype=object), np.array([], dtype=object)], dtype=object
        ),
        "offset_mapping": offsets,
    }
    assert set(PaddingCollator(pad_token_id=0)(batch)) == {"input_ids", "attention_mask"}
    columns = frozenset({"example_id", "answer_texts", "offset_mapping"})
    out = PaddingCollator(pad_token_id=0, passthrough=columns)(batch)
    assert out["example_id"] == ["a", "b"]
    assert out["answer_texts"] == [["x", "y"], []]
    assert out["offset_mapping"] == [[[-1, -1], [0, 5]], [[-1, -1]]]
    assert all(type(v) is int for v in out["offset_mapping"][0][1])


def test_a_run_reads_only_the_columns_its_collator_uses():
    from rayformers.data.collate import read_columns
    from rayformers.tasks import get_task

    shards = ["input_ids", "attention_mask", "token_type_ids", "labels", "truncated"]
    assert read_columns(shards) == ["input_ids", "attention_mask", "token_type_ids", "labels"]
    # What the collator reads is what it emits: nothing read is dropped on the way to the model.
    batch = {"input_ids": [[1, 2], [3]], "attention_mask": [[1, 1], [1]], "token_type_ids": [[0, 0], [0]],
             "labels": [0, 1], "truncated": [False, True]}  # fmt: skip
    assert sorted(PaddingCollator(0)(batch)) == sorted(read_columns(shards))
    qa = get_task("question-answering")
    evaluation = [*shards[:3], "example_id", "offset_mapping", "context", "answer_texts", "truncated"]
    assert read_columns(evaluation, qa.evaluation_columns) == evaluation[:-1]
    assert read_columns(["input_ids", "special_tokens_mask", "word_ids"]) == [
        "input_ids",
        "special_tokens_mask",
    ]
