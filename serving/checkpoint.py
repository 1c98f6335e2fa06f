"""Loading a checkpoint directory for serving: manifest, tokenizer, model, LoRA adapters.

The checkpoint directory is the only contract between training and serving, so everything here is
read from it (`rayformers.json` above all), never re-derived: the task, the label map and the
preprocessing settings training recorded. A plain Hugging Face directory (no manifest) is accepted
when the caller names the task, with settings derived from the tokenizer and config.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayformers.data.storage import Location, is_remote
from rayformers.manifest import CheckpointManifest, LabelMap, PreprocessSettings
from rayformers.serving.errors import CheckpointError, UnknownAdapterError
from rayformers.tasks import TASK_NAMES, get_task
from rayformers.tasks.base import Task
from rayformers.tasks.checkpoint import (
    ADAPTER_CONFIG,
    DEFAULT_ADAPTER,
    MANIFEST,
    load_model,
    read_manifest,
    resolve_checkpoint,
)

if TYPE_CHECKING:
    import torch

    from rayformers.tasks.handler import Handler

__all__ = ["DTYPES", "LoadedModel", "build_handler", "load_checkpoint", "local_copy", "resolve_dtype"]

DTYPES = ("auto", "float32", "float16", "bfloat16")
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def resolve_dtype(dtype: str, device: str, bf16_supported: bool | None = None) -> torch.dtype:
    """The weights' dtype for `device`: "auto" is float32 on CPU and bfloat16 on CUDA where the GPU
    supports it, else float16. Half precision on CPU is refused: CPU kernels for it are slow or missing,
    so it would only make serving slower and less accurate. `bf16_supported` is asked of CUDA when None.
    """
    import torch

    if dtype not in DTYPES:
        raise CheckpointError(f"dtype {dtype!r} is not supported; use one of: {', '.join(DTYPES)}")
    on_cuda = device.split(":")[0] == "cuda"
    if on_cuda and bf16_supported is None:
        bf16_supported = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dtype == "auto":
        if not on_cuda:
            return torch.float32
        return torch.bfloat16 if bf16_supported else torch.float16
    if dtype != "float32" and not on_cuda:
        raise CheckpointError(
            f"dtype {dtype!r} on device {device!r}: half precision is for GPUs; use dtype 'float32' (or 'auto') "
            "on CPU, or serve on a CUDA device"
        )
    if dtype == "bfloat16" and not bf16_supported:
        raise CheckpointError(
            f"dtype 'bfloat16' on device {device!r}: this GPU does not support bfloat16; use 'float16' or 'auto'"
        )
    return getattr(torch, dtype)  # type: ignore[no-any-return]


@dataclass
class LoadedModel:
    """A checkpoint ready to serve: what every handler is built from.

    `model` is in eval mode on `device`. For a LoRA checkpoint it is a peft model holding the
    checkpoint's own adapter (`default`) and any extra adapters; `using(name)` activates one.
    """

    task: Task
    manifest: CheckpointManifest | None
    settings: PreprocessSettings
    tokenizer: Any
    model: Any
    device: str
    path: str
    dtype: torch.dtype | None = None
    merged: bool = False
    _adapters: list[str] = field(default_factory=list, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def adapter_names(self) -> list[str]:
        """Names `using` accepts: `default` (the checkpoint's own adapter) then the extra ones, in load
        order; empty for full (or merged) checkpoints, which have only their own weights."""
        return list(self._adapters)

    @property
    def labels(self) -> list[str] | None:
        return self.settings.labels.names if self.settings.labels is not None else None

    @contextmanager
    def using(self, adapter: str | None) -> Iterator[None]:
        """Run the block with `adapter` active (None: the checkpoint's own weights), then restore.

        peft keeps the active adapter as model-wide state, so the switch is held under a lock: calls
        from several threads run one after another instead of seeing each other's adapter. The lock is
        re-entrant, so do not interleave two `using` blocks in one thread (e.g. two suspended streams).
        """
        name = DEFAULT_ADAPTER if adapter is None else adapter
        with self._lock:
            if adapter is not None and name not in self._adapters:
                raise UnknownAdapterError(adapter, self._adapters)
            if not self._adapters:  # full weights: nothing to switch
                yield
                return
            previous = self.model.active_adapter
            self.model.set_adapter(name, inference_mode=True)
            try:
                yield
            finally:
                if previous in self._adapters:
                    self.model.set_adapter(previous, inference_mode=True)

    def add_adapter(self, name: str, directory: str) -> None:
        """Load one more LoRA adapter (trained on the same base) under `name`, e.g. when a multiplexed
        deployment first sees a request for it. Loading a name already loaded does nothing."""
        _check_adapter_name(name)
        if name in self._adapters:
            return
        if not self._adapters or self.manifest is None:
            raise CheckpointError(
                f"adapter {name!r}: {self.path} is a full{' (merged)' if self.merged else ''} checkpoint; "
                "extra adapters need an unmerged LoRA checkpoint to share its base"
            )
        # The download and the checks run outside the lock, so forwards go on meanwhile; only peft's
        # injection holds it. A cloud adapter's copy is removed once its weights are in the model.
        with local_copy(resolve_checkpoint(directory)) as local:
            _check_adapter(name, local, self.manifest)
            with self._lock:
                if name in self._adapters:
                    return
                _load_adapter(self.model, name, local)
                self.model.eval()
                self._adapters.append(name)

    def remove_adapter(self, name: str) -> None:
        """Free an extra adapter (a multiplexed deployment evicting it); unknown names are ignored."""
        with self._lock:
            if name not in self._adapters:
                return
            if name == DEFAULT_ADAPTER:
                raise CheckpointError(f"the checkpoint's own adapter {DEFAULT_ADAPTER!r} cannot be removed")
            if self.model.active_adapter == name:
                self.model.set_adapter(DEFAULT_ADAPTER, inference_mode=True)
            self.model.delete_adapter(name)
            self._adapters.remove(name)

    def info(self) -> dict[str, Any]:
        """What `GET /info` reports: enough for a client to know what it is talking to."""
        manifest = self.manifest
        return {
            "task": self.task.name,
            "labels": self.labels,
            "base_model": manifest.base_model if manifest else self.path,
            "method": manifest.method if manifest else "full",
            "merged": self.merged,
            "metrics": dict(manifest.metrics) if manifest else {},
            "max_length": self.settings.max_length,
            "adapters": self.adapter_names,
            "pooling": manifest.pooling if manifest else None,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch.") if self.dtype is not None else None,
        }


@contextmanager
def local_copy(path: str) -> Iterator[Path]:
    """The checkpoint directory at `path` on local disk, for the block. One on cloud storage (a
    multi-node run's) is downloaded, each replica its own copy, and removed when the block ends: what
    serving needs of it is in memory by then."""
    with contextlib.ExitStack() as stack:
        if is_remote(path):
            try:
                root = stack.enter_context(Location.parse(path).local_copy())
            except (OSError, ValueError) as err:
                raise CheckpointError(f"checkpoint {path!r} could not be downloaded: {err}") from None
        else:
            root = Path(path)
        if not root.is_dir():
            raise CheckpointError(
                f"checkpoint {path!r} is not a directory; give the directory a training run wrote (a local "
                "or NFS path, or an s3:// or gs:// URI)"
            )
        yield root


def load_checkpoint(
    path: str,
    task: str | None = None,
    *,
    device: str = "cpu",
    dtype: str = "auto",
    merge_lora: bool = False,
    adapters: dict[str, str] | None = None,
) -> LoadedModel:
    """Load the checkpoint at `path` for serving.

    `task`, when given, must agree with the manifest (a checkpoint served as the wrong task would
    answer nonsense without failing); without a manifest it is required. `merge_lora` folds a LoRA
    adapter into the base weights (faster, but then no other adapters can be added); `adapters` maps
    extra adapter names to LoRA checkpoint directories trained on the same base.
    """
    path = resolve_checkpoint(path)
    with local_copy(path) as root:  # a cloud checkpoint's copy goes once the model is in memory
        manifest = _read_manifest(root)
        spec = _task(root, manifest, task)
        _check_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        tokenizer = _tokenizer(root, spec)
        settings = manifest.preprocessing if manifest is not None else _derive_settings(root, spec, tokenizer)
        adapters = dict(adapters or {})
        is_lora = manifest is not None and manifest.method == "lora"
        if adapters and not is_lora:
            raise CheckpointError(
                f"adapters {sorted(adapters)} need a LoRA checkpoint, but {path} holds full weights; "
                "serve the LoRA checkpoint whose base the adapters were trained on"
            )
        if adapters and merge_lora:
            raise CheckpointError(
                "merge_lora folds one adapter into the base weights, so extra adapters cannot be served "
                "beside it; drop merge_lora or the adapters"
            )
        model = load_model(manifest, root, dtype=torch_dtype, task=spec)
    names = [DEFAULT_ADAPTER] if is_lora else []
    if is_lora and merge_lora:
        model, names = model.merge_and_unload(), []
    model.to(device).eval()
    loaded = LoadedModel(
        task=spec,
        manifest=manifest,
        settings=settings,
        tokenizer=tokenizer,
        model=model,
        device=device,
        path=str(path),
        dtype=torch_dtype,
        merged=is_lora and merge_lora,
        _adapters=names,
    )
    for name, directory in adapters.items():
        loaded.add_adapter(name, directory)
    return loaded


def _read_manifest(root: Path) -> CheckpointManifest | None:
    try:
        return read_manifest(root)
    except FileNotFoundError:
        return None


def _task(root: Path, manifest: CheckpointManifest | None, task: str | None) -> Task:
    if task is not None and task not in TASK_NAMES:
        raise CheckpointError(f"task {task!r} is unknown; known tasks: {', '.join(TASK_NAMES)}")
    if manifest is not None:
        if task is not None and task != manifest.task:
            raise CheckpointError(
                f"checkpoint {root} was trained for task {manifest.task!r}, but serving was asked for task "
                f"{task!r}; serve it as {manifest.task!r} or pick a {task!r} checkpoint"
            )
        return get_task(manifest.task)
    if (root / ADAPTER_CONFIG).exists():
        raise CheckpointError(
            f"{root} holds a LoRA adapter but no {MANIFEST}, so its base and labels are unknown; "
            "serve the rayformers checkpoint it came from, or a merged export (rayformers export --merge-lora)"
        )
    if task is None:
        raise CheckpointError(
            f"{root} has no {MANIFEST}, so its task is unknown; pass the task (one of: "
            f"{', '.join(TASK_NAMES)}) to serve a plain Hugging Face model directory"
        )
    return get_task(task)


def _check_device(device: str) -> None:
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise CheckpointError(f"device {device!r} is not a torch device; use 'cpu' or 'cuda[:N]'") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r}: CUDA is not available on this machine; use 'cpu'")


def _tokenizer(root: Path, spec: Task) -> Any:
    from rayformers.data.rows import DataError
    from rayformers.data.tokenizer import load_tokenizer

    try:
        # The loader training used: same padding token and prefix-space setup for the task.
        return load_tokenizer(str(root), spec.name)
    except DataError as err:
        raise CheckpointError(f"checkpoint {root}: {err}") from None


def _derive_settings(root: Path, spec: Task, tokenizer: Any) -> PreprocessSettings:
    """Settings for a directory that records none: the longest input both tokenizer and model accept."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(root)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{root} has no readable config.json: {str(err).splitlines()[0]}") from None
    positions = getattr(config, "max_position_embeddings", None) or 512
    max_length = min(int(tokenizer.model_max_length), int(positions))
    labels = None
    id2label = getattr(config, "id2label", None)
    if spec.label_kind != "none" and id2label:
        labels = LabelMap(names=[str(id2label[i]) for i in sorted(int(k) for k in id2label)])
    return PreprocessSettings(task=spec.name, max_length=max_length, labels=labels)  # type: ignore[arg-type]


def _check_adapter_name(name: str) -> None:
    if not _ADAPTER_NAME.match(name) or name == DEFAULT_ADAPTER:
        raise CheckpointError(
            f"adapter name {name!r}: use 1-64 letters, digits, '-' or '_' (and not {DEFAULT_ADAPTER!r}, "
            "the checkpoint's own adapter)"
        )


def _check_adapter(name: str, directory: Path, manifest: CheckpointManifest) -> None:
    """Refuse an extra adapter that cannot share the checkpoint's base."""
    if not (directory / ADAPTER_CONFIG).exists():
        raise CheckpointError(f"adapter {name!r}: {directory} holds no LoRA adapter ({ADAPTER_CONFIG})")
    other = _read_manifest(directory)
    if other is not None:
        problems = []
        if other.method != "lora":
            problems.append("it is a full checkpoint, not a LoRA adapter")
        if other.task != manifest.task:
            problems.append(f"its task is {other.task!r}, not {manifest.task!r}")
        if other.preprocessing.labels != manifest.preprocessing.labels:
            problems.append("its label map differs (the served labels would be wrong)")
        if other.base_model != manifest.base_model or other.architecture != manifest.architecture:
            problems.append(
                f"its base is {other.base_model!r} ({other.architecture}), not {manifest.base_model!r}"
            )
        if problems:
            raise CheckpointError(
                f"adapter {name!r} at {directory} cannot share this base: {'; '.join(problems)}"
            )


def _load_adapter(model: Any, name: str, directory: Path) -> None:
    """Load one extra adapter beside the checkpoint's own."""
    try:
        model.load_adapter(str(directory), adapter_name=name)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(
            f"adapter {name!r} at {directory} could not be loaded: {str(err).splitlines()[0]}"
        ) from None


def build_handler(loaded: LoadedModel, **options: Any) -> Handler:
    """The serving handler of the loaded checkpoint's task (`options`: e.g. `max_batch_tokens`)."""
    return loaded.task.handler(loaded, **options)
