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
from typing import TYPE_CHECKING, Any

from rayformers.errors import UserError
from rayformers.manifest import PreprocessSettings

if TYPE_CHECKING:
    from rayformers.tasks.base import Task

__all__ = [
    "BadRows",
    "DataError",
    "RowProblem",
    "SharedLedger",
    "check_rows",
    "report_bad_rows",
    "row_error",
    "text_problem",
]

_FIX_SKIP = "fix the row, or set data.on_bad_rows: skip to drop such rows (they are counted and reported)"


class DataError(UserError):
    """A data problem the user can fix; its message says what and how."""


@dataclass(frozen=True)
class RowProblem:
    """Why one row cannot be used."""

    index: int
    reason: str
    detail: str


def text_problem(value: Any, column: str) -> str | None:
    """Why `value` is not a usable text for `column`, or None."""
    if value is None:
        return f"missing {column}"
    if not isinstance(value, str):
        return f"{column} is not text"
    if not value.strip():
        return f"empty {column}"
    return None


def check_rows(
    batch: Mapping[str, Sequence[Any]], task: Task, settings: PreprocessSettings, n: int
) -> list[RowProblem]:
    """The problems of a batch of `n` rows (task-side columns), as the task judges each row; an empty
    list means all rows are fine."""
    missing = [c for c in task.columns if c not in batch]
    if missing:
        raise DataError(
            f"column {missing[0]!r} needed by task {task.name} is not in the data; the columns are "
            f"{', '.join(sorted(k for k in batch if not k.startswith('_')))}. Map yours with "
            f"data.columns (e.g. data.columns.{missing[0]}: your_column)"
        )
    # Optional columns the data has (a sentence pair's second text) must be valid too.
    checked = [*task.columns, *(c for c in task.optional_columns if c in batch)]
    problems = []
    for i in range(n):
        row = {c: batch[c][i] for c in task.all_columns if c in batch}
        found = task.row_problem(row, checked, settings)
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
            # Not awaited: Ray registers a named actor's name before `.remote()` returns (that is how it
            # can raise ActorAlreadyExistsError), so tasks find it; its process starts meanwhile.
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
