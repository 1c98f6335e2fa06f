"""Statistics and decoded previews of tokenized splits, computed while streaming."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rayformers.data.preprocess import IGNORE_INDEX
from rayformers.manifest import PreprocessSettings

__all__ = ["SplitSummary", "decode_rows", "summarize"]


@dataclass
class SplitSummary:
    """What one tokenized split holds."""

    rows: int = 0
    tokens: int = 0
    truncated: int = 0
    longest: int = 0
    labels: Counter[str] = field(default_factory=Counter)

    @property
    def mean_length(self) -> float:
        return self.tokens / self.rows if self.rows else 0.0

    @property
    def truncation_rate(self) -> float:
        return self.truncated / self.rows if self.rows else 0.0

    def add(self, table: pa.Table, settings: PreprocessSettings) -> None:
        if table.num_rows == 0:
            return
        lengths = pc.list_value_length(table.column("input_ids"))
        self.rows += table.num_rows
        self.tokens += int(pc.sum(lengths).as_py() or 0)
        self.longest = max(self.longest, int(pc.max(lengths).as_py() or 0))
        if "truncated" in table.column_names:
            self.truncated += int(pc.sum(table.column("truncated").cast(pa.int64())).as_py() or 0)
        if settings.labels is not None and "labels" in table.column_names:
            names = settings.labels.names
            column = table.column("labels")
            if pa.types.is_list(column.type):
                column = pc.list_flatten(column)
            for item in pc.value_counts(column).to_pylist():
                if item["values"] != IGNORE_INDEX:
                    self.labels[names[item["values"]]] += item["counts"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "tokens": self.tokens,
            "mean_length": round(self.mean_length, 2),
            "longest": self.longest,
            "truncated_rows": self.truncated,
            "truncation_rate": round(self.truncation_rate, 4),
            "labels": dict(sorted(self.labels.items())),
        }


def summarize(
    dataset: Any, settings: PreprocessSettings, keep_rows: int = 0, batch_size: int = 4096
) -> tuple[SplitSummary, list[dict[str, Any]]]:
    """Stream a tokenized Ray Dataset once: count rows, tokens, truncation and labels, and keep the
    first `keep_rows` rows for a preview."""
    summary = SplitSummary()
    kept: list[dict[str, Any]] = []
    for table in dataset.iter_batches(batch_format="pyarrow", batch_size=batch_size):
        if len(kept) < keep_rows:
            kept.extend(table.slice(0, keep_rows - len(kept)).to_pylist())
        summary.add(table, settings)
    return summary, kept


def decode_rows(
    rows: list[dict[str, Any]], tokenizer: Any, settings: PreprocessSettings
) -> list[dict[str, Any]]:
    """Tokenized rows made readable: tokens, decoded labels or targets, QA answer spans."""
    names = settings.labels.names if settings.labels is not None else None
    shown = []
    for row in rows:
        ids = list(row["input_ids"])
        item: dict[str, Any] = {"tokens": tokenizer.convert_ids_to_tokens(ids), "length": len(ids)}
        labels = row.get("labels")
        if labels is not None and names is not None:
            if isinstance(labels, (int,)) or getattr(labels, "ndim", 1) == 0:
                item["label"] = names[int(labels)]
            else:
                item["labels"] = [names[int(x)] if int(x) != IGNORE_INDEX else None for x in labels]
        elif isinstance(labels, (int, float)):
            item["label"] = labels  # a score (text ranking's relevance), not a class
        elif labels is not None:
            item["target"] = tokenizer.decode([int(x) for x in labels if int(x) != IGNORE_INDEX])
        if "start_positions" in row:
            start, end = int(row["start_positions"]), int(row["end_positions"])
            item["answer"] = tokenizer.decode(ids[start : end + 1]) if start or end else None
        if "pair_input_ids" in row:
            item["pair_tokens"] = tokenizer.convert_ids_to_tokens(list(row["pair_input_ids"]))
        item["truncated"] = bool(row.get("truncated", False))
        shown.append(item)
    return shown
