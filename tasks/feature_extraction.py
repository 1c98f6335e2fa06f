"""Feature extraction: sentence embeddings, trained contrastively on (text, text_pair) positive pairs.

Training encodes each text and its positive separately and learns with an in-batch contrastive loss
(InfoNCE over cosine similarities: each text's positive is its own pair, the other pairs are its
negatives); evaluation reports recall@1 of that retrieval over the whole validation split. Both pool
the token vectors with the checkpoint contract's `pool` (mean under the attention mask), which the
manifest records. Serving returns one `list[float]` per input, pooled the same way and L2-normalised by
default (transformers' `feature-extraction` pipeline returns every token's vector instead; a served
embedding model is asked for one vector per text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from rayformers.data.preprocess import Columns, Mode, encode, model_inputs, truncated_rows
from rayformers.manifest import PreprocessSettings
from rayformers.tasks.base import Playground, Task
from rayformers.tasks.checkpoint import pool
from rayformers.tasks.evaluation import Evaluator, gather, rank_share
from rayformers.tasks.handler import Handler
from rayformers.tasks.schemas import ParametersModel

if TYPE_CHECKING:
    import torch

__all__ = [
    "TASK",
    "FeatureExtraction",
    "FeatureExtractionHandler",
    "FeatureExtractionParameters",
    "embed_pair",
    "recall_at_1",
]

TEMPERATURE = 0.05
"""Scale of the contrastive loss's cosine similarities (as SimCSE and sentence-transformers use)."""


class FeatureExtractionParameters(ParametersModel):
    pooling: Literal["mean", "cls"] | None = Field(
        default=None, description="mean or cls (first token). Unset: what the checkpoint was trained with."
    )
    normalize: bool = Field(default=True, description="Scale each embedding to unit L2 norm.")


def tokenize_embedding_pairs(
    batch: Mapping[str, Sequence[Any]], tokenizer: Any, settings: PreprocessSettings, mode: Mode = "train"
) -> Columns:
    """Feature extraction: each text alone; in training also its positive `text_pair`, encoded
    separately (as `pair_*` columns) for an in-batch contrastive loss."""
    texts = list(batch["text"])
    encoding = encode(tokenizer, settings, texts)
    out = model_inputs(encoding)
    out["truncated"] = truncated_rows(encoding, settings.max_length, len(texts))
    if mode != "inference":
        pairs = encode(tokenizer, settings, list(batch["text_pair"]))
        for key, value in model_inputs(pairs).items():
            out[f"pair_{key}"] = value
    return out


def recall_hits(anchors: np.ndarray, positives: np.ndarray, *, offset: int = 0, chunk: int = 1024) -> int:
    """How many `anchors` have their own pair as their nearest positive (cosine) among all `positives`:
    anchor i's pair is `positives[offset + i]`. The similarities are taken `chunk` anchors at a time
    (memory chunk x N, never N x N: 50k rows would be 10 GB)."""
    if len(anchors) == 0 or len(positives) == 0:
        return 0
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True).clip(1e-12)
    p = positives / np.linalg.norm(positives, axis=1, keepdims=True).clip(1e-12)
    hits = 0
    for start in range(0, len(a), chunk):
        own = np.arange(offset + start, offset + min(start + chunk, len(a)))
        hits += int(((a[start : start + chunk] @ p.T).argmax(axis=1) == own).sum())
    return hits


def recall_at_1(anchors: np.ndarray, positives: np.ndarray, *, chunk: int = 1024) -> dict[str, float]:
    """How often each anchor's nearest positive (cosine) is its own pair, over one process's split."""
    return {
        "recall_at_1": recall_hits(anchors, positives, chunk=chunk) / len(anchors) if len(anchors) else 0.0
    }


