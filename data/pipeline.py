"""The streaming data pipeline: read -> records -> check + tokenize on an actor pool, all lazy.

`build_tokenized` turns the `data` section into train and validation Ray Datasets of model inputs.
Nothing is materialized: training iterates them with `iter_torch_batches`, `data tokenize` writes
them as Parquet shards. Tokenizer actors load the tokenizer once each, and the pool is sized against
the CPUs the cluster really has, keeping one for read tasks so the pipeline cannot starve.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import ray
import ray.data

from rayformers.config import DataConfig, SourceConfig
from rayformers.data.preprocess import Mode, int_lists
from rayformers.data.records import ORIGIN, RecordSpec, prepare_records
from rayformers.data.rows import DataError, SharedLedger, check_rows, report_bad_rows, row_error
from rayformers.data.shards import read_tokenized
from rayformers.data.sources import READ_CPUS, read_source
from rayformers.data.tokenized import TokenizedData
from rayformers.data.tokenizer import load_tokenizer, tokenizer_class_path
from rayformers.manifest import LabelMap, PreprocessSettings, label_key
from rayformers.tasks import get_task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from rayformers.tasks.base import Task

__all__ = ["TokenizeBatch", "TokenizerPool", "build_tokenized", "to_arrow", "tokenizer_pool"]

_THREADS_PER_ACTOR = 4
"""Rust threads one tokenizer actor keeps busy: past that, more actors (the Python per batch adds up)."""

_INT_LISTS = {
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "special_tokens_mask",
    "word_ids",
    "pair_input_ids",
    "pair_attention_mask",
    "pair_token_type_ids",
}


def to_arrow(columns: dict[str, Any]) -> pa.Table:
    """A task's output columns as compact Arrow columns: Arrow arrays as they are, per-row lists of
    token ids as int32 lists (flattened through NumPy, never one Python object per id)."""
    arrays = {}
    for name, values in columns.items():
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            arrays[name] = values
        elif name in _INT_LISTS or (name == "labels" and values and isinstance(values[0], list)):
            arrays[name] = int_lists(values)
        elif name == "offset_mapping":
            arrays[name] = pa.array(values, pa.list_(pa.list_(pa.int32(), 2)))
        elif name == "answer_texts":
            # Typed even when a batch has no answers, so every block of a split shares one schema.
            arrays[name] = pa.array(values, pa.list_(pa.string()))
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


@dataclass(frozen=True)
class TokenizerPool:
    """How the tokenizer stage runs: `actors` actors reserving `cpus_per_actor` each, every one encoding
    its batches on `threads` Rust threads."""

    actors: int
    cpus_per_actor: float
    threads: int


def tokenizer_pool(data: DataConfig, available_cpus: float) -> TokenizerPool:
    """The pool for a cluster with `available_cpus`: its reservations leave a CPU for read tasks, and its
    Rust threads use every core. Encoding is Rust that runs outside the GIL, so one actor on 2 threads
    tokenizes as fast as two actors on one, without a second copy of the per-batch Python work."""
    reserve = 1.0 if available_cpus >= 2 else available_cpus / 2
    budget = available_cpus - reserve
    if data.concurrency is None:
        # Actors reserve whole CPUs' worth of threads: a pool of 1 on a laptop, more on a big node.
        actors = max(1, min(8, math.floor(available_cpus / _THREADS_PER_ACTOR + 1e-9)))
        per_actor = min(data.num_cpus_per_actor, budget / actors)
    else:
        needed = data.concurrency * data.num_cpus_per_actor
        if needed > budget + 1e-9:
            fit = max(1, math.floor(budget / data.num_cpus_per_actor + 1e-9))
            raise DataError(
                f"data.concurrency={data.concurrency} tokenizer actors x data.num_cpus_per_actor="
                f"{data.num_cpus_per_actor} reserve {needed:g} CPUs, but the cluster has {available_cpus:g} free "
                f"and read tasks need {reserve:g}: the pipeline would wait forever. Set data.concurrency to "
                f"{fit}, lower data.num_cpus_per_actor, or leave data.concurrency unset to size the pool "
                "automatically"
            )
        actors, per_actor = data.concurrency, data.num_cpus_per_actor
    return TokenizerPool(actors, per_actor, max(1, math.floor(available_cpus / actors + 1e-9)))


class TokenizeBatch:
    """Ray Data actor: checks rows, tokenizes them with the task's function, returns Arrow columns."""

    def __init__(
        self,
        tokenizer_source: str,
        settings: dict[str, Any],
        on_bad_rows: str,
        ledger: Any = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        tokenizer_class: str | None = None,
        mode: Mode = "train",
        threads: int = 1,
    ) -> None:
        # Before the tokenizer first encodes: Rust's thread pool is sized once per process. The Ray
        # runtime env turns parallelism off for every other worker; this actor owns `threads` cores' work.
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
        os.environ["RAYON_NUM_THREADS"] = str(threads)
        self.mode: Mode = mode
        self.settings = PreprocessSettings.model_validate(settings)
        self.task = get_task(self.settings.task)
        self.tokenizer = load_tokenizer(
            tokenizer_source,
            self.task.name,
            revision=revision,
            trust_remote_code=trust_remote_code,
            class_path=tokenizer_class,
        )
        self.on_bad_rows = on_bad_rows
        self.ledger = ledger

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        batch = {name: table.column(name).to_pylist() for name in table.column_names}
        origins = batch.pop(ORIGIN, [None] * n)
        problems = check_rows(batch, self.task, self.settings, n) if n else []
        if problems:
            if self.on_bad_rows == "fail":
                raise row_error(problems[0], origins[problems[0].index])
            report_bad_rows(
                self.ledger, [(p.reason, f"{origins[p.index] or 'row'}: {p.detail}") for p in problems]
            )
            dropped = {p.index for p in problems}
            batch = {k: [v for i, v in enumerate(col) if i not in dropped] for k, col in batch.items()}
        if not batch or not next(iter(batch.values()), None):
            return pa.table({})
        return to_arrow(self.task.preprocess(batch, self.tokenizer, self.settings, self.mode))


