"""The tokenizer trainer: a small WordPiece or byte-level BPE tokenizer in the Hugging Face format.

Tiny models in tests and examples must not download a tokenizer from a hub, so ``train_tokenizer`` trains
one on streamed texts with the ``tokenizers`` library and saves it with ``save_pretrained``: afterwards
``transformers.AutoTokenizer.from_pretrained(out_dir)`` loads it offline, as it loads any hub tokenizer.

- ``wordpiece`` is BERT-style: ``[CLS] a [SEP] b [SEP]`` with token type ids 1 on the second segment, for
  encoders (classification, token classification, question answering, fill-mask).
- ``bpe`` is GPT-2/RoBERTa-style byte-level BPE: ``<s> a </s></s> b </s>``, never an unknown token, for
  causal LMs and seq2seq models (``</s>`` is the end of sequence) as well as encoders.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

TokenizerKind = Literal["wordpiece", "bpe"]

# Order matters: specials take the first ids, so [PAD] / <pad> is id 0 in both kinds.
_SPECIAL_TOKENS: dict[str, dict[str, str | AddedToken]] = {
    "wordpiece": {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    },
    # cls/sep mirror RoBERTa, so encoder-style code that asks for them works with either kind.
    "bpe": {
        "pad_token": "<pad>",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        # lstrip: "was <mask>." must give the tokens of "was" and a mask, not "was", a lone space, a mask.
        "mask_token": AddedToken("<mask>", lstrip=True, special=True),
        "cls_token": "<s>",
        "sep_token": "</s>",
    },
}
# Models such as BART and T5 reject token_type_ids, and BPE pairs carry no segment ids anyway.
_MODEL_INPUT_NAMES = {
    "wordpiece": ["input_ids", "token_type_ids", "attention_mask"],
    "bpe": ["input_ids", "attention_mask"],
}


def _vocabulary_specials(kind: TokenizerKind) -> list[str | AddedToken]:
    """The distinct special tokens of ``kind`` in id order (BPE's cls/sep reuse bos/eos)."""
    return list({str(token): token for token in _SPECIAL_TOKENS[kind].values()}.values())


def _wordpiece(lowercase: bool, vocab: dict[str, int] | None = None) -> Tokenizer:
    tokenizer = Tokenizer(
        models.WordPiece(vocab, unk_token="[UNK]") if vocab else models.WordPiece(unk_token="[UNK]")
    )
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _train_wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int, lowercase: bool) -> Tokenizer:
    """Train WordPiece reproducibly: the same texts give the same vocabulary in every process.

    The ``tokenizers`` trainer numbers each ``##x`` piece when it first meets it while walking a hash map,
    and merges of equal count tie-break on those numbers, so two runs can end with different vocabularies.
    Naming every ``##x`` up front, in sorted order, as trainer specials fixes the numbers; the tokenizer is
    then rebuilt from the trained vocabulary so that they are ordinary pieces, not special tokens.
    """
    tokenizer = _wordpiece(lowercase)
    corpus = list(texts)  # read twice: once for the pieces, once to train
    normalize, split = tokenizer.normalizer.normalize_str, tokenizer.pre_tokenizer.pre_tokenize_str
    pieces = sorted(
        {f"##{char}" for text in corpus for word, _ in split(normalize(text)) for char in word[1:]}
    )
    specials = _vocabulary_specials("wordpiece")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*specials, *pieces],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    rebuilt = _wordpiece(lowercase, tokenizer.get_vocab(with_added_tokens=False))
    rebuilt.add_special_tokens(specials)
    return rebuilt