def embed_pair(model: Any, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled embeddings of each text and of its `pair_*` positive."""
    texts = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    pairs = model(
        input_ids=batch["pair_input_ids"], attention_mask=batch["pair_attention_mask"]
    ).last_hidden_state
    return pool(texts, batch["attention_mask"], "mean"), pool(pairs, batch["pair_attention_mask"], "mean")


class EmbeddingEvaluator(Evaluator):
    """Each text's and its positive's embedding; recall@1 of retrieving the positive among all of the
    split's. Only the positives cross ranks (every rank needs them all as candidates); each rank scores
    its own anchors against them, and the hits are summed."""

    def add(self, model: Any, batch: Mapping[str, Any], collated: Mapping[str, Any]) -> None:
        a, p = embed_pair(model, batch)
        self.rows.append((a.float().cpu().numpy(), p.float().cpu().numpy()))

    def result(self) -> dict[str, float]:
        anchors = np.concatenate([a for a, _ in self.rows]) if self.rows else None
        mine = np.concatenate([p for _, p in self.rows]) if self.rows else None
        parts = gather([mine])  # every rank's positives, in rank order
        rank, world = rank_share()
        offset = sum(len(p) for p in parts[:rank] if p is not None)
        present = [p for p in parts if p is not None]
        if not present:
            return {"recall_at_1": 0.0}
        positives = np.concatenate(present)
        hits = recall_hits(anchors, positives, offset=offset) if anchors is not None else 0
        total = sum(gather([hits])) if world > 1 else hits
        return {"recall_at_1": total / len(positives)}


class FeatureExtractionHandler(Handler):
    """Sentence embeddings of texts; requests with other pooling or normalization share the forwards."""

    shares_forward = True

    @property
    def default_pooling(self) -> Literal["mean", "cls"]:
        manifest = self.loaded.manifest
        return manifest.pooling if manifest is not None and manifest.pooling else "mean"

    def _predict(self, inputs: list[str], parameters: list[FeatureExtractionParameters]) -> list[Any]:
        import torch

        def pooled(out: Any, rows: list[int]) -> list[dict[str, Any]]:
            hidden = out.last_hidden_state.float()
            mask = hidden.new_tensor([[1] * lengths[i] + [0] * (hidden.shape[1] - lengths[i]) for i in rows])
            means, firsts = pool(hidden, mask, "mean").cpu(), pool(hidden, mask, "cls").cpu()
            return [{"mean": means[j], "cls": firsts[j]} for j in range(len(rows))]

        columns = self.tokenize({"text": inputs})
        lengths = [len(ids) for ids in columns["input_ids"]]
        vectors = self.forward_rows(columns, pooled)
        outputs = []
        for by_pooling, params in zip(vectors, parameters, strict=True):
            vector = by_pooling[params.pooling or self.default_pooling]
            if params.normalize:
                vector = torch.nn.functional.normalize(vector, dim=-1)
            outputs.append([float(x) for x in vector.tolist()])
        return outputs


class FeatureExtraction(Task):
    name = "feature-extraction"
    summary = "Sentence embeddings, trained contrastively on (text, text_pair) positive pairs."
    columns = ("text", "text_pair")
    text_columns = ("text", "text_pair")
    auto_model = "AutoModel"
    peft_task_type = "FEATURE_EXTRACTION"
    # The loss pools hidden states and never uses the encoder's pooler head: DDP must be told that
    # some parameters get no gradient, or it fails at the first backward.
    ddp_find_unused_parameters = True
    pooling = "mean"
    metrics = ("recall_at_1",)
    default_metric = "recall_at_1"
    pipeline_task = "feature-extraction"
    capabilities = frozenset({"embed"})
    Parameters = FeatureExtractionParameters
    playground = Playground(form="two-texts", result="embedding")
    handler = FeatureExtractionHandler
    preprocess = staticmethod(tokenize_embedding_pairs)
    evaluator_class = EmbeddingEvaluator

    def loss(self, model: Any, batch: Mapping[str, Any], settings: PreprocessSettings) -> torch.Tensor:
        import torch

        a, p = embed_pair(model, batch)
        scores = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(p, dim=-1).T
        return torch.nn.functional.cross_entropy(scores / TEMPERATURE, torch.arange(len(a), device=a.device))


TASK = FeatureExtraction()
