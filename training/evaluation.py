"""Evaluation over the whole validation split: each worker scores its shard, the per-example
results are gathered to every rank, and the task's metrics are computed on all of them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from rayformers.data.preprocess import IGNORE_INDEX
from rayformers.manifest import PreprocessSettings
from rayformers.training import metrics as m

__all__ = ["embed_pair", "evaluate", "gather", "mean_pool"]


def gather(items: list[Any]) -> list[Any]:
    """Every rank's `items`, concatenated in rank order (just `items` without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    everything: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everything, items)
    return [x for part in everything for x in part]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors that the attention mask keeps (the feature-extraction pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _seq2seq_texts(
    model: Any, batch: dict[str, torch.Tensor], tokenizer: Any, max_new_tokens: int
) -> tuple[list[str], list[str]]:
    generated = model.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        max_new_tokens=max_new_tokens,
        num_beams=1,
        do_sample=False,
    )
    labels = batch["labels"].clone()
    labels[labels == IGNORE_INDEX] = tokenizer.pad_token_id
    return (
        tokenizer.batch_decode(generated, skip_special_tokens=True),
        tokenizer.batch_decode(labels, skip_special_tokens=True),
    )


MAX_ANSWER_TOKENS = 30
"""Longest answer span evaluation considers, in tokens (as the SQuAD scripts and run_qa.py)."""


def _window_answers(
    start_logits: torch.Tensor, end_logits: torch.Tensor, batch: dict[str, Any]
) -> list[tuple[str, float, str, list[str]]]:
    """(example id, score, answer text, gold texts) of each window's best span: start <= end, both on
    context tokens, at most MAX_ANSWER_TOKENS long, scored by start + end logit."""
    if "example_id" not in batch:
        raise ValueError(
            "question-answering validation shards carry no example ids (tokenized by an older rayformers): "
            "delete the run's tokenized/ directory, or use a new train.name, to tokenize them again"
        )
    found = []
    for i, offsets in enumerate(batch["offset_mapping"]):
        n = len(offsets)
        context = torch.tensor([s >= 0 for s, _ in offsets], device=start_logits.device)
        starts = start_logits[i, :n].float().masked_fill(~context, float("-inf"))
        ends = end_logits[i, :n].float().masked_fill(~context, float("-inf"))
        scores = starts[:, None] + ends[None, :]
        allowed = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu().tril(MAX_ANSWER_TOKENS - 1)
        scores = scores.masked_fill(~allowed, float("-inf"))
        flat = int(scores.argmax())
        score = float(scores.view(-1)[flat])
        if score == float("-inf"):  # a window with no context tokens answers nothing
            continue
        s, e = divmod(flat, n)
        text = batch["context"][i][offsets[s][0] : offsets[e][1]]
        found.append((batch["example_id"][i], score, text, list(batch["answer_texts"][i])))
    return found


def embed_pair(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled embeddings of each text and of its `pair_*` positive."""
    texts = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    pairs = model(
        input_ids=batch["pair_input_ids"], attention_mask=batch["pair_attention_mask"]
    ).last_hidden_state
    return mean_pool(texts, batch["attention_mask"]), mean_pool(pairs, batch["pair_attention_mask"])


# Tasks whose (prediction, reference) pairs a user's `evaluate` module can score as they are.
_MODULE_TASKS = (
    "text-classification",
    "zero-shot-classification",
    "token-classification",
    "summarization",
    "translation",
)


@torch.no_grad()
def evaluate(
    model: Any,
    batches: Iterable[dict[str, torch.Tensor]],
    task: str,
    settings: PreprocessSettings,
    tokenizer: Any,
    device: torch.device,
    metric_module: str | None = None,
) -> dict[str, float]:
    """The task's metrics (and mean loss) over every worker's batches; with `metric_module`, a user's
    local `evaluate` module also scores the same predictions (classification, NER, seq2seq)."""
    core = model.module if hasattr(model, "module") else model
    core.eval()
    rows: list[Any] = []
    loss_sum, loss_count = 0.0, 0
    for collated in batches:
        batch = {k: v.to(device) for k, v in collated.items() if isinstance(v, torch.Tensor)}
        if task == "feature-extraction":
            a, p = embed_pair(core, batch)
            rows.extend(zip(a.float().cpu().numpy(), p.float().cpu().numpy(), strict=True))
            continue
        inputs = {k: v for k, v in batch.items() if not k.startswith("pair_")}
        out = core(**inputs)
        if task in ("fill-mask", "text-generation"):
            # Token-weighted loss over every predicted token (causal models predict all but the first).
            labels = inputs["labels"]
            tokens = int(
                (labels[:, 1:] != IGNORE_INDEX).sum()
                if task == "text-generation"
                else (labels != IGNORE_INDEX).sum()
            )
            rows.append((float(out.loss) * tokens, tokens))
            continue
        loss_sum += float(out.loss) * len(batch["input_ids"])
        loss_count += len(batch["input_ids"])
        if task in ("text-classification", "zero-shot-classification"):
            rows.extend(
                zip(out.logits.argmax(-1).cpu().tolist(), inputs["labels"].cpu().tolist(), strict=True)
            )
        elif task == "token-classification":
            preds, labels = out.logits.argmax(-1).cpu().numpy(), inputs["labels"].cpu().numpy()
            names = settings.labels.names if settings.labels else []
            for p_row, l_row in zip(preds, labels, strict=True):
                keep = l_row != IGNORE_INDEX
                rows.append(([names[i] for i in p_row[keep]], [names[i] for i in l_row[keep]]))
        elif task == "question-answering":
            rows.extend(_window_answers(out.start_logits, out.end_logits, collated))
        elif task in ("summarization", "translation"):
            predictions, references = _seq2seq_texts(core, inputs, tokenizer, settings.max_target_length)
            rows.extend(zip(predictions, references, strict=True))
    rows = gather(rows)
    totals = gather([(loss_sum, loss_count)])
    result: dict[str, float] = {}
    count = sum(c for _, c in totals)
    if count:
        result["loss"] = sum(s for s, _ in totals) / count
    if task in ("fill-mask", "text-generation"):
        result.update(m.perplexity(sum(s for s, _ in rows), sum(t for _, t in rows)))
    elif task == "feature-extraction":
        result.update(
            m.recall_at_1(np.stack([a for a, _ in rows]), np.stack([p for _, p in rows]))
            if rows
            else {"recall_at_1": 0.0}
        )
    elif task in ("text-classification", "zero-shot-classification"):
        n = len(settings.labels) if settings.labels else 2
        result.update(m.classification_metrics([p for p, _ in rows], [r for _, r in rows], n))
    elif task == "token-classification":
        result.update(m.sequence_labeling_metrics([p for p, _ in rows], [r for _, r in rows]))
    elif task == "question-answering":
        # Each example's answer is its best-scoring span over all its windows, wherever they were scored.
        best: dict[str, tuple[float, str, list[str]]] = {}
        for example, score, text, golds in rows:
            if example not in best or score > best[example][0]:
                best[example] = (score, text, golds)
        answers = list(best.values())
        result.update(m.qa_metrics([text for _, text, _ in answers], [golds for _, _, golds in answers]))
    elif task == "summarization":
        result.update(m.rouge_metrics([p for p, _ in rows], [r for _, r in rows]))
    elif task == "translation":
        result.update(m.bleu_metrics([p for p, _ in rows], [r for _, r in rows]))
    if metric_module and rows and task in _MODULE_TASKS:
        result.update(m.module_metrics(metric_module, [p for p, _ in rows], [r for _, r in rows]))
    core.train()
    return result