def _train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int, lowercase: bool) -> Tokenizer:
    """Train byte-level BPE; reproducible as it is, since its alphabet is all 256 bytes in a fixed order."""
    tokenizer = Tokenizer(models.BPE())
    steps = [normalizers.NFC(), normalizers.Lowercase()] if lowercase else [normalizers.NFC()]
    tokenizer.normalizer = normalizers.Sequence(steps)
    # add_prefix_space: a word encodes the same at the start of a text as inside it, which
    # is_split_into_words relies on; the Strip decoder removes that added space again.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=_vocabulary_specials("bpe"),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no text is ever unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _post_processor(kind: TokenizerKind, tokenizer: Tokenizer) -> processors.PostProcessor:
    def token_id(token: str) -> int:
        found = tokenizer.token_to_id(token)
        assert found is not None, f"special token {token} missing after training"
        return found

    if kind == "wordpiece":
        return processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", token_id("[CLS]")), ("[SEP]", token_id("[SEP]"))],
        )
    # trim_offsets: byte-level tokens carry their leading space, offsets must not (QA answer spans).
    return processors.RobertaProcessing(
        ("</s>", token_id("</s>")), ("<s>", token_id("<s>")), trim_offsets=True, add_prefix_space=True
    )


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    *,
    kind: TokenizerKind = "wordpiece",
    vocab_size: int = 2000,
    min_frequency: int = 1,
    model_max_length: int = 512,
    lowercase: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on ``texts``, save it to ``out_dir`` and return it.

    Args:
        texts: The training texts, any iterable of strings (a generator is fine). BPE streams them;
            WordPiece holds them in memory, as it reads them twice to train reproducibly.
        out_dir: Where ``save_pretrained`` writes ``tokenizer.json`` and ``tokenizer_config.json``.
        kind: ``"wordpiece"`` (BERT-style) or ``"bpe"`` (byte-level, GPT-2/RoBERTa-style).
        vocab_size: The largest vocabulary, special tokens included; a small corpus may give fewer.
        min_frequency: How often a pair must occur to be merged.
        model_max_length: The longest input the model takes, recorded in ``tokenizer_config.json``.
        lowercase: Lowercase the text before tokenizing.

    Returns:
        The trained fast tokenizer, padding on the right, equal to what ``AutoTokenizer`` loads back.
    """
    from transformers import PreTrainedTokenizerFast

    if kind not in _SPECIAL_TOKENS:
        raise ValueError(f"kind={kind!r} is not a tokenizer kind; use 'wordpiece' or 'bpe'")
    # Byte-level BPE starts from all 256 bytes; WordPiece needs at least one ordinary token.
    smallest = len(_vocabulary_specials(kind)) + (256 if kind == "bpe" else 1)
    if vocab_size < smallest:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for a {kind} tokenizer; use at least {smallest}"
        )
    train = _train_wordpiece if kind == "wordpiece" else _train_bpe
    tokenizer = train(texts, vocab_size, min_frequency, lowercase)
    tokenizer.post_processor = _post_processor(kind, tokenizer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        padding_side="right",
        model_input_names=_MODEL_INPUT_NAMES[kind],
        **_SPECIAL_TOKENS[kind],
    )
    fast.save_pretrained(str(out_dir))
    return fast


RETRAIN_BATCH = 1000
"""Texts handed to the trainer at a time when retraining: the corpus is streamed, never held whole."""


def retrain_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    base: str,
    *,
    vocab_size: int,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedTokenizerFast:
    """Retrain the tokenizer `base` (a hub id or a directory) on `texts` with a new vocabulary of
    `vocab_size`, as the Hugging Face course retrains GPT-2's on code (`train_new_from_iterator`): the
    same normalizer, pre-tokenizer, model kind, special tokens and template, new merges and pieces.
    Saves it to `out_dir` and returns it, as `AutoTokenizer` loads it back."""
    from itertools import islice

    from transformers import AutoTokenizer

    from rayformers.data.rows import DataError

    try:
        original = AutoTokenizer.from_pretrained(base, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise DataError(
            f"--from {base!r}: no tokenizer could be loaded ({str(err).splitlines()[0]}); give a hub id or a "
            "directory with tokenizer files"
        ) from None
    if not getattr(original, "is_fast", False):
        raise DataError(
            f"--from {base!r}: its tokenizer has no fast (Rust) version, which retraining needs; pick a "
            "tokenizer with a tokenizer.json"
        )
    specials = len(original.all_special_tokens)
    if vocab_size <= specials:
        raise DataError(f"--vocab-size {vocab_size}: {base!r} alone has {specials} special tokens; use more")
    stream = iter(texts)
    batches = iter(lambda: list(islice(stream, RETRAIN_BATCH)), [])
    retrained = original.train_new_from_iterator(batches, vocab_size=vocab_size)
    retrained.save_pretrained(str(out_dir))
    return retrained  # type: ignore[no-any-return]
