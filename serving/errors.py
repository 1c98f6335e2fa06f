"""Errors the serving stage raises, as plain exceptions.

The HTTP layer maps them to status codes, but nothing here imports a web framework: handlers and the
checkpoint loader stay testable without one, and every message says what was wrong and how to fix it,
because it reaches the client verbatim. A request's own bad input is the task layer's `InputError` and
a checkpoint that cannot be served the checkpoint contract's `CheckpointError`; both are named here too,
so the HTTP layer finds every error it maps in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

from rayformers.errors import UserError
from rayformers.tasks.checkpoint import CheckpointError
from rayformers.tasks.handler import InputError

__all__ = [
    "CheckpointError",
    "InputError",
    "OverloadedError",
    "ServingError",
    "TooManyTokensError",
    "UnknownAdapterError",
]


class ServingError(UserError):
    """Base class of the errors only the serving stage raises."""


class UnknownAdapterError(ServingError):
    """A request for a LoRA adapter this replica has not loaded (HTTP 404); lists the known ones."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = list(known)
        listed = (
            ", ".join(repr(k) for k in self.known) if self.known else "none (this checkpoint has no adapters)"
        )
        super().__init__(
            f"unknown adapter {name!r}; known adapters: {listed}. Omit the adapter to use the default"
        )

    def __reduce__(self) -> tuple[type[UnknownAdapterError], tuple[str, list[str]]]:
        return (type(self), (self.name, self.known))


class TooManyTokensError(ServingError):
    """A request needing more tokens in one model call than the app allows (HTTP 413)."""


class OverloadedError(ServingError):
    """The replica already holds as many requests as it admits (HTTP 503 with Retry-After)."""
