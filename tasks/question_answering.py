"""Extractive question answering: the answer to a question is a span of its context (SQuAD format).

Question + context are cut into overflow windows of `max_length` tokens sharing `stride` tokens. Training
labels each window with the answer's start and end token (the first token when the answer is not in
it); evaluation scores each example's best span over all its windows, wherever they were scored, as
answer text against the gold texts (SQuAD exact match and F1); serving finds the best spans as
transformers' QA pipeline scores them. transformers 5 dropped that pipeline; the output keeps its shape:
{score, start, end, answer} with character offsets into the context (a list when top_k > 1).
"""

from __future__ import annotations

import collections
import hashlib
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from rayformers.config import DataConfig
from rayformers.data.preprocess import Columns, Mode, model_inputs
from rayformers.manifest import PreprocessSettings
from rayformers.tasks.base import Playground, Task
from rayformers.tasks.evaluation import Evaluator
from rayformers.tasks.handler import Handler, InputError, estimated_tokens, texts_of
from rayformers.tasks.schemas import InputModel, ParametersModel
from rayformers.validation import ConfigIssue

__all__ = [
    "MAX_ANSWER_TOKENS",
    "TASK",
    "QuestionAnswering",
    "QuestionAnsweringHandler",
    "QuestionAnsweringParameters",
    "QuestionContext",
    "best_spans",
    "example_id",
    "qa_metrics",
]

QUESTION_CONTEXT_HINT = "{question, context} with non-empty strings"


class QuestionContext(InputModel):
    question: str = Field(min_length=1, description="The question.")
    context: str = Field(min_length=1, description="The passage the answer is extracted from.")


class QuestionAnsweringParameters(ParametersModel):
    top_k: int = Field(default=1, ge=1, le=100, description="Answers to return (a list when above 1).")
    max_answer_len: int = Field(default=15, ge=1, description="Longest answer, in tokens.")
    handle_impossible_answer: bool = Field(
        default=False, description="Allow the empty answer (score from the [CLS] token) when it scores best."
    )


