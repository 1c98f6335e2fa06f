"""Feature extraction: one sentence embedding per text, pooled as training pooled it.

transformers' `feature-extraction` pipeline returns every token's vector; a served embedding model
is asked for one vector per text, so this returns `list[float]` per input: the mean of the token
vectors under the attention mask (the exact formula of training's `mean_pool`, which the contrastive
loss trained) or the first token's vector, L2-normalised by default.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from rayformers.serving import schemas
from rayformers.serving.handlers.base import Handler
from rayformers.serving.schemas import FeatureExtractionParameters

__all__ = ["FeatureExtractionHandler", "mean_pool"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors the attention mask keeps (same as `training.evaluation.mean_pool`,
    which serving may not import: the two must stay equal, and a unit test checks they do)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class FeatureExtractionHandler(Handler):
    """Sentence embeddings of texts, in one forward pass."""

    task: ClassVar[str] = "feature-extraction"
    Parameters: ClassVar[type[FeatureExtractionParameters]] = schemas.FeatureExtractionParameters

    @property
    def default_pooling(self) -> Literal["mean", "cls"]:
        manifest = self.loaded.manifest
        return manifest.pooling if manifest is not None and manifest.pooling else "mean"

    def _predict(self, inputs: list[str], parameters: FeatureExtractionParameters) -> list[Any]:
        batch = self.to_batch(self.tokenize({"text": inputs}))
        hidden = self.forward(batch).last_hidden_state.float()
        if (parameters.pooling or self.default_pooling) == "cls":
            vectors = hidden[:, 0]
        else:
            vectors = mean_pool(hidden, batch["attention_mask"])
        if parameters.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return [[float(x) for x in row] for row in vectors.cpu().tolist()]
