"""Tokenized Parquet shards on disk: written once by `rayformers data tokenize`, reused by later runs
when their manifest matches the config (same task, tokenizer, lengths and labels)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as pads
import ray
import ray.data

from rayformers.config import DataConfig
from rayformers.data.rows import DataError
from rayformers.data.stats import SplitSummary
from rayformers.data.storage import Location
from rayformers.data.tokenized import TokenizedData
from rayformers.data.tokenizer import load_tokenizer, tokenizer_fingerprint
from rayformers.manifest import DataManifest, PreprocessSettings, SplitStats, package_versions

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["MANIFEST", "check_empty", "columns_of", "read_manifest", "read_tokenized", "write_tokenized"]


MANIFEST = "manifest.json"
"""The file beside the split directories that says how the shards were made."""


def read_manifest(shards: Location) -> DataManifest:
    """The manifest of the shards at `shards` (FileNotFoundError when there is none)."""
    return DataManifest.model_validate_json((shards / MANIFEST).read_text())


def check_empty(where: str | Path | Location) -> Location:
    """`where` as a Location, if nothing is there yet (shards of two runs are never mixed)."""
    try:
        out = where if isinstance(where, Location) else Location.parse(where)
    except ValueError as err:
        raise DataError(f"--out: {err}") from None
    if not out.is_empty_dir():
        raise DataError(f"--out {str(out)!r} is not empty; choose a new directory (shards are never mixed)")
    return out


def write_tokenized(tokenized: TokenizedData, data: DataConfig, where: str | Path | Location) -> DataManifest:
    """Write each split as Parquet shards under `<where>/<split>/` and `<where>/manifest.json` (a local
    directory or cloud storage)."""
    out = check_empty(where)
    out.mkdir()
    settings = tokenized.settings
    splits = {}
    columns: list[str] = []
    bad = tokenized.bad_rows  # read after writing: the ledgers fill while the pipeline runs
    for name, dataset in (("train", tokenized.train), ("validation", tokenized.validation)):
        if dataset is None:
            continue
        dataset.write_parquet((out / name).path, filesystem=out.fs)
        summary = _summarize_shards(out / name, settings)
        if summary.rows == 0:
            raise DataError(f"data.{name}: no rows are left after reading and filtering; check the source")
        columns = columns or columns_of(out / name)
        splits[name] = summary
    skipped = bad()
    manifest = DataManifest(
        source=data.model_dump(mode="json"),
        tokenizer=tokenized.tokenizer_source,
        tokenizer_hash=tokenizer_fingerprint(
            tokenized.tokenizer or load_tokenizer(tokenized.tokenizer_source, settings.task)
        ),
        preprocessing=settings,
        splits={
            name: SplitStats(
                rows=s.rows,
                tokens=s.tokens,
                truncated_rows=s.truncated,
                labels=dict(s.labels),
                bad_rows=skipped.get(name, {}).get("counts", {}),
            )
            for name, s in splits.items()
        },
        columns=columns,
        versions=package_versions(),
    )
    (out / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def columns_of(shards: Location) -> list[str]:
    """The columns of the Parquet shards at `shards` (from their schema; no rows are read)."""
    return list(pads.dataset(shards.path, filesystem=shards.fs, format="parquet").schema.names)


def _summarize_shards(shards: Location, settings: PreprocessSettings) -> SplitSummary:
    """Counts of the written shards, streamed on the driver through only the columns they need: a Ray
    Data job here would cost more to start than reading a few columns does."""
    summary = SplitSummary()
    if not shards.exists():  # nothing was written: every row was filtered out
        return summary
    dataset = pads.dataset(shards.path, filesystem=shards.fs, format="parquet")
    wanted = [c for c in ("input_ids", "truncated", "labels") if c in dataset.schema.names]
    for batch in dataset.to_batches(columns=wanted, batch_size=8192):
        summary.add(pa.Table.from_batches([batch]), settings)
    return summary


def read_tokenized(
    data: DataConfig,
    task: str,
    tokenizer_source: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> TokenizedData:
    """The shards in `data.tokenized`, after checking they were made the way this config asks, with the
    tokenizer `tokenizer_source` names at `revision` (or `tokenizer`, if the caller loaded it already)."""
    assert data.tokenized is not None
    directory = Location.parse(data.tokenized)
    try:
        manifest = read_manifest(directory)
    except FileNotFoundError:
        raise DataError(
            f"data.tokenized: {str(directory)!r} has no manifest.json; point it at a directory written by "
            "`rayformers data tokenize`"
        ) from None
    recorded = manifest.preprocessing
    # What the pipeline derived from the data (the label map, the task's own options) is the shards' own.
    wanted = PreprocessSettings.from_config(data, task, recorded.labels).model_copy(
        update={"task_options": recorded.task_options}
    )
    if data.labels is not None and recorded.labels is not None and list(data.labels) != recorded.labels.names:
        wanted = wanted.model_copy(update={"labels": None})
    differences = [
        f"{key}: shards have {getattr(recorded, key)!r}, config asks {getattr(wanted, key)!r}"
        for key in PreprocessSettings.model_fields
        if getattr(recorded, key) != getattr(wanted, key)
    ]
    if tokenizer is None:
        tokenizer = load_tokenizer(
            tokenizer_source, task, revision=revision, trust_remote_code=trust_remote_code
        )
    if tokenizer_fingerprint(tokenizer) != manifest.tokenizer_hash:
        differences.append(f"tokenizer: shards were made with {manifest.tokenizer!r}, a different tokenizer")
    if differences:
        raise DataError(
            f"data.tokenized: {str(directory)!r} does not match this config ({'; '.join(differences)}). "
            "Re-run `rayformers data tokenize` or unset data.tokenized"
        )
    validation = directory / "validation"
    return TokenizedData(
        train=ray.data.read_parquet((directory / "train").path, filesystem=directory.fs),
        validation=(
            ray.data.read_parquet(validation.path, filesystem=directory.fs) if validation.exists() else None
        ),
        settings=recorded,
        tokenizer_source=tokenizer_source,
        tokenizer=tokenizer,
    )
