"""Loading a tokenizer the way every stage must: same source, same options, same fingerprint."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from rayformers.data.rows import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["load_tokenizer", "tokenizer_class_path", "tokenizer_fingerprint"]

# Byte-level BPE tokenizers need a prefix space to encode words that arrive already split.
_PREFIX_SPACE_TASKS = {"token-classification"}


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
    """A fast tokenizer from a hub id or directory, set up for `task` (padding token, prefix space).

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
        tokenizer = loader.from_pretrained(source, **kwargs)
        if task in _PREFIX_SPACE_TASKS and getattr(tokenizer, "add_prefix_space", None) is False:
            tokenizer = loader.from_pretrained(source, add_prefix_space=True, **kwargs)
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
    if task == "text-generation":
        _no_trailing_eos(tokenizer)
    return tokenizer


def _no_trailing_eos(tokenizer: PreTrainedTokenizerBase) -> None:
    """A causal LM's prompt must not end with an end-of-text token. A tokenizer whose template closes
    every text (`<s> $A </s>`, as RoBERTa/BART's do) gets one that only opens it (`<s> $A`), so that
    `transformers.pipeline("text-generation")` on a checkpoint continues a prompt rather than a
    finished text, and sees the same ids serving does. Training still ends each text with EOS."""
    from tokenizers import processors

    ids = tokenizer("a")["input_ids"]
    closers = {tokenizer.eos_token_id, tokenizer.sep_token_id} - {None}
    if len(ids) < 2 or ids[-1] not in closers:
        return
    opener = ids[0] if ids[0] in {tokenizer.bos_token_id, tokenizer.cls_token_id} - {None} else None
    if opener is None:
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
        return
    token = tokenizer.convert_ids_to_tokens(opener)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{token} $A", pair=f"{token} $A $B", special_tokens=[(token, opener)]
    )


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
