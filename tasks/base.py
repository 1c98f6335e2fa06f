"""What a task is: the `Task` base class every task module subclasses once.

A task module holds everything that is specific to its task, and nothing outside the task modules asks
for a task by name: the data stage calls `preprocess` and `row_problem`, training calls `collator`,
`model_kwargs`, `loss` and `evaluator`, serving builds the request model from `Input` and `Parameters`
and answers with `handler`, and routes that serve only some tasks ask for a capability in
`capabilities`. The defaults below are what most tasks share; a task overrides what differs.

Importing a task module imports neither torch nor transformers (they are imported inside the methods
that need them), so the HTTP ingress can read a task's schemas without the model stack.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel

from rayformers.config import DataConfig
from rayformers.data.preprocess import Columns, Mode
from rayformers.data.rows import text_problem
from rayformers.manifest import PreprocessSettings, label_key
from rayformers.tasks.checkpoint import label_kwargs
from rayformers.tasks.evaluation import Evaluator
from rayformers.tasks.schemas import TEXT_HINT
from rayformers.validation import ConfigIssue

if TYPE_CHECKING:
    import torch

    from rayformers.data.collate import PaddingCollator
    from rayformers.tasks.handler import Handler

__all__ = ["Capability", "LabelKind", "Playground", "PlaygroundForm", "PlaygroundResult", "Task"]

LabelKind = Literal["sequence", "token", "none"]
Capability = Literal["generate", "embed", "rerank"]
"""What a route may ask of a task: `generate` (OpenAI completions and chat: the handler continues a
prompt, with usage and streaming), `embed` (OpenAI embeddings: one vector per text), `rerank` (`/v1/rerank`:
`/predict` takes `{query, texts}` and answers `[{index, score}]`, best first)."""

PlaygroundForm = Literal[
    "text", "text-pair", "question-context", "text-labels", "query-documents", "prompt", "two-texts"
]
"""The playground page's form for one input: a text; a text and an optional second text (`{text, text_pair}`); a
question and its context; a text and candidate labels; a query and documents (`{query, texts}`); a prompt with
decoding parameters (`max_new_tokens`, `temperature`); two texts compared."""
PlaygroundResult = Literal["labels", "fills", "entities", "answer", "text", "ranking", "embedding", "json"]
"""How the page shows an answer: labels with score bars (`{label, score}`, a list of them, or `{labels, scores}`),
filled-in sequences with score bars, entities highlighted in the text (`start`/`end` offsets), the answer span
highlighted in its context, generated text, documents in ranked order, vectors (dimension, norm, cosine of
two), or the JSON as it came."""


@dataclass(frozen=True)
class Playground:
    """How the serving playground page (`GET /` in a browser) asks for one input of the task and shows its
    answer. The page reads it from `GET /apps`, so it holds no table of task names."""

    form: PlaygroundForm
    result: PlaygroundResult
    parameters: dict[str, Any] = field(default_factory=dict)
    """Parameters the page sends with every request, for a fuller view than the task's defaults give (all
    of a classifier's labels, not only the best)."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Task:
    """One task: its data, model, training and serving behaviour. Subclasses set the class attributes
    (`preprocess` and `evaluator_class` among them); every method has a default that fits most tasks."""

    name: ClassVar[str]
    summary: ClassVar[str]

    # --- data ----------------------------------------------------------------------------------
    columns: ClassVar[tuple[str, ...]]
    """Columns a training row must have (task-side names; `data.columns` maps the user's names)."""
    optional_columns: ClassVar[tuple[str, ...]] = ()
    """Columns used when present (e.g. `text_pair` for sentence-pair classification)."""
    text_columns: ClassVar[tuple[str, ...]] = ("text",)
    """Columns whose texts a tokenizer is trained on (`rayformers data train-tokenizer`)."""
    label_column: ClassVar[str | None] = None
    """The column mapped through the recorded label map; None: the task has no label map."""
    label_kind: ClassVar[LabelKind] = "none"
    """One label per row (`sequence`), one per word (`token`), or no label map (`none`)."""
    evaluation_columns: ClassVar[frozenset[str]] = frozenset()
    """Columns preprocessing adds in `evaluate` mode that the evaluator reads as Python values."""
    causal_lm: ClassVar[bool] = False
    """The labels are the inputs themselves (a causal LM learns every next token): the collator makes them."""

    # --- model ---------------------------------------------------------------------------------
    auto_model: ClassVar[str]
    """The transformers Auto class that builds and loads the model."""
    peft_task_type: ClassVar[str | None] = None
    """peft's `TaskType` name for LoRA (e.g. SEQ_CLS)."""
    head_modules: ClassVar[tuple[str, ...]] = ()
    """Names of head modules that are new weights: with LoRA they still train and are saved."""
    ddp_find_unused_parameters: ClassVar[bool] = False
    """Some parameters get no gradient in this task's loss (e.g. a pooler the loss never uses)."""
    pooling: ClassVar[Literal["mean", "cls"] | None] = None
    """How hidden states become one vector, recorded in the manifest (feature extraction)."""

    # --- evaluation ----------------------------------------------------------------------------
    evaluator_class: ClassVar[type[Evaluator]]
    """What scores an evaluation pass (`evaluator` builds one per pass)."""
    metrics: ClassVar[tuple[str, ...]]
    default_metric: ClassVar[str]
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    """Metrics that rank checkpoints lowest first (every other one ranks highest first)."""

    # --- serving -------------------------------------------------------------------------------
    pipeline_task: ClassVar[str | None] = None
    """The transformers `pipeline()` task that loads this task's checkpoints, where there is one."""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    Input: ClassVar[Any] = str
    """The pydantic-compatible type of ONE request input (e.g. `str`, or `str | TextPair`)."""
    Parameters: ClassVar[type[BaseModel]]
    """The request's `parameters`; unknown names are errors."""
    input_hint: ClassVar[str] = TEXT_HINT
    """How one input looks, for error messages."""
    handler: ClassVar[type[Handler]]
    """The serving handler class (a plain class; Ray Serve deployments wrap it)."""
    playground: ClassVar[Playground] = Playground(form="text", result="json")
    """The playground page's form and answer view; a task that sets none gets a text box and raw JSON."""

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    def __reduce__(self) -> tuple[Callable[[str], Task], tuple[str]]:
        # One instance per task, found again by name in any process.
        from rayformers.tasks import get_task

        return (get_task, (self.name,))

    @property
    def all_columns(self) -> tuple[str, ...]:
        return self.columns + self.optional_columns

    # --- config --------------------------------------------------------------------------------

    def config_issues(self, data: DataConfig) -> list[ConfigIssue]:
        """Mistakes in the `data` section that only this task can see (reported by `validate`)."""
        return []

    def default_metric_for(self, settings: PreprocessSettings) -> str:
        """The metric that ranks checkpoints when `train.metric` is unset, for data recorded in
        `settings` (a task whose best metric depends on its data chooses here)."""
        return self.default_metric

    def metric_is_lower_better(self, metric: str) -> bool:
        """Whether a lower `metric` is better, for ranking checkpoints."""
        return metric in self.lower_is_better

    # --- data ----------------------------------------------------------------------------------

    def row_problem(
        self, row: Mapping[str, Any], columns: Sequence[str], settings: PreprocessSettings
    ) -> tuple[str, str] | None:
        """(reason, detail) when a row cannot be used, else None. `columns` are the ones to check:
        the required columns and the optional ones the data has. By default every column is a
        non-empty text and the label column holds a label of the label map."""
        for column in columns:
            value = row.get(column)
            if column == self.label_column:
                if value is None:
                    return "missing label", "the row has no label"
                label2id = settings.label2id
                if label_key(value) not in label2id:
                    known = ", ".join(list(label2id)[:20])
                    return "unknown label", f"label {value!r} is not one of the training labels ({known})"
                continue
            problem = text_problem(value, column)
            if problem:
                return problem, f"column {column!r} is {value!r}"
        return None

    def label_values(self, value: Any) -> Iterable[Any]:
        """The raw labels one row's label column holds (for deriving the label map)."""
        if self.label_kind == "token" and isinstance(value, list):
            return [v for v in value if v is not None]
        return [] if value is None or isinstance(value, list) else [value]

    def finish_settings(
        self, settings: PreprocessSettings, values: Callable[[str], Iterable[Any]]
    ) -> PreprocessSettings:
        """The settings once the task has looked at its training data: `values(column)` streams one
        column of the training split. Most tasks need nothing beyond the label map."""
        return settings

    def preprocess(
        self, batch: Mapping[str, Sequence[Any]], tokenizer: Any, settings: PreprocessSettings, mode: Mode
    ) -> Columns:
        """Raw task-side columns in, model inputs out (one function, three modes: `train` adds what the
        loss needs, `evaluate` also what the evaluator needs, `inference` what the handler needs). A task
        sets it to its module's function: `preprocess = staticmethod(tokenize_...)`."""
        raise NotImplementedError

    def prepare_tokenizer(self, tokenizer: Any, reload: Callable[..., Any]) -> Any:
        """The tokenizer as this task needs it; `reload(**kwargs)` loads it again with other options."""
        return tokenizer

    def collator(
        self,
        tokenizer: Any,
        *,
        pad_to_multiple_of: int | None = None,
        mlm_probability: float = 0.15,
        seed: int | None = None,
        evaluation: bool = False,
    ) -> PaddingCollator:
        """The collator that pads (and, for masked LM, masks) this task's batches; with `evaluation`,
        the `evaluation_columns` pass through as Python values."""
        from rayformers.data.collate import PaddingCollator

        return PaddingCollator(
            tokenizer.pad_token_id,
            pad_to_multiple_of,
            causal_lm=self.causal_lm,
            passthrough=self.evaluation_columns if evaluation else frozenset(),
        )

    # --- model ---------------------------------------------------------------------------------

    def auto_model_class(self) -> Any:
        """The transformers Auto class (imports transformers)."""
        return getattr(importlib.import_module("transformers"), self.auto_model)

    def model_kwargs(self, settings: PreprocessSettings) -> dict[str, Any]:
        """Config keyword arguments the model is built and loaded with: the label map, for tasks that
        have one (a base model from the hub has its own, or none)."""
        if self.label_kind == "none" or settings.labels is None:
            return {}
        return label_kwargs(settings.labels)

    def loss(
        self, model: Any, batch: Mapping[str, torch.Tensor], settings: PreprocessSettings
    ) -> torch.Tensor:
        """The training loss of one batch: the model's own, by default (`settings` hold what the task
        recorded about its data, for a loss that depends on it)."""
        return model(**batch).loss  # type: ignore[no-any-return]

    def evaluator(
        self, settings: PreprocessSettings, tokenizer: Any, metric_module: str | None = None
    ) -> Evaluator:
        """A fresh evaluator for one evaluation pass over this worker's validation shard."""
        return self.evaluator_class(self, settings, tokenizer, metric_module)
