"""`rayformers export`: a standalone model directory from a checkpoint, LoRA merged on request."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rayformers.data.storage import Location
from rayformers.errors import UserError
from rayformers.tasks.checkpoint import (
    BASE_MODEL_DIR,
    MANIFEST,
    MODEL_CARD,
    TRAINING_STATE,
    load_model,
    point_adapter_at_base,
    read_manifest,
    resolve_checkpoint,
    write_manifest,
)
from rayformers.training.card import merged_card

__all__ = ["ExportError", "export_checkpoint"]


class ExportError(UserError):
    """A checkpoint that cannot be exported as asked; the message says why."""


def export_checkpoint(checkpoint: str | Path, out: str | Path, merge_lora: bool = False) -> str:
    """Write `out`: everything a model needs, without optimizer state; `merge_lora` folds the adapter
    into the base weights so the result loads without peft. Either side may be cloud storage
    (`s3://`, `gs://`): a remote checkpoint is downloaded first, a remote `out` uploaded last."""
    source, target = Location.parse(resolve_checkpoint(str(checkpoint))), Location.parse(out)
    if not (source / MANIFEST).exists():
        raise ExportError(f"{checkpoint} has no {MANIFEST}: it is not a rayformers checkpoint")
    if target.exists() and not target.is_empty_dir():
        raise ExportError(f"--out {str(out)!r} is not empty; choose a new directory")
    with source.local_copy() as local:  # a cloud checkpoint's copy is removed once exported
        if target.local:
            _export(local, Path(target.path), merge_lora, target.path)
            return str(out)
        with tempfile.TemporaryDirectory(prefix="rayformers-export-") as staging:
            _export(local, Path(staging) / "out", merge_lora, None)
            target.upload(Path(staging) / "out")
    return str(out)


def _export(checkpoint: Path, out: Path, merge_lora: bool, final: str | None) -> None:
    """Write the export of `checkpoint` into `out`; `final` is where it will live, when that is local."""
    manifest = read_manifest(checkpoint)
    if merge_lora and manifest.method != "lora":
        raise ExportError(f"{checkpoint} is a full checkpoint; --merge-lora applies to LoRA checkpoints only")
    if not merge_lora:
        shutil.copytree(checkpoint, out, ignore=shutil.ignore_patterns(TRAINING_STATE), dirs_exist_ok=True)
        if (out / BASE_MODEL_DIR).is_dir():
            point_adapter_at_base(out, final)  # Hugging Face's loaders find the copy's own base
        return
    from transformers import AutoTokenizer

    merged = load_model(manifest, checkpoint).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)
    write_manifest(manifest.model_copy(update={"method": "full"}), out)
    card = checkpoint / MODEL_CARD
    if card.exists():
        (out / MODEL_CARD).write_text(merged_card(card.read_text(encoding="utf-8")), encoding="utf-8")
