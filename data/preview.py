"""`rayformers data preview`: decoded rows and statistics of each tokenized split, one streaming pass."""

from __future__ import annotations

from typing import Any

from rayformers.data.pipeline import TokenizedData
from rayformers.data.rows import DataError
from rayformers.data.stats import decode_rows, summarize
from rayformers.data.tokenizer import load_tokenizer

__all__ = ["preview"]


def preview(tokenized: TokenizedData, rows: int = 3) -> dict[str, Any]:
    """A report: task, labels, and per split its statistics and first `rows` rows, decoded."""
    settings = tokenized.settings
    tokenizer = load_tokenizer(tokenized.tokenizer_source, settings.task)
    report: dict[str, Any] = {"task": settings.task, "max_length": settings.max_length, "splits": {}}
    if settings.labels is not None:
        report["labels"] = settings.labels.names
    for name, dataset in (("train", tokenized.train), ("validation", tokenized.validation)):
        if dataset is None:
            continue
        summary, kept = summarize(dataset, settings, keep_rows=rows)
        report["splits"][name] = {"stats": summary.as_dict(), "rows": decode_rows(kept, tokenizer, settings)}
    report["bad_rows"] = tokenized.bad_rows()
    for name, split in report["splits"].items():
        if split["stats"]["rows"] == 0:
            skipped = sum(report["bad_rows"].get(name, {}).get("counts", {}).values())
            raise DataError(
                f"data.{name}: no rows are left after reading and filtering ({skipped} bad rows skipped); "
                "check the source, data.columns and data.limit"
            )
    return report
