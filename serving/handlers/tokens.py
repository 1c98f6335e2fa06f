"""Token classification (named entities): entities with character offsets into the input text, in
the shapes of transformers' `token-classification` pipeline.

Raw text is split into words with `data.preprocess.split_words`, as training's pre-split words were,
and the preprocessing function maps every sub-token back to its word and its characters. Training
labels each word's first sub-token (unless `label_all_tokens`), so aggregation "first" reads the
model exactly as it was trained; "simple" (the pipeline's grouping of sub-token predictions) is the
default for compatibility.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from rayformers.serving import schemas
from rayformers.serving.handlers.base import Handler
from rayformers.serving.schemas import TokenClassificationParameters

__all__ = ["TokenClassificationHandler", "group_entities"]


def _tag(label: str) -> tuple[str, str]:
    """(B or I, entity type): labels without a B-/I- prefix continue a group, as the pipeline reads them."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def group_entities(pieces: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Merge consecutive pieces ({entity, score, start, end}) of one entity into
    {entity_group, score (mean), word, start, end}; a B- tag always starts a new group."""
    groups: list[list[dict[str, Any]]] = []
    for piece in pieces:
        bi, tag = _tag(piece["entity"])
        if groups and bi != "B" and _tag(groups[-1][-1]["entity"])[1] == tag:
            groups[-1].append(piece)
        else:
            groups.append([piece])
    out = []
    for group in groups:
        start, end = group[0]["start"], group[-1]["end"]
        out.append(
            {
                "entity_group": _tag(group[0]["entity"])[1],
                "score": float(sum(p["score"] for p in group) / len(group)),
                "word": text[start:end],
                "start": start,
                "end": end,
            }
        )
    return out


class TokenClassificationHandler(Handler):
    """Entities of raw texts; `start`/`end` are character offsets into the text given."""

    task: ClassVar[str] = "token-classification"
    Parameters: ClassVar[type[TokenClassificationParameters]] = schemas.TokenClassificationParameters
    warmup_inputs: ClassVar[list[Any]] = ["Alice works in Paris."]

    def _predict(self, inputs: list[str], parameters: TokenClassificationParameters) -> list[Any]:
        columns = self.tokenize({"text": inputs})
        logits = self.forward(self.to_batch(columns)).logits
        probabilities = logits.float().softmax(-1).cpu()
        names = self.label_names()
        outputs = []
        for row, text in enumerate(inputs):
            n = len(columns["input_ids"][row])
            tokens = {
                "ids": columns["input_ids"][row],
                "word_ids": columns["word_ids"][row],
                "offsets": columns["offset_mapping"][row],
                "probabilities": probabilities[row, :n],
            }
            outputs.append(self._entities(text, tokens, names, parameters))
        return outputs

    def _entities(
        self, text: str, tokens: dict[str, Any], names: list[str], parameters: TokenClassificationParameters
    ) -> list[dict[str, Any]]:
        probabilities: torch.Tensor = tokens["probabilities"]
        word_ids, offsets = tokens["word_ids"], tokens["offsets"]
        positions = [i for i, w in enumerate(word_ids) if w >= 0]  # special tokens carry no prediction
        strategy = parameters.aggregation_strategy
        if strategy in ("none", "simple"):
            pieces = []
            for i in positions:
                best = int(probabilities[i].argmax())
                pieces.append(
                    {
                        "entity": names[best],
                        "score": float(probabilities[i, best]),
                        "index": i,
                        "word": self.tokenizer.convert_ids_to_tokens(tokens["ids"][i]),
                        "start": int(offsets[i][0]),
                        "end": int(offsets[i][1]),
                    }
                )
            if strategy == "none":
                return [p for p in pieces if p["entity"] not in parameters.ignore_labels]
            grouped = group_entities(pieces, text)
        else:
            grouped = group_entities(
                self._words(positions, word_ids, offsets, probabilities, names, strategy), text
            )
        return [g for g in grouped if g["entity_group"] not in parameters.ignore_labels]

    @staticmethod
    def _words(
        positions: list[int],
        word_ids: list[int],
        offsets: list[tuple[int, int]],
        probabilities: torch.Tensor,
        names: list[str],
        strategy: str,
    ) -> list[dict[str, Any]]:
        """One piece per word: label from its first sub-token, its mean scores, or its best sub-token."""
        words: dict[int, list[int]] = {}
        for i in positions:
            words.setdefault(word_ids[i], []).append(i)
        pieces = []
        for members in words.values():
            if strategy == "first":
                scores = probabilities[members[0]]
            elif strategy == "average":
                scores = probabilities[members].mean(0)
            else:
                scores = probabilities[members[int(probabilities[members].max(-1).values.argmax())]]
            best = int(scores.argmax())
            pieces.append(
                {
                    "entity": names[best],
                    "score": float(scores[best]),
                    "start": int(offsets[members[0]][0]),
                    "end": int(offsets[members[-1]][1]),
                }
            )
        return pieces
