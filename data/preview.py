"""`rayformers data preview`: decoded rows and statistics of each tokenized split.

`preview_sample` is what the command runs: the first rows of each split (`sample`, 10,000 by default)
read, checked and tokenized in this process by the same functions the Ray pipeline runs, with no Ray
cluster to start, so a preview answers in seconds. Statistics cover those rows; the report says so,
and says when they are the whole split. `preview` reports on lazily tokenized Ray Datasets instead
(every row, one streaming pass), which shards in `data.tokenized` need.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pyarrow as pa

from rayformers.config import DataConfig, SourceConfig
from rayformers.data.pipeline import (
    TokenizeBatch,
    TokenizedData,
    label_column,
    name_integer_labels,
    preprocess_settings,
    record_spec,
)
from rayformers.data.records import prepare_records
from rayformers.data.rows import BadRows, DataError
from rayformers.data.sources import read_sample
from rayformers.data.stats import SplitSummary, decode_rows, summarize
from rayformers.data.tokenizer import load_tokenizer, tokenizer_class_path
from rayformers.manifest import PreprocessSettings
from rayformers.tasks import get_task

__all__ = ["DEFAULT_SAMPLE", "preview", "preview_sample"]

DEFAULT_SAMPLE = 10_000
"""Rows per split a preview reads: a few seconds of tokenizing on a laptop core."""


def preview(tokenized: TokenizedData, rows: int = 3) -> dict[str, Any]:
    """A report: task, labels, and per split its statistics and first `rows` rows, decoded."""
    splits = {
        name: summarize(dataset, tokenized.settings, keep_rows=rows)
        for name, dataset in (("train", tokenized.train), ("validation", tokenized.validation))
        if dataset is not None
    }
    tokenizer = load_tokenizer(tokenized.tokenizer_source, tokenized.settings.task)
    return _report(tokenized.settings, tokenizer, splits, tokenized.bad_rows())


def preview_sample(
    data: DataConfig,
    task_name: str,
    tokenizer_source: str,
    rows: int = 3,
    sample: int = DEFAULT_SAMPLE,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """The report of `preview`, over the first `sample` rows of each split, computed in this process.
    Its `sample` entry says how many rows were read per split and whether that was all of each."""
    if sample < 1:
        raise DataError(f"--sample {sample}: a preview needs at least one row per split; give 1 or more")
    task = get_task(task_name)
    held_out = data.validation is None and data.validation_fraction > 0
    split_sources: dict[str, tuple[SourceConfig, str, str | None]] = {
        "train": (data.train, "data.train", "train" if held_out else None)
    }
    if data.validation is not None:
        split_sources["validation"] = (data.validation, "data.validation", None)
    elif held_out:
        split_sources["validation"] = (data.train, "data.train", "validation")
    ledgers = {name: BadRows() for name in split_sources}
    records: dict[str, pa.Table] = {}
    complete: dict[str, bool] = {}
    hub_names: list[str] | None = None
    for name, (source, field, keep) in split_sources.items():
        # data.limit cuts the training split, as in a run; a limit within the sample makes it whole.
        limited = name == "train" and data.limit is not None and data.limit <= sample
        read = read_sample(source, field, data.limit if limited else sample, label_column(task, data))
        hub_names = hub_names or read.label_names
        spec = dataclasses.replace(record_spec(source, field, task, data, keep), raw=read.raw)
        table = prepare_records(read.table, spec, ledgers[name]) if read.table.num_rows else pa.table({})
        if hub_names and task.label_column:
            table = name_integer_labels(table, task.label_column, hub_names)
        records[name] = table
        complete[name] = read.complete or limited

    def values(column: str) -> list[Any]:
        table = records["train"]
        return table.column(column).to_pylist() if column in table.column_names else []

    settings = preprocess_settings(data, task, None, hub_names, values)
    tokenizer = load_tokenizer(
        tokenizer_source, task_name, revision=revision, trust_remote_code=trust_remote_code
    )
    splits = {}
    for name, table in records.items():
        tokenize = TokenizeBatch(
            tokenizer_source,
            settings.model_dump(mode="json"),
            data.on_bad_rows,
            ledgers[name],
            revision=revision,
            trust_remote_code=trust_remote_code,
            tokenizer_class=tokenizer_class_path(tokenizer),
            mode="evaluate" if name == "validation" else "train",
            threads=os.cpu_count() or 1,
        )
        summary, kept = SplitSummary(), []
        for start in range(0, table.num_rows, data.batch_size):
            out = tokenize(table.slice(start, data.batch_size))
            summary.add(out, settings)
            if len(kept) < rows and out.num_rows:
                kept.extend(out.slice(0, rows - len(kept)).to_pylist())
        splits[name] = (summary, kept)
    # Decoded with the tokenizer the rows were made with (its revision, its remote code).
    report = _report(settings, tokenizer, splits, {n: b.summary() for n, b in ledgers.items()})
    report["sample"] = {
        "rows_per_split": sample,
        "complete": complete,
        "note": (
            "statistics and labels cover every row"
            if all(complete.values())
            else f"statistics cover the first {sample:,} rows read of each split (--sample); "
            "`rayformers data tokenize` counts every row"
        ),
    }
    return report


def _report(
    settings: PreprocessSettings,
    tokenizer: Any,
    splits: dict[str, tuple[SplitSummary, list[dict[str, Any]]]],
    bad_rows: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    report: dict[str, Any] = {"task": settings.task, "max_length": settings.max_length, "splits": {}}
    if settings.labels is not None:
        report["labels"] = settings.labels.names
    for name, (summary, kept) in splits.items():
        report["splits"][name] = {"stats": summary.as_dict(), "rows": decode_rows(kept, tokenizer, settings)}
    report["bad_rows"] = bad_rows
    for name, split in report["splits"].items():
        if split["stats"]["rows"] == 0:
            skipped = sum(report["bad_rows"].get(name, {}).get("counts", {}).values())
            raise DataError(
                f"data.{name}: no rows are left after reading and filtering ({skipped} bad rows skipped); "
                "check the source, data.columns and data.limit"
            )
    return report
