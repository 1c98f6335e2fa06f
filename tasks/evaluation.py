"""Evaluation over the whole validation split: each worker feeds its shard's batches to its task's
`Evaluator`, which keeps one small record per example; the records of every rank are gathered and the
task's metrics computed on all of them, so the metrics are the split's, not one shard's.

`evaluate` is the driver training calls. What the evaluators share lives here: gathering across ranks,
the mean loss, (prediction, reference) pairs that a user's local `evaluate` module can also score, and
the token-weighted perplexity of the language-modelling tasks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayformers.manifest import PreprocessSettings

if TYPE_CHECKING:
    import torch

    from rayformers.tasks.base import Task

__all__ = [
    "Evaluator",
    "LanguageModelEvaluator",
    "PairEvaluator",
    "evaluate",
    "gather",
    "module_metrics",
    "perplexity",
    "rank_share",
]


def gather(items: list[Any]) -> list[Any]:
    """Every rank's `items`, concatenated in rank order (just `items` without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    everything: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everything, items)
    return [x for part in everything for x in part]


def rank_share() -> tuple[int, int]:
    """(rank, world size) of this worker in torch.distributed, or (0, 1) without it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


class Evaluator:
    """One evaluation pass of one task on one worker: `add` each batch, then `result()` (on every rank:
    it gathers) scores everything every rank saw. By default the model's own loss is averaged."""

    def __init__(self, task: Task, settings: PreprocessSettings, tokenizer: Any, metric_module: str | None):
        self.task, self.settings, self.tokenizer, self.metric_module = (
            task,
            settings,
            tokenizer,
            metric_module,
        )
        self.rows: list[Any] = []
        self.loss_sum, self.loss_count = 0.0, 0

    def inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The model's keyword arguments out of a collated batch."""
        return dict(batch)

    def add(self, model: Any, batch: Mapping[str, Any], collated: Mapping[str, Any]) -> None:
        """Score one batch: `batch` holds its tensors on the model's device, `collated` also the
        evaluation columns (Python values) the task's preprocessing added."""
        out = model(**self.inputs(batch))
        self.count_loss(out, len(batch["input_ids"]))
        self.record(out, batch, collated)

    def count_loss(self, out: Any, rows: int) -> None:
        if getattr(out, "loss", None) is not None:
            self.loss_sum += float(out.loss) * rows
            self.loss_count += rows

    def record(self, out: Any, batch: Mapping[str, Any], collated: Mapping[str, Any]) -> None:
        """Keep what the metrics need of one batch's outputs in `self.rows`."""

    def score(self, rows: list[Any]) -> dict[str, float]:
        """The task's metrics over every rank's rows."""
        return {}

    def result(self) -> dict[str, float]:
        rows = gather(self.rows)
        totals = gather([(self.loss_sum, self.loss_count)])
        result: dict[str, float] = {}
        count = sum(c for _, c in totals)
        if count:
            result["loss"] = sum(s for s, _ in totals) / count
        result.update(self.score(rows))
        return result


class PairEvaluator(Evaluator):
    """Rows are (prediction, reference) pairs, which a user's local `evaluate` module (`train.metric`
    naming one) also scores as they are."""

    def result(self) -> dict[str, float]:
        result = super().result()
        if self.metric_module:
            rows = gather(self.rows)
            if rows:
                result.update(module_metrics(self.metric_module, [p for p, _ in rows], [r for _, r in rows]))
        return result


class LanguageModelEvaluator(Evaluator):
    """Perplexity: exp of the token-weighted mean loss over every predicted token of the split.
    `shifted`: a causal model predicts every token but the first of each row."""

    shifted = False

    def add(self, model: Any, batch: Mapping[str, Any], collated: Mapping[str, Any]) -> None:
        from rayformers.data.preprocess import IGNORE_INDEX

        out = model(**self.inputs(batch))
        labels = batch["labels"][:, 1:] if self.shifted else batch["labels"]
        tokens = int((labels != IGNORE_INDEX).sum())
        self.rows.append((float(out.loss) * tokens, tokens))

    def score(self, rows: list[Any]) -> dict[str, float]:
        return perplexity(sum(s for s, _ in rows), sum(t for _, t in rows))


def perplexity(total_loss: float, tokens: int) -> dict[str, float]:
    """exp(mean token loss), from the summed loss over `tokens` predicted tokens."""
    mean = total_loss / max(tokens, 1)
    return {"perplexity": float(math.exp(min(mean, 50.0))), "loss": float(mean)}


def module_metrics(path: str, predictions: Any, references: Any) -> dict[str, float]:
    """A user's local `evaluate` module (a directory or .py file), computed as evaluate does: each value
    under `<module>/<key>`, and the first one also under `path` itself, which is what ranks checkpoints
    when `train.metric` is that path."""
    import evaluate as hf_evaluate

    module = hf_evaluate.load(path)
    computed = module.compute(predictions=predictions, references=references) or {}
    found = {k: float(v) for k, v in computed.items() if isinstance(v, (int, float))}
    if not found:
        return {}
    name = Path(path.rstrip("/")).stem
    return {path: next(iter(found.values())), **{f"{name}/{k}": v for k, v in found.items()}}


def evaluate(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    task: Task,
    settings: PreprocessSettings,
    tokenizer: Any,
    device: torch.device,
    metric_module: str | None = None,
) -> dict[str, float]:
    """The task's metrics (and mean loss) over every worker's collated `batches`."""
    import torch

    core = model.module if hasattr(model, "module") else model
    evaluator = task.evaluator(settings, tokenizer, metric_module)
    core.eval()
    with torch.no_grad():
        for collated in batches:
            tensors = {k: v.to(device) for k, v in collated.items() if isinstance(v, torch.Tensor)}
            evaluator.add(core, tensors, collated)
        result = evaluator.result()
    core.train()
    return result
