"""Loading a tokenizer the way every stage must: same source, same options, same fingerprint."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from rayformers.data.rows import DataError
from rayformers.tasks import get_task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["load_tokenizer", "tokenizer_class_path", "tokenizer_fingerprint"]


def tokenizer_class_path(tokenizer: PreTrainedTokenizerBase) -> str:
    """`module:Class` of a loaded tokenizer, so workers can load it without AutoTokenizer's imports."""
    cls = type(tokenizer)
    return f"{cls.__module__}:{cls.__qualname__}"


def load_tokenizer(
    source: str,
    task: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    class_path: str | None = None,
) -> PreTrainedTokenizerBase:
    """A fast tokenizer from a hub id or directory, set up for `task` (a padding token, and what the
    task's `prepare_tokenizer` asks for, e.g. a prefix space for pre-split words).

    `class_path` (from `tokenizer_class_path` on the driver) skips AutoTokenizer's class resolution,
    which imports torch: it halves the start-up of every tokenizer actor.
    """
    kwargs: dict[str, object] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if class_path is not None and not trust_remote_code:
        module, _, name = class_path.partition(":")
        loader = getattr(importlib.import_module(module), name)
    else:
        from transformers import AutoTokenizer

        loader = AutoTokenizer
    try:
        tokenizer = get_task(task).prepare_tokenizer(
            loader.from_pretrained(source, **kwargs),
            lambda **options: loader.from_pretrained(source, **kwargs, **options),
        )
    except (OSError, ValueError) as err:
        raise DataError(
            f"tokenizer {source!r} could not be loaded: {str(err).splitlines()[0]}. Give a hub id this machine "
            "can reach or a directory saved with save_pretrained (set model.tokenizer, or "
            "model.from_scratch.tokenizer)"
        ) from None
    if not tokenizer.is_fast:
        raise DataError(
            f"tokenizer {source!r} has no fast (Rust) version; rayformers needs offsets and word ids"
        )
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a padding token; EOS pads, and attention masks hide it.
        if tokenizer.eos_token is None:
            raise DataError(f"tokenizer {source!r} has neither a pad nor an eos token; add a pad token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of what the tokenizer saves: equal fingerprints tokenize identically."""
    import tempfile

    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for path in sorted(Path(tmp).iterdir()):
            if path.name == "tokenizer_config.json":
                continue  # holds the save path and other noise; tokenizer.json defines the behaviour
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
