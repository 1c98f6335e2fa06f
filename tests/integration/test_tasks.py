"""Every task trains on 2 Ray Train workers from its shipped config: the training loss falls and the
task's metric beats the trivial baseline computed here on the same validation data (majority class,
unigram frequencies, copying the input, chance). Text classification has its own module
(test_training)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from rayformers.loading import load_config
from rayformers.tasks.question_answering import qa_metrics
from rayformers.tasks.summarization import rouge_metrics
from rayformers.tasks.token_classification import sequence_labeling_metrics
from rayformers.tasks.translation import bleu_metrics
from rayformers.training.trainer import run_training

pytestmark = pytest.mark.usefixtures("ray_cluster")
REPO = Path(__file__).resolve().parents[2]


def rows(name: str, split: str = "validation") -> list[dict]:
    path = REPO / f"data/samples/{name}/{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def train(task: str, tmp_path: Path, *overrides: str) -> tuple[dict, dict]:
    cfg = load_config(REPO / f"configs/{task}/full.yaml", [f"train.storage_path={tmp_path}", *overrides])
    result = run_training(cfg)
    summary = json.loads(Path(result.summary_path).read_text())
    history = summary["history"]
    assert len(history) >= 2, history
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"], [h["train_loss"] for h in history]
    return result.best_metrics, summary


def unigram_perplexity(tokenizer_dir: str, corpus: str) -> float:
    """Perplexity of add-one unigram frequencies from the training split, on the validation split."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(REPO / tokenizer_dir)
    counts = Counter(t for r in rows(corpus, "train") for t in tok(r["text"])["input_ids"])
    total, vocab = sum(counts.values()), len(tok)
    ids = [t for r in rows(corpus) for t in tok(r["text"])["input_ids"]]
    nll = -sum(math.log((counts[t] + 1) / (total + vocab)) for t in ids) / len(ids)
    return math.exp(nll)


def test_token_classification_finds_entities_that_all_O_never_does(tmp_path):
    best, _ = train("token-classification", tmp_path)
    val = rows("ner")
    majority = sequence_labeling_metrics(
        [["O"] * len(r["tokens"]) for r in val], [r["ner_tags"] for r in val]
    )
    assert majority["f1"] == 0.0
    assert best["f1"] >= 0.6, best


def test_question_answering_beats_leading_words_of_the_context(tmp_path):
    best, _ = train("question-answering", tmp_path, "train.epochs=3")
    val = rows("qa")
    golds = [r["answers"]["text"] for r in val]
    # SQuAD-style answer-text EM/F1 per example; the baseline answers with the context's first k words.
    baseline = max(
        qa_metrics([" ".join(r["context"].split()[:k]) for r in val], golds)["f1"] for k in range(1, 6)
    )
    assert best["f1"] > baseline + 10.0, (best, baseline)
    assert best["exact_match"] > 5.0, best


def test_fill_mask_beats_unigram_frequencies(tmp_path):
    best, _ = train("fill-mask", tmp_path)
    assert best["perplexity"] < unigram_perplexity("data/samples/tokenizers/wordpiece", "corpus"), best


def test_text_generation_beats_unigram_frequencies(tmp_path):
    best, _ = train("text-generation", tmp_path)
    assert best["perplexity"] < unigram_perplexity("data/samples/tokenizers/bpe", "corpus"), best


def test_zero_shot_nli_beats_the_majority_class(tmp_path):
    best, _ = train("zero-shot-classification", tmp_path)
    labels = [r["label"] for r in rows("nli")]
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    assert best["accuracy"] > majority + 0.15, (best, majority)


def test_feature_extraction_retrieves_each_pair_far_above_chance(tmp_path):
    best, _ = train("feature-extraction", tmp_path)
    chance = 1 / len(rows("pairs"))
    assert best["recall_at_1"] > max(0.5, 10 * chance), best


def test_summarization_beats_copying_the_document(tmp_path):
    best, _ = train("summarization", tmp_path, "train.epochs=8", "train.eval_every_steps=60")
    val = rows("summarization")
    copy = rouge_metrics([r["document"] for r in val], [r["summary"] for r in val])
    # The lead sentence is most of each summary, so copying scores well on recall; the model must also
    # learn what to leave out.
    assert best["rougeL"] > copy["rougeL"] + 0.2, (best, copy)


def test_translation_beats_copying_the_source(tmp_path):
    best, _ = train("translation", tmp_path, "train.epochs=7", "train.eval_every_steps=80")
    val = rows("translation")
    copy = bleu_metrics([r["source"] for r in val], [r["target"] for r in val])
    assert copy["bleu"] < 1.0, copy
    assert best["bleu"] > copy["bleu"] + 10.0, (best, copy)
