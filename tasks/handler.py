"""What every task's serving handler shares: input and parameter validation, length-sorted batching, and
the one tokenize -> pad -> forward path through the task's own preprocessing.

A handler is a plain class: built from a loaded checkpoint, it turns a list of inputs into one JSON-able
output per input. Ray Serve deployments wrap it (batching, replicas, adapters); tests call it directly.
Tokenizing through the task's `preprocess` in inference mode is the train/serve parity guarantee: the
same raw text becomes the same token ids training saw.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, TypeAdapter, ValidationError

from rayformers.errors import UserError
from rayformers.manifest import CheckpointManifest, PreprocessSettings

if TYPE_CHECKING:
    import torch

    from rayformers.tasks.base import Task

__all__ = [
    "BYTES_PER_TOKEN",
    "DEFAULT_BATCH_TOKENS",
    "DEFAULT_CALL_TOKENS",
    "MODEL_INPUTS",
    "Columns",
    "ForwardStats",
    "Handler",
    "InputError",
    "Loaded",
    "estimated_tokens",
    "micro_batches",
    "texts_of",
]

Columns = dict[str, list[Any]]
"""Preprocessing output: column name -> one value per row."""

_INPUT_INDEX = re.compile(r"^inputs\[(\d+)\]")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Columns a model's forward takes; the rest (offsets, word ids, truncated) stay with the handler."""


class InputError(UserError):
    """A request whose inputs or parameters the model cannot process (HTTP 422 when served).

    `field` is the dotted path of the offending value (`inputs`, `inputs[2].context`,
    `parameters.candidate_labels`) so a client can point at it; `message` names the bad value and the fix.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str]]:
        # Ray ships exceptions between processes by pickling: keep both arguments.
        return (type(self), (self.field, self.message))


class Loaded(Protocol):
    """What a handler is built from: a checkpoint loaded for serving (`rayformers.serving.checkpoint`)."""

    task: Task
    manifest: CheckpointManifest | None
    settings: PreprocessSettings
    tokenizer: Any
    model: Any
    device: str
    path: str


DEFAULT_BATCH_TOKENS = {"cpu": 512, "cuda": 16384}
"""Padded tokens one forward may hold by device (`serve.apps[].max_batch_tokens`): on CPU a forward costs
about what its padded tokens cost, so batches are cut short by length rather than padded to their longest
row (on a MiniLM-size classifier, 32 requests of 5-120 words ran at 67 sequences/s with 512, 49 with 4096);
a GPU wants large forwards."""


DEFAULT_CALL_TOKENS = {"cpu": 65_536, "cuda": 1_048_576}
"""Estimated tokens one model call may hold by device (`serve.apps[].max_call_tokens`): on CPU some
seconds of a base-size encoder, so no one request holds the model thread (and the requests behind it)
for minutes, while 64 full-length inputs of 512 tokens still fit."""

BYTES_PER_TOKEN = 3
"""`estimated_tokens`' rate: English tokenizes at 4-5 bytes of UTF-8 a token and CJK at about 3, so the
estimate errs high for most text, as a limit should."""


def estimated_tokens(*texts: str) -> int:
    """About how many tokens `texts` make together (with a sequence's two special tokens), without a
    tokenizer: cheap enough for the event loop, which must bound a request before the model thread
    tokenizes it."""
    return sum(len(t.encode("utf-8", "replace")) for t in texts) // BYTES_PER_TOKEN + 2


def texts_of(value: Any) -> list[str]:
    """Every string in one input as a client sent it (a string, a mapping, a list, a model), in order."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in texts_of(item)]
    return []


def micro_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Row indices cut into forwards of similar lengths: sorted by length, each forward as many rows as
    fit `budget` padded tokens (its longest row times its rows); a row longer than the budget goes alone."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        size = lengths[index]
        if current and max(longest, size) * (len(current) + 1) > budget:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, size)
    if current:
        batches.append(current)
    return batches


@dataclass
class ForwardStats:
    """What the forwards of one `predict_many` call held: for metrics, and to show padding is small."""

    forwards: int = 0
    rows: int = 0
    tokens: int = 0
    padded_tokens: int = 0


