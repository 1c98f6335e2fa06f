"""Fill-mask: the most likely tokens for each mask token of a text, in the shapes of transformers'
`fill-mask` pipeline (a list per input; a list of lists when the text has several masks)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from rayformers.serving import schemas
from rayformers.serving.errors import CheckpointError, InputError
from rayformers.serving.handlers.base import Handler
from rayformers.serving.schemas import FillMaskParameters

__all__ = ["FillMaskHandler"]


class FillMaskHandler(Handler):
    """Candidates for every mask token; scores are softmax probabilities over the whole vocabulary."""

    task: ClassVar[str] = "fill-mask"
    Parameters: ClassVar[type[FillMaskParameters]] = schemas.FillMaskParameters
    input_hint: ClassVar[str] = schemas.MASKED_TEXT_HINT

    def __init__(self, loaded: Any) -> None:
        super().__init__(loaded)
        if self.tokenizer.mask_token_id is None:
            raise CheckpointError(f"{loaded.path}: its tokenizer has no mask token, so it cannot fill masks")
        self.warmup_inputs = [f"Hello {self.tokenizer.mask_token}."]

    def _predict(self, inputs: list[str], parameters: FillMaskParameters) -> list[Any]:
        mask, mask_id = self.tokenizer.mask_token, self.tokenizer.mask_token_id
        for i, text in enumerate(inputs):
            if mask not in text:
                raise InputError(
                    f"inputs[{i}]", f"{text!r} has no mask token; put {mask} where a word should go"
                )
        columns = self.tokenize({"text": inputs})
        for i, ids in enumerate(columns["input_ids"]):
            if mask_id not in ids:
                reason = (
                    f"the mask token lies beyond the first {self.settings.max_length} tokens the model reads; "
                    "shorten the text before it"
                    if columns["truncated"][i]
                    else f"the tokenizer did not read {mask} as the mask token; write it exactly, with spaces around it"
                )
                raise InputError(f"inputs[{i}]", reason)
        targets = self._target_ids(parameters.targets) if parameters.targets else None
        logits = self.forward(self.to_batch(columns)).logits
        outputs = []
        for row, ids in enumerate(columns["input_ids"]):
            positions = [i for i, t in enumerate(ids) if t == mask_id]
            probabilities = logits[row, positions].float().softmax(-1).cpu()
            found = [
                self._candidates(ids, p, probabilities[j], targets, parameters.top_k)
                for j, p in enumerate(positions)
            ]
            outputs.append(found[0] if len(found) == 1 else found)
        return outputs

    def _candidates(
        self,
        ids: list[int],
        position: int,
        probabilities: torch.Tensor,
        targets: list[int] | None,
        top_k: int,
    ) -> list[dict[str, Any]]:
        if targets is not None:
            values = probabilities[targets]
            order = values.argsort(descending=True)[:top_k]
            picks = [(targets[int(i)], float(values[i])) for i in order]
        else:
            values, indices = probabilities.topk(min(top_k, len(probabilities)))
            picks = [(int(i), float(v)) for i, v in zip(indices, values, strict=True)]
        return [
            {
                "score": score,
                "token": token,
                "token_str": self.tokenizer.decode([token]),
                "sequence": self._sequence(ids, position, token),
            }
            for token, score in picks
        ]

    def _sequence(self, ids: list[int], position: int, token: int) -> str:
        """The text with this mask filled; other masks stay visible (the pipeline shows [CLS] and
        [SEP] too when a text has several masks: here only the masks are kept)."""
        filled = list(ids)
        filled[position] = token
        special = set(self.tokenizer.all_special_ids) - {self.tokenizer.mask_token_id}
        kept = [t for i, t in enumerate(filled) if t not in special or (i == position)]
        return self.tokenizer.decode(kept, skip_special_tokens=False).strip()  # type: ignore[no-any-return]

    def _target_ids(self, targets: list[str]) -> list[int]:
        vocab = self.tokenizer.get_vocab()
        ids: list[int] = []
        for target in targets:
            token = vocab.get(target)
            if token is None:
                pieces = self.tokenizer(target, add_special_tokens=False)["input_ids"]
                if not pieces:
                    raise InputError(
                        "parameters.targets", f"{target!r} has no token in this vocabulary; drop it"
                    )
                token = pieces[0]
            if token not in ids:
                ids.append(token)
        return ids
