"""Writing checkpoint directories (rank 0): what `save_pretrained` writes (safetensors), the tokenizer,
the `rayformers.json` manifest, a model card, and the optimizer state a resumed run continues from. The
layout and its names are the checkpoint contract's (`rayformers.tasks.checkpoint`); this writes it.

In storage the manifest is a checkpoint's proof of completion: `publish_checkpoint` copies it last, so a
checkpoint directory without one was cut off (full storage, a killed node); training never resumes it or
names it best.
A run resumes from the checkpoint Ray Train's own snapshot names, which Ray writes only after a checkpoint's
upload returned; `resume_point` checks that checkpoint (and the others the snapshot keeps) before any worker
starts."""

from __future__ import annotations

import json
import posixpath
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow.fs as pafs
import torch

from rayformers.data.storage import Location, is_remote
from rayformers.errors import UserError
from rayformers.manifest import CheckpointManifest
from rayformers.tasks.checkpoint import (
    BASE_MODEL_DIR,
    MANIFEST,
    MODEL_CARD,
    TRAINING_STATE,
    point_adapter_at_base,
    write_manifest,
)
from rayformers.training.card import model_card

if TYPE_CHECKING:
    from ray.train import Checkpoint

    from rayformers.config import RunConfig

__all__ = [
    "RAY_SNAPSHOT",
    "CheckpointWriteError",
    "ResumeError",
    "load_training_state",
    "publish_checkpoint",
    "resume_point",
    "save_clean_base",
    "write_checkpoint",
]

RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"
"""Ray Train's record of a run's registered checkpoints, in the run directory (Ray's
`CHECKPOINT_MANAGER_SNAPSHOT_FILENAME`): what `ray.train.get_checkpoint()` resumes from."""
PARTIAL = ".partial"
"""The suffix of the hidden name a checkpoint is copied under on local or NFS storage before its rename."""


def write_checkpoint(
    directory: Path,
    model: Any,
    tokenizer: Any,
    manifest: CheckpointManifest,
    hyperparameters: dict[str, Any],
    training_state: dict[str, Any],
    base_model_dir: Path | None = None,
    final: str | None = None,
    run: RunConfig | None = None,
) -> Path:
    """Write a complete checkpoint into `directory` (rank 0 only). A LoRA run's own base (`base_model_dir`)
    goes into `base_model/` with the tokenizer; when the checkpoint's lasting place `final` is a local path,
    the adapter config names that base, for Hugging Face's loaders. The model card describes `run` (the
    run config that trained it), where known."""
    core = model.module if hasattr(model, "module") else model
    directory.mkdir(parents=True, exist_ok=True)
    core.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if base_model_dir is not None:
        shutil.copytree(base_model_dir, directory / BASE_MODEL_DIR, dirs_exist_ok=True)
        tokenizer.save_pretrained(directory / BASE_MODEL_DIR)
        point_adapter_at_base(directory, final if final is not None and not is_remote(final) else None)
    write_manifest(manifest, directory)
    (directory / MODEL_CARD).write_text(model_card(manifest, run, hyperparameters), encoding="utf-8")
    torch.save(training_state, directory / TRAINING_STATE)
    return directory


def load_training_state(directory: Path) -> dict[str, Any]:
    return torch.load(directory / TRAINING_STATE, map_location="cpu", weights_only=False)  # type: ignore[no-any-return]


class ResumeError(UserError):
    """A run name whose checkpoint cannot be resumed: another run's, or one that is incomplete."""


class CheckpointWriteError(UserError):
    """Storage refused a checkpoint in the middle of a run (full, or no longer writable)."""


class RayStorage(Protocol):
    """What `publish_checkpoint` uses of Ray Train's `StorageContext` (`ray.train.get_context().get_storage()`,
    a DeveloperAPI): its filesystem, where a named checkpoint goes, and Ray's own copy (with its checks)."""

    storage_filesystem: pafs.FileSystem

    def build_checkpoint_path_from_name(self, checkpoint_name: str) -> str: ...

    def persist_current_checkpoint(self, checkpoint: Checkpoint, checkpoint_dir_name: str) -> Checkpoint: ...


