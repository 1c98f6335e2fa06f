"""Row checks: each bad row is named with a reason; the ledger counts skipped rows."""

from __future__ import annotations

import pytest

from rayformers.data.rows import BadRows, DataError, check_rows, row_error
from rayformers.manifest import LabelMap, PreprocessSettings
from rayformers.tasks import get_task


def s(task, names=None):
    return PreprocessSettings(task=task, max_length=16, labels=LabelMap(names=names) if names else None)


def test_missing_column_names_itself_and_the_available_ones():
    with pytest.raises(DataError) as err:
        check_rows(
            {"sentence": ["x"], "label": ["a"]},
            get_task("text-classification"),
            s("text-classification", ["a"]),
            1,
        )
    message = str(err.value)
    assert "'text'" in message and "sentence" in message and "data.columns" in message


def test_classification_problems():
    batch = {"text": ["ok", None, "  ", "fine", "good"], "label": ["a", "a", "a", "zzz", None]}
    problems = check_rows(batch, get_task("text-classification"), s("text-classification", ["a", "b"]), 5)
    assert [(p.index, p.reason) for p in problems] == [
        (1, "missing text"),
        (2, "empty text"),
        (3, "unknown label"),
        (4, "missing label"),
    ]
    assert "'zzz'" in problems[2].detail


def test_pair_column_is_checked_when_present():
    batch = {"text": ["a", "b"], "text_pair": ["c", None], "label": ["x", "x"]}
    problems = check_rows(batch, get_task("text-classification"), s("text-classification", ["x"]), 2)
    assert [(p.index, p.reason) for p in problems] == [(1, "missing text_pair")]


def test_token_classification_problems():
    batch = {"tokens": [["a", "b"], ["a"], ["a"]], "tags": [["O", "O"], ["O", "O"], ["B-X"]]}
    problems = check_rows(batch, get_task("token-classification"), s("token-classification", ["O"]), 3)
    assert [(p.index, p.reason) for p in problems] == [(1, "tags do not match tokens"), (2, "unknown label")]


def test_question_answering_answer_must_be_in_context():
    batch = {
        "question": ["q", "q", "q"],
        "context": ["the cat sat", "the cat sat", "the cat sat"],
        "answers": [
            {"text": ["cat"], "answer_start": [4]},
            {"text": ["cat"], "answer_start": [0]},
            {"text": [], "answer_start": []},
        ],
    }
    problems = check_rows(batch, get_task("question-answering"), s("question-answering"), 3)
    assert [(p.index, p.reason) for p in problems] == [(1, "bad answer")]
    assert "not at character 0" in problems[0].detail


def test_row_error_names_the_row_and_the_fix():
    [problem] = check_rows(
        {"text": [None], "label": ["a"]}, get_task("text-classification"), s("text-classification", ["a"]), 1
    )
    message = str(row_error(problem, "train.jsonl:7"))
    assert "train.jsonl:7" in message and "missing text" in message and "on_bad_rows: skip" in message


def test_ledger_counts_and_keeps_a_few_examples():
    ledger = BadRows(examples_per_reason=2)
    ledger.record_many(
        [("malformed JSON", "a:1"), ("malformed JSON", "a:2"), ("malformed JSON", "a:3"), ("x", "b")]
    )
    assert ledger.summary() == {
        "counts": {"malformed JSON": 3, "x": 1},
        "examples": {"malformed JSON": ["a:1", "a:2"], "x": ["b"]},
    }
    assert ledger.total() == 4
