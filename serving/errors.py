"""Errors the serving stage raises, as plain exceptions.

The HTTP layer maps them to status codes (each class carries the one it suggests in `status`), but
nothing here imports a web framework: handlers and the checkpoint loader stay testable without one,
and every message says what was wrong and how to fix it, because it reaches the client verbatim.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

__all__ = ["CheckpointError", "InputError", "ServingError", "UnknownAdapterError"]


class ServingError(Exception):
    """Base class of every error the serving stage raises on purpose."""

    status: ClassVar[int] = 500
    """The HTTP status this error should become (a hint for the HTTP layer, not an HTTP dependency)."""


class CheckpointError(ServingError):
    """A checkpoint that cannot be served as asked: missing, malformed, or not the task requested."""

    status: ClassVar[int] = 500


class InputError(ServingError):
    """A request whose inputs or parameters the model cannot process (HTTP 422).

    `field` is the dotted path of the offending value (`inputs`, `inputs[2].context`,
    `parameters.candidate_labels`) so a client can point at it; `message` names the bad value and the fix.
    """

    status: ClassVar[int] = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str]]:
        # Ray ships exceptions between processes by pickling: keep both arguments.
        return (type(self), (self.field, self.message))


class UnknownAdapterError(ServingError):
    """A request for a LoRA adapter this replica has not loaded (HTTP 404); lists the known ones."""

    status: ClassVar[int] = 404

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
