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
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, TypeAdapter, ValidationError

from rayformers.errors import UserError
from rayformers.manifest import CheckpointManifest, PreprocessSettings

if TYPE_CHECKING:
    import torch

    from rayformers.tasks.base import Task

__all__ = ["MODEL_INPUTS", "Columns", "Handler", "InputError", "Loaded"]

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


class Handler(ABC):
    """One task's inference: `predict(inputs, parameters)` -> one output per input, in input order.

    Subclasses implement `_predict`, which receives the inputs sorted by `length` (so padding is
    shortest where it can be) and validated parameters; the task's `Input` and `Parameters` (pure
    pydantic, which the HTTP ingress reads too) validate them.
    """

    warmup_inputs: list[Any] = ["Hello world."]
    warmup_parameters: dict[str, Any] = {}

    def __init__(self, loaded: Loaded) -> None:
        import torch

        from rayformers.data.collate import PaddingCollator

        self.loaded = loaded
        self.task = loaded.task
        self.tokenizer = loaded.tokenizer
        self.settings = loaded.settings
        self.model = loaded.model
        self.device = torch.device(loaded.device)
        self._collate = PaddingCollator(self.tokenizer.pad_token_id)
        self._input: TypeAdapter[Any] = TypeAdapter(self.task.Input)
        self.last_batch_size = 0
        """Inputs in the latest `predict` call, for batch-size metrics."""

    @property
    def Parameters(self) -> type[BaseModel]:
        return self.task.Parameters

    # --- the public surface --------------------------------------------------------------------

    def predict(
        self, inputs: Sequence[Any], parameters: BaseModel | Mapping[str, Any] | None = None
    ) -> list[Any]:
        """One output per input, in the order given. Raises InputError for inputs the model cannot
        take and pydantic's ValidationError for bad parameters (each names the field)."""
        items = self.parse_inputs(inputs)
        params = self.parse_parameters(parameters)
        return self.in_length_order(items, lambda batch: self._predict(batch, params))

    def warmup(self) -> None:
        """Run one tiny request end to end, so a replica reports healthy only once it can answer."""
        self.predict(self.warmup_inputs, self.warmup_parameters)

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
    def _predict(self, inputs: list[Any], parameters: Any) -> list[Any]:
        """Outputs for `inputs` (already validated and sorted by length), one per input."""

    def in_length_order(self, items: list[Any], run: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """`run` over `items` sorted by `length` (similar lengths pad together), results in input order."""
        self.last_batch_size = len(items)
        order = sorted(range(len(items)), key=lambda i: self.length(items[i]))
        try:
            outputs = run([items[i] for i in order])
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
