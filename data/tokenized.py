"""`TokenizedData`: what the data stage hands training and the CLI, however it was made (tokenized by
the pipeline now, or read back from shards `rayformers data tokenize` wrote)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rayformers.manifest import PreprocessSettings

if TYPE_CHECKING:
    import ray.data

__all__ = ["TokenizedData"]


@dataclass
class TokenizedData:
    """The tokenized splits (lazy Ray Datasets) and everything needed to reproduce them."""

    train: ray.data.Dataset
    validation: ray.data.Dataset | None
    settings: PreprocessSettings
    tokenizer_source: str
    ledgers: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None
    """The tokenizer the splits were made with, loaded on the driver (None: load it from the source)."""

    def bad_rows(self) -> dict[str, dict[str, Any]]:
        """Skipped rows per split: {'train': {'counts': {...}, 'examples': {...}}, ...}."""
        return {split: ledger.summary() for split, ledger in self.ledgers.items()}
