"""Records: raw rows turned into task-side columns, one batch at a time inside Ray Data tasks.

Three steps run fused in one `map_batches` task: decode (bytes of JSONL, text or CSV rows into
values; an undecodable line or malformed JSON object is a bad row), map the user's column names to
the task's, and route each row to the train or validation side of a seeded hold-out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from rayformers.data.rows import DataError, report_bad_rows

__all__ = ["RecordSpec", "prepare_records"]

ORIGIN = "_origin"


@dataclass(frozen=True)
class RecordSpec:
    """How raw rows of one split become task-side records."""

    raw: str | None
    """'jsonl', 'text' or 'csv' when rows arrive as bytes; None for typed sources (Parquet, hub)."""
    columns: dict[str, str]
    """Task column -> the user's column name."""
    required: tuple[str, ...]
    optional: tuple[str, ...]
    encoding: str = "utf-8"
    on_bad_rows: Literal["skip", "fail"] = "fail"
    holdout_fraction: float = 0.0
    holdout_keep: Literal["train", "validation"] = "train"
    seed: int = 0
    field: str = "data.train"


def _decode(
    table: pa.Table, spec: RecordSpec
) -> tuple[list[dict[str, Any]], list[str | None], list[tuple[str, str]]]:
    """Rows as dicts, their origins, and (reason, detail) of each bad row."""
    rows: list[dict[str, Any]] = []
    origins: list[str | None] = []
    bad: list[tuple[str, str]] = []
    names = table.column_names
    columns = {n: table.column(n).to_pylist() for n in names}
    raw_origins = columns.pop(ORIGIN, [None] * table.num_rows)
    for i in range(table.num_rows):
        origin = raw_origins[i]
        where = origin or f"row {i} of a batch"
        if spec.raw in ("jsonl", "text"):
            data = columns["_raw"][i]
            try:
                text = data.decode(spec.encoding).rstrip("\r")
            except UnicodeDecodeError as err:
                bad.append(
                    ("undecodable bytes", f"{where}: {err.reason} at byte {err.start} ({spec.encoding})")
                )
                continue
            if not text.strip():
                continue  # blank lines separate records; they are not rows
            if spec.raw == "text":
                rows.append({"text": text})
            else:
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as err:
                    bad.append(("malformed JSON", f"{where}: {err.msg} at column {err.colno}"))
                    continue
                if not isinstance(value, dict):
                    bad.append(
                        (
                            "malformed JSON",
                            f"{where}: a line must hold one JSON object, not {type(value).__name__}",
                        )
                    )
                    continue
                rows.append(value)
        elif spec.raw == "csv":
            row: dict[str, Any] = {}
            try:
                for name in names:
                    if name != ORIGIN:
                        cell = columns[name][i]
                        row[name] = None if cell is None else cell.decode(spec.encoding)
            except UnicodeDecodeError as err:
                bad.append(("undecodable bytes", f"{where}, column {name!r}: {err.reason} ({spec.encoding})"))
                continue
            rows.append(row)
        else:
            rows.append({n: columns[n][i] for n in columns})
        origins.append(origin)
    return rows, origins, bad


def _held_out(row: dict[str, Any], spec: RecordSpec) -> bool:
    content = json.dumps(row, sort_keys=True, default=str).encode()
    digest = hashlib.blake2b(content, digest_size=8, key=str(spec.seed).encode()).digest()
    return int.from_bytes(digest, "big") / 2**64 < spec.holdout_fraction


def prepare_records(table: pa.Table, spec: RecordSpec, ledger: Any = None) -> pa.Table:
    """Decode, map and split one batch. Bad rows raise (`fail`) or go to the ledger actor (`skip`)."""
    rows, origins, bad = _decode(table, spec)
    if bad:
        if spec.on_bad_rows == "fail":
            reason, detail = bad[0]
            raise DataError(
                f"bad row in {spec.field}: {reason}: {detail}. Fix the file, or set data.on_bad_rows: skip "
                "to drop such rows (they are counted and reported)"
            )
        report_bad_rows(ledger, bad)
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    out: dict[str, list[Any]] = {}
    for task_column in (*spec.required, *spec.optional):
        user_column = spec.columns.get(task_column, task_column)
        if user_column not in present:
            if task_column in spec.required and rows:
                mapped = f" (mapped from task column {task_column!r})" if user_column != task_column else ""
                raise DataError(
                    f"{spec.field}: column {user_column!r}{mapped} is not in the data; the columns are "
                    f"{', '.join(sorted(present)) or '(none)'}. Map yours with data.columns."
                    f"{task_column}: <your column>"
                )
            continue
        out[task_column] = [r.get(user_column) for r in rows]
    out[ORIGIN] = origins
    if spec.holdout_fraction > 0:
        keep_validation = spec.holdout_keep == "validation"
        mask = [_held_out(r, spec) == keep_validation for r in rows]
        out = {k: [v for v, m in zip(values, mask, strict=True) if m] for k, values in out.items()}
    return pa.Table.from_pydict(out)
