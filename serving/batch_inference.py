"""Batch inference (`rayformers predict`): a checkpoint's serving handler run over a whole data set on a
Ray Data actor pool, written as Parquet or JSON Lines shards that a killed run resumes from.

The path, and why each step is as it is:

- **Read** with the data stage's own reader (`read_source`, `prepare_records`): every source training
  reads (files by path, glob, directory or cloud URI in CSV, JSON(L), Parquet or text; a hub dataset),
  decoded as training decodes it, streamed, never materialized.
- **Positions.** Every row gets its 0-based position in the input (files in sorted path order, rows in
  file order; blank lines of line files are not rows) from one small counting actor, with the
  dataset's `preserve_order` on, so the same input numbers its rows the same way in every run. The
  position is the row's id unless the input has an id column, and it is what cuts the input into
  shards of `rows_per_shard` rows.
- **Predict** on an actor pool whose actors load the checkpoint with serving's `load_checkpoint` and
  `build_handler`: the handler serving answers with, so the outputs are serving's (a test compares them
  over HTTP). A row the handler rejects (`InputError`) gets its message in the `error` column and no
  output; the job goes on.
- **Write** on the driver, in input order (preserve_order): a shard is written once all its rows are
  back, under its final name `part-NNNNNN.parquet|jsonl` only when complete (a local file is written
  under a hidden temporary name and renamed; an object store's upload appears only once complete). A
  re-run with the same output finds the finished shards by name, keeps them, and runs the model only on
  the rows of the others: no row is lost or written twice. `_predict.json` records the run's settings
  (checkpoint, input files and sizes, columns, parameters, shard size, format); a re-run that differs
  in any of them is refused rather than mixed in.

Outputs are stored as serving's JSON: in Parquet an `output` string column holding exactly the JSON
text serving answers for that input (`json.loads` gives the same structure back, floats bit for bit);
in JSON Lines the `output` field is that structure itself.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import types
import typing
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationError

from rayformers.config import SourceConfig
from rayformers.data.rows import DataError
from rayformers.data.storage import Location, is_remote
from rayformers.serving.errors import InputError, ServingError
from rayformers.tasks import get_task
from rayformers.tasks.base import Task

if TYPE_CHECKING:
    import ray.data

__all__ = [
    "DEFAULT_ROWS_PER_SHARD",
    "ERROR",
    "ID",
    "OUTPUT",
    "OUTPUT_FORMATS",
    "SETTINGS_FILE",
    "ActorPool",
    "InputSchema",
    "OutputDir",
    "PredictError",
    "PredictionPlan",
    "PredictionSummary",
    "Predictor",
    "RowPositions",
    "actor_pool",
    "encode_output",
    "jsonl_lines",
    "plan_prediction",
    "run_prediction",
    "shard_name",
]

OutputFormat = Literal["parquet", "jsonl"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("parquet", "jsonl")
DEFAULT_ROWS_PER_SHARD = 10_000
"""Rows per output file: what a killed run can lose (rows in flight in unfinished shards) against the
number of files a large input makes."""
SETTINGS_FILE = "_predict.json"
"""The run's settings and, once finished, its summary. A leading `_` (as for `_SUCCESS`), so that the
output directory read back as an input (`resolve_paths`) holds only the shards."""
ID, OUTPUT, ERROR = "id", "output", "error"
POSITION = "_position"
"""The row's 0-based position in the input (internal; the output's `id` is it unless the input has ids)."""
_SHARD = re.compile(r"^part-(\d{6,})\.(parquet|jsonl)$")
_SETTINGS_VERSION = 1
_PROGRESS_EVERY_S = 2.0
_COUNTER_CPUS = 0.05
"""The counting actor only numbers rows: a sliver of a CPU, so it never competes with the model."""


class PredictError(ServingError):
    """A `rayformers predict` run that cannot go as asked (output directory, resume, resources)."""


# --- the task's inputs as columns ------------------------------------------------------------------


@dataclass(frozen=True)
class InputSchema:
    """How rows become the task's `Input`: as a plain string from the `text` column where the task takes
    a string, or as one of its input models (text pair, question and context, query and texts) from
    columns named like the model's fields. Read from the task's `Input` type, so no task is named here."""

    text: bool
    """The task takes a plain string (read from the `text` column)."""
    models: tuple[type[BaseModel], ...]

    TEXT_COLUMN: typing.ClassVar[str] = "text"

    @classmethod
    def of(cls, task: Task) -> InputSchema:
        members = _union_members(task.Input)
        models = tuple(m for m in members if isinstance(m, type) and issubclass(m, BaseModel))
        return cls(text=str in members, models=models)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column some form of the input reads, the text first."""
        names = [self.TEXT_COLUMN] if self.text else []
        for model in self.models:
            names += [n for n in model.model_fields if n not in names]
        return tuple(names)

    def hint(self) -> str:
        """The columns the task reads, for error messages."""
        forms = [f"{self.TEXT_COLUMN!r}"] if self.text else []
        for model in self.models:
            required = [n for n, f in model.model_fields.items() if f.is_required()]
            optional = [n for n, f in model.model_fields.items() if not f.is_required()]
            form = " and ".join(repr(n) for n in required)
            forms.append(form + (f" (optionally {', '.join(map(repr, optional))})" if optional else ""))
        return " or ".join(forms)

    def select(self, present: Collection[str], shown: Collection[str] | None = None) -> tuple[str, ...]:
        """The columns of `present` the task reads: every form whose required columns are all there
        contributes its columns. DataError when no form fits, naming the columns (`shown`: the input's
        own, where they differ from the task's names) and the fix."""
        chosen: list[str] = []
        if self.text and self.TEXT_COLUMN in present:
            chosen.append(self.TEXT_COLUMN)
        for model in self.models:
            required = [n for n, f in model.model_fields.items() if f.is_required()]
            if all(n in present for n in required):
                chosen += [n for n in model.model_fields if n in present and n not in chosen]
        if not chosen:
            raise DataError(
                f"--input: the rows have columns {', '.join(sorted(present if shown is None else shown)) or '(none)'}"
                f", but the task reads "
                f"{self.hint()}; rename yours with --column TASK_COLUMN=YOUR_COLUMN (e.g. --column "
                f"{self.columns[0]}=<your column>)"
            )
        return tuple(chosen)

    def inputs(self, batch: Mapping[str, Sequence[Any]], rows: int) -> list[Any]:
        """One input per row: the text where a row holds only a text and the task takes strings, else a
        mapping of the row's non-null columns (the handler validates it into the task's model)."""
        names = [n for n in self.columns if n in batch]
        inputs: list[Any] = []
        for i in range(rows):
            values = {n: batch[n][i] for n in names if batch[n][i] is not None}
            if self.text and (not self.models or set(values) <= {self.TEXT_COLUMN}):
                inputs.append(values.get(self.TEXT_COLUMN))
            else:
                inputs.append(values)
        return inputs


