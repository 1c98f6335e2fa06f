"""Sources: a Hugging Face dataset id, or CSV, JSON(L), Parquet and text files, read with Ray Data.

Line-based files (JSONL, text) and CSV are read as raw bytes and decoded row by row in
`data.records`, so one undecodable line or malformed JSON object is a counted bad row, not a dead
pipeline. Local paths are made absolute here, on the driver, so read tasks on any worker find them.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray.data
from ray.data.datasource import FileBasedDatasource

from rayformers.config import SourceConfig
from rayformers.data.rows import DataError
from rayformers.data.storage import Location, is_remote

__all__ = ["ReadSample", "ReadSource", "infer_format", "read_sample", "read_source", "resolve_paths"]

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
}
_LINES_PER_BLOCK = 4096
# Reading and decoding are light next to tokenizing, and must never wait behind the tokenizer actors'
# reservations (a starved read stage hangs the whole pipeline), so their tasks reserve a quarter CPU.
READ_CPUS = 0.25
# Ray Data would split a small file into ~200 blocks, one task each: for line files, one read task per
# file streams blocks of _LINES_PER_BLOCK lines, and the tokenizer pool supplies the parallelism.


def _cwd() -> str:
    try:
        return os.getcwd()
    except FileNotFoundError:  # the working directory was deleted while this process ran in it
        return "a working directory that no longer exists"


def resolve_paths(path: str | list[str], field: str) -> list[str]:
    """Absolute local paths (globs and directories expanded) or cloud URIs, checked to exist locally."""
    resolved: list[str] = []
    for item in [path] if isinstance(path, str) else path:
        if is_remote(item):
            resolved.append(item)
            continue
        local = os.path.expanduser(item.removeprefix("file://"))
        if glob.has_magic(local):
            matches = sorted(glob.glob(local, recursive=True))
            if not matches:
                raise DataError(
                    f"{field}: no file matches {item!r}; check the pattern and the current directory"
                )
            resolved.extend(os.path.abspath(m) for m in matches if os.path.isfile(m))
        elif os.path.isdir(local):
            files = sorted(
                str(p) for p in Path(local).rglob("*") if p.is_file() and not p.name.startswith((".", "_"))
            )
            if not files:
                raise DataError(f"{field}: directory {item!r} holds no data files")
            resolved.extend(os.path.abspath(f) for f in files)
        elif os.path.isfile(local):
            resolved.append(os.path.abspath(local))
        else:
            raise DataError(
                f"{field}: file {item!r} does not exist (looked in {_cwd()}); give an existing path, "
                "a glob, a directory or an s3:// / gs:// URI"
            )
    return resolved


def infer_format(paths: list[str], declared: str, field: str) -> str:
    """The file format: as declared, or from the extensions (which must agree)."""
    if declared != "auto":
        return declared
    found = set()
    for path in paths:
        name = path.lower()
        for compressed in (".gz", ".bz2", ".zst", ".lz4"):
            name = name.removesuffix(compressed)
        ext = os.path.splitext(name)[1]
        if ext not in _EXTENSIONS:
            raise DataError(
                f"{field}: cannot tell the format of {path!r} from its extension; set "
                f"{field.rsplit('.', 1)[0]}.format to one of csv, json, jsonl, parquet, text"
            )
        found.add(_EXTENSIONS[ext])
    if len(found) > 1:
        raise DataError(
            f"{field}: files of mixed formats ({', '.join(sorted(found))}); give one format per split"
        )
    return found.pop()


@dataclass(frozen=True)
class ReadSource:
    """A read Ray Dataset and how its rows must be decoded (`raw` is 'jsonl', 'text', 'csv' or None)."""

    dataset: ray.data.Dataset
    raw: str | None
    label_names: list[str] | None = None
    """Label names a hub dataset declares (a ClassLabel feature), when it has them."""


def read_source(source: SourceConfig, field: str, label_column: str | None = None) -> ReadSource:
    """Read one split lazily; nothing is materialized."""
    if source.hub is not None:
        return _read_hub(source, label_column)
    assert source.path is not None
    paths = resolve_paths(source.path, f"{field}.path")
    fmt = infer_format(paths, source.format, f"{field}.path")
    if fmt in ("jsonl", "text") or (fmt == "json" and not _starts_with_array(paths[0])):
        lines = ray.data.read_datasource(
            _LinesDatasource(paths), override_num_blocks=len(paths), num_cpus=READ_CPUS
        )
        return ReadSource(lines, "jsonl" if fmt != "text" else "text")
    if fmt == "json":
        return ReadSource(ray.data.read_json(paths, override_num_blocks=len(paths), num_cpus=READ_CPUS), None)
    if fmt == "csv":
        return ReadSource(_read_csv(paths, source.encoding), "csv")
    return ReadSource(ray.data.read_parquet(paths, num_cpus=READ_CPUS), None)


@dataclass(frozen=True)
class ReadSample:
    """The first rows of a split, read in this process, in the shape `read_source`'s blocks have."""

    table: pa.Table
    raw: str | None
    complete: bool
    """True when the split has no rows beyond these."""
    label_names: list[str] | None = None


