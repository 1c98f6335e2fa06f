"""`data preview` without Ray: the first rows of each split read, checked and tokenized in this process,
with the pipeline's own record, row and label rules, and a report that says how much it covered."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayformers.config import DataConfig, SourceConfig
from rayformers.data.preview import preview_sample
from rayformers.data.rows import DataError
from rayformers.data.sources import read_sample

WORDPIECE = str(Path(__file__).resolve().parents[3] / "data" / "samples" / "tokenizers" / "wordpiece")


def _jsonl(path: Path, rows: list[dict], extra: bytes = b"") -> Path:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + extra)
    return path


ROWS = [{"text": f"the movie was {'great' if i % 3 else 'bad'} {i}", "label": "pos" if i % 3 else "neg"} for i in range(30)]  # fmt: skip


def test_a_small_split_is_previewed_whole_with_its_bad_rows_counted(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [*ROWS, {"text": "", "label": "pos"}], b"{not json\n")
    data = DataConfig.model_validate(
        {"train": {"path": str(train)}, "validation_fraction": 0.2, "on_bad_rows": "skip", "max_length": 16}
    )
    report = preview_sample(data, "text-classification", WORDPIECE, rows=2)
    train_stats, validation_stats = (report["splits"][s]["stats"] for s in ("train", "validation"))
    assert train_stats["rows"] + validation_stats["rows"] == 30 and validation_stats["rows"] > 0
    assert report["labels"] == ["neg", "pos"]
    assert sum(train_stats["labels"].values()) == train_stats["rows"]
    bad = {**report["bad_rows"]["train"]["counts"]}
    for reason, count in report["bad_rows"]["validation"]["counts"].items():
        bad[reason] = bad.get(reason, 0) + count
    assert bad.get("malformed JSON", 0) >= 1 and sum(bad.values()) >= 2
    assert report["sample"]["complete"] == {"train": True, "validation": True}
    assert "every row" in report["sample"]["note"]
    first = report["splits"]["train"]["rows"][0]
    assert first["tokens"][0] == "[CLS]" and first["label"] in ("neg", "pos")


def test_a_large_split_is_sampled_and_the_report_says_so(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    data = DataConfig.model_validate({"train": {"path": str(train)}, "validation_fraction": 0})
    report = preview_sample(data, "text-classification", WORDPIECE, rows=1, sample=10)
    assert report["splits"]["train"]["stats"]["rows"] == 10
    assert report["sample"]["complete"] == {"train": False}
    assert "first 10 rows" in report["sample"]["note"]
    whole = preview_sample(data, "text-classification", WORDPIECE, rows=1, sample=30)
    assert whole["sample"]["complete"] == {"train": True}


def test_a_bad_row_fails_with_its_file_and_line(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [*ROWS[:3], {"text": "x", "label": None}])
    data = DataConfig.model_validate(
        {"train": {"path": str(train)}, "validation_fraction": 0, "labels": ["neg", "pos"]}
    )
    with pytest.raises(DataError, match=rf"{train}:4.*missing label"):
        preview_sample(data, "text-classification", WORDPIECE)


def test_read_sample_takes_the_first_rows_of_every_format(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("text,label\n" + "".join(f"row {i},pos\n" for i in range(20)))
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(20)], "label": ["pos"] * 20}), parquet)
    array = tmp_path / "a.json"
    array.write_text(json.dumps([{"text": f"row {i}", "label": "pos"} for i in range(20)]))
    lines = _jsonl(tmp_path / "b.jsonl", [{"text": f"row {i}"} for i in range(20)])
    for path, raw in ((csv, "csv"), (parquet, None), (array, None), (lines, "jsonl")):
        sample = read_sample(SourceConfig(path=str(path)), "data.train", 5)
        assert (sample.table.num_rows, sample.raw, sample.complete) == (5, raw, False), path
        assert read_sample(SourceConfig(path=str(path)), "data.train", 20).complete, path
    first = read_sample(SourceConfig(path=str(lines)), "data.train", 5).table
    assert first.column("_raw").to_pylist()[0] == b'{"text": "row 0"}'
    assert first.column("_origin").to_pylist()[:2] == [f"{lines}:1", f"{lines}:2"]
