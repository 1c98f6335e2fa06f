"""Token classification (named entities, parts of speech): a label for every word of a sentence.

Training rows are pre-split words (`tokens`) with one tag each (`tags`, IOB2 for entities); labels sit
on each word's first sub-token, and continuation sub-tokens and special tokens get -100 (or, with
`label_all_tokens`, the word's label with B- turned into I-). At serve time raw text is split into
words as the corpora split them (`split_words`: punctuation is a word of its own, so "Paris." is "Paris"
and "."), and the preprocessing maps every
sub-token back to its word and characters, so entities come back with character offsets into the text,
in the shapes of transformers' `token-classification` pipeline. Aggregation "first" reads the model
exactly as it was trained; "simple" (the pipeline's grouping of sub-token predictions) is the default
for compatibility.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from rayformers.data.preprocess import IGNORE_INDEX, Columns, Mode, encode, model_inputs, truncated_rows
from rayformers.manifest import PreprocessSettings, label_key
from rayformers.tasks.base import Playground, Task
from rayformers.tasks.evaluation import PairEvaluator
from rayformers.tasks.handler import Handler
from rayformers.tasks.schemas import ParametersModel

__all__ = [
    "TASK",
    "TokenClassification",
    "TokenClassificationHandler",
    "TokenClassificationParameters",
    "group_entities",
    "sequence_labeling_metrics",
    "split_words",
]

_WORD = re.compile(r"\S+")


class TokenClassificationParameters(ParametersModel):
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] = Field(
        default="simple",
        description="none: one entry per sub-token; simple: group sub-tokens by B-/I- tags; first, average, "
        "max: one label per word (its first sub-token's, the mean scores', or the best sub-token's), then group.",
    )
    ignore_labels: list[str] = Field(
        default_factory=lambda: ["O"], description="Labels (or entity groups) left out of the output."
    )


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The words of `text`, as token-classification corpora (CoNLL, WikiANN, OntoNotes) split them, and
    their character spans: whitespace words, with each punctuation mark or symbol at either end a word of
    its own ("Paris." is "Paris" and "."), inner ones kept ("don't", "e-mail", "3.5"), and combining marks
    (Devanagari, Arabic vowel signs) always inside their word. How raw text meets pre-split training data."""
    words: list[str] = []
    spans: list[tuple[int, int]] = []
    for match in _WORD.finditer(text):
        start, end = match.span()
        head, tail = start, end
        while head < tail and _is_mark(text[head]):
            head += 1
        while tail > head and _is_mark(text[tail - 1]):
            tail -= 1
        pieces = [(i, i + 1) for i in range(start, head)]
        pieces += [(head, tail)] if head < tail else []
        pieces += [(i, i + 1) for i in range(tail, end)]
        for a, b in pieces:
            words.append(text[a:b])
            spans.append((a, b))
    return words, spans


def _is_mark(char: str) -> bool:
    """Punctuation or a symbol (Unicode categories P* and S*)."""
    return unicodedata.category(char)[0] in "PS"


def tokenize_token_classification(
    batch: Mapping[str, Sequence[Any]], tokenizer: Any, settings: PreprocessSettings, mode: Mode = "train"
) -> Columns:
    """Pre-split words in training (`tokens`, `tags`); raw `text` split on whitespace at inference."""
    if mode != "inference":
        words = [list(w) for w in batch["tokens"]]
        spans: list[list[tuple[int, int]]] = []
    else:
        split = [split_words(t) for t in batch["text"]]
        words, spans = [w for w, _ in split], [s for _, s in split]
    encoding = encode(
        tokenizer, settings, words, is_split_into_words=True, return_offsets_mapping=mode == "inference"
    )
    out = model_inputs(encoding)
    out["truncated"] = truncated_rows(encoding, settings.max_length, len(words))
    word_ids = [[-1 if w is None else w for w in encoding.word_ids(i)] for i in range(len(words))]
    if mode == "inference":
        out["word_ids"] = word_ids
        # Offsets of split words are relative to each word: shift them to character positions in the text.
        out["offset_mapping"] = [
            [
                (spans[i][w][0] + s, spans[i][w][0] + e) if w >= 0 else (-1, -1)
                for w, (s, e) in zip(ids, offs, strict=True)
            ]
            for i, (ids, offs) in enumerate(zip(word_ids, encoding["offset_mapping"], strict=True))
        ]
        return out
    label2id = settings.label2id
    labels = []
    for row, ids in zip(batch["tags"], word_ids, strict=True):
        tags = [label_key(t) for t in row]
        previous = -1
        row_labels = []
        for w in ids:
            if w < 0:
                row_labels.append(IGNORE_INDEX)
            elif w != previous:
                row_labels.append(label2id[tags[w]])
            elif settings.label_all_tokens:
                tag = tags[w]
                inside = "I-" + tag[2:] if tag.startswith("B-") else tag
                row_labels.append(label2id.get(inside, label2id[tag]))
            else:
                row_labels.append(IGNORE_INDEX)
            previous = w
        labels.append(row_labels)
    out["labels"] = labels
    return out


