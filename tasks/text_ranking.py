"""Text ranking: a cross-encoder scores how relevant each text is to a query (reranking search results,
and sentence-pair similarity), reading query and text together.

Training rows are (`query`, `document`, `label`) with a numeric relevance. The model is a sequence
classifier with one output (`num_labels=1`): with binary labels (every label 0 or 1) it learns with
binary cross-entropy, and the sigmoid of its output is a probability of relevance; with graded labels
(any other numbers: 0-3 grades, similarity scores) it regresses them with mean squared error. Which one
is decided from the training labels and recorded in the manifest (`task_options.relevance`) and in the
model config (`problem_type`), so that `pipeline("text-classification", model=DIR)` and a request's
`function_to_apply: auto` turn the output into a probability exactly for binary relevance.

Evaluation reports Pearson and Spearman correlation of the scores with the labels over the whole split,
and, when queries come with lists of documents, NDCG@10 and MRR@10 per query; the list metrics rank
checkpoints when training queries have several documents each, Spearman otherwise.

Serving takes `{"query": ..., "texts": [...]}` and answers `[{"index", "score"}]`, best first (the shape
TEI's `/rerank` returns); the score is the model's own output, as
`pipeline("text-classification", model=DIR, function_to_apply="none")` gives it, unless the request asks
for a probability (`function_to_apply`). The `rerank` capability puts the app behind `/v1/rerank` too.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from rayformers.data.preprocess import Columns, Mode, encode, model_inputs, truncated_rows
from rayformers.data.rows import text_problem
from rayformers.manifest import PreprocessSettings
from rayformers.tasks.base import Playground, Task
from rayformers.tasks.evaluation import Evaluator
from rayformers.tasks.handler import Handler, estimated_tokens, texts_of
from rayformers.tasks.schemas import InputModel, ParametersModel

if TYPE_CHECKING:
    import torch

__all__ = [
    "TASK",
    "QueryTexts",
    "RankingParameters",
    "RankingUsage",
    "TextRanking",
    "TextRankingHandler",
    "ranking_metrics",
    "relevance_loss",
    "relevance_of",
]

MAX_TEXTS = 256
"""Texts one query may bring in one input (split longer lists over several inputs)."""
LIST_CUTOFF = 10
"""NDCG and MRR look at the first 10 documents of each ranked list (NDCG@10, MRR@10)."""


class QueryTexts(InputModel):
    """One query and the texts to score against it."""

    query: str = Field(min_length=1, description="The query (or the first sentence of each pair).")
    texts: list[str] = Field(
        min_length=1, max_length=MAX_TEXTS, description="Texts to rank for the query (or second sentences)."
    )


class RankingParameters(ParametersModel):
    top_n: int | None = Field(
        default=None, ge=1, description="Return only the n best texts (all when unset)."
    )
    return_text: bool = Field(default=False, description="Include each text in its result.")
    function_to_apply: Literal["none", "sigmoid", "auto"] = Field(
        default="none",
        description="How the model's output becomes a score: none, the output itself (the logit for binary "
        "relevance; what `pipeline(..., function_to_apply='none')` gives); sigmoid, a probability; auto, "
        "sigmoid for binary relevance and the output for graded (the pipeline's default).",
    )


@dataclass
class RankingUsage:
    """Tokens one input cost (the query once per text it was paired with)."""

    prompt_tokens: int


def relevance_of(values: Iterable[Any]) -> str:
    """'binary' when every label is 0 or 1, else 'graded'."""
    return "binary" if all(_number(v) in (0.0, 1.0) for v in values) else "graded"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def query_id(query: str) -> str:
    """A stable id of a query, the same on every worker and in every batch (groups its documents)."""
    return hashlib.blake2b(query.encode(), digest_size=8).hexdigest()


def tokenize_ranking(
    batch: Mapping[str, Sequence[Any]], tokenizer: Any, settings: PreprocessSettings, mode: Mode = "train"
) -> Columns:
    """Each (query, document) pair encoded together, as a cross-encoder reads it; labels as floats."""
    queries, documents = list(batch["query"]), list(batch["document"])
    encoding = encode(tokenizer, settings, queries, documents)
    out = model_inputs(encoding)
    out["truncated"] = truncated_rows(encoding, settings.max_length, len(queries))
    if mode != "inference":
        out["labels"] = [float(_number(v)) for v in batch["label"]]  # type: ignore[arg-type]
    if mode == "evaluate":
        out["query_id"] = [query_id(q) for q in queries]
    return out


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (as Spearman's coefficient needs)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def ranking_metrics(rows: list[tuple[str, float, float]], lists: bool = True) -> dict[str, float]:
    """Pearson and Spearman of (query id, score, label) rows over the split; with `lists`, NDCG@10
    (linear gains: the label) and MRR@10 (a document is relevant when its label is above half the
    split's highest: 1 of 0/1, 2 of 0-2, 2 and 3 of 0-3 as TREC counts them) per query, averaged over the
    queries that have a document with a positive label."""
    if not rows:
        return {"pearson": 0.0, "spearman": 0.0}
    scores = np.array([s for _, s, _ in rows], dtype=np.float64)
    labels = np.array([label for _, _, label in rows], dtype=np.float64)
    result = {"pearson": _pearson(scores, labels), "spearman": _pearson(_ranks(scores), _ranks(labels))}
    if not lists:
        return result
    by_query: dict[str, list[tuple[float, float]]] = {}
    for query, score, label in rows:
        by_query.setdefault(query, []).append((score, label))
    threshold = labels.max() / 2 if labels.max() > 0 else math.inf
    ndcgs, reciprocal = [], []
    for documents in by_query.values():
        gains = np.array([max(label, 0.0) for _, label in documents])
        if gains.max() <= 0:
            continue  # no relevant document: no ranking of it can be better or worse
        ranked = gains[np.argsort([-s for s, _ in documents], kind="stable")][:LIST_CUTOFF]
        ideal = np.sort(gains)[::-1][:LIST_CUTOFF]
        discount = 1 / np.log2(np.arange(2, LIST_CUTOFF + 2))
        ndcgs.append(float((ranked * discount[: len(ranked)]).sum() / (ideal * discount[: len(ideal)]).sum()))
        hits = [i for i, gain in enumerate(ranked) if gain > threshold]
        reciprocal.append(1 / (hits[0] + 1) if hits else 0.0)
    result["ndcg_at_10"] = float(np.mean(ndcgs)) if ndcgs else 0.0
    result["mrr_at_10"] = float(np.mean(reciprocal)) if reciprocal else 0.0
    return result


def relevance_loss(logits: torch.Tensor, labels: torch.Tensor, settings: PreprocessSettings) -> torch.Tensor:
    """Binary cross-entropy on the logit for binary relevance, squared error for graded."""
    import torch

    predicted, target = logits.float()[..., 0], labels.float()
    if settings.task_options.get("relevance") == "graded":
        return torch.nn.functional.mse_loss(predicted, target)
    return torch.nn.functional.binary_cross_entropy_with_logits(predicted, target)


def _scores(
    logits: torch.Tensor, function: str, settings: PreprocessSettings, model_config: Any
) -> torch.Tensor:
    """One score per pair, as `function` says (see `RankingParameters.function_to_apply`). A plain
    Hugging Face cross-encoder with two labels scores its last label: the logit, or its probability."""
    logits = logits.float()
    if function == "auto":
        binary = settings.task_options.get("relevance") == "binary" or (
            "relevance" not in settings.task_options
            and getattr(model_config, "problem_type", None) != "regression"
        )
        function = "sigmoid" if binary else "none"
    if logits.shape[-1] > 1:
        return logits.softmax(-1)[..., -1] if function == "sigmoid" else logits[..., -1]
    return logits[..., 0].sigmoid() if function == "sigmoid" else logits[..., 0]


class RankingEvaluator(Evaluator):
    """(query id, score, label) per pair; the loss is the task's own."""

    def add(self, model: Any, batch: Mapping[str, Any], collated: Mapping[str, Any]) -> None:
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
        loss = relevance_loss(out.logits, batch["labels"], self.settings)
        self.loss_sum += float(loss) * len(batch["labels"])
        self.loss_count += len(batch["labels"])
        scores = out.logits.float()[..., 0].cpu().tolist()
        self.rows.extend(zip(collated["query_id"], scores, batch["labels"].cpu().tolist(), strict=True))

    def score(self, rows: list[Any]) -> dict[str, float]:
        return ranking_metrics(rows, lists=True)


class TextRankingHandler(Handler):
    """Scores every (query, text) pair of a batch in one forward pass; answers per input, best first."""

    warmup_inputs = [{"query": "Who works?", "texts": ["Alice works in Paris.", "It rains."]}]
    shares_forward = True
    reports_usage = True

    def length(self, input: QueryTexts) -> int:
        return len(input.query) * len(input.texts) + sum(len(t) for t in input.texts)

    def call_tokens(self, inputs: Sequence[Any], parameters: RankingParameters) -> int:
        """One (query, text) row per text of each input."""
        limit = self.settings.max_length
        total = 0
        for item in inputs:
            fields = item.model_dump() if isinstance(item, QueryTexts) else item
            texts = fields.get("texts") if isinstance(fields, Mapping) else None
            if not isinstance(texts, list):  # not an input this task reads: parsing will say so
                total += self.row_tokens(item)
                continue
            query = estimated_tokens(*texts_of(fields.get("query")))
            total += sum(min(limit, query + estimated_tokens(*texts_of(text))) for text in texts)
        return total

    def _predict(self, inputs: list[QueryTexts], parameters: list[RankingParameters]) -> list[Any]:
        """(answer, usage) per input: every (query, text) pair of every input forwarded together."""
        import torch

        columns = self.tokenize(
            {
                "query": [x.query for x in inputs for _ in x.texts],
                "document": [t for x in inputs for t in x.texts],
            }
        )
        logits = self.forward_rows(columns, lambda out, rows: list(out.logits.float().cpu()))
        results, start = [], 0
        for x, params in zip(inputs, parameters, strict=True):
            end = start + len(x.texts)
            scores = _scores(
                torch.stack(logits[start:end]), params.function_to_apply, self.settings, self.model.config
            ).tolist()
            ranked = sorted(range(len(x.texts)), key=lambda i: scores[i], reverse=True)
            answer = []
            for i in ranked[: params.top_n] if params.top_n else ranked:
                item: dict[str, Any] = {"index": i, "score": float(scores[i])}
                if params.return_text:
                    item["text"] = x.texts[i]
                answer.append(item)
            tokens = sum(len(ids) for ids in columns["input_ids"][start:end])
            results.append((answer, RankingUsage(prompt_tokens=tokens)))
            start = end
        return results


class TextRanking(Task):
    name = "text-ranking"
    summary = "Score texts by relevance to a query (cross-encoder reranking, sentence-pair similarity)."
    columns = ("query", "document", "label")
    text_columns = ("query", "document")
    evaluation_columns = frozenset({"query_id"})
    auto_model = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    head_modules = ("classifier", "pre_classifier", "score", "classification_head")
    metrics = ("ndcg_at_10", "mrr_at_10", "pearson", "spearman")
    default_metric = "ndcg_at_10"
    pipeline_task = "text-classification"
    capabilities = frozenset({"rerank"})
    Input = QueryTexts
    Parameters = RankingParameters
    input_hint = "{query, texts} with a non-empty query and 1 to 256 texts"
    playground = Playground(form="query-documents", result="ranking")
    handler = TextRankingHandler
    preprocess = staticmethod(tokenize_ranking)
    evaluator_class = RankingEvaluator

    def row_problem(
        self, row: Mapping[str, Any], columns: Sequence[str], settings: PreprocessSettings
    ) -> tuple[str, str] | None:
        for column in ("query", "document"):
            problem = text_problem(row.get(column), column)
            if problem:
                return problem, f"column {column!r} is {row.get(column)!r}"
        if _number(row.get("label")) is None:
            return (
                "bad relevance",
                f"label {row.get('label')!r} is not a finite number (a relevance or score)",
            )
        return None

    def finish_settings(
        self, settings: PreprocessSettings, values: Callable[[str], Iterable[Any]]
    ) -> PreprocessSettings:
        # Non-numbers are bad rows, reported when the rows are checked; they decide nothing here.
        labels = [v for v in values("label") if _number(v) is not None]
        queries: dict[str, int] = {}
        for query in values("query"):
            queries[query] = queries.get(query, 0) + 1
        options = {"relevance": relevance_of(labels), "lists": any(n > 1 for n in queries.values())}
        return settings.model_copy(update={"task_options": {**settings.task_options, **options}})

    def default_metric_for(self, settings: PreprocessSettings) -> str:
        return "ndcg_at_10" if settings.task_options.get("lists", True) else "spearman"

    def model_kwargs(self, settings: PreprocessSettings) -> dict[str, Any]:
        # One output; `problem_type` makes transformers' own pipeline score it as serving does.
        graded = settings.task_options.get("relevance") == "graded"
        return {"num_labels": 1, "problem_type": "regression" if graded else "multi_label_classification"}

    def loss(self, model: Any, batch: Mapping[str, Any], settings: PreprocessSettings) -> torch.Tensor:
        # The labels stay out of the model's own loss, which would compare (N, 1) logits with (N,) labels.
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return relevance_loss(logits, batch["labels"], settings)


TASK = TextRanking()