class Handler(ABC):
    """One task's inference: `predict(inputs, parameters)` -> one output per input, in input order;
    `predict_many` answers several requests at once, in as few forwards as their parameters allow.

    Subclasses implement `_predict(items, parameters)`, which receives the inputs sorted by `length`
    and one validated `Parameters` per input; the task's `Input` and `Parameters` (pure pydantic, which
    the HTTP ingress reads too) validate them. A handler whose parameters only change how outputs are
    read (`shares_forward`) gets the inputs of requests with different parameters in one call; the
    others get one call per distinct parameters. Encoders forward through `forward_rows`, which cuts
    the rows into length-sorted micro-batches under `max_batch_tokens`.
    """

    warmup_inputs: list[Any] = ["Hello world."]
    warmup_parameters: dict[str, Any] = {}
    shares_forward: ClassVar[bool] = False
    """Parameters never change the forward, only how its outputs are read."""
    batch_wait_s: ClassVar[float] = 0.0
    """How long a replica waits for more requests before a batch, unless configured: the time a batch
    takes to fill up, against what a request waits for it."""
    reports_usage: ClassVar[bool] = False
    """`_predict` returns (output, usage) pairs: tokens counted for OpenAI-style `usage`."""

    def __init__(self, loaded: Loaded, *, max_batch_tokens: int | None = None) -> None:
        import torch

        from rayformers.data.collate import PaddingCollator

        self.loaded = loaded
        self.task = loaded.task
        self.tokenizer = loaded.tokenizer
        # Serving always truncates at the training max_length. `truncation: false` made over-long
        # training rows bad rows, which a request cannot be: its text would overrun the model's
        # positions and fail in the forward (a 500 and a health strike for the client's long text).
        self.settings = loaded.settings.model_copy(update={"truncation": True})
        self.model = loaded.model
        self.device = torch.device(loaded.device)
        self.max_batch_tokens = max_batch_tokens or DEFAULT_BATCH_TOKENS.get(self.device.type, 512)
        self._collate = PaddingCollator(self.tokenizer.pad_token_id)
        self._input: TypeAdapter[Any] = TypeAdapter(self.task.Input)
        self.last_batch_size = 0
        """Inputs in the latest `predict` call, for batch-size metrics."""
        self.stats = ForwardStats()
        """The forwards of the latest call."""

    @property
    def Parameters(self) -> type[BaseModel]:
        return self.task.Parameters

    # --- the public surface --------------------------------------------------------------------

    def predict(
        self, inputs: Sequence[Any], parameters: BaseModel | Mapping[str, Any] | None = None
    ) -> list[Any]:
        """One output per input, in the order given. Raises InputError for inputs the model cannot
        take and pydantic's ValidationError for bad parameters (each names the field)."""
        return self.predict_many([(inputs, parameters)])[0]

    def predict_with_usage(
        self, inputs: Sequence[Any], parameters: BaseModel | Mapping[str, Any] | None = None
    ) -> tuple[list[Any], list[Any]]:
        """`predict`'s outputs and, per input, its usage (None where the task counts none)."""
        outputs, usage = self.predict_many_with_usage([(inputs, parameters)])
        return outputs[0], usage[0]

    def predict_many(self, requests: Sequence[tuple[Sequence[Any], Any]]) -> list[list[Any]]:
        """Each request's outputs, for (inputs, parameters) requests answered together."""
        return self.predict_many_with_usage(requests)[0]

    def predict_many_with_usage(
        self, requests: Sequence[tuple[Sequence[Any], Any]]
    ) -> tuple[list[list[Any]], list[list[Any]]]:
        parsed = [(self.parse_inputs(inputs), self.parse_parameters(p)) for inputs, p in requests]
        groups: dict[str, list[int]] = {}
        for index, (_, params) in enumerate(parsed):
            groups.setdefault(self.forward_key(params), []).append(index)
        self.stats = ForwardStats()
        self.last_batch_size = sum(len(items) for items, _ in parsed)
        outputs: list[list[Any]] = [[] for _ in parsed]
        usage: list[list[Any]] = [[] for _ in parsed]
        for members in groups.values():
            items = [item for m in members for item in parsed[m][0]]
            params = [parsed[m][1] for m in members for _ in parsed[m][0]]
            answered = self.in_length_order(items, params, self._predict)
            start = 0
            for m in members:
                end = start + len(parsed[m][0])
                for answer in answered[start:end]:
                    output, counted = answer if self.reports_usage else (answer, None)
                    outputs[m].append(output)
                    usage[m].append(counted)
                start = end
        return outputs, usage

    def forward_key(self, parameters: Any) -> str:
        """Requests whose parameters have equal keys are answered by the same forwards: all of them
        where the parameters only change how outputs are read (`shares_forward`), else those with
        equal parameters."""
        return "" if self.shares_forward else parameters.model_dump_json()

    def warmup(self) -> None:
        """Run one tiny request end to end, so a replica reports healthy only once it can answer."""
        self.predict(self.warmup_inputs, self.warmup_parameters)

    def call_tokens(self, inputs: Sequence[Any], parameters: Any) -> int:
        """About how many tokens a request's forwards hold, estimated without tokenizing (what
        `serve.apps[].max_call_tokens` bounds): `inputs` as the client sent them, `parameters` validated.
        Here each input is one row of at most max_length tokens; tasks whose inputs become several rows,
        or that generate tokens, count those."""
        return sum(self.row_tokens(item) for item in inputs)

    def row_tokens(self, item: Any) -> int:
        """`estimated_tokens` of every string in `item`, as one row of at most max_length tokens."""
        return min(self.settings.max_length, estimated_tokens(*texts_of(item)))

    def length(self, input: Any) -> int:
        """A cheap length proxy (characters) used to sort a batch so similar lengths pad together."""
        if isinstance(input, str):
            return len(input)
        if isinstance(input, BaseModel):
            return sum(len(v) for v in input.model_dump().values() if isinstance(v, str))
        return len(str(input))

    def parse_parameters(self, parameters: BaseModel | Mapping[str, Any] | None) -> Any:
        """Validated `Parameters` from a model, a mapping, or None (the defaults)."""
        if isinstance(parameters, self.Parameters):
            return parameters
        if isinstance(parameters, BaseModel):
            parameters = parameters.model_dump(exclude_unset=True)
        return self.Parameters.model_validate(dict(parameters or {}))

    def parse_inputs(self, inputs: Sequence[Any]) -> list[Any]:
        """Validated inputs (dicts become the task's input models); InputError names the bad one."""
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise InputError(
                "inputs", f"expected a list of inputs, got {type(inputs).__name__}; wrap it in a list"
            )
        if not inputs:
            raise InputError("inputs", "the list is empty; give at least one input")
        items = []
        for i, item in enumerate(inputs):
            try:
                items.append(self._input.validate_python(item))
            except ValidationError as err:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in err.errors()[:3]
                )
                raise InputError(
                    f"inputs[{i}]", f"expected {self.task.input_hint}, got {item!r} ({problems})"
                ) from None
        return items

    # --- shared machinery for subclasses -------------------------------------------------------

    @abstractmethod
    def _predict(self, inputs: list[Any], parameters: list[Any]) -> list[Any]:
        """Outputs for `inputs` (validated and sorted by length), one per input; `parameters[i]` are
        input i's (all equal unless `shares_forward`)."""

    def in_length_order(
        self, items: list[Any], parameters: list[Any], run: Callable[[list[Any], list[Any]], list[Any]]
    ) -> list[Any]:
        """`run` over `items` (and their parameters) sorted by `length`, results in input order."""
        order = sorted(range(len(items)), key=lambda i: self.length(items[i]))
        try:
            outputs = run([items[i] for i in order], [parameters[i] for i in order])
        except InputError as err:
            # Handlers number inputs as they see them (sorted); the client numbered them as sent.
            found = _INPUT_INDEX.match(err.field)
            if found is None:
                raise
            field = f"inputs[{order[int(found.group(1))]}]{err.field[found.end() :]}"
            raise InputError(field, err.message) from None
        restored: list[Any] = [None] * len(items)
        for position, index in enumerate(order):
            restored[index] = outputs[position]
        return restored

    def forward_rows(
        self, columns: Mapping[str, list[Any]], take: Callable[[Any, list[int]], list[Any]]
    ) -> list[Any]:
        """One result per row of `columns`: the rows forwarded in length-sorted micro-batches under
        `max_batch_tokens`, and `take(outputs, rows)` reading each micro-batch's rows out of its outputs."""
        lengths = [len(ids) for ids in columns["input_ids"]]
        results: list[Any] = [None] * len(lengths)
        for rows in micro_batches(lengths, self.max_batch_tokens):
            batch = self.to_batch({k: [v[i] for i in rows] for k, v in columns.items() if k in MODEL_INPUTS})
            self.stats.forwards += 1
            self.stats.rows += len(rows)
            self.stats.tokens += sum(lengths[i] for i in rows)
            self.stats.padded_tokens += batch["input_ids"].numel()
            for index, value in zip(rows, take(self.forward(batch), rows), strict=True):
                results[index] = value
        return results

    def tokenize(
        self, columns: Mapping[str, list[Any]], settings: PreprocessSettings | None = None
    ) -> Columns:
        """The task's preprocessing in inference mode: what training ran, minus the labels."""
        return self.task.preprocess(columns, self.tokenizer, settings or self.settings, "inference")

    def to_batch(self, rows: Mapping[str, list[Any]]) -> dict[str, torch.Tensor]:
        """Model inputs padded on the right with the training collator, on the model's device."""
        padded = self._collate({k: v for k, v in rows.items() if k in MODEL_INPUTS})
        return {k: v.to(self.device) for k, v in padded.items()}

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        """One forward pass without autograd bookkeeping."""
        import torch

        with torch.inference_mode():
            return self.model(**batch)

    def label_names(self) -> list[str]:
        """Label names by id: the recorded label map, else the model config's."""
        if self.settings.labels is not None:
            return list(self.settings.labels.names)
        id2label = getattr(self.model.config, "id2label", None) or {}
        return [str(id2label[i]) for i in sorted(id2label)]
