"""What the stages hand each other on disk: preprocessing settings, label maps, and the manifests of
tokenized shards and of checkpoints.

These are recorded when data is tokenized and when a checkpoint is written, and read back as they
were: serving tokenizes with the settings training used and maps ids to the labels training saw,
never re-deriving either. Only the models live here; each manifest has one reader and writer, beside the
files it describes (`rayformers.data.shards`, `rayformers.tasks.checkpoint`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rayformers.config import DataConfig
from rayformers.tasks import TaskName

__all__ = [
    "CheckpointManifest",
    "DataManifest",
    "LabelMap",
    "PreprocessSettings",
    "label_key",
]


_VERSIONED = ("rayformers", "ray", "torch", "transformers", "peft", "tokenizers", "datasets", "pyarrow")


def package_versions(names: tuple[str, ...] = _VERSIONED) -> dict[str, str]:
    """Installed versions of `names`: by default the packages that decide how data is tokenized and
    models behave."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def label_key(value: Any) -> str:
    """The canonical string form of a raw label (ints, numeric strings, floats like 1.0 and bools agree)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@functools.lru_cache(maxsize=64)
def _index(names: tuple[str, ...]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


class LabelMap(_Record):
    """Label names in id order; ids are positions."""

    names: list[str] = Field(description="Label names; the id of a label is its index.")

    @classmethod
    def from_values(cls, values: Iterable[Any]) -> LabelMap:
        """Derive a map from the distinct raw labels of a training split.

        Integer labels 0..K-1 keep their ids (datasets often ship them that way); anything else is
        sorted by name, so the same data always gives the same map.
        """
        keys = {label_key(v) for v in values}
        if keys and all(k.lstrip("-").isdigit() for k in keys):
            ints = sorted(int(k) for k in keys)
            if ints == list(range(len(ints))):
                return cls(names=[str(i) for i in ints])
        return cls(names=sorted(keys))

    @property
    def label2id(self) -> dict[str, int]:
        """Name -> id, built once per list of names (the data stage looks a label up per row): read it,
        never change it."""
        return _index(tuple(self.names))

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def __len__(self) -> int:
        return len(self.names)


class PreprocessSettings(_Record):
    """Everything that decides how one example becomes model inputs. Recorded in every manifest."""

    task: TaskName
    max_length: int
    max_target_length: int = 64
    truncation: bool = True
    stride: int = 32
    packing: bool = False
    label_all_tokens: bool = False
    source_prefix: str = ""
    labels: LabelMap | None = None
    task_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="What the task itself derived from the training data and needs again at serve time "
        "(set by its `finish_settings`; most tasks have none).",
    )

    @classmethod
    def from_config(cls, data: DataConfig, task: str, labels: LabelMap | None) -> PreprocessSettings:
        return cls(
            task=task,
            max_length=data.max_length,
            max_target_length=data.max_target_length,
            truncation=data.truncation,
            stride=data.stride,
            packing=data.packing,
            label_all_tokens=data.label_all_tokens,
            source_prefix=data.source_prefix,
            labels=labels,
        )

    @property
    def label2id(self) -> dict[str, int]:
        return self.labels.label2id if self.labels is not None else {}


class SplitStats(_Record):
    """Counts for one tokenized split."""

    rows: int = Field(description="Tokenized rows written (QA windows and packing change the count).")
    tokens: int = Field(description="Input tokens written.")
    truncated_rows: int = Field(default=0, description="Rows that lost tokens to truncation.")
    labels: dict[str, int] = Field(default_factory=dict, description="Label distribution.")
    bad_rows: dict[str, int] = Field(default_factory=dict, description="Skipped rows by reason.")


class DataManifest(_Record):
    """`manifest.json` of a directory written by `rayformers data tokenize`."""

    kind: Literal["rayformers.tokenized"] = "rayformers.tokenized"
    format_version: int = 1
    source: dict[str, Any] = Field(description="The data config the shards came from.")
    tokenizer: str = Field(description="Where the tokenizer was loaded from.")
    tokenizer_hash: str = Field(description="sha256 of the tokenizer's files.")
    preprocessing: PreprocessSettings
    splits: dict[str, SplitStats]
    columns: list[str]
    versions: dict[str, str]


class CheckpointManifest(_Record):
    """`rayformers.json` in every checkpoint: how serving must use it, without guessing."""

    kind: Literal["rayformers.checkpoint"] = "rayformers.checkpoint"
    format_version: int = 1
    task: TaskName
    method: Literal["full", "lora"] = Field(description="Full weights, or a LoRA adapter over `base_model`.")
    base_model: str = Field(
        description="Hub id or path of the base model; for a LoRA adapter over a model built from scratch, "
        "'base_model' (the sub-directory that holds it)."
    )
    base_revision: str | None = None
    architecture: str = Field(description="The transformers model type, e.g. 'bert'.")
    auto_model: str = Field(description="The Auto class that loads the weights.")
    preprocessing: PreprocessSettings
    pooling: Literal["mean", "cls"] | None = Field(default=None, description="Feature extraction pooling.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Evaluation metrics at this checkpoint."
    )
    step: int = 0
    epoch: int = 0
    data_fingerprint: str = Field(description="sha256 of the data and preprocessing config.")
    versions: dict[str, str] = Field(default_factory=dict)
