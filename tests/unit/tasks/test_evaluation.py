"""Evaluation without Ray: QA is scored on answer text per example, over all of its windows."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from rayformers.manifest import PreprocessSettings
from rayformers.tasks import get_task
from rayformers.tasks.evaluation import evaluate

CONTEXT = "Alice Smith founded Acme in Paris in 1990 ."


class WindowModel(torch.nn.Module):
    """Start/end logits chosen per window (keyed by its first input id): a model with known answers."""

    def __init__(self, logits: dict[int, tuple[list[float], list[float]]]) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask, start_positions, end_positions, **_):
        starts = torch.tensor([self.logits[int(row[0])][0] for row in input_ids])
        ends = torch.tensor([self.logits[int(row[0])][1] for row in input_ids])
        return SimpleNamespace(loss=torch.tensor(1.0), start_logits=starts, end_logits=ends)


def window(first_id: int, example: str, offsets: list[list[int]], golds: list[str]) -> dict:
    return {
        "input_ids": [first_id] + [0] * (len(offsets) - 1),
        "offsets": offsets,
        "example_id": example,
        "golds": golds,
    }


def batch(*windows: dict) -> dict:
    n = len(windows[0]["offsets"])
    return {
        "input_ids": torch.tensor([w["input_ids"] for w in windows]),
        "attention_mask": torch.ones(len(windows), n, dtype=torch.long),
        "start_positions": torch.zeros(len(windows), dtype=torch.long),
        "end_positions": torch.zeros(len(windows), dtype=torch.long),
        "example_id": [w["example_id"] for w in windows],
        "context": [CONTEXT] * len(windows),
        "answer_texts": [w["golds"] for w in windows],
        "offset_mapping": [w["offsets"] for w in windows],
    }


def test_qa_answer_is_the_best_span_over_windows_in_different_batches():
    # Context tokens: Alice(0,5) Smith(6,11) founded(12,19) | Acme(20,24) in(25,27) Paris(28,33).
    first = [[-1, -1], [0, 5], [6, 11], [12, 19]]
    second = [[-1, -1], [20, 24], [25, 27], [28, 33]]
    logits = {
        # Window 1 of example "a" likes "Alice Smith" (score 2 + 2); window 2 likes "Paris" more (5 + 5).
        1: ([9.0, 2.0, 0.0, 0.0], [9.0, 0.0, 2.0, 0.0]),
        2: ([9.0, 0.0, 0.0, 5.0], [9.0, 0.0, 0.0, 5.0]),
        # Example "b" has one window; [CLS] scores highest but is no span, and an end before its start
        # is not allowed, so the answer is "Smith".
        3: ([9.0, 0.0, 3.0, 0.0], [9.0, 8.0, 1.0, 0.0]),
    }
    batches = [
        batch(window(1, "a", first, ["Paris"]), window(3, "b", first, ["Alice Smith"])),
        batch(window(2, "a", second, ["Paris"])),
    ]
    settings = PreprocessSettings(task="question-answering", max_length=4, stride=1)
    task = get_task("question-answering")
    result = evaluate(WindowModel(logits), batches, task, settings, None, torch.device("cpu"))
    # Two examples, not three windows: "a" is exactly right; "b" answered "Smith" for "Alice Smith".
    assert result["exact_match"] == 50.0
    assert abs(result["f1"] - 100 * (1.0 + 2 / 3) / 2) < 1e-6
    assert result["loss"] == 1.0
