"""`rayformers export`: a standalone model directory from a checkpoint, LoRA merged on request."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

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

__all__ = ["ExportError", "export_checkpoint", "push_to_hub"]


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


def push_to_hub(
    checkpoint: str | Path,
    repo_id: str,
    *,
    merge_lora: bool = False,
    private: bool = False,
    out: str | Path | None = None,
    api: Any = None,
) -> str:
    """Export `checkpoint` (as `export_checkpoint` does) and upload the folder to the Hugging Face model
    repo `repo_id`, creating it if new; returns the repo's URL. `out` keeps the exported folder (local);
    `api` is a `huggingface_hub.HfApi` (the default one reads HF_TOKEN or the saved login)."""
    from rayformers.data.storage import is_remote

    source = Location.parse(resolve_checkpoint(str(checkpoint)))
    manifest = read_manifest(source)
    if manifest.method == "lora" and not merge_lora and (source / BASE_MODEL_DIR).exists():
        raise ExportError(
            f"{checkpoint}: its LoRA adapter's base is the checkpoint's own {BASE_MODEL_DIR}/ copy, which a Hub "
            "repo cannot point at; add --merge-lora to upload a standalone model"
        )
    if out is not None and is_remote(str(out)):
        raise ExportError(
            f"--out {str(out)!r}: with --push-to-hub the export is kept on local disk; give a local path"
        )
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    with tempfile.TemporaryDirectory(prefix="rayformers-push-") as staging:
        folder = Path(out) if out is not None else Path(staging) / "model"
        export_checkpoint(str(source), folder, merge_lora=merge_lora)
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                repo_type="model",
                folder_path=str(folder),
                commit_message=f"Upload {manifest.task} model exported by rayformers",
            )
        except Exception as err:  # the Hub's HTTP errors, a network that is down, a missing token
            raise ExportError(
                f"--push-to-hub {repo_id!r}: the upload failed ({type(err).__name__}: {(str(err).splitlines() or [''])[0]}); "
                "check the repo name, that HF_TOKEN (or `hf auth login`) has write access, and the network"
            ) from None
    return f"https://huggingface.co/{repo_id}"
