"""The checkpoint contract, in one place below training and serving: the folder's layout and names, the
manifest's reader and writer, the label arguments a model is built and loaded with, how a full or LoRA
checkpoint becomes a model again (`load_model`, which export, resume and serving all use), and pooling.

A checkpoint directory holds what `save_pretrained` writes (safetensors), the tokenizer, the
`rayformers.json` manifest, a model card and the training state; a LoRA checkpoint holds the adapter,
and, when its base was built from scratch or its task has a label map, that base in `base_model/`
(with the run's labels and the tokenizer), which its `adapter_config.json` names, so that
`pipeline(...)` and peft's `AutoPeftModelFor...` answer the trained label names. Training writes it;
everything else reads it through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from rayformers.errors import UserError
from rayformers.manifest import CheckpointManifest, LabelMap

if TYPE_CHECKING:
    import torch

    from rayformers.data.storage import Location
    from rayformers.tasks.base import Task

__all__ = [
    "ADAPTER_CONFIG",
    "BASE_MODEL_DIR",
    "DEFAULT_ADAPTER",
    "MANIFEST",
    "MODEL_CARD",
    "TRAINING_STATE",
    "CheckpointError",
    "embeds_base",
    "label_kwargs",
    "load_model",
    "point_adapter_at_base",
    "pool",
    "read_manifest",
    "resolve_checkpoint",
    "write_manifest",
]

MANIFEST = "rayformers.json"
"""The manifest: how to use the checkpoint (task, labels, preprocessing, base, method, metrics)."""
BASE_MODEL_DIR = "base_model"
"""A LoRA checkpoint's own copy of its base: always when that base was built from scratch, and for tasks
with a label map (a hub base's config knows other labels or none). Other hub bases are named instead."""
TRAINING_STATE = "training_state.pt"
"""Optimizer, scheduler and history a resumed run continues from (not needed to serve)."""
MODEL_CARD = "README.md"
ADAPTER_CONFIG = "adapter_config.json"
"""What peft writes beside a LoRA adapter's weights."""
DEFAULT_ADAPTER = "default"
"""peft's name for the adapter a LoRA checkpoint itself holds."""


BEST = "best"
"""A run directory's name for its best checkpoint: a link on local storage, so configs can name it before
the run exists. Object stores have no links: there `resolve_checkpoint` reads it from the run summary."""
RUN_SUMMARY = "summary.json"
"""What a finished run writes in its directory: config, best checkpoint and metrics, history."""


class CheckpointError(UserError):
    """A checkpoint that cannot be used as asked: missing, malformed, or not the task requested."""


def resolve_checkpoint(path: str) -> str:
    """`path` as a checkpoint directory: a run's `<run>/best` on an object store (which has no links) is
    the checkpoint its `summary.json` names; anything else is `path` itself."""
    from rayformers.data.storage import Location, is_remote

    if not is_remote(path):
        return path
    where = Location.parse(path)
    if where.path.rstrip("/").rsplit("/", 1)[-1] != BEST or where.exists():
        return path
    run = where.at(where.path.rstrip("/").rsplit("/", 1)[0])
    summary = run / RUN_SUMMARY
    try:
        best = json.loads(summary.read_text())["best_checkpoint"]
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {path!r}: object stores have no {BEST!r} link, and {summary} does not exist: the run "
            "has not finished; serve one of its checkpoint_NNNNNN directories, or wait for it to end"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {path!r}: {summary} does not name the best checkpoint ({err})"
        ) from None
    return str(best)


def read_manifest(where: str | Path | Location) -> CheckpointManifest:
    """The manifest of the checkpoint at `where` (a local directory, or a cloud URI or `Location`).
    FileNotFoundError when there is none; CheckpointError when it is not a valid manifest."""
    from rayformers.data.storage import Location

    directory = where if isinstance(where, Location) else Location.parse(where)
    path = directory / MANIFEST
    text = path.read_text()
    try:
        return CheckpointManifest.model_validate_json(text)
    except (ValidationError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a valid checkpoint manifest: {str(err).splitlines()[0]}"
        ) from None


def write_manifest(manifest: CheckpointManifest, directory: str | Path) -> Path:
    """Write `rayformers.json` into the local `directory`."""
    path = Path(directory) / MANIFEST
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return path


def embeds_base(method: str, from_scratch: bool, task: Task, settings: Any) -> bool:
    """Whether a checkpoint of this run carries its base in `base_model/`: a LoRA run whose base exists
    nowhere else (built from scratch), or whose task has a label map, which the hub base's config does not
    hold and which Hugging Face's loaders read from the base (not from the adapter)."""
    return method == "lora" and (from_scratch or bool(task.model_kwargs(settings)))


