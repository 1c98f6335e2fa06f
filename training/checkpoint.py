"""Writing checkpoint directories (rank 0): what `save_pretrained` writes (safetensors), the tokenizer,
the `rayformers.json` manifest, a model card, and the optimizer state a resumed run continues from. The
layout and its names are the checkpoint contract's (`rayformers.tasks.checkpoint`); this writes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from rayformers.data.storage import is_remote
from rayformers.errors import UserError
from rayformers.manifest import CheckpointManifest
from rayformers.tasks.checkpoint import (
    BASE_MODEL_DIR,
    MODEL_CARD,
    TRAINING_STATE,
    point_adapter_at_base,
    write_manifest,
)

__all__ = ["load_training_state", "save_clean_base", "write_checkpoint"]


def _card(manifest: CheckpointManifest, hyperparameters: dict[str, Any]) -> str:
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(manifest.metrics.items())) or "| - | - |"
    labels = manifest.preprocessing.labels.names if manifest.preprocessing.labels else None
    return f"""---
library_name: {"peft" if manifest.method == "lora" else "transformers"}
pipeline_tag: {manifest.task}
tags: [rayformers]
---

# {manifest.task} ({manifest.method} fine-tuning of `{manifest.base_model}`)

Trained with rayformers on Ray Train. Step {manifest.step}, epoch {manifest.epoch}.

## Metrics (validation split)

| metric | value |
| --- | --- |
{metrics}

## Data and preprocessing

- max length: {manifest.preprocessing.max_length}; labels: {labels}
- data fingerprint: `{manifest.data_fingerprint}`

## Hyperparameters

```json
{json.dumps(hyperparameters, indent=2, default=str)}
```

## Use

```bash
rayformers serve --checkpoint <this directory>
```
"""


def write_checkpoint(
    directory: Path,
    model: Any,
    tokenizer: Any,
    manifest: CheckpointManifest,
    hyperparameters: dict[str, Any],
    training_state: dict[str, Any],
    base_model_dir: Path | None = None,
    final: str | None = None,
) -> Path:
    """Write a complete checkpoint into `directory` (rank 0 only). A LoRA run's own base (`base_model_dir`)
    goes into `base_model/` with the tokenizer; when the checkpoint's lasting place `final` is a local path,
    the adapter config names that base, for Hugging Face's loaders."""
    core = model.module if hasattr(model, "module") else model
    directory.mkdir(parents=True, exist_ok=True)
    core.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if base_model_dir is not None:
        shutil.copytree(base_model_dir, directory / BASE_MODEL_DIR, dirs_exist_ok=True)
        tokenizer.save_pretrained(directory / BASE_MODEL_DIR)
        point_adapter_at_base(directory, final if final is not None and not is_remote(final) else None)
    write_manifest(manifest, directory)
    (directory / MODEL_CARD).write_text(_card(manifest, hyperparameters), encoding="utf-8")
    torch.save(training_state, directory / TRAINING_STATE)
    return directory


def load_training_state(directory: Path) -> dict[str, Any]:
    return torch.load(directory / TRAINING_STATE, map_location="cpu", weights_only=False)  # type: ignore[no-any-return]


class ResumeError(UserError):
    """A run name whose checkpoint belongs to another run."""


def resume_differences(
    manifest: CheckpointManifest, data_fingerprint: str, base_model: str, method: str
) -> list[str]:
    """How a checkpoint found under this run's name differs from the run asked for: another data
    config or tokenizer, another base model, another method. Resuming across any of them would mix
    two runs' weights and data without a word."""
    differences = []
    if manifest.data_fingerprint != data_fingerprint:
        differences.append("data: the checkpoint was trained on another data config or tokenizer")
    if manifest.base_model != base_model:
        differences.append(
            f"model: the checkpoint's base is {manifest.base_model!r}, this run's is {base_model!r}"
        )
    if manifest.method != method:
        differences.append(f"method: the checkpoint is {manifest.method}, this run is {method}")
    return differences


def save_clean_base(model: Any, directory: Path) -> None:
    """The randomly initialised base of a from-scratch LoRA run, saved without adapters: serving and
    `PeftModel.from_pretrained` need the exact base the adapter was trained on."""
    with model.disable_adapter():
        state = {
            k.replace("base_model.model.", "", 1): v
            for k, v in model.state_dict().items()
            if "lora_" not in k
        }
    base = model.get_base_model()
    clean = {k.replace(".base_layer", ""): v for k, v in state.items() if "modules_to_save" not in k}
    clean = {k.replace(".original_module", ""): v for k, v in clean.items()}
    fresh = type(base)(base.config)
    missing, unexpected = fresh.load_state_dict(clean, strict=False)
    tied = set(getattr(fresh, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:  # a base saved without some of its weights would serve a different model
        raise RuntimeError(f"the clean base lost weights: missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.save_pretrained(directory)
