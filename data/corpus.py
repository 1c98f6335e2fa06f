"""Texts streamed out of a config's training source: what a tokenizer is trained on."""

from __future__ import annotations

from collections.abc import Iterator

from rayformers.config import DataConfig
from rayformers.data.records import RecordSpec, prepare_records
from rayformers.data.rows import DataError
from rayformers.data.sources import read_source
from rayformers.tasks import get_task

__all__ = ["stream_texts"]


def stream_texts(data: DataConfig, task_name: str, column: str | None = None) -> Iterator[str]:
    """Every text of the training split's `column` (default: the task's text columns), streamed batch by
    batch; pre-split words are joined with spaces."""
    task = get_task(task_name)
    columns = [column] if column else list(task.text_columns)
    unknown = [c for c in columns if c not in task.all_columns]
    if unknown:
        raise DataError(
            f"--column {unknown[0]!r} is not a column of task {task.name}: use one of {task.all_columns}"
        )
    read = read_source(data.train, "data.train")
    spec = RecordSpec(
        raw=read.raw,
        columns=dict(data.columns),
        required=tuple(c for c in columns if c in task.columns),
        optional=tuple(c for c in columns if c not in task.columns),
        encoding=data.train.encoding,
        on_bad_rows=data.on_bad_rows,
        field="data.train",
    )
    dataset = read.dataset.map_batches(prepare_records, batch_format="pyarrow", fn_kwargs={"spec": spec})
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=1024):
        for name in columns:
            if name not in batch.column_names:
                continue
            for value in batch.column(name).to_pylist():
                if isinstance(value, list):
                    value = " ".join(str(v) for v in value)
                if isinstance(value, str) and value.strip():
                    yield value
