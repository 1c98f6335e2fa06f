"""Tests of ``rayformers.data.sample_sets``: determinism, the committed copy, and the invariants of each set."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from rayformers.data.sample_sets import DEFAULT_OUT, generate

EXPECTED_COUNTS = {
    "sentiment": (2000, 200),
    "paraphrase": (1500, 150),
    "nli": (1500, 150),
    "ner": (1200, 120),
    "qa": (1000, 100),
    "summarization": (1000, 100),
    "translation": (1500, 150),
    "corpus": (3000, 300),
}
LABELS = {
    "sentiment": {"positive", "negative"},
    "paraphrase": {"paraphrase", "different"},
    "nli": {"entailment", "neutral", "contradiction"},
}
NER_TAGS = {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


def _rows(root: Path, name: str, split: str) -> list[dict]:
    with (root / name / f"{split}.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    assert generate(out) == EXPECTED_COUNTS
    return out


def test_two_generations_are_byte_identical(samples: Path, tmp_path: Path) -> None:
    generate(tmp_path)
    assert _tree(tmp_path) == _tree(samples)


def test_committed_samples_equal_a_fresh_generation(samples: Path) -> None:
    committed, fresh = _tree(DEFAULT_OUT), _tree(samples)
    assert sorted(committed) == sorted(fresh), (
        "run `python -m rayformers.data.sample_sets` to regenerate data/samples/"
    )
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert not stale, (
        f"{stale} differ from a fresh generation; run `python -m rayformers.data.sample_sets`, do not hand-edit"
    )


def test_samples_stay_small(samples: Path) -> None:
    assert sum(len(content) for content in _tree(samples).values()) < 3_400_000


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_each_split_has_its_row_count(samples: Path, name: str) -> None:
    train, validation = EXPECTED_COUNTS[name]
    assert (len(_rows(samples, name, "train")), len(_rows(samples, name, "validation"))) == (
        train,
        validation,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_validation_never_repeats_a_train_row(samples: Path, name: str) -> None:
    def key(row: dict) -> str:
        return json.dumps({k: v for k, v in row.items() if k != "id"}, sort_keys=True)

    train = {key(row) for row in _rows(samples, name, "train")}
    assert not [row for row in _rows(samples, name, "validation") if key(row) in train]


def test_sentiment_validation_texts_are_unseen(samples: Path) -> None:
    train = {row["text"] for row in _rows(samples, "sentiment", "train")}
    assert not [row for row in _rows(samples, "sentiment", "validation") if row["text"] in train]


@pytest.mark.parametrize("name", sorted(LABELS))
@pytest.mark.parametrize("split", ["train", "validation"])
def test_labels_are_balanced(samples: Path, name: str, split: str) -> None:
    counts = Counter(row["label"] for row in _rows(samples, name, split))
    assert set(counts) == LABELS[name]
    assert len(set(counts.values())) == 1, counts


@pytest.mark.parametrize("split", ["train", "validation"])
def test_qa_answers_sit_at_their_offsets(samples: Path, split: str) -> None:
    rows = _rows(samples, "qa", split)
    for row in rows:
        (text,), (start,) = row["answers"]["text"], row["answers"]["answer_start"]
        assert row["context"][start : start + len(text)] == text, row["id"]
        assert row["id"].startswith(f"qa-{split}-")
    assert len({row["id"] for row in rows}) == len(rows)


def test_some_qa_contexts_are_long_enough_to_overflow(samples: Path) -> None:
    long = [row for row in _rows(samples, "qa", "train") if len(row["context"].split()) >= 150]
    assert len(long) >= 100


@pytest.mark.parametrize("split", ["train", "validation"])
def test_ner_tags_are_valid_iob2(samples: Path, split: str) -> None:
    seen: set[str] = set()
    for row in _rows(samples, "ner", split):
        tokens, tags = row["tokens"], row["ner_tags"]
        assert len(tokens) == len(tags) and all(" " not in token for token in tokens)
        for previous, tag in zip(["O", *tags], tags, strict=False):
            assert tag in NER_TAGS
            if tag.startswith("I-"):
                assert previous in (f"B-{tag[2:]}", tag), (tokens, tags)
        seen.update(tags)
    assert seen == NER_TAGS  # multi-token names of every kind occur


@pytest.mark.parametrize("split", ["train", "validation"])
def test_sentiment_csv_holds_the_jsonl_rows(samples: Path, split: str) -> None:
    with (samples / "sentiment" / f"{split}.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == _rows(samples, "sentiment", split)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_corpus_text_holds_the_jsonl_lines(samples: Path, split: str) -> None:
    lines = (samples / "corpus" / f"{split}.txt").read_text(encoding="utf-8").splitlines()
    assert lines == [row["text"] for row in _rows(samples, "corpus", split)]
    assert all(line.strip() for line in lines)


def test_paraphrases_reword_and_different_pairs_change_one_slot(samples: Path) -> None:
    for row in _rows(samples, "paraphrase", "train"):
        first, second = row["sentence1"].split(), row["sentence2"].split()
        if row["label"] == "different":  # same wording; a name is two words
            assert (
                len(first) == len(second)
                and 1 <= sum(a != b for a, b in zip(first, second, strict=True)) <= 2
            ), row
        else:
            assert first != second and sorted(filter(str.isdigit, first)) == sorted(
                filter(str.isdigit, second)
            )


def test_summaries_are_the_lead_fact(samples: Path) -> None:
    for row in _rows(samples, "summarization", "train"):
        assert row["document"].startswith(row["summary"][:-1] + " on ")
        assert 3 <= len(row["document"].split(". ")) <= 6


def test_translation_is_word_for_word(samples: Path) -> None:
    for row in _rows(samples, "translation", "train"):
        assert len(row["source"].split()) == len(row["target"].split())


def test_readme_lists_every_set(samples: Path) -> None:
    readme = (samples / "README.md").read_text(encoding="utf-8")
    assert "python -m rayformers.data.sample_sets" in readme
    for name, (train, validation) in EXPECTED_COUNTS.items():
        assert f"| `{name}/` |" in readme and f"| {train} | {validation} |" in readme


@pytest.mark.parametrize("split", ["train", "validation"])
def test_ranking_queries_bring_one_answer_among_eight_worded_unlike_its_question(
    samples: Path, split: str
) -> None:
    import re

    from rayformers.data.sample_sets import RANKING_QUERIES

    def words(text: str) -> set[str]:
        return set(re.findall(r"\w+", text.lower()))

    rows = _rows(samples, "ranking", split)
    lists = [rows[i : i + 8] for i in range(0, len(rows), 8)]  # written one question's list at a time
    assert len(lists) == RANKING_QUERIES[split == "validation"]
    outranked = 0
    for group in lists:
        assert len({r["query"] for r in group}) == 1
        assert Counter(r["label"] for r in group) == Counter({0: 6, 1: 1, 2: 1})
        assert all(r["relevant"] == int(r["label"] == 2) for r in group)
        asked = words(group[0]["query"])
        answer = len(asked & words(next(r["document"] for r in group if r["label"] == 2)))
        distractor = max(len(asked & words(r["document"])) for r in group if r["label"] == 0)
        assert distractor >= answer, group  # word overlap never finds the answer first
        outranked += distractor > answer
    assert outranked >= 0.85 * len(lists)  # ... and mostly ranks a distractor above it


def test_ranking_validation_never_asks_for_a_trained_answer(samples: Path) -> None:
    trained = {r["document"] for r in _rows(samples, "ranking", "train") if r["label"] == 2}
    assert not [
        r for r in _rows(samples, "ranking", "validation") if r["label"] == 2 and r["document"] in trained
    ]
