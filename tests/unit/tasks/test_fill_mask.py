"""Fill-mask: candidates for each mask, scored by the model's softmax at the mask position."""

from __future__ import annotations

import pytest
import torch

from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.serving.errors import InputError

TEXT = "The cat [MASK] on the mat."


@pytest.fixture(scope="module")
def handler(tiny_checkpoint):
    return build_handler(load_checkpoint(str(tiny_checkpoint("fill-mask"))))


def mask_probabilities(handler, text: str) -> torch.Tensor:
    encoded = handler.tokenizer([text], return_tensors="pt")
    position = int((encoded["input_ids"][0] == handler.tokenizer.mask_token_id).nonzero()[0])
    with torch.inference_mode():
        return handler.model(**encoded).logits[0, position].softmax(-1)


def test_candidates_are_the_models_best_tokens_filled_in_place(handler):
    (candidates,) = handler.predict([TEXT], {"top_k": 4})
    probabilities = mask_probabilities(handler, TEXT)
    values, indices = probabilities.topk(4)
    assert [c["token"] for c in candidates] == indices.tolist()
    assert [c["score"] for c in candidates] == pytest.approx(values.tolist(), abs=1e-6)
    for c in candidates:
        assert set(c) == {"score", "token", "token_str", "sequence"}
        assert c["token_str"] == handler.tokenizer.decode([c["token"]])
        if not c["token_str"].startswith("##"):
            assert c["sequence"] == f"the cat {c['token_str']} on the mat."


def test_targets_restrict_and_rank_the_words(handler):
    (candidates,) = handler.predict([TEXT], {"targets": ["sat", "dog", "paris"], "top_k": 5})
    probabilities = mask_probabilities(handler, TEXT)
    assert len(candidates) == 3  # top_k is capped by the number of targets
    assert {c["token_str"] for c in candidates} == {"sat", "dog", "paris"}
    for c in candidates:
        assert c["score"] == pytest.approx(float(probabilities[c["token"]]), abs=1e-6)
        assert c["sequence"] == f"the cat {c['token_str']} on the mat."
    assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)


def test_several_masks_give_a_list_per_mask(handler):
    (per_mask,) = handler.predict(["A [MASK] sat on the [MASK]."], {"top_k": 2})
    assert len(per_mask) == 2 and all(len(found) == 2 for found in per_mask)
    first, second = per_mask[0][0]["sequence"], per_mask[1][0]["sequence"]
    assert first.endswith("the [MASK].") and second.startswith("a [MASK] sat")


def test_text_without_the_mask_token_names_it(handler):
    with pytest.raises(InputError, match=r"\[MASK\]") as caught:
        handler.predict([TEXT, "no mask here"])
    assert caught.value.field == "inputs[1]"


def test_mask_beyond_max_length_is_explained(handler):
    with pytest.raises(InputError, match="beyond the first 48 tokens"):
        handler.predict([" ".join(["cat"] * 100) + " [MASK]"])


def test_target_without_a_token_is_an_input_error(handler):
    with pytest.raises(InputError, match=r"parameters\.targets"):
        handler.predict([TEXT], {"targets": ["   "]})


def test_bpe_tokenizer_and_its_own_mask_token(tiny_checkpoint):
    handler = build_handler(load_checkpoint(str(tiny_checkpoint("fill-mask", tokenizer="bpe"))))
    assert handler.tokenizer.mask_token == "<mask>"
    handler.warmup()
    (candidates,) = handler.predict(["The cat <mask> on the mat."], {"targets": ["sat"]})
    assert candidates[0]["sequence"] == "the cat sat on the mat."
    with pytest.raises(InputError, match="<mask>"):
        handler.predict([TEXT])  # [MASK] is not this tokenizer's mask token
