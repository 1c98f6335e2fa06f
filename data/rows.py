"""Row checks and the bad-row ledger: no row is dropped silently.

`check_rows` finds rows a task cannot use (a missing text, an unknown label, an answer that is not
in its context, ...). Under `data.on_bad_rows: fail` the first one stops the run with a
`DataError` naming the row and the fix; under `skip` it is dropped and counted in a `BadRows`
ledger whose summary every command prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rayformers.manifest import PreprocessSettings, label_key
from rayformers.tasks import TaskSpec

__all__ = ["BadRows", "DataError", "RowProblem", "SharedLedger", "check_rows", "report_bad_rows", "row_error"]

_FIX_SKIP = "fix the row, or set data.on_bad_rows: skip to drop such rows (they are counted and reported)"


class DataError(Exception):
    """A data problem the user can fix; its message says what and how."""


@dataclass(frozen=True)
class RowProblem:
    """Why one row cannot be used."""

    index: int
    reason: str
    detail: str


def _text_problem(value: Any, column: str) -> str | None:
    if value is None:
        return f"missing {column}"
    if not isinstance(value, str):
        return f"{column} is not text"
    if not value.strip():
        return f"empty {column}"
    return None


def _row_problem(
    row: Mapping[str, Any], columns: Sequence[str], label2id: Mapping[str, int]
) -> tuple[str, str] | None:
    for column in columns:
        value = row.get(column)
        if column in ("label",):
            if value is None:
                return "missing label", "the row has no label"
            if label_key(value) not in label2id:
                known = ", ".join(list(label2id)[:20])
                return "unknown label", f"label {value!r} is not one of the training labels ({known})"
        elif column == "tags":
            tokens, tags = row.get("tokens"), value
            if not isinstance(tags, Sequence) or isinstance(tags, str) or not isinstance(tokens, Sequence):
                return "malformed tags", "tokens and tags must both be lists"
            if len(tags) != len(tokens):
                return "tags do not match tokens", f"{len(tokens)} tokens but {len(tags)} tags"
            unknown = [t for t in tags if label_key(t) not in label2id]
            if unknown:
                return "unknown label", f"tag {unknown[0]!r} is not one of the training labels"
        elif column == "tokens":
            if not isinstance(value, Sequence) or isinstance(value, str) or not value:
                return "malformed tokens", "tokens must be a non-empty list of words"
            if not all(isinstance(t, str) and t.strip() for t in value):
                return "malformed tokens", "every token must be a non-empty string"
        elif column == "answers":
            problem = _answers_problem(value, row.get("context"))
            if problem:
                return "bad answer", problem
        else:
            problem = _text_problem(value, column)
            if problem:
                return problem, f"column {column!r} is {value!r}"
    return None


def _answers_problem(answers: Any, context: Any) -> str | None:
    if answers is None:
        return "missing answers (SQuAD format: {text: [...], answer_start: [...]}; empty lists: no answer)"
    if not isinstance(answers, Mapping):
        return f"answers must be a mapping {{text: [...], answer_start: [...]}}, got {type(answers).__name__}"
    texts, starts = answers.get("text"), answers.get("answer_start")
    if isinstance(texts, str):
        texts, starts = [texts], [starts]
    if texts is None or starts is None or len(texts) != len(starts):
        return "answers need lists `text` and `answer_start` of the same length"
    if not isinstance(context, str):
        return "missing context"
    for text, start in zip(texts, starts, strict=True):
        if not isinstance(start, int) or context[start : start + len(text)] != text:
            return f"answer {text!r} is not at character {start} of the context"
    return None


def check_rows(
    batch: Mapping[str, Sequence[Any]], task: TaskSpec, settings: PreprocessSettings, n: int
) -> list[RowProblem]:
    """The problems of a batch of `n` rows (task-side columns); an empty list means all rows are fine."""
    missing = [c for c in task.columns if c not in batch]
    if missing:
        raise DataError(
            f"column {missing[0]!r} needed by task {task.name} is not in the data; the columns are "
            f"{', '.join(sorted(k for k in batch if not k.startswith('_')))}. Map yours with "
            f"data.columns (e.g. data.columns.{missing[0]}: your_column)"
        )
    label2id = settings.label2id
    # Optional columns the data has (a sentence pair's second text) must be valid too; ids are free-form.
    checked = [*task.columns, *(c for c in task.optional_columns if c in batch and c != "id")]
    problems = []
    for i in range(n):
        row = {c: batch[c][i] for c in task.all_columns if c in batch}
        found = _row_problem(row, checked, label2id)
        if found:
            problems.append(RowProblem(i, found[0], found[1]))
    return problems


def row_error(problem: RowProblem, origin: str | None) -> DataError:
    """The error `on_bad_rows: fail` raises for one row."""
    where = f" ({origin})" if origin else ""
    return DataError(f"bad row{where}: {problem.reason}: {problem.detail}. Fix: {_FIX_SKIP}")


@dataclass
class BadRows:
    """Counts of skipped rows by reason, with a few examples of each. Runs as a Ray actor in pipelines."""

    examples_per_reason: int = 3
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def record(self, reason: str, count: int = 1, example: str | None = None) -> None:
        self.counts[reason] += count
        kept = self.examples.setdefault(reason, [])
        if example and len(kept) < self.examples_per_reason:
            kept.append(example)

    def record_many(self, entries: list[tuple[str, str]]) -> None:
        for reason, example in entries:
            self.record(reason, 1, example)

    def summary(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "examples": dict(self.examples)}

    def total(self) -> int:
        return sum(self.counts.values())


class _LedgerBook:
    """One Ray actor per cluster holding every pipeline's `BadRows`, keyed by ledger id: starting an
    actor per pipeline cost more than the pipelines themselves on small machines."""

    def __init__(self) -> None:
        self.ledgers: dict[str, BadRows] = {}

    def record_many(self, ledger_id: str, entries: list[tuple[str, str]]) -> None:
        self.ledgers.setdefault(ledger_id, BadRows()).record_many(entries)

    def summary(self, ledger_id: str) -> dict[str, Any]:
        return self.ledgers.get(ledger_id, BadRows()).summary()


_BOOK_NAME, _BOOK_NAMESPACE = "rayformers-bad-rows", "rayformers"
# The driver's own handle, per Ray job, keeps the book alive while the driver runs: a named actor dies
# when its creator drops its handle, whoever else still looks it up by name.
_book_handles: dict[str, Any] = {}


@dataclass(frozen=True)
class SharedLedger:
    """A picklable handle on one `BadRows` kept in the cluster's ledger book; usable from any task."""

    ledger_id: str

    @classmethod
    def new(cls) -> SharedLedger:
        """A fresh ledger; call it on the driver, which then owns the book."""
        import uuid

        import ray

        job = ray.get_runtime_context().get_job_id()
        if job not in _book_handles:
            handle = (
                ray.remote(num_cpus=0)(_LedgerBook)
                .options(name=_BOOK_NAME, namespace=_BOOK_NAMESPACE, get_if_exists=True)
                .remote()
            )
            ray.get(handle.__ray_ready__.remote())  # registered by name before any task looks it up
            _book_handles[job] = handle
        return cls(uuid.uuid4().hex)

    @staticmethod
    def _book() -> Any:
        import ray

        own = _book_handles.get(ray.get_runtime_context().get_job_id())
        return own if own is not None else ray.get_actor(_BOOK_NAME, namespace=_BOOK_NAMESPACE)

    def record_many(self, entries: list[tuple[str, str]]) -> None:
        import ray

        # Awaited: a fire-and-forget call could land after the driver read the summary.
        ray.get(self._book().record_many.remote(self.ledger_id, entries))

    def summary(self) -> dict[str, Any]:
        import ray

        return ray.get(self._book().summary.remote(self.ledger_id))  # type: ignore[no-any-return]


def report_bad_rows(ledger: BadRows | SharedLedger | None, entries: list[tuple[str, str]]) -> None:
    """Record skipped rows in `ledger` (a local `BadRows` or a `SharedLedger`)."""
    if ledger is not None and entries:
        ledger.record_many(entries)
