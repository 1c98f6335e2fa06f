"""`encode_inputs` reads token columns straight off the Rust encodings: they must be exactly what the
transformers call gives (ids, type ids, attention masks, truncation), for single texts and pairs, with
and without truncation, on WordPiece and byte-level BPE tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from rayformers.data.pipeline import to_arrow
from rayformers.data.preprocess import encode, encode_inputs, int_lists, model_inputs, truncated_rows
from rayformers.data.tokenizer import load_tokenizer
from rayformers.manifest import PreprocessSettings

SAMPLES = Path(__file__).resolve().parents[3] / "data" / "samples"


def _texts(n: int) -> list[str]:
    lines = (SAMPLES / "corpus" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line)["text"] for line in lines] + ["", "  ", "ünïcödé [MASK] 日本語", "a " * 300]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
@pytest.mark.parametrize("truncation", [True, False])
@pytest.mark.parametrize("paired", [False, True])
def test_encode_inputs_matches_the_transformers_call(kind, truncation, paired):
    tokenizer = load_tokenizer(str(SAMPLES / "tokenizers" / kind), "text-classification")
    settings = PreprocessSettings(task="text-classification", max_length=12, truncation=truncation)
    texts = _texts(60)
    pairs = list(reversed(texts)) if paired else None
    # The tokenizer has served other settings first: encode_inputs must set its own, as the call does.
    tokenizer(texts[:2], truncation=True, max_length=5, padding="max_length")
    ours = encode_inputs(tokenizer, settings, texts, pairs, "train")
    theirs = encode(tokenizer, settings, texts, pairs)
    expected = model_inputs(theirs)
    assert set(ours) == {*expected, "truncated"}
    for name, values in expected.items():
        assert isinstance(ours[name], pa.Array)
        assert ours[name].to_pylist() == [list(v) for v in values], name
    assert ours["truncated"].to_pylist() == truncated_rows(theirs, settings.max_length, len(texts))
    assert any(ours["truncated"].to_pylist()) == truncation
    inference = encode_inputs(tokenizer, settings, texts, pairs, "inference")
    assert inference == {k: v.to_pylist() for k, v in ours.items()}


def test_int_lists_keeps_rows_and_empty_rows():
    rows = [[1, 2, 3], [], [-100], list(range(1000))]
    column = int_lists(rows)
    assert column.type == pa.list_(pa.int32())
    assert column.to_pylist() == rows
    assert int_lists([]).to_pylist() == []


def test_to_arrow_takes_lists_and_arrow_columns_alike():
    table = to_arrow(
        {
            "input_ids": [[5, 6], [7]],
            "labels": [[1, -100], [0]],
            "attention_mask": pa.array([[1, 1], [1]], pa.list_(pa.int32())),
            "truncated": [False, True],
        }
    )
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("labels").type == pa.list_(pa.int32())
    assert table.to_pydict() == {
        "input_ids": [[5, 6], [7]],
        "labels": [[1, -100], [0]],
        "attention_mask": [[1, 1], [1]],
        "truncated": [False, True],
    }