def record_spec(
    source: SourceConfig, field_name: str, task: Task, data: DataConfig, holdout_keep: str | None
) -> RecordSpec:
    """How one split's raw rows become the task's records (`holdout_keep`: the side of a held-out
    fraction of train this split keeps, or None)."""
    return RecordSpec(
        raw=None,
        columns=dict(data.columns),
        required=task.columns,
        optional=task.optional_columns,
        encoding=source.encoding,
        on_bad_rows=data.on_bad_rows,
        holdout_fraction=data.validation_fraction if holdout_keep else 0.0,
        holdout_keep=holdout_keep or "train",  # type: ignore[arg-type]
        seed=data.seed,
        field=field_name,
    )


def label_column(task: Task, data: DataConfig) -> str | None:
    """The user's name of the task's label column."""
    return task.label_column and data.columns.get(task.label_column, task.label_column)


def _records(
    source: SourceConfig,
    field_name: str,
    task: Task,
    data: DataConfig,
    *,
    holdout_keep: str | None,
    ledger: Any,
    label_names: list[str] | None = None,
) -> tuple[ray.data.Dataset, list[str] | None]:
    read = read_source(source, field_name, label_column(task, data))
    spec = dataclasses.replace(record_spec(source, field_name, task, data, holdout_keep), raw=read.raw)
    dataset = read.dataset.map_batches(
        prepare_records,
        batch_format="pyarrow",
        fn_kwargs={"spec": spec, "ledger": ledger},
        batch_size=data.batch_size,
        num_cpus=READ_CPUS,
    )
    names = label_names or read.label_names
    if names and task.label_column:
        dataset = dataset.map_batches(
            name_integer_labels,
            batch_format="pyarrow",
            fn_kwargs={"column": task.label_column, "names": names},
        )
    return dataset, read.label_names


def name_integer_labels(table: pa.Table, column: str, names: list[str]) -> pa.Table:
    """Hub datasets store ClassLabel ids; the recorded map speaks names."""
    if column not in table.column_names:
        return table

    def name(v: Any) -> Any:
        return names[v] if isinstance(v, int) and 0 <= v < len(names) else v

    values = [
        ([name(x) for x in v] if isinstance(v, list) else name(v)) for v in table.column(column).to_pylist()
    ]
    return table.set_column(table.column_names.index(column), column, pa.array(values))


def _column_values(dataset: ray.data.Dataset, column: str) -> Iterator[Any]:
    """Every value of one column of a split, in one streaming pass."""
    for table in dataset.select_columns([column]).iter_batches(batch_format="pyarrow", batch_size=4096):
        yield from table.column(column).to_pylist()


def derive_labels(values: Iterable[Any], task: Task) -> LabelMap:
    """The label map of the training split, from its label column's values."""
    seen = {label_key(v) for value in values for v in task.label_values(value)}
    if not seen:
        raise DataError(
            "data.train: no labelled rows were found, so there is no label map; check the label column "
            "(data.columns) and the source"
        )
    return LabelMap.from_values(seen)


