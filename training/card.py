"""The model card in every checkpoint (`README.md`), as the Hub's model card spec has it.

Its YAML metadata is what the Hub indexes and shows: `base_model`, `datasets`, `language` and `license`
(taken from the base model's own card where it is on disk; never guessed), `library_name`,
`pipeline_tag`, and a `model-index` holding the evaluation results, written with `huggingface_hub`'s own
`ModelCardData` so it parses back as the Hub reads it. The text has the sections the Hugging Face
course's model card chapter lists: description, intended uses and limitations, how to use, training
data, training procedure, and evaluation results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayformers.manifest import CheckpointManifest
from rayformers.tasks.checkpoint import MODEL_CARD

if TYPE_CHECKING:
    from rayformers.config import RunConfig, SourceConfig

__all__ = ["merged_card", "model_card"]

EVAL_SPLIT = "validation"
"""The split the recorded metrics were measured on."""


def model_card(manifest: CheckpointManifest, run: RunConfig | None, hyperparameters: dict[str, Any]) -> str:
    """The card of a checkpoint `run` wrote (None: a run unknown, as for checkpoints built in code),
    with `manifest`'s metrics as its evaluation results."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    scratch = run is not None and run.model.from_scratch is not None
    hub_base = None if scratch or Path(manifest.base_model).exists() else manifest.base_model
    sources = [s for s in (run.data.train, run.data.validation) if s is not None] if run else []
    datasets = list(dict.fromkeys(s.hub for s in sources if s.hub and not Path(s.hub).exists()))
    base_meta = _base_metadata(manifest.base_model)
    name = run.run_name if run else f"{manifest.task}-{manifest.method}"
    data_name = _dataset_name(sources[-1]) if sources else "custom"
    results = [
        EvalResult(
            task_type=manifest.task,
            dataset_type=datasets[0] if datasets else "custom",
            dataset_name=data_name,
            dataset_split=EVAL_SPLIT,
            metric_type=metric,
            metric_name=metric,
            metric_value=float(value),
        )
        for metric, value in sorted(_evaluation(manifest).items())
    ]
    data = ModelCardData(
        model_name=name,
        base_model=hub_base,
        datasets=datasets or None,
        language=base_meta.get("language"),
        license=base_meta.get("license"),
        library_name="peft" if manifest.method == "lora" else "transformers",
        pipeline_tag=manifest.task,
        tags=["rayformers", manifest.task, manifest.method],
        eval_results=results or None,
    )
    text = _text(manifest, name, scratch, hyperparameters, datasets, data_name)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}"))


TRAINING_ONLY = ("train_loss", "step", "epoch")
"""Manifest metrics that are no evaluation result: they stay out of the model-index."""
PRIVATE = ("storage_path",)
"""Training settings a card does not show: where the team's runs are stored (a card may go public)."""


def _evaluation(manifest: CheckpointManifest) -> dict[str, float]:
    return {k: v for k, v in manifest.metrics.items() if k not in TRAINING_ONLY}


def merged_card(card: str) -> str:
    """A LoRA checkpoint's card for its merged export: a plain transformers model now."""
    from huggingface_hub import ModelCard

    parsed = ModelCard(card)
    parsed.data.library_name = "transformers"
    if parsed.data.tags:
        parsed.data.tags = [t for t in parsed.data.tags if t != "lora"] + ["merged-lora"]
    note = "\nExported with `rayformers export --merge-lora`: the adapter is merged into the base weights.\n"
    return str(ModelCard(f"---\n{parsed.data.to_yaml()}\n---\n{parsed.text}{note}"))


def _base_metadata(base: str) -> dict[str, Any]:
    """`language` and `license` of a base model whose directory (with its own card) is on disk."""
    card = Path(base) / MODEL_CARD
    if not card.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(card).data
    except Exception:  # a card that is not the Hub's format tells nothing
        return {}
    return {k: getattr(data, k, None) for k in ("language", "license") if getattr(data, k, None)}


def _dataset_name(source: SourceConfig) -> str:
    if source.hub:
        return source.hub if not source.name else f"{source.hub} ({source.name})"
    paths = source.path if isinstance(source.path, list) else [source.path or "data"]
    return ", ".join(Path(p).name for p in paths)


def _text(
    manifest: CheckpointManifest,
    name: str,
    scratch: bool,
    hyperparameters: dict[str, Any],
    datasets: list[str],
    data_name: str,
) -> str:
    labels = manifest.preprocessing.labels.names if manifest.preprocessing.labels else None
    method = "LoRA (peft) adapter" if manifest.method == "lora" else "full fine-tuning"
    base = "a model trained from scratch" if scratch else f"`{manifest.base_model}`"
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(_evaluation(manifest).items())) or "| - | - |"
    shown = {k: v for k, v in hyperparameters.items() if k not in PRIVATE}
    sources = ", ".join(f"[{d}](https://huggingface.co/datasets/{d})" for d in datasets) or data_name
    return f"""# {name}

{manifest.task} model: {method} of {base}, trained with rayformers on Ray Train.

## Model description

- Task: `{manifest.task}`; architecture: `{manifest.architecture}` (`{manifest.auto_model}`).
- Labels: {labels if labels else "none (the task has no label set)"}.
- Inputs are cut at {manifest.preprocessing.max_length} tokens.

## Intended uses and limitations

Use it for `{manifest.task}` on text like its training data. It has seen only that data: expect it to be
less accurate on other domains, languages or label sets, and to carry the biases of its data and of its
base model. Check it on your own data before you rely on its answers.

## How to use

```bash
rayformers serve --checkpoint <this directory>
```

The directory is a standard Hugging Face checkpoint{" (a peft adapter)" if manifest.method == "lora" else ""}:
`AutoTokenizer.from_pretrained` and the task's `AutoModelFor...` (or peft's `AutoPeftModel...`) load it.
`rayformers.json` records how rayformers serves it (task, labels, preprocessing).

## Training data

{sources}. Data and preprocessing fingerprint: `{manifest.data_fingerprint}`.

## Training procedure

Step {manifest.step}, epoch {manifest.epoch}. Hyperparameters:

```json
{json.dumps(shown, indent=2, default=str)}
```

## Evaluation results

On the {EVAL_SPLIT} split:

| metric | value |
| --- | --- |
{metrics}
"""
