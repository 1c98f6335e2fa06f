"""`rayformers export`: a standalone model directory from a checkpoint, LoRA merged on request."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rayformers.manifest import CHECKPOINT_MANIFEST, CheckpointManifest
from rayformers.training.checkpoint import BASE_MODEL_DIR, TRAINING_STATE

__all__ = ["ExportError", "export_checkpoint", "load_lora_model"]


class ExportError(Exception):
    """A checkpoint that cannot be exported as asked; the message says why."""


def load_lora_model(checkpoint: Path, manifest: CheckpointManifest) -> Any:
    """Base model plus the checkpoint's adapter (peft), in eval mode."""
    import transformers
    from peft import PeftModel

    auto = getattr(transformers, manifest.auto_model)
    base_dir = checkpoint / BASE_MODEL_DIR
    base_source = str(base_dir) if manifest.base_model == BASE_MODEL_DIR else manifest.base_model
    kwargs: dict[str, Any] = {}
    labels = manifest.preprocessing.labels
    if labels is not None and manifest.task in (
        "text-classification",
        "zero-shot-classification",
        "token-classification",
    ):
        kwargs = {"num_labels": len(labels), "id2label": labels.id2label, "label2id": labels.label2id}
    base = auto.from_pretrained(
        base_source, revision=manifest.base_revision if base_source == manifest.base_model else None, **kwargs
    )
    return PeftModel.from_pretrained(base, checkpoint).eval()


def export_checkpoint(checkpoint: str | Path, out: str | Path, merge_lora: bool = False) -> Path:
    """Write `out`: everything a model needs, without optimizer state; `merge_lora` folds the adapter
    into the base weights so the result loads without peft."""
    checkpoint, out = Path(checkpoint), Path(out)
    if not (checkpoint / CHECKPOINT_MANIFEST).exists():
        raise ExportError(f"{checkpoint} has no {CHECKPOINT_MANIFEST}: it is not a rayformers checkpoint")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"--out {str(out)!r} is not empty; choose a new directory")
    manifest = CheckpointManifest.read(checkpoint)
    if merge_lora and manifest.method != "lora":
        raise ExportError(f"{checkpoint} is a full checkpoint; --merge-lora applies to LoRA checkpoints only")
    if not merge_lora:
        shutil.copytree(checkpoint, out, ignore=shutil.ignore_patterns(TRAINING_STATE), dirs_exist_ok=True)
        return out
    from transformers import AutoTokenizer

    merged = load_lora_model(checkpoint, manifest).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)
    manifest.model_copy(update={"method": "full"}).write(out)
    readme = checkpoint / "README.md"
    if readme.exists():
        (out / "README.md").write_text(
            readme.read_text(encoding="utf-8").replace("library_name: peft", "library_name: transformers")
            + "\nExported with `rayformers export --merge-lora`: the adapter is merged into the base weights.\n",
            encoding="utf-8",
        )
    return out
