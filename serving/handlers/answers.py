"""Extractive question answering: the best answer span of a context, found over every overflow
window the preprocessing function cut it into, scored as transformers' QA pipeline scores spans.

transformers 5 dropped the `question-answering` pipeline; the output keeps its shape:
{score, start, end, answer} with character offsets into the context (a list when top_k > 1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from rayformers.serving import schemas
from rayformers.serving.errors import InputError
from rayformers.serving.handlers.base import Handler
from rayformers.serving.schemas import QuestionAnsweringParameters, QuestionContext

__all__ = ["QuestionAnsweringHandler", "best_spans"]


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
    tokens overlapping by `stride`, all in one forward pass."""

    task: ClassVar[str] = "question-answering"
    Parameters: ClassVar[type[QuestionAnsweringParameters]] = schemas.QuestionAnsweringParameters
    Input: ClassVar[Any] = schemas.QuestionContext
    input_hint: ClassVar[str] = schemas.QUESTION_CONTEXT_HINT
    warmup_inputs: ClassVar[list[Any]] = [{"question": "Who works?", "context": "Alice works in Paris."}]

    def length(self, input: QuestionContext) -> int:
        return len(input.question) + len(input.context)

    def _predict(self, inputs: list[QuestionContext], parameters: QuestionAnsweringParameters) -> list[Any]:
        self._check_questions(inputs)
        columns = self.tokenize(
            {"question": [x.question for x in inputs], "context": [x.context for x in inputs]}
        )
        out = self.forward(self.to_batch(columns))
        starts, ends = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
        candidates: list[dict[tuple[int, int], float]] = [{} for _ in inputs]
        null = [1.0] * len(inputs)
        for window, example in enumerate(columns["example_index"]):
            offsets = columns["offset_mapping"][window]
            n = len(offsets)
            context = np.array([s >= 0 for s, _ in offsets])
            spans, null_score = best_spans(
                starts[window, :n], ends[window, :n], context, parameters.top_k, parameters.max_answer_len
            )
            null[example] = min(null[example], null_score)
            for s, e, score in spans:
                key = (int(offsets[s][0]), int(offsets[e][1]))
                # Overlapping windows find the same span twice: keep it once, with its best score.
                candidates[example][key] = max(score, candidates[example].get(key, 0.0))
        return [
            self._answers(x.context, found, null_score, parameters)
            for x, found, null_score in zip(inputs, candidates, null, strict=True)
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