def point_adapter_at_base(directory: Path, final: str | Path | None) -> None:
    """Name `final`/base_model as the base in the adapter config of the checkpoint in `directory`, which
    will live at `final` (a local path): transformers' `pipeline` and peft's `AutoPeftModel` load the base
    from there. A checkpoint bound for cloud storage (`final` None) names its `base_model` folder relatively,
    since no path outlives the download: `rayformers export URI DIR` writes the local path for its copy.
    rayformers itself reads the manifest, wherever the checkpoint is."""
    path = directory / ADAPTER_CONFIG
    adapter = json.loads(path.read_text(encoding="utf-8"))
    adapter["base_model_name_or_path"] = (
        str(Path(final) / BASE_MODEL_DIR) if final is not None else BASE_MODEL_DIR
    )
    path.write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def label_kwargs(labels: LabelMap) -> dict[str, Any]:
    """A model config's label arguments for `labels`: its size and both directions of the map."""
    return {"num_labels": len(labels), "id2label": labels.id2label, "label2id": dict(labels.label2id)}


def load_model(
    manifest: CheckpointManifest | None,
    directory: str | Path,
    *,
    dtype: torch.dtype | None = None,
    trainable: bool = False,
    task: Task | None = None,
) -> Any:
    """The model of the local checkpoint `directory` as its manifest describes it: full weights through
    the task's Auto class, or a LoRA checkpoint's base (its own `base_model/`, or the named hub model
    at its revision) with the adapter over it as peft's `default` adapter. `trainable` keeps the
    adapter (and saved heads) trainable, for a resumed run; else the model is in eval mode. A plain
    Hugging Face directory (no manifest) loads as full weights of `task`."""
    from rayformers.tasks import get_task

    if manifest is None and task is None:
        raise CheckpointError(f"{directory} has no {MANIFEST}: name the task to load it as")
    task = task or get_task(manifest.task)  # type: ignore[union-attr]
    root = Path(directory)
    kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
    if manifest is None or manifest.method == "full":
        # A checkpoint this project wrote must give back every weight it saved: transformers only warns
        # on missing keys and starts them random (a resumed run would train on, a server would answer).
        model = _from_pretrained(task.auto_model_class(), str(root), strict=manifest is not None, **kwargs)
        return model if trainable else model.eval()
    if manifest.base_model == BASE_MODEL_DIR or (root / BASE_MODEL_DIR).is_dir():
        # Its own base (built from scratch, or a hub base saved with the run's labels).
        if not (root / BASE_MODEL_DIR).is_dir():
            raise CheckpointError(
                f"LoRA checkpoint {root} names base_model '{BASE_MODEL_DIR}' but has no "
                f"{root / BASE_MODEL_DIR} directory"
            )
        source, strict = str(root / BASE_MODEL_DIR), True
    else:
        source, strict = manifest.base_model, False  # a hub base: its head may be another's
        if manifest.base_revision is not None:
            kwargs["revision"] = manifest.base_revision
    # A hub base has its own (or no) label map, and maybe a head of another size: the adapter carries
    # the head trained on the recorded labels, which replaces the base's.
    labels = task.model_kwargs(manifest.preprocessing)
    if labels:
        kwargs["ignore_mismatched_sizes"] = True
    base = _from_pretrained(task.auto_model_class(), source, strict=strict, **kwargs, **labels)
    if getattr(base.config, "pad_token_id", None) is None:
        # A decoder-only hub base names no pad token; training used its tokenizer's, saved here.
        from transformers import AutoTokenizer

        base.config.pad_token_id = AutoTokenizer.from_pretrained(str(root)).pad_token_id
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(
            base, str(root), adapter_name=DEFAULT_ADAPTER, is_trainable=trainable
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"LoRA adapter in {root} could not be loaded: {str(err).splitlines()[0]}"
        ) from None
    return model if trainable else model.eval()


def _from_pretrained(auto: Any, source: str, *, strict: bool = False, **kwargs: Any) -> Any:
    """`auto.from_pretrained(source)`; `strict`: a weight the model has and the files lack, one the files
    have and the model lacks, or one of another shape is a `CheckpointError` naming them."""
    try:
        loaded = auto.from_pretrained(source, output_loading_info=strict, **kwargs)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{source!r} could not be loaded as {auto.__name__}: {str(err).splitlines()[0]}"
        ) from None
    if not strict:
        return loaded
    model, info = loaded
    problems = [
        f"{what} {', '.join(sorted(keys)[:5])}{' ...' if len(keys) > 5 else ''}"
        for what, keys in (
            ("missing", set(info["missing_keys"])),
            ("not in the model", set(info["unexpected_keys"])),
            (
                "of another shape",
                {str(k[0]) if isinstance(k, tuple) else str(k) for k in info["mismatched_keys"]},
            ),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{source} does not hold the weights of its {type(model).__name__} ({'; '.join(problems)}): "
            "it was cut off, edited or written for another model; restore it from storage, or train again"
        )
    return model


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Literal["mean", "cls"]) -> torch.Tensor:
    """One vector per sequence: the mean of the token vectors the attention mask keeps, or the first
    token's vector. Training's contrastive loss and serving pool with this same function."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
