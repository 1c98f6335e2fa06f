"""What every task handler shares: input and parameter validation, length-sorted batching, and the
one tokenize -> pad -> forward path through the data stage's own preprocessing.

A handler is a plain class: built from a `LoadedModel`, it turns a list of inputs into one JSON-able
output per input. Ray Serve deployments wrap it (batching, replicas, adapters); tests call it
directly. Tokenizing through `TaskSpec.load_preprocess()` in inference mode is the train/serve parity
guarantee: the same raw text becomes the same token ids training saw.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, TypeAdapter, ValidationError

from rayformers.data.collate import PaddingCollator
from rayformers.manifest import PreprocessSettings
from rayformers.serving import schemas
from rayformers.serving.errors import CheckpointError, InputError

if TYPE_CHECKING:
    from rayformers.serving.checkpoint import LoadedModel

__all__ = ["Columns", "Handler", "build_handler"]

Columns = dict[str, list[Any]]
"""Preprocessing output: column name -> one value per row."""

_INPUT_INDEX = re.compile(r"^inputs\[(\d+)\]")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Columns a model's forward takes; the rest (offsets, word ids, truncated) stay with the handler."""


class Handler(ABC):
    """One task's inference: `predict(inputs, parameters)` -> one output per input, in input order.

    Subclasses set `task`, `Parameters`, `Input` (taken from `serving.schemas`, which the HTTP
    ingress reads without importing this module) and implement `_predict`, which receives the inputs
    sorted by `length` (so padding is shortest where it can be) and validated parameters.
    """

    task: ClassVar[str]
    Parameters: ClassVar[type[BaseModel]]
    Input: ClassVar[Any] = str
    input_hint: ClassVar[str] = schemas.TEXT_HINT
    """How one input looks, for error messages."""
    warmup_inputs: ClassVar[list[Any]] = ["Hello world."]
    warmup_parameters: ClassVar[dict[str, Any]] = {}

    def __init__(self, loaded: LoadedModel) -> None:
        if loaded.task.name != self.task:
            raise CheckpointError(
                f"{type(self).__name__} serves {self.task!r}, but the checkpoint at {loaded.path} is for "
                f"{loaded.task.name!r}; build the handler named by the task registry"
            )
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.settings = loaded.settings
        self.model = loaded.model
        self.device = torch.device(loaded.device)
        self._preprocess = loaded.task.load_preprocess()
        self._collate = PaddingCollator(self.tokenizer.pad_token_id)
        self._input: TypeAdapter[Any] = TypeAdapter(self.Input)
        self.last_batch_size = 0
        """Inputs in the latest `predict` call, for batch-size metrics."""

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
                    f"inputs[{i}]", f"expected {self.input_hint}, got {item!r} ({problems})"
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
        """The task's preprocessing function in inference mode: what training ran, minus the labels."""
        return self._preprocess(columns, self.tokenizer, settings or self.settings, mode="inference")  # type: ignore[no-any-return]

    def to_batch(self, rows: Mapping[str, list[Any]]) -> dict[str, torch.Tensor]:
        """Model inputs padded on the right with the training collator, on the model's device."""
        padded = self._collate({k: v for k, v in rows.items() if k in MODEL_INPUTS})
        return {k: v.to(self.device) for k, v in padded.items()}

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        """One forward pass without autograd bookkeeping."""
        with torch.inference_mode():
            return self.model(**batch)

    def label_names(self) -> list[str]:
        """Label names by id: the recorded label map, else the model config's."""
        if self.settings.labels is not None:
            return list(self.settings.labels.names)
        id2label = getattr(self.model.config, "id2label", None) or {}
        return [str(id2label[i]) for i in sorted(id2label)]


def build_handler(loaded: LoadedModel) -> Handler:
    """The registry's handler for the loaded checkpoint's task."""
    cls = loaded.task.load_handler()
    return cls(loaded)  # type: ignore[no-any-return]