def preprocess_settings(
    data: DataConfig,
    task: Task,
    labels: LabelMap | None,
    hub_names: list[str] | None,
    values: Callable[[str], Iterable[Any]],
) -> PreprocessSettings:
    """The settings a split is tokenized with: the label map (given, declared by the hub dataset, or
    the sorted labels `values(label column)` streams from the training split) and what the task
    derives from its training data."""
    if labels is None and task.label_column is not None:
        if data.labels is not None:
            labels = LabelMap(names=list(data.labels))
        elif hub_names is not None:
            labels = LabelMap(names=hub_names)
        else:
            labels = derive_labels(values(task.label_column), task)
    return task.finish_settings(PreprocessSettings.from_config(data, task.name, labels), values)


def build_tokenized(
    data: DataConfig,
    task_name: str,
    tokenizer_source: str,
    *,
    available_cpus: float | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    labels: LabelMap | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    settings: PreprocessSettings | None = None,
) -> TokenizedData:
    """Lazy tokenized train/validation datasets for `task_name`, with the label map recorded.
    `tokenizer`: the one `tokenizer_source` names, if the caller loaded it already (the CLI loads it
    while Ray starts). `settings`: tokenize with these (a checkpoint's own, to evaluate it as training
    did) instead of deriving them from `data` and the training split."""
    if data.tokenized is not None:
        return read_tokenized(
            data,
            task_name,
            tokenizer_source,
            revision=revision,
            trust_remote_code=trust_remote_code,
            tokenizer=tokenizer,
        )
    task = get_task(task_name)
    # Surface a row's DataError itself (with its fix), not Ray's generic "UDF failed" wrapper.
    ray.data.DataContext.get_current().raise_original_map_exception = True
    ledgers = {"train": SharedLedger.new()}
    held_out = data.validation is None and data.validation_fraction > 0
    train, hub_names = _records(
        data.train,
        "data.train",
        task,
        data,
        holdout_keep="train" if held_out else None,
        ledger=ledgers["train"],
    )
    if data.limit is not None:
        train = train.limit(data.limit)
    if data.shuffle:
        # One global, seeded shuffle (Ray Data's out-of-core all-to-all), so that training reads mixed
        # shards however the source was ordered. It moves the records, before tokenizing: they are half
        # the bytes of the model inputs, and the tokenized rows then stream to the writer.
        train = train.random_shuffle(seed=data.seed)
    validation = None
    if data.validation is not None or held_out:
        ledgers["validation"] = SharedLedger.new()
        validation, _ = _records(
            data.validation or data.train,
            "data.validation" if data.validation else "data.train",
            task,
            data,
            holdout_keep="validation" if held_out else None,
            ledger=ledgers["validation"],
            label_names=hub_names,
        )

    def training_rows() -> ray.data.Dataset:
        """The training split's records once more, for a pass over one of its columns."""
        return _records(
            data.train,
            "data.train",
            task,
            data,
            holdout_keep="train" if held_out else None,
            ledger=None,
        )[0]

    if settings is None:
        settings = preprocess_settings(
            data, task, labels, hub_names, lambda column: _column_values(training_rows(), column)
        )
    # Loading once on the driver fails fast on a bad tokenizer, before any actor starts.
    if tokenizer is None:
        tokenizer = load_tokenizer(
            tokenizer_source, task_name, revision=revision, trust_remote_code=trust_remote_code
        )
    tokenizer_class = tokenizer_class_path(tokenizer)
    # The cluster's CPUs, or what a caller knows is left (training passes its total less its workers').
    cpus = available_cpus if available_cpus is not None else float(ray.cluster_resources().get("CPU", 1.0))
    pool = tokenizer_pool(data, cpus)

    def tokenize(dataset: ray.data.Dataset, split: str) -> ray.data.Dataset:
        return dataset.map_batches(
            TokenizeBatch,
            batch_format="pyarrow",
            batch_size=data.batch_size,
            compute=ray.data.ActorPoolStrategy(size=pool.actors),
            num_cpus=pool.cpus_per_actor,
            fn_constructor_kwargs={
                "tokenizer_source": tokenizer_source,
                "settings": settings.model_dump(mode="json"),
                "on_bad_rows": data.on_bad_rows,
                "ledger": ledgers[split],
                "revision": revision,
                "trust_remote_code": trust_remote_code,
                "tokenizer_class": tokenizer_class,
                "mode": "evaluate" if split == "validation" else "train",
                "threads": pool.threads,
            },
        )

    return TokenizedData(
        train=tokenize(train, "train"),
        validation=tokenize(validation, "validation") if validation is not None else None,
        settings=settings,
        tokenizer_source=tokenizer_source,
        ledgers=ledgers,
        tokenizer=tokenizer,
    )
