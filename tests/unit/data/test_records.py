"""Decoding raw rows, column mapping and the seeded hold-out, one batch at a time (no Ray)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from rayformers.data.records import RecordSpec, prepare_records
from rayformers.data.rows import BadRows, DataError


def lines(*raw: bytes) -> pa.Table:
    return pa.table(
        {"_raw": pa.array(list(raw), pa.binary()), "_origin": [f"f.jsonl:{i + 1}" for i in range(len(raw))]}
    )


SPEC = RecordSpec(
    raw="jsonl", columns={"text": "sentence"}, required=("text", "label"), optional=("text_pair",)
)


def test_jsonl_rows_are_mapped_to_task_columns():
    table = lines(b'{"sentence": "good", "label": "pos"}', b"", b'{"sentence": "bad", "label": "neg"}\r')
    out = prepare_records(table, SPEC)
    assert out.column_names == ["text", "label", "_origin"]
    assert out.to_pydict() == {
        "text": ["good", "bad"],
        "label": ["pos", "neg"],
        "_origin": ["f.jsonl:1", "f.jsonl:3"],
    }


def test_malformed_json_fails_with_the_line_and_the_fix():
    with pytest.raises(DataError) as err:
        prepare_records(lines(b'{"sentence": "good", "label": "pos"}', b'{"sentence": "oops'), SPEC)
    assert (
        "f.jsonl:2" in str(err.value)
        and "malformed JSON" in str(err.value)
        and "on_bad_rows: skip" in str(err.value)
    )


def test_skip_mode_reports_every_bad_line():
    ledger = BadRows()
    table = lines(b'{"sentence": "good", "label": "pos"}', b"[1, 2]", b"\xff\xfe bad", b"{nope")
    spec = RecordSpec(**{**SPEC.__dict__, "on_bad_rows": "skip"})
    out = prepare_records(table, spec, ledger)
    assert out.num_rows == 1
    assert ledger.counts == {"malformed JSON": 2, "undecodable bytes": 1}
    assert "f.jsonl:3" in ledger.examples["undecodable bytes"][0]


def test_missing_column_names_the_mapping_and_the_columns():
    with pytest.raises(DataError) as err:
        prepare_records(lines(b'{"text": "good", "label": "pos"}'), SPEC)
    message = str(err.value)
    assert "'sentence'" in message and "label, text" in message and "data.columns.text" in message


def test_csv_cells_are_decoded_with_the_configured_encoding():
    table = pa.table(
        {
            "sentence": pa.array(["café".encode("latin-1")], pa.binary()),
            "label": pa.array([b"1"], pa.binary()),
        }
    )
    spec = RecordSpec(
        raw="csv", columns={"text": "sentence"}, required=("text", "label"), optional=(), encoding="latin-1"
    )
    assert prepare_records(table, spec).to_pydict()["text"] == ["café"]


def test_holdout_is_deterministic_and_complementary():
    rows = [json.dumps({"sentence": f"row {i}", "label": "x"}).encode() for i in range(400)]
    table = lines(*rows)
    train = prepare_records(
        table, RecordSpec(**{**SPEC.__dict__, "holdout_fraction": 0.25, "holdout_keep": "train", "seed": 3})
    )
    val = prepare_records(
        table,
        RecordSpec(**{**SPEC.__dict__, "holdout_fraction": 0.25, "holdout_keep": "validation", "seed": 3}),
    )
    assert train.num_rows + val.num_rows == 400
    assert not set(train.column("text").to_pylist()) & set(val.column("text").to_pylist())
    assert 60 < val.num_rows < 140
    again = prepare_records(
        table,
        RecordSpec(**{**SPEC.__dict__, "holdout_fraction": 0.25, "holdout_keep": "validation", "seed": 3}),
    )
    assert again.column("text").to_pylist() == val.column("text").to_pylist()
    other_seed = prepare_records(
        table,
        RecordSpec(**{**SPEC.__dict__, "holdout_fraction": 0.25, "holdout_keep": "validation", "seed": 4}),
    )
    assert other_seed.column("text").to_pylist() != val.column("text").to_pylist()


def test_typed_sources_pass_through():
    table = pa.table({"sentence": ["a"], "label": [1], "extra": [0.5]})
    out = prepare_records(
        table, RecordSpec(raw=None, columns={"text": "sentence"}, required=("text", "label"), optional=())
    )
    assert out.to_pydict() == {"text": ["a"], "label": [1], "_origin": [None]}
