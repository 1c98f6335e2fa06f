"""Zero-shot classification: entailment scores of (text, hypothesis) pairs, ranked like the pipeline."""

from __future__ import annotations

import pytest
import torch

from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.serving.errors import CheckpointError, InputError

TEXT = "I love football and tennis"
LABELS = ["sports", "politics", "food"]


@pytest.fixture(scope="module")
def handler(tiny_checkpoint):
    return build_handler(load_checkpoint(str(tiny_checkpoint("zero-shot-classification"))))


def entailment_logits(
    handler, text: str, labels: list[str], template: str = "This example is {}."
) -> torch.Tensor:
    encoded = handler.tokenizer(
        [text] * len(labels), [template.format(label) for label in labels], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        return handler.model(**encoded).logits


def test_scores_sum_to_one_and_follow_entailment(handler):
    (output,) = handler.predict([TEXT], {"candidate_labels": LABELS})
    assert output["sequence"] == TEXT and sorted(output["labels"]) == sorted(LABELS)
    assert sum(output["scores"]) == pytest.approx(1.0, abs=1e-6)
    assert output["scores"] == sorted(output["scores"], reverse=True)
    names = handler.label_names()
    expected = entailment_logits(handler, TEXT, LABELS)[:, names.index("entailment")].softmax(-1)
    by_label = dict(zip(output["labels"], output["scores"], strict=True))
    assert [by_label[label] for label in LABELS] == pytest.approx(expected.tolist(), abs=1e-5)


def test_multi_label_scores_each_label_alone(handler):
    (output,) = handler.predict([TEXT], {"candidate_labels": LABELS, "multi_label": True})
    names = handler.label_names()
    logits = entailment_logits(handler, TEXT, LABELS)
    expected = logits[:, [names.index("contradiction"), names.index("entailment")]].softmax(-1)[:, 1]
    by_label = dict(zip(output["labels"], output["scores"], strict=True))
    assert [by_label[label] for label in LABELS] == pytest.approx(expected.tolist(), abs=1e-5)
    # One label alone is always scored independently (a one-way softmax would always say 1.0).
    (single,) = handler.predict([TEXT], {"candidate_labels": ["sports"]})
    assert single["scores"][0] == pytest.approx(by_label["sports"], abs=1e-5)


def test_template_and_comma_separated_labels(handler):
    (output,) = handler.predict(
        [TEXT], {"candidate_labels": "sports, food", "hypothesis_template": "About {}."}
    )
    expected = entailment_logits(handler, TEXT, ["sports", "food"], "About {}.")
    assert sorted(output["labels"]) == ["food", "sports"]
    best = ["sports", "food"][int(expected[:, handler.label_names().index("entailment")].argmax())]
    assert output["labels"][0] == best


def test_candidate_labels_are_required(handler):
    with pytest.raises(InputError) as caught:
        handler.predict([TEXT])
    assert caught.value.field == "parameters.candidate_labels"
    with pytest.raises(InputError, match="candidate_labels"):
        handler.predict([TEXT], {"candidate_labels": " , "})


def test_a_model_without_nli_labels_is_refused(tiny_checkpoint):
    path = tiny_checkpoint("zero-shot-classification", labels=["negative", "positive"])
    with pytest.raises(CheckpointError, match="'entailment' and 'contradiction'"):
        build_handler(load_checkpoint(str(path)))