def _union_members(kind: Any) -> tuple[Any, ...]:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return tuple(m for member in typing.get_args(kind) for m in _union_members(member))
    return (kind,)


# --- outputs -------------------------------------------------------------------------------------


def encode_output(output: Any) -> str:
    """An output as the JSON text serving answers with (Starlette's JSONResponse encoding)."""
    return json.dumps(output, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def jsonl_lines(table: pa.Table) -> Iterator[str]:
    """A shard's rows as JSON Lines: the `output` column's JSON inlined as a value, not a string."""
    columns = [c for c in table.column_names if c != POSITION]
    values = {c: table.column(c).to_pylist() for c in columns}
    for i in range(table.num_rows):
        row = {c: values[c][i] for c in columns}
        if row.get(OUTPUT) is not None:
            row[OUTPUT] = json.loads(row[OUTPUT])
        yield json.dumps(row, ensure_ascii=False, allow_nan=False, default=str) + "\n"


def _error_text(err: InputError, value: Any) -> str:
    """A rejected row's message, the request's `inputs[0]` path turned into the row's column (`text`
    for a plain text, `input` for the row as a whole)."""
    where = err.field.removeprefix("inputs[0]").removeprefix(".")
    if not where or err.field == "inputs":
        where = InputSchema.TEXT_COLUMN if isinstance(value, str) else "input"
    return f"{where}: {err.message}"


# --- the output directory and its shards ----------------------------------------------------------


def shard_name(index: int, fmt: OutputFormat) -> str:
    return f"part-{index:06d}.{fmt}"


class OutputDir:
    """The output directory: its settings file and its finished shards (those under final names)."""

    def __init__(self, where: str, fmt: OutputFormat) -> None:
        try:
            self.location = Location.parse(where)
        except ValueError as err:
            raise PredictError(f"--output {where!r}: {err}") from None
        self.fmt = fmt

    def settings(self) -> dict[str, Any] | None:
        target = self.location / SETTINGS_FILE
        if not target.exists():
            return None
        try:
            loaded = json.loads(target.read_text())
        except ValueError as err:
            raise PredictError(
                f"--output {self.location}: {SETTINGS_FILE} is not valid JSON ({err}); delete the directory "
                "to start over"
            ) from None
        return loaded if isinstance(loaded, dict) else None

    def prepare(self, settings: dict[str, Any]) -> list[int]:
        """Check the directory can take this run; the indexes of its shards already done (a resume).
        A new or empty directory starts afresh; one with another run's settings, or with files that no
        run of ours wrote, is refused."""
        recorded = self.settings()
        if recorded is None:
            if not self.location.is_empty_dir():
                raise PredictError(
                    f"--output {self.location} is not empty and holds no {SETTINGS_FILE} of an earlier "
                    "`rayformers predict`; give a new or empty directory"
                )
            self.location.mkdir()
            self._write_settings({"version": _SETTINGS_VERSION, "settings": settings, "finished": None})
            return []
        differs = sorted(
            k for k in settings.keys() | recorded.get("settings", {}).keys()
            if settings.get(k) != recorded.get("settings", {}).get(k)
        )  # fmt: skip
        if differs:
            raise PredictError(
                f"--output {self.location} holds a run with other settings ({', '.join(differs)} differ); "
                "resume it with the same checkpoint, input and options, or give a new --output (or delete "
                "this one to start over)"
            )
        return self.done()

    def done(self) -> list[int]:
        """Indexes of the shards written in full (only complete shards ever get a final name)."""
        from pyarrow import fs as pafs

        infos = self.location.fs.get_file_info(pafs.FileSelector(self.location.path, allow_not_found=True))
        found = [_SHARD.match(os.path.basename(info.path)) for info in infos]
        return sorted(int(m.group(1)) for m in found if m is not None and m.group(2) == self.fmt)

    def write(self, index: int, table: pa.Table) -> None:
        """Write shard `index` so it appears under its final name only when complete."""
        final = self.location / shard_name(index, self.fmt)
        # An object store's upload appears only once complete; a local file is renamed when complete.
        renamed = self.location.local
        target = self.location / f".{shard_name(index, self.fmt)}.tmp" if renamed else final
        with self.location.fs.open_output_stream(target.path) as stream:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                pq.write_table(table.drop_columns([POSITION]), stream)
            else:
                for line in jsonl_lines(table):
                    stream.write(line.encode("utf-8"))
        if renamed:
            self.location.fs.move(target.path, final.path)  # a rename: atomic on one filesystem

    def finish(self, summary: dict[str, Any]) -> None:
        recorded = self.settings() or {}
        self._write_settings({**recorded, "finished": summary})

    def _write_settings(self, content: dict[str, Any]) -> None:
        target = self.location / SETTINGS_FILE
        if not self.location.local:
            target.write_text(json.dumps(content, indent=2))
            return
        temporary = self.location / f".{SETTINGS_FILE}.tmp"
        temporary.write_text(json.dumps(content, indent=2))
        self.location.fs.move(temporary.path, target.path)


# --- the Ray Data stages ---------------------------------------------------------------------------


class RowPositions:
    """Ray Data actor (one, in an order-preserving dataset): numbers rows by their position in the
    input and drops those of shards a previous run finished. One actor sees every block in input
    order, so the numbering is the same in every run over the same input."""

    def __init__(self, rows_per_shard: int, done: Collection[int] = ()) -> None:
        self.rows_per_shard = rows_per_shard
        self.done = frozenset(done)
        self.next = 0

    def __call__(self, table: pa.Table) -> pa.Table:
        import numpy as np

        positions = np.arange(self.next, self.next + table.num_rows, dtype=np.int64)
        self.next += table.num_rows
        table = table.append_column(POSITION, pa.array(positions))
        if self.done:
            finished = np.isin(positions // self.rows_per_shard, np.fromiter(self.done, dtype=np.int64))
            table = table.filter(pa.array(~finished))
        return table


class Predictor:
    """Ray Data actor: loads the checkpoint as serving does (`load_checkpoint`, `build_handler`) and
    answers each batch of rows with `handler.predict`; a row the handler rejects gets an `error`."""

    def __init__(
        self,
        checkpoint: str,
        task: str,
        columns: Sequence[str],
        id_column: str | None,
        parameters: dict[str, Any],
        *,
        num_cpus: float,
        num_gpus: float = 0.0,
        max_batch_tokens: int | None = None,
        dtype: str = "auto",
    ) -> None:
        import torch

        from rayformers.serving.checkpoint import build_handler, load_checkpoint
        from rayformers.serving.replica import torch_threads

        # As in a replica: tokenizing runs beside torch's own threads, which get the reserved CPUs.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._threads = torch_threads(num_cpus)
        torch.set_num_threads(self._threads)
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
        loaded = load_checkpoint(checkpoint, task, device=device, dtype=dtype)
        self.handler = build_handler(loaded, max_batch_tokens=max_batch_tokens)
        self.schema = InputSchema.of(loaded.task)
        self.columns = list(columns)
        self.id_column = id_column
        self.parameters = self.handler.parse_parameters(parameters)

    def __call__(self, table: pa.Table) -> pa.Table:
        import torch

        # torch's intra-op thread count is the calling thread's (OpenMP), and Ray Data may call from
        # another thread than the constructor's: set it where the model runs.
        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)
        rows = table.num_rows
        batch = {c: table.column(c).to_pylist() for c in self.columns if c in table.column_names}
        outputs, errors = self.answer(self.schema.inputs(batch, rows))
        columns: dict[str, pa.Array | pa.ChunkedArray] = {POSITION: table.column(POSITION)}
        if self.id_column is None:
            columns[ID] = table.column(POSITION)
        elif self.id_column in table.column_names:
            columns[ID] = table.column(self.id_column)
        else:
            columns[ID] = pa.nulls(rows)
        for name in self.columns:
            columns[name] = table.column(name) if name in table.column_names else pa.nulls(rows)
        columns[OUTPUT] = pa.array(outputs, pa.string())
        columns[ERROR] = pa.array(errors, pa.string())
        return pa.table(columns)

    def answer(self, inputs: list[Any]) -> tuple[list[str | None], list[str | None]]:
        """Each input's output (serving's JSON text) or error message."""
        from rayformers.serving.replica import client_mistake

        errors: list[str | None] = [None] * len(inputs)
        for i, value in enumerate(inputs):
            # What serving refuses before the model (an empty text, bad Unicode) and what the task's
            # schema refuses, row by row, so one bad row never sends its batch down the slow path below.
            mistake = client_mistake([value], self.parameters)
            if mistake is None:
                try:
                    self.handler.parse_inputs([value])
                except InputError as err:
                    mistake = err
            if mistake is not None:
                errors[i] = _error_text(mistake, value)
        good = [i for i, e in enumerate(errors) if e is None]
        answered: dict[int, Any] = {}
        if good:
            try:
                answered = dict(
                    zip(good, self.handler.predict([inputs[i] for i in good], self.parameters), strict=True)
                )
            except InputError:
                # A row the model itself refuses (say, a fill-mask text without a mask): answer each
                # row alone, as a replica does, so the others keep their outputs.
                for i in good:
                    try:
                        answered[i] = self.handler.predict([inputs[i]], self.parameters)[0]
                    except InputError as err:
                        errors[i] = _error_text(err, inputs[i])
        outputs = [encode_output(answered[i]) if i in answered else None for i in range(len(inputs))]
        return outputs, errors


# --- planning (before Ray) and running --------------------------------------------------------------


@dataclass(frozen=True)
class PredictionPlan:
    """Everything a run needs, checked before Ray starts."""

    checkpoint: str
    task: str
    source: SourceConfig
    columns: dict[str, str]
    """Task column -> the input's column, for the columns the task reads here."""
    id_column: str | None
    """The input's id column (output as `id`); None: ids are row positions."""
    parameters: dict[str, Any]
    output: str
    fmt: OutputFormat
    rows_per_shard: int
    batch_size: int
    concurrency: int | None
    num_cpus: float | None
    """CPUs per actor; None: the cluster's, shared (`actor_pool`)."""
    num_gpus: float
    max_batch_tokens: int | None = None
    total_rows: int | None = None
    """Rows in the input when known without reading it (Parquet metadata); for the ETA."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What a resumed run must agree on (recorded in the output's settings file)."""


def plan_prediction(
    checkpoint: str,
    source: SourceConfig,
    output: str,
    *,
    task: str | None = None,
    columns: Mapping[str, str] | None = None,
    id_column: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    fmt: str = "parquet",
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    batch_size: int = 64,
    concurrency: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float = 0.0,
    max_batch_tokens: int | None = None,
) -> PredictionPlan:
    """Check a run without starting Ray: the checkpoint's task, the parameters against its schema, the
    input's files and columns (its first rows, read here), the options, the output directory."""
    from rayformers.data.records import RecordSpec, prepare_records
    from rayformers.data.sources import read_sample, resolve_paths
    from rayformers.serving.checkpoint import resolve_checkpoint

    if fmt not in OUTPUT_FORMATS:
        raise PredictError(f"--format {fmt!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    for flag, value in (("--batch-size", batch_size), ("--rows-per-shard", rows_per_shard)):
        if value < 1:
            raise PredictError(f"{flag} {value}: give a positive number of rows")
    if concurrency is not None and concurrency < 1:
        raise PredictError(f"--concurrency {concurrency}: give at least 1 actor (or leave it unset)")
    if (num_cpus is not None and num_cpus <= 0) or num_gpus < 0:
        raise PredictError(
            f"--num-cpus {num_cpus} / --num-gpus {num_gpus:g}: each actor needs some CPU (e.g. 1, or 0.5 "
            "to share a core) and zero or more GPUs"
        )
    checkpoint = resolve_checkpoint(checkpoint)
    if not is_remote(checkpoint):
        # The directory itself (a run's `best` is a link): a resumed run checks it is still the same.
        checkpoint = os.path.realpath(os.path.expanduser(checkpoint.removeprefix("file://")))
    spec = _checkpoint_task(checkpoint, task)
    params = _parameters(spec, parameters or {})
    mapping = dict(columns or {})
    if source.path is not None:
        paths = resolve_paths(source.path, "--input")
        source = source.model_copy(update={"path": paths})
        _check_format(paths, source.format)
    schema = InputSchema.of(spec)
    ids = [id_column] if id_column else [ID]
    sample = read_sample(source, "--input", 64)
    records = prepare_records(
        sample.table,
        RecordSpec(
            raw=sample.raw,
            columns={**mapping, **{c: c for c in ids}},
            required=(),
            optional=tuple(dict.fromkeys([*schema.columns, *ids])),
            encoding=source.encoding,
            field="--input",
        ),
    )
    if records.num_rows == 0:
        raise DataError(f"--input {_shown(source)}: no rows to predict (the first rows are empty)")
    present = set(records.column_names) - {"_origin"}
    if id_column is not None and id_column not in present:
        raise DataError(
            f"--id-column {id_column!r}: the input has no such column (it has "
            f"{', '.join(sorted(_sample_columns(sample)))}); name one of its columns, or leave --id-column "
            "out to number rows by their position"
        )
    if id_column is None and ID in present:
        id_column = ID  # an `id` column holds the rows' ids unless told otherwise
    chosen = schema.select(present - {id_column}, shown=_sample_columns(sample))
    read_columns = {c: mapping.get(c, c) for c in chosen}
    settings = {
        "checkpoint": checkpoint,
        "task": spec.name,
        "input": _fingerprint(source),
        "columns": read_columns,
        "id_column": id_column,
        "parameters": params,
        "rows_per_shard": rows_per_shard,
        "format": fmt,
    }
    return PredictionPlan(
        checkpoint=checkpoint,
        task=spec.name,
        source=source,
        columns=read_columns,
        id_column=id_column,
        parameters=params,
        output=output,
        fmt=typing.cast(OutputFormat, fmt),
        rows_per_shard=rows_per_shard,
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_batch_tokens=max_batch_tokens,
        total_rows=_known_rows(source),
        settings=settings,
    )


def _sample_columns(sample: Any) -> set[str]:
    """The columns the input's first rows have, as the user named them (for error messages)."""
    table = sample.table
    if sample.raw == "text":
        return {InputSchema.TEXT_COLUMN}
    if sample.raw != "jsonl":
        return set(table.column_names) - {"_origin"}
    names: set[str] = set()
    for line in table.column("_raw").to_pylist():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            names.update(value)
    return names


def _checkpoint_task(checkpoint: str, task: str | None) -> Task:
    from rayformers.tasks import TASK_NAMES
    from rayformers.tasks.checkpoint import read_manifest

    if task is not None and task not in TASK_NAMES:
        raise PredictError(f"--task {task!r} is unknown; known tasks: {', '.join(TASK_NAMES)}")
    try:
        where = Location.parse(checkpoint)
    except ValueError as err:
        raise PredictError(f"checkpoint {checkpoint!r}: {err}") from None
    if not where.exists():
        raise PredictError(
            f"checkpoint {checkpoint!r} does not exist; give a checkpoint directory a run wrote (local or "
            "s3:// / gs://), or the run's config to use its best checkpoint (train it first)"
        )
    try:
        manifest = read_manifest(where)
    except FileNotFoundError:
        if task is None:
            raise PredictError(
                f"{checkpoint} has no rayformers.json, so its task is unknown; pass --task (one of: "
                f"{', '.join(TASK_NAMES)}) to run a plain Hugging Face model directory"
            ) from None
        return get_task(task)
    if task is not None and task != manifest.task:
        raise PredictError(
            f"--task {task!r}: checkpoint {checkpoint} was trained for {manifest.task!r}; drop --task"
        )
    return get_task(manifest.task)


def _parameters(task: Task, parameters: Mapping[str, Any]) -> dict[str, Any]:
    try:
        validated = task.Parameters.model_validate(dict(parameters))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        known = ", ".join(task.Parameters.model_fields) or "none"
        raise PredictError(
            f"--parameters: {where}: {first['msg']} (got {first.get('input')!r}); {task.name} takes: {known}"
        ) from None
    return validated.model_dump(mode="json", exclude_unset=True)


def _check_format(paths: list[str], declared: str) -> None:
    from rayformers.data.sources import infer_format

    try:
        infer_format(paths, declared, "--input")
    except DataError as err:
        raise DataError(
            f"--input: {str(err).split(': ', 1)[-1].split('; set')[0]}; pass --input-format (csv, json, "
            "jsonl, parquet or text)"
        ) from None


def _shown(source: SourceConfig) -> str:
    if source.hub is not None:
        return f"hub:{source.hub}"
    paths = source.path if isinstance(source.path, list) else [str(source.path)]
    return paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"


def _fingerprint(source: SourceConfig) -> dict[str, Any]:
    """The input as a resumed run must find it again: its files and their sizes (positions and shards
    are counted over them), or the hub dataset's id, split and revision."""
    if source.path is None:
        return source.model_dump(mode="json", include={"hub", "name", "split", "revision", "streaming"})
    files = []
    for path in source.path if isinstance(source.path, list) else [source.path]:
        where = Location.parse(path)
        files.append([path, where.fs.get_file_info(where.path).size])
    return {"files": files, "format": source.format, "encoding": source.encoding}


def _known_rows(source: SourceConfig) -> int | None:
    """The input's rows when its files say so without being read: Parquet footers."""
    if source.path is None:
        return None
    paths = source.path if isinstance(source.path, list) else [source.path]
    if not all(p.lower().endswith((".parquet", ".pq")) for p in paths) and source.format != "parquet":
        return None
    import pyarrow.parquet as pq

    total = 0
    for path in paths:
        where = Location.parse(path)
        with where.fs.open_input_file(where.path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


@dataclass(frozen=True)
class ActorPool:
    """The predicting actors: how many, and the CPUs (torch threads, rounded up) and GPUs each reserves."""

    actors: int
    cpus: float
    gpus: float = 0.0


_READ_RESERVE = 0.25 + _COUNTER_CPUS
"""What the read tasks and the counting actor keep: they must never wait behind the model actors'
reservations (a starved read stage hangs the whole pipeline)."""
_CPUS_PER_ACTOR = 4
"""Without --num-cpus, an actor per this many CPUs: torch's threads scale well to a few cores per
forward, and past that more actors (each a model copy) keep the cores busier than more threads."""


def actor_pool(
    num_cpus: float | None, num_gpus: float, cpus: float, gpus: float, concurrency: int | None
) -> ActorPool:
    """The actors for a cluster with `cpus` and `gpus`. Unset `num_cpus`: the CPUs left after reading,
    shared by `concurrency` actors (default: one per GPU share, or per 4 CPUs); set, as many actors of
    that size as fit (or `concurrency`, if it fits)."""
    budget = cpus - _READ_RESERVE
    if num_gpus > 0 and gpus < num_gpus:
        raise PredictError(
            f"--num-gpus {num_gpus:g}: the cluster has {gpus:g} GPUs; use --num-gpus 0 to run on CPUs"
        )
    by_gpu = math.floor(gpus / num_gpus + 1e-9) if num_gpus > 0 else None
    if num_cpus is None:
        actors = concurrency or by_gpu or max(1, math.floor(budget / _CPUS_PER_ACTOR + 1e-9))
        if by_gpu is not None and actors > by_gpu:
            raise PredictError(
                f"--concurrency {actors} actors x --num-gpus {num_gpus:g} need {actors * num_gpus:g} GPUs; "
                f"the cluster has {gpus:g}: use --concurrency {by_gpu} or fewer"
            )
        if budget / actors < 0.05:
            raise PredictError(
                f"--concurrency {actors}: the cluster's {cpus:g} CPUs leave too little for each actor; "
                "use fewer actors"
            )
        return ActorPool(actors, budget / actors, num_gpus)
    fit = math.floor(budget / num_cpus + 1e-9)
    if by_gpu is not None:
        fit = min(fit, by_gpu)
    if fit < 1:
        raise PredictError(
            f"--num-cpus {num_cpus:g}: the cluster has {cpus:g} CPUs, and reading keeps {_READ_RESERVE:g} of "
            f"them; give each actor at most {max(budget, 0.05):.2g} CPUs (or leave --num-cpus out)"
        )
    if concurrency is None:
        return ActorPool(fit, num_cpus, num_gpus)
    if concurrency > fit:
        raise PredictError(
            f"--concurrency {concurrency} actors x --num-cpus {num_cpus:g}"
            + (f" / --num-gpus {num_gpus:g}" if num_gpus else "")
            + f" do not fit the cluster ({cpus:g} CPUs, {gpus:g} GPUs, {_READ_RESERVE:g} CPU kept for "
            f"reading): use --concurrency {fit} or fewer, or less per actor"
        )
    return ActorPool(concurrency, num_cpus, num_gpus)


@dataclass(frozen=True)
class PredictionSummary:
    """What a run did: rows predicted now (and rejected), shards written and kept, time and rate."""

    rows: int
    errors: int
    shards_written: int
    shards_kept: int
    seconds: float
    first_output_s: float | None
    output: str
    actors: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "errors": self.errors,
            "shards_written": self.shards_written,
            "shards_kept": self.shards_kept,
            "seconds": round(self.seconds, 3),
            "first_output_s": None if self.first_output_s is None else round(self.first_output_s, 3),
            "rows_per_s": round(self.rows_per_s, 2),
            "actors": self.actors,
        }


def build_dataset(plan: PredictionPlan, done: Collection[int], pool: ActorPool) -> ray.data.Dataset:
    """The lazy pipeline: read -> records -> positions (one actor) -> predict (actor pool), in order."""
    import ray.data

    from rayformers.data.records import RecordSpec, prepare_records
    from rayformers.data.sources import READ_CPUS, read_source

    read = read_source(plan.source, "--input")
    ids = [plan.id_column] if plan.id_column else []
    spec = RecordSpec(
        raw=read.raw,
        columns={**plan.columns, **{c: c for c in ids}},
        required=(),
        optional=tuple(dict.fromkeys([*plan.columns, *ids])),
        encoding=plan.source.encoding,
        field="--input",
    )
    dataset = read.dataset.map_batches(
        prepare_records, batch_format="pyarrow", fn_kwargs={"spec": spec}, num_cpus=READ_CPUS
    )
    with warnings.catch_warnings():
        # `max_restarts` has no named parameter yet, and Ray warns of passing it as a remote arg.
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
        dataset = dataset.map_batches(
            RowPositions,
            batch_format="pyarrow",
            batch_size=None,
            fn_constructor_kwargs={"rows_per_shard": plan.rows_per_shard, "done": sorted(done)},
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=_COUNTER_CPUS,
            # A restarted counter would number rows from 0 again: fail instead, and let a re-run resume.
            max_restarts=0,
        )
    dataset = dataset.map_batches(
        Predictor,
        batch_format="pyarrow",
        batch_size=plan.batch_size,
        fn_constructor_kwargs={
            "checkpoint": plan.checkpoint,
            "task": plan.task,
            "columns": list(plan.columns),
            "id_column": plan.id_column,
            "parameters": plan.parameters,
            "num_cpus": pool.cpus,
            "num_gpus": pool.gpus,
            "max_batch_tokens": plan.max_batch_tokens,
        },
        compute=ray.data.ActorPoolStrategy(size=pool.actors),
        num_cpus=pool.cpus,
        num_gpus=pool.gpus or None,
    )
    # Positions are counted in arrival order, and shards are written once their last row is back:
    # both need the blocks in input order at every stage.
    dataset.context.execution_options.preserve_order = True
    dataset.context.raise_original_map_exception = True  # a row's DataError itself, not Ray's wrapper
    dataset.context.enable_progress_bars = False  # the run reports its own progress, with rows/s and ETA
    return dataset


def run_prediction(plan: PredictionPlan, progress: Callable[[str], None] = print) -> PredictionSummary:
    """Run `plan` on the connected Ray: write every shard not yet in the output, then the summary."""
    import ray

    started = time.monotonic()
    out = OutputDir(plan.output, plan.fmt)
    done = out.prepare(plan.settings)
    finished = (out.settings() or {}).get("finished")
    if finished is not None:
        progress(f"{out.location} is complete already ({len(done)} shards); nothing to predict")
        return PredictionSummary(0, 0, 0, len(done), time.monotonic() - started, None, str(out.location), 0)
    resources = ray.cluster_resources()
    pool = actor_pool(
        plan.num_cpus,
        plan.num_gpus,
        float(resources.get("CPU", 0.0)),
        float(resources.get("GPU", 0.0)),
        plan.concurrency,
    )
    if done:
        progress(f"resuming: {len(done)} shard{'s' if len(done) != 1 else ''} already in {out.location}")
    dataset = build_dataset(plan, done, pool)
    pending: list[pa.Table] = []
    shard: int | None = None
    rows = errors = written = 0
    first_output: float | None = None
    last_report = started
    remaining = None
    if plan.total_rows is not None:
        kept = sum(min(plan.rows_per_shard, plan.total_rows - i * plan.rows_per_shard) for i in done)
        remaining = plan.total_rows - kept

    def flush() -> None:
        nonlocal pending, written
        if shard is not None and pending:
            out.write(shard, pa.concat_tables(pending, promote_options="default"))
            written += 1
        pending = []

    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        table = typing.cast(pa.Table, batch)
        if table.num_rows == 0:
            continue
        if first_output is None:
            first_output = time.monotonic() - started
        shards = pc.divide(table.column(POSITION), plan.rows_per_shard).to_numpy()
        for index in sorted(set(shards.tolist())):
            if index != shard:
                flush()  # in order: the rows of every earlier shard are all back
                shard = index
            pending.append(table.filter(pa.array(shards == index)))
        rows += table.num_rows
        errors += table.num_rows - table.column(ERROR).null_count
        now = time.monotonic()
        if now - last_report >= _PROGRESS_EVERY_S:
            last_report = now
            progress(_progress_line(rows, errors, now - started, remaining, written))
    flush()
    seconds = time.monotonic() - started
    summary = PredictionSummary(
        rows, errors, written, len(done), seconds, first_output, str(out.location), pool.actors
    )
    out.finish(summary.as_dict())
    return summary


def _progress_line(rows: int, errors: int, elapsed: float, total: int | None, shards: int) -> str:
    rate = rows / elapsed if elapsed > 0 else 0.0
    line = f"predicted {rows:,}" + (f"/{total:,}" if total else "") + f" rows ({rate:,.0f} rows/s"
    if total and rate > 0:
        line += f", ETA {max(total - rows, 0) / rate:,.0f}s"
    line += f"), {shards} shard{'s' if shards != 1 else ''} written"
    return line + (f", {errors} rejected" if errors else "")