def tokenize_question_answering(
    batch: Mapping[str, Sequence[Any]], tokenizer: Any, settings: PreprocessSettings, mode: Mode = "train"
) -> Columns:
    """Question + context in overflow windows of `max_length` sharing `stride` tokens.

    Each window records the example it came from and the character offsets of its context tokens
    ((-1, -1) elsewhere), which span decoding needs; in training each window also gets the answer's
    start and end token, or the first token's index when the answer is not inside the window.
    """
    questions = [q.lstrip() for q in batch["question"]]
    contexts = list(batch["context"])
    pad_on_right = tokenizer.padding_side == "right"
    encoding = tokenizer(
        questions if pad_on_right else contexts,
        contexts if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=settings.max_length,
        stride=settings.stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    example_index = list(encoding["overflow_to_sample_mapping"])
    context_id = 1 if pad_on_right else 0
    offsets: list[list[tuple[int, int]]] = []
    for i, row_offsets in enumerate(encoding["offset_mapping"]):
        sequence_ids = encoding.sequence_ids(i)
        offsets.append(
            [
                tuple(o) if s == context_id else (-1, -1)
                for o, s in zip(row_offsets, sequence_ids, strict=True)
            ]  # type: ignore[misc]
        )
    out = model_inputs(encoding)
    out["example_index"] = example_index
    out["offset_mapping"] = offsets
    # A window that ends before its context does means the example needed more than one window.
    counts: dict[int, int] = {}
    for e in example_index:
        counts[e] = counts.get(e, 0) + 1
    out["truncated"] = [counts[e] > 1 for e in example_index]
    if mode == "evaluate":
        # Windows of one example may land in different batches and on different workers: the id lets
        # evaluation regroup them and score the best span's text against every gold answer.
        out["example_id"] = [example_id(questions[e], contexts[e]) for e in example_index]
        out["context"] = [contexts[e] for e in example_index]
        out["answer_texts"] = [
            [str(t) for t in ((batch["answers"][e] or {}).get("text") or [])] for e in example_index
        ]
    if mode != "inference":
        starts, ends = [], []
        for i, window in enumerate(offsets):
            answers = batch["answers"][example_index[i]] or {}
            start, end = _answer_tokens(window, answers)
            starts.append(start)
            ends.append(end)
        out["start_positions"] = starts
        out["end_positions"] = ends
    return out


def example_id(question: str, context: str) -> str:
    """A stable id of one QA example, the same on every worker and in every batch."""
    digest = hashlib.blake2b(f"{question}\x00{context}".encode(), digest_size=8)
    return digest.hexdigest()


def _answer_tokens(window: list[tuple[int, int]], answers: Mapping[str, Any]) -> tuple[int, int]:
    texts, starts = list(answers.get("text") or []), list(answers.get("answer_start") or [])
    if not texts:
        return 0, 0
    start_char = int(starts[0])
    end_char = start_char + len(texts[0])
    context = [i for i, (s, _) in enumerate(window) if s >= 0]
    if not context or window[context[0]][0] > start_char or window[context[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in context if window[i][1] > start_char)
    end = next(i for i in reversed(context) if window[i][0] < end_char)
    return start, end


def answers_problem(answers: Any, context: Any) -> str | None:
    if answers is None:
        return "missing answers (SQuAD format: {text: [...], answer_start: [...]}; empty lists: no answer)"
    if not isinstance(answers, Mapping):
        return f"answers must be a mapping {{text: [...], answer_start: [...]}}, got {type(answers).__name__}"
    texts, starts = answers.get("text"), answers.get("answer_start")
    if isinstance(texts, str):
        texts, starts = [texts], [starts]
    if texts is None or starts is None or len(texts) != len(starts):
        return "answers need lists `text` and `answer_start` of the same length"
    if not isinstance(context, str):
        return "missing context"
    for text, start in zip(texts, starts, strict=True):
        if not isinstance(start, int) or context[start : start + len(text)] != text:
            return f"answer {text!r} is not at character {start} of the context"
    return None


def _normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, truth: str) -> float:
    pred, gold = _normalize_answer(prediction).split(), _normalize_answer(truth).split()
    if not pred or not gold:
        return float(pred == gold)
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def qa_metrics(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    """SQuAD v1 exact match and F1 (in percent), each prediction against its best gold answer."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for prediction, golds in zip(predictions, answers, strict=True):
        golds = golds or [""]
        em += max(float(_normalize_answer(prediction) == _normalize_answer(g)) for g in golds)
        f1 += max(_f1(prediction, g) for g in golds)
    return {"exact_match": 100 * em / len(predictions), "f1": 100 * f1 / len(predictions)}


MAX_ANSWER_TOKENS = 30
"""Longest answer span evaluation considers, in tokens (as the SQuAD scripts and run_qa.py)."""


def _window_answers(
    start_logits: Any, end_logits: Any, batch: Mapping[str, Any]
) -> list[tuple[str, float, str, list[str]]]:
    """(example id, score, answer text, gold texts) of each window's best span: start <= end, both on
    context tokens, at most MAX_ANSWER_TOKENS long, scored by start + end logit."""
    if "example_id" not in batch:
        raise ValueError(
            "question-answering validation shards carry no example ids (tokenized by an older rayformers): "
            "delete the run's tokenized/ directory, or use a new train.name, to tokenize them again"
        )
    import torch

    found = []
    for i, offsets in enumerate(batch["offset_mapping"]):
        n = len(offsets)
        context = torch.tensor([s >= 0 for s, _ in offsets], device=start_logits.device)
        starts = start_logits[i, :n].float().masked_fill(~context, float("-inf"))
        ends = end_logits[i, :n].float().masked_fill(~context, float("-inf"))
        scores = starts[:, None] + ends[None, :]
        allowed = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu().tril(MAX_ANSWER_TOKENS - 1)
        scores = scores.masked_fill(~allowed, float("-inf"))
        flat = int(scores.argmax())
        score = float(scores.view(-1)[flat])
        if score == float("-inf"):  # a window with no context tokens answers nothing
            continue
        s, e = divmod(flat, n)
        text = batch["context"][i][offsets[s][0] : offsets[e][1]]
        found.append((batch["example_id"][i], score, text, list(batch["answer_texts"][i])))
    return found


class QuestionAnsweringEvaluator(Evaluator):
    """(example id, score, answer text, gold texts) of each window's best span; each example's answer
    is its best-scoring span over all of its windows."""

    def record(self, out: Any, batch: Mapping[str, Any], collated: Mapping[str, Any]) -> None:
        self.rows.extend(_window_answers(out.start_logits, out.end_logits, collated))

    def score(self, rows: list[Any]) -> dict[str, float]:
        best: dict[str, tuple[float, str, list[str]]] = {}
        for example, score, text, golds in rows:
            if example not in best or score > best[example][0]:
                best[example] = (score, text, golds)
        answers = list(best.values())
        return qa_metrics([text for _, text, _ in answers], [golds for _, _, golds in answers])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()  # type: ignore[no-any-return]


def best_spans(
    start_logits: np.ndarray, end_logits: np.ndarray, context: np.ndarray, top_k: int, max_answer_len: int
) -> tuple[list[tuple[int, int, float]], float]:
    """The `top_k` best (start, end, score) token spans of one window, and its null score.

    As the pipeline does: logits outside the context are masked (the first token, [CLS], stays in the
    softmax: it is the "no answer" option), start and end are softmaxed separately, and a span scores
    p(start) * p(end) with start <= end and at most `max_answer_len` tokens, both inside the context.
    """
    allowed = context.copy()
    allowed[0] = True
    start = _softmax(np.where(allowed, start_logits, -10000.0))
    end = _softmax(np.where(allowed, end_logits, -10000.0))
    null_score = float(start[0] * end[0])
    start, end = start * context, end * context  # [CLS] is no span
    scores = np.triu(np.outer(start, end))
    scores = np.tril(scores, max_answer_len - 1)
    flat = scores.ravel()
    k = min(top_k, int((flat > 0).sum()))
    if k == 0:
        return [], null_score
    best = np.argpartition(-flat, k - 1)[:k] if k < len(flat) else np.arange(len(flat))
    best = best[np.argsort(-flat[best], kind="stable")][:k]
    n = scores.shape[1]
    return [(int(i // n), int(i % n), float(flat[i])) for i in best], null_score


class QuestionAnsweringHandler(Handler):
    """Answers to {question, context} inputs; long contexts are read in windows of `max_length`
    tokens overlapping by `stride`, every window of every input forwarded together."""

    warmup_inputs = [{"question": "Who works?", "context": "Alice works in Paris."}]
    shares_forward = True

    def length(self, input: QuestionContext) -> int:
        return len(input.question) + len(input.context)

    def call_tokens(self, inputs: Sequence[Any], parameters: QuestionAnsweringParameters) -> int:
        """A long context is read in windows, each holding the question and up to max_length tokens, so
        the context is counted whole and the question once per window."""
        limit, total = self.settings.max_length, 0
        for item in inputs:
            fields = item.model_dump() if isinstance(item, QuestionContext) else item
            if not isinstance(fields, Mapping):
                total += self.row_tokens(item)
                continue
            question = estimated_tokens(*texts_of(fields.get("question")))
            context = estimated_tokens(*texts_of(fields.get("context")))
            room = max(1, limit - question)
            # Windows overlap by `stride` tokens: after the first, each reads `room - stride` new ones.
            step = max(1, room - self.settings.stride)
            windows = 1 + -(-max(0, context - room) // step)
            total += min(limit, question + context) if windows == 1 else windows * limit
        return total

    def _predict(
        self, inputs: list[QuestionContext], parameters: list[QuestionAnsweringParameters]
    ) -> list[Any]:
        self._check_questions(inputs)
        columns = self.tokenize(
            {"question": [x.question for x in inputs], "context": [x.context for x in inputs]}
        )
        lengths = [len(offsets) for offsets in columns["offset_mapping"]]
        windows = self.forward_rows(
            columns,
            lambda out, rows: [
                (
                    out.start_logits[j, : lengths[i]].float().cpu().numpy(),
                    out.end_logits[j, : lengths[i]].float().cpu().numpy(),
                )
                for j, i in enumerate(rows)
            ],
        )
        candidates: list[dict[tuple[int, int], float]] = [{} for _ in inputs]
        null = [1.0] * len(inputs)
        for window, example in enumerate(columns["example_index"]):
            offsets = columns["offset_mapping"][window]
            context = np.array([s >= 0 for s, _ in offsets])
            params = parameters[example]
            starts, ends = windows[window]
            spans, null_score = best_spans(starts, ends, context, params.top_k, params.max_answer_len)
            null[example] = min(null[example], null_score)
            for s, e, score in spans:
                key = (int(offsets[s][0]), int(offsets[e][1]))
                # Overlapping windows find the same span twice: keep it once, with its best score.
                candidates[example][key] = max(score, candidates[example].get(key, 0.0))
        return [
            self._answers(x.context, found, null_score, params)
            for x, found, null_score, params in zip(inputs, candidates, null, parameters, strict=True)
        ]

    def _check_questions(self, inputs: list[QuestionContext]) -> None:
        """A question must leave room for context in a window (the tokenizer would fail obscurely)."""
        budget = self.settings.max_length - self.tokenizer.num_special_tokens_to_add(pair=True)
        for i, x in enumerate(inputs):
            tokens = len(self.tokenizer(x.question.lstrip(), add_special_tokens=False)["input_ids"])
            if tokens + self.settings.stride + 1 > budget:
                raise InputError(
                    f"inputs[{i}].question",
                    f"the question has {tokens} tokens, which leaves no room for context in windows of "
                    f"{self.settings.max_length} tokens with stride {self.settings.stride}; shorten it to at "
                    f"most {max(budget - self.settings.stride - 1, 0)} tokens",
                )

    @staticmethod
    def _answers(
        context: str,
        found: dict[tuple[int, int], float],
        null_score: float,
        parameters: QuestionAnsweringParameters,
    ) -> Any:
        answers = [
            {"score": score, "start": start, "end": end, "answer": context[start:end]}
            for (start, end), score in found.items()
        ]
        if parameters.handle_impossible_answer or not answers:
            answers.append(
                {
                    "score": null_score if parameters.handle_impossible_answer else 0.0,
                    "start": 0,
                    "end": 0,
                    "answer": "",
                }
            )
        answers.sort(key=lambda a: a["score"], reverse=True)
        return answers[0] if parameters.top_k == 1 else answers[: parameters.top_k]


class QuestionAnswering(Task):
    name = "question-answering"
    summary = "Extract the answer span to a question from a context passage (SQuAD format)."
    columns = ("question", "context", "answers")
    optional_columns = ("id",)
    text_columns = ("question", "context")
    evaluation_columns = frozenset({"example_id", "context", "answer_texts", "offset_mapping"})
    auto_model = "AutoModelForQuestionAnswering"
    peft_task_type = "QUESTION_ANS"
    head_modules = ("qa_outputs",)
    metrics = ("exact_match", "f1")
    default_metric = "f1"
    Input = QuestionContext
    Parameters = QuestionAnsweringParameters
    input_hint = QUESTION_CONTEXT_HINT
    playground = Playground(form="question-context", result="answer")
    handler = QuestionAnsweringHandler
    preprocess = staticmethod(tokenize_question_answering)
    evaluator_class = QuestionAnsweringEvaluator

    def config_issues(self, data: DataConfig) -> list[ConfigIssue]:
        if 2 * data.stride >= data.max_length:
            # Each window holds the question and special tokens too: a stride this close to the window
            # size leaves no room to advance, and the tokenizer aborts the whole pipeline.
            return [
                ConfigIssue(
                    "data.stride",
                    f"stride {data.stride} leaves overflow windows of max_length {data.max_length} no room "
                    "to advance",
                    f"use a stride below {data.max_length // 2} (a quarter of max_length is usual), or raise "
                    "data.max_length",
                    data.stride,
                )
            ]
        return []

    def row_problem(
        self, row: Mapping[str, Any], columns: Sequence[str], settings: PreprocessSettings
    ) -> tuple[str, str] | None:
        # The answers are checked against their context; an id is free-form.
        texts = [c for c in columns if c not in ("answers", "id")]
        problem = super().row_problem(row, texts, settings)
        if problem:
            return problem
        found = answers_problem(row.get("answers"), row.get("context"))
        return ("bad answer", found) if found else None


TASK = QuestionAnswering()