def sequence_labeling_metrics(predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (seqeval, IOB2) and token accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {
        "precision": float(precision_score(references, predictions, zero_division=0)),
        "recall": float(recall_score(references, predictions, zero_division=0)),
        "f1": float(f1_score(references, predictions, zero_division=0)),
        "accuracy": float(accuracy_score(references, predictions)),
    }


class TokenClassificationEvaluator(PairEvaluator):
    """(predicted tags, gold tags) per row, on the positions that carry a label: seqeval's scores."""

    def record(self, out: Any, batch: Mapping[str, Any], collated: Mapping[str, Any]) -> None:
        preds, labels = out.logits.argmax(-1).cpu().numpy(), batch["labels"].cpu().numpy()
        names = self.settings.labels.names if self.settings.labels else []
        for p_row, l_row in zip(preds, labels, strict=True):
            keep = l_row != IGNORE_INDEX
            self.rows.append(([names[i] for i in p_row[keep]], [names[i] for i in l_row[keep]]))

    def score(self, rows: list[Any]) -> dict[str, float]:
        return sequence_labeling_metrics([p for p, _ in rows], [r for _, r in rows])


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

    warmup_inputs = ["Alice works in Paris."]
    shares_forward = True

    def _predict(self, inputs: list[str], parameters: list[TokenClassificationParameters]) -> list[Any]:
        columns = self.tokenize({"text": inputs})
        lengths = [len(ids) for ids in columns["input_ids"]]
        probabilities = self.forward_rows(
            columns,
            lambda out, rows: [
                out.logits[j, : lengths[i]].float().softmax(-1).cpu() for j, i in enumerate(rows)
            ],
        )
        names = self.label_names()
        outputs = []
        for row, (text, params) in enumerate(zip(inputs, parameters, strict=True)):
            tokens = {
                "ids": columns["input_ids"][row],
                "word_ids": columns["word_ids"][row],
                "offsets": columns["offset_mapping"][row],
                "probabilities": probabilities[row],
            }
            outputs.append(self._entities(text, tokens, names, params))
        return outputs

    def _entities(
        self, text: str, tokens: dict[str, Any], names: list[str], parameters: TokenClassificationParameters
    ) -> list[dict[str, Any]]:
        probabilities = tokens["probabilities"]
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
        probabilities: Any,
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


class TokenClassification(Task):
    name = "token-classification"
    summary = "Label every word of a pre-split sentence (named entities, parts of speech)."
    columns = ("tokens", "tags")
    text_columns = ("tokens",)
    label_column = "tags"
    label_kind = "token"
    auto_model = "AutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    head_modules = ("classifier", "score")
    metrics = ("precision", "recall", "f1", "accuracy")
    default_metric = "f1"
    pipeline_task = "token-classification"
    Parameters = TokenClassificationParameters
    playground = Playground(form="text", result="entities")
    handler = TokenClassificationHandler
    preprocess = staticmethod(tokenize_token_classification)
    evaluator_class = TokenClassificationEvaluator

    def row_problem(
        self, row: Mapping[str, Any], columns: Sequence[str], settings: PreprocessSettings
    ) -> tuple[str, str] | None:
        tokens, tags = row.get("tokens"), row.get("tags")
        if not isinstance(tokens, Sequence) or isinstance(tokens, str) or not tokens:
            return "malformed tokens", "tokens must be a non-empty list of words"
        if not all(isinstance(t, str) and t.strip() for t in tokens):
            return "malformed tokens", "every token must be a non-empty string"
        if not isinstance(tags, Sequence) or isinstance(tags, str):
            return "malformed tags", "tokens and tags must both be lists"
        if len(tags) != len(tokens):
            return "tags do not match tokens", f"{len(tokens)} tokens but {len(tags)} tags"
        label2id = settings.label2id
        unknown = [t for t in tags if label_key(t) not in label2id]
        if unknown:
            return "unknown label", f"tag {unknown[0]!r} is not one of the training labels"
        return None

    def prepare_tokenizer(self, tokenizer: Any, reload: Callable[..., Any]) -> Any:
        # Byte-level BPE tokenizers need a prefix space to encode words that arrive already split.
        if getattr(tokenizer, "add_prefix_space", None) is False:
            return reload(add_prefix_space=True)
        return tokenizer


TASK = TokenClassification()