def read_sample(source: SourceConfig, field: str, rows: int, label_column: str | None = None) -> ReadSample:
    """Up to `rows` rows of one split without Ray (what `data preview` looks at): line files and CSV as
    raw bytes with their origins, so the same record and row checks apply."""
    if source.hub is not None:
        hf, names = _load_hub(source, label_column)
        head = list(itertools.islice(iter(hf), rows + 1))
        return ReadSample(pa.Table.from_pylist(head[:rows]), None, len(head) <= rows, names)
    assert source.path is not None
    paths = resolve_paths(source.path, f"{field}.path")
    fmt = infer_format(paths, source.format, f"{field}.path")
    lines = fmt in ("jsonl", "text") or (fmt == "json" and not _starts_with_array(paths[0]))
    tables: list[pa.Table] = []
    wanted = rows + 1  # one more than shown tells whether the split ends here
    for path in paths:
        if wanted <= 0:
            break
        where = Location.parse(path)
        if lines:
            with where.fs.open_input_stream(where.path, compression="detect") as f:
                blocks = _LinesDatasource._lines(f, path)
                table = next(_tables_of(blocks, wanted), None)
        elif fmt == "json":
            with where.fs.open_input_stream(where.path, compression="detect") as f:
                table = pa.Table.from_pylist(json.load(f)[:wanted])
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            header = _csv_header(path, source.encoding)
            with where.fs.open_input_stream(where.path, compression="detect") as f:
                reader = pacsv.open_csv(
                    f,
                    parse_options=pacsv.ParseOptions(
                        delimiter="\t" if path.lower().endswith(".tsv") else ",", newlines_in_values=True
                    ),
                    convert_options=pacsv.ConvertOptions(column_types={n: pa.binary() for n in header}),
                )
                table = next(_tables_of((pa.Table.from_batches([b]) for b in reader), wanted), None)
        else:
            import pyarrow.parquet as pq

            with where.fs.open_input_file(where.path) as f:
                batches = (
                    pa.Table.from_batches([b]) for b in pq.ParquetFile(f).iter_batches(batch_size=wanted)
                )
                table = next(_tables_of(batches, wanted), None)
        if table is not None and table.num_rows:
            tables.append(table)
            wanted -= table.num_rows
    table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
    raw = ("text" if fmt == "text" else "jsonl") if lines else "csv" if fmt == "csv" else None
    return ReadSample(table.slice(0, rows), raw, wanted > 0)


def _tables_of(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The first `rows` rows of a stream of tables, as one table."""
    taken: list[pa.Table] = []
    count = 0
    for table in tables:
        taken.append(table.slice(0, rows - count))
        count += taken[-1].num_rows
        if count >= rows:
            break
    if taken:
        yield pa.concat_tables(taken)


def _starts_with_array(path: str) -> bool:
    """A .json file is either JSON Lines (the Hugging Face convention) or one JSON array."""
    if is_remote(path):
        return False
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _read_csv(paths: list[str], encoding: str) -> ray.data.Dataset:
    import pyarrow.csv as pacsv

    header = _csv_header(paths[0], encoding)
    delimiter = "\t" if paths[0].lower().endswith(".tsv") else ","
    # Every column as bytes: decoding happens per row in data.records, where a bad byte is a bad row.
    return ray.data.read_csv(
        paths,
        override_num_blocks=len(paths),
        num_cpus=READ_CPUS,
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.binary() for name in header}),
    )


def _csv_header(path: str, encoding: str) -> list[str]:
    import csv

    where = Location.parse(path)
    with where.fs.open_input_stream(where.path) as f:
        head = f.read(65536)
    first = head.split(b"\n", 1)[0].decode(encoding, errors="replace")
    return next(csv.reader([first]), [])


def _read_hub(source: SourceConfig, label_column: str | None) -> ReadSource:
    hf, names = _load_hub(source, label_column)
    return ReadSource(ray.data.from_huggingface(hf), None, names)


def _load_hub(source: SourceConfig, label_column: str | None) -> tuple[Any, list[str] | None]:
    """The `datasets` split a hub source names (a local dataset directory too), and its label names."""
    import datasets

    assert source.hub is not None
    local = Path(source.hub)
    try:
        if local.is_dir() and (local / "dataset_dict.json").exists():
            hf = datasets.load_from_disk(str(local))[source.split]
        elif local.is_dir() and (local / "state.json").exists():
            hf = datasets.load_from_disk(str(local))
        else:
            hf = datasets.load_dataset(
                source.hub,
                source.name,
                split=source.split,
                streaming=source.streaming,
                revision=source.revision,
            )
    except (FileNotFoundError, ValueError, KeyError, ConnectionError) as err:
        raise DataError(
            f"data source hub={source.hub!r} (name={source.name!r}, split={source.split!r}) could not be loaded: "
            f"{err}. Check the dataset id, its configuration name and split, and that this machine can reach "
            "the hub (or give a local directory)"
        ) from None
    names = None
    features = getattr(hf, "features", None) or {}
    if label_column and label_column in features and hasattr(features[label_column], "names"):
        names = list(features[label_column].names)
    return hf, names


class _LinesDatasource(FileBasedDatasource):
    """Streams a file's lines as raw bytes with their `path:line` origin, a block at a time."""

    def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
        return self._lines(f, path)

    @staticmethod
    def _lines(f: Any, path: str) -> Iterator[pa.Table]:
        lines: list[bytes] = []
        origins: list[str] = []
        number = 0
        pending = b""
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                number += 1
                lines.append(line)
                origins.append(f"{path}:{number}")
            if len(lines) >= _LINES_PER_BLOCK:
                yield pa.table({"_raw": pa.array(lines, pa.binary()), "_origin": origins})
                lines, origins = [], []
        if pending:
            number += 1
            lines.append(pending)
            origins.append(f"{path}:{number}")
        if lines:
            yield pa.table({"_raw": pa.array(lines, pa.binary()), "_origin": origins})
