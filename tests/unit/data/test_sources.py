"""Path resolution and format inference happen on the driver, with errors that name the field."""

from __future__ import annotations

import pytest

from rayformers.data.rows import DataError
from rayformers.data.sources import infer_format, resolve_paths


def test_missing_file_names_field_path_and_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        resolve_paths("nope/train.jsonl", "data.train.path")
    message = str(err.value)
    assert "data.train.path" in message and "'nope/train.jsonl'" in message and str(tmp_path) in message


def test_globs_directories_and_cloud_uris(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.jsonl").write_text("{}\n")
    (tmp_path / "_SUCCESS").write_text("")
    assert resolve_paths(str(tmp_path / "*.jsonl"), "f") == [
        str(tmp_path / "a.jsonl"),
        str(tmp_path / "b.jsonl"),
    ]
    assert resolve_paths(str(tmp_path), "f") == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert resolve_paths(["s3://bucket/x.parquet"], "f") == ["s3://bucket/x.parquet"]
    with pytest.raises(DataError, match="no file matches"):
        resolve_paths(str(tmp_path / "*.csv"), "f")


def test_format_inference():
    assert infer_format(["a.csv", "b.tsv"], "auto", "data.train.path") == "csv"
    assert infer_format(["a.jsonl.gz"], "auto", "f") == "jsonl"
    assert infer_format(["a.whatever"], "parquet", "f") == "parquet"
    with pytest.raises(DataError, match=r"data\.train\.format"):
        infer_format(["a.whatever"], "auto", "data.train.path")
    with pytest.raises(DataError, match="mixed formats"):
        infer_format(["a.csv", "b.parquet"], "auto", "f")