def publish_checkpoint(storage: RayStorage, local: Path, name: str) -> Checkpoint:
    """Copy the checkpoint written in `local` to the run's `name` in storage, the manifest last, and return it
    (a `ray.train.report(checkpoint_upload_fn=...)`). On local or NFS storage the copy is made under a hidden
    `.<name>.partial` and renamed to `name` once whole, so `name` never holds half a checkpoint; on object
    stores, where a rename is a second full copy, it is copied in place, and `name/rayformers.json` (each
    object appears whole or not at all) is there only once every other file is. Safe to call again with the
    same arguments after it failed (Ray retries a failed upload). Storage that refuses the copy (full, or
    no longer writable) raises a CheckpointWriteError naming `train.storage_path`."""
    from ray.train import Checkpoint

    fs = storage.storage_filesystem
    final = storage.build_checkpoint_path_from_name(name)
    local_fs = isinstance(fs, pafs.LocalFileSystem)
    staging = f".{name}{PARTIAL}" if local_fs else name
    target = storage.build_checkpoint_path_from_name(staging)
    manifest = local / MANIFEST
    text = manifest.read_bytes()
    try:
        # What an earlier, cut-off attempt under this name left goes first: no stale manifest may vouch for
        # files being rewritten, and no stale file may join the new checkpoint.
        _delete(fs, target)
        manifest.unlink()
        try:
            storage.persist_current_checkpoint(Checkpoint.from_directory(str(local)), staging)
        finally:
            manifest.write_bytes(text)
        with fs.open_output_stream(posixpath.join(target, MANIFEST)) as stream:
            stream.write(text)
        if local_fs:
            _delete(fs, final)  # an unregistered leftover: a registered name is never written again
            fs.move(target, final)
    except OSError as err:
        raise CheckpointWriteError(
            f"train.storage_path: checkpoint {name} could not be written to {final} ({err}); free space there, "
            "or point train.storage_path at storage this cluster can write, then run again with the same "
            "train.name: it resumes from the last complete checkpoint"
        ) from None
    return Checkpoint(path=final, filesystem=fs)


def _delete(fs: pafs.FileSystem, path: str) -> None:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type != pafs.FileType.NotFound:
        fs.delete_file(path)


def resume_point(run_dir: Location, run_name: str) -> Location | None:
    """The checkpoint a run in `run_dir` resumes from: the latest one Ray Train's snapshot names (None when
    there is none: a fresh run). Ray registers a checkpoint only after its upload returned, so a directory
    it never registered (a cut-off upload) is never picked; but Ray checks only that the ones it registered
    still exist. A snapshot that does not parse, or that names a checkpoint without its manifest (or, for
    the latest, its training state), raises a ResumeError naming it and the fix. A snapshot laid out as
    this Ray version does not write it is left to Ray to judge (None)."""
    snapshot = run_dir / RAY_SNAPSHOT
    if not snapshot.exists():
        return None
    afresh = f"start afresh under a new train.name, or delete {run_dir} to reuse {run_name!r}"
    try:
        state = json.loads(snapshot.read_text())
    except ValueError as err:
        raise ResumeError(
            f"train.name: {run_name!r} cannot resume: Ray Train's record of its checkpoints, {snapshot}, is "
            f"unreadable ({type(err).__name__}: {err}), as when storage filled up while it was written; free "
            f"space and {afresh}"
        ) from None
    try:
        latest_name = state["latest_checkpoint_result"]["checkpoint_dir_name"]
        names = [r["checkpoint_dir_name"] for r in state["checkpoint_results"]]
    except (KeyError, TypeError):  # no checkpoint yet (`null`), or another Ray version's layout
        return None
    for name in dict.fromkeys([latest_name, *names]):
        checkpoint = run_dir / name
        wanted = [MANIFEST, TRAINING_STATE] if name == latest_name else [MANIFEST]
        missing = [f for f in wanted if not (checkpoint / f).exists()]
        if missing:
            raise ResumeError(
                f"train.name: {run_name!r} cannot resume: checkpoint {checkpoint}, which Ray Train recorded "
                f"as complete, has no {' or '.join(missing)} (its files were removed or cut off since, as by an "
                f"interrupted copy of the run directory); restore that directory, or {afresh}"
            )
    return run_dir / latest_name


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
