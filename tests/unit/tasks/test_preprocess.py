"""Golden token ids and labels for every task's preprocessing, on tokenizers whose vocabularies are
written out in tests/conftest.py (ids are positions there)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rayformers.data.preprocess import IGNORE_INDEX
from rayformers.manifest import LabelMap, PreprocessSettings
from rayformers.tasks.feature_extraction import tokenize_embedding_pairs
from rayformers.tasks.fill_mask import tokenize_language_modeling
from rayformers.tasks.question_answering import tokenize_question_answering
from rayformers.tasks.seq2seq import tokenize_seq2seq
from rayformers.tasks.text_classification import tokenize_classification
from rayformers.tasks.text_generation import tokenize_causal_lm
from rayformers.tasks.token_classification import split_words, tokenize_token_classification

X = IGNORE_INDEX


@pytest.fixture(scope="module")
def wp(wordpiece_dir):
    return AutoTokenizer.from_pretrained(wordpiece_dir)


@pytest.fixture(scope="module")
def wl(wordlevel_dir):
    return AutoTokenizer.from_pretrained(wordlevel_dir)


def settings(task, **kw):
    return PreprocessSettings(task=task, max_length=kw.pop("max_length", 32), **kw)


def as_python(columns):
    """Columns as Python values, whether a task returned lists or Arrow arrays."""
    return {k: v.to_pylist() if hasattr(v, "to_pylist") else v for k, v in columns.items()}


def test_classification_single_and_pair(wp):
    s = settings("text-classification", labels=LabelMap(names=["negative", "positive"]))
    out = as_python(
        tokenize_classification(
            {"text": ["The movie was great", "the movie was bad"], "label": ["positive", "negative"]}, wp, s
        )
    )
    assert out["input_ids"] == [[2, 5, 6, 7, 8, 3], [2, 5, 6, 7, 9, 3]]
    assert out["attention_mask"] == [[1] * 6, [1] * 6]
    assert out["labels"] == [1, 0]
    assert out["truncated"] == [False, False]
    pair = as_python(
        tokenize_classification(
            {"text": ["the movie was great"], "text_pair": ["it rains"], "label": ["positive"]}, wp, s
        )
    )
    assert pair["input_ids"] == [[2, 5, 6, 7, 8, 3, 33, 34, 3]]
    assert pair["token_type_ids"] == [[0, 0, 0, 0, 0, 0, 1, 1, 1]]


def test_classification_truncates_and_reports_it(wp):
    s = settings("text-classification", max_length=4, labels=LabelMap(names=["a", "b"]))
    out = as_python(
        tokenize_classification({"text": ["the movie was great", "the movie"], "label": ["a", "b"]}, wp, s)
    )
    assert out["input_ids"] == [[2, 5, 6, 3], [2, 5, 6, 3]]
    assert out["truncated"] == [True, False]


def test_classification_inference_mode_has_no_labels_and_same_ids(wp):
    s = settings("text-classification", labels=LabelMap(names=["negative", "positive"]))
    train = tokenize_classification({"text": ["the movie was great"], "label": ["positive"]}, wp, s, "train")
    infer = tokenize_classification({"text": ["the movie was great"]}, wp, s, "inference")
    assert "labels" not in infer
    assert isinstance(infer["input_ids"], list)  # handlers index rows
    assert infer["input_ids"] == train["input_ids"].to_pylist()


def test_integer_labels_map_through_their_string_form(wp):
    s = settings("text-classification", labels=LabelMap.from_values([0, 1]))
    out = tokenize_classification({"text": ["the cat", "the dog"], "label": [1, 0.0]}, wp, s)
    assert out["labels"] == [1, 0]


NER_LABELS = LabelMap.from_values(["B-PER", "I-PER", "O", "B-ORG", "B-LOC"])  # B-LOC B-ORG B-PER I-PER O


def test_token_classification_labels_first_subtoken_only(wp):
    assert NER_LABELS.names == ["B-LOC", "B-ORG", "B-PER", "I-PER", "O"]
    s = settings("token-classification", labels=NER_LABELS)
    batch = {
        "tokens": [["Alice", "Smith", "works", "at", "Acme", "in", "Paris", "."]],
        "tags": [["B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "O"]],
    }
    out = tokenize_token_classification(batch, wp, s)
    assert out["input_ids"] == [[2, 10, 11, 12, 13, 14, 15, 16, 17, 18, 3]]
    assert out["labels"] == [[X, 2, 3, X, 4, 4, 1, 4, 0, 4, X]]


def test_token_classification_label_all_tokens_turns_b_into_i(wp):
    s = settings("token-classification", labels=NER_LABELS, label_all_tokens=True)
    out = tokenize_token_classification({"tokens": [["Smith"]], "tags": [["B-PER"]]}, wp, s)
    assert out["input_ids"] == [[2, 11, 12, 3]]
    assert out["labels"] == [[X, 2, 3, X]]


def test_token_classification_inference_gives_word_ids_and_text_offsets(wp):
    s = settings("token-classification", labels=NER_LABELS)
    text = "Alice  Smith works"
    out = tokenize_token_classification({"text": [text]}, wp, s, "inference")
    assert out["input_ids"] == [[2, 10, 11, 12, 13, 3]]
    assert out["word_ids"] == [[-1, 0, 1, 1, 2, -1]]
    offsets = out["offset_mapping"][0]
    assert [text[a:b] for a, b in offsets[1:-1]] == ["Alice", "Smi", "th", "works"]
    assert offsets[0] == offsets[-1] == (-1, -1)
    # Same ids as the training path for the same words: no train/serve skew.
    train = tokenize_token_classification(
        {"tokens": [["Alice", "Smith", "works"]], "tags": [["O", "O", "O"]]}, wp, s
    )
    assert train["input_ids"] == out["input_ids"]


def test_split_words_keeps_spans():
    assert split_words(" a  bc\td ") == (["a", "bc", "d"], [(1, 2), (4, 6), (7, 8)])


def test_split_words_splits_punctuation_as_training_corpora_do():
    text = "Alice flew to Paris. She didn't stay, (in 3.5 days) e-mail."
    words, spans = split_words(text)
    assert words == ["Alice", "flew", "to", "Paris", ".", "She", "didn't", "stay", ",", "(", "in", "3.5", "days",
                     ")", "e-mail", "."]  # fmt: skip
    assert [text[a:b] for a, b in spans] == words
    # Combining marks belong to their word (Devanagari, Arabic vowel signs, a decomposed accent).
    for word in ["राम", "दिल्ली", "مُحَمَّد", "Cafe\u0301"]:
        assert split_words(f"{word} {word}.") == (
            [word, word, "."],
            [(0, len(word)), (len(word) + 1, 2 * len(word) + 1), (2 * len(word) + 1, 2 * len(word) + 2)],
        )


QA_CONTEXT = "Alice Smith works at Acme . The cat sat on a mat ."


def test_question_answering_windows_and_answer_positions(wp):
    s = settings("question-answering", max_length=16, stride=4)
    batch = {
        "question": ["  who works at acme ?"],
        "context": [QA_CONTEXT],
        "answers": [{"text": ["Alice Smith"], "answer_start": [0]}],
    }
    out = tokenize_question_answering(batch, wp, s)
    windows = len(out["input_ids"])
    assert windows >= 2 and out["example_index"] == [0] * windows
    assert out["truncated"] == [True] * windows
    # [CLS] who works at acme ? [SEP] | alice smi ##th ...
    assert out["input_ids"][0][:10] == [2, 20, 13, 14, 15, 19, 3, 10, 11, 12]
    assert (out["start_positions"][0], out["end_positions"][0]) == (7, 9)
    for i in range(1, windows):  # later windows start after the answer: they point at [CLS]
        assert (out["start_positions"][i], out["end_positions"][i]) == (0, 0)
    first = out["offset_mapping"][0]
    assert first[:7] == [(-1, -1)] * 7
    assert QA_CONTEXT[first[7][0] : first[9][1]] == "Alice Smith"
    covered = {o for window in out["offset_mapping"] for o in window if o != (-1, -1)}
    assert max(b for _, b in covered) == len(QA_CONTEXT)


def test_question_answering_answer_in_a_later_window(wp):
    s = settings("question-answering", max_length=16, stride=4)
    start = QA_CONTEXT.index("mat")
    batch = {
        "question": ["where"],
        "context": [QA_CONTEXT],
        "answers": [{"text": ["mat"], "answer_start": [start]}],
    }
    out = tokenize_question_answering(batch, wp, s)
    hits = [(a, b) for a, b in zip(out["start_positions"], out["end_positions"], strict=True) if a]
    assert hits, "the window that holds the answer must point at it"
    for i, (a, b) in enumerate(zip(out["start_positions"], out["end_positions"], strict=True)):
        if a:
            assert a == b and out["input_ids"][i][a] == 27  # "mat"


def test_fill_mask_marks_special_tokens(wp):
    out = tokenize_language_modeling({"text": ["the cat sat"]}, wp, settings("fill-mask"))
    assert out["input_ids"] == [[2, 5, 24, 25, 3]]
    assert out["special_tokens_mask"] == [[1, 0, 0, 0, 1]]


def test_causal_lm_appends_eos_once_and_packs(wl):
    s = settings("text-generation", max_length=4)
    out = tokenize_causal_lm({"text": ["hello world", "good morning"]}, wl, s)
    assert out["input_ids"] == [[4, 5, 2], [6, 7, 2]]
    packed = tokenize_causal_lm(
        {"text": ["hello world", "good morning"]}, wl, settings("text-generation", max_length=4, packing=True)
    )
    assert packed["input_ids"] == [[4, 5, 2, 6], [7, 2]]
    assert packed["attention_mask"] == [[1, 1, 1, 1], [1, 1]]
    short = tokenize_causal_lm({"text": ["hello world good"]}, wl, settings("text-generation", max_length=2))
    assert short["input_ids"] == [[4, 5]] and short["truncated"] == [True]


def test_seq2seq_targets_and_prefix(wl):
    out = tokenize_seq2seq(
        {"text": ["hello world"], "target": ["bonjour le monde"]}, wl, settings("translation")
    )
    assert out["input_ids"] == [[4, 5, 2]]
    assert out["labels"] == [[8, 9, 10, 2]]
    prefixed = tokenize_seq2seq(
        {"text": ["hello world"]}, wl, settings("summarization", source_prefix="good "), "inference"
    )
    assert prefixed["input_ids"] == [[6, 4, 5, 2]] and "labels" not in prefixed


def test_embedding_pairs_are_encoded_separately(wp):
    out = tokenize_embedding_pairs(
        {"text": ["the cat"], "text_pair": ["a dog"]}, wp, settings("feature-extraction")
    )
    assert out["input_ids"] == [[2, 5, 24, 3]]
    assert out["pair_input_ids"] == [[2, 23, 28, 3]]
    infer = tokenize_embedding_pairs({"text": ["the cat"]}, wp, settings("feature-extraction"), "inference")
    assert "pair_input_ids" not in infer


def test_question_answering_evaluate_mode_carries_what_text_metrics_need(wp):
    s = settings("question-answering", max_length=16, stride=4)
    batch = {
        "question": ["who works at acme ?", "where"],
        "context": [QA_CONTEXT, "on the mat"],
        "answers": [{"text": ["Alice Smith"], "answer_start": [0]}, {"text": [], "answer_start": []}],
    }
    train = tokenize_question_answering(batch, wp, s)
    out = tokenize_question_answering(batch, wp, s, "evaluate")
    assert {k: v for k, v in out.items() if k in train} == train  # training's columns, unchanged
    assert not {"example_id", "context", "answer_texts"} & train.keys()
    windows = out["example_index"]
    # One id per example, the same in every window and whatever batch the example arrives in.
    ids = {e: {out["example_id"][i] for i, x in enumerate(windows) if x == e} for e in set(windows)}
    assert all(len(v) == 1 for v in ids.values()) and ids[0] != ids[1]
    alone = tokenize_question_answering({k: v[1:] for k, v in batch.items()}, wp, s, "evaluate")
    assert alone["example_id"][0] == next(iter(ids[1]))
    assert out["context"] == [batch["context"][e] for e in windows]
    assert out["answer_texts"] == [["Alice Smith"] if e == 0 else [] for e in windows]
