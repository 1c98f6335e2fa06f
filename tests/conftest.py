"""Fixtures shared by every test: tiny tokenizers with hand-written vocabularies, so golden token ids
can be read off the vocabulary below rather than trusted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# id = position. Sub-word pieces let the tests see continuation tokens.
WORDPIECE_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",  # 0-4
    "the", "movie", "was", "great", "bad",  # 5-9
    "alice", "smi", "##th", "works", "at",  # 10-14
    "acme", "in", "paris", ".", "?",  # 15-19
    "who", "where", "is", "a", "cat",  # 20-24
    "sat", "on", "mat", "dog", "un",  # 25-29
    "##believ", "##able", ",", "it", "rains",  # 30-34
]  # fmt: skip

WORDLEVEL_VOCAB = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "hello",
    "world",
    "good",
    "morning",
    "bonjour",
    "le",
    "monde",
]


def _save_wordpiece(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(WORDPIECE_VOCAB)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(path)
    return path


def _save_wordlevel(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(WORDLEVEL_VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def wordpiece_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT-style tokenizer over WORDPIECE_VOCAB, saved in the Hugging Face format."""
    return _save_wordpiece(tmp_path_factory.mktemp("wordpiece"))


@pytest.fixture(scope="session")
def wordlevel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seq2seq/causal-style tokenizer over WORDLEVEL_VOCAB that appends </s>."""
    return _save_wordlevel(tmp_path_factory.mktemp("wordlevel"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`tests.checkpoint_factory.make_checkpoint`, cached per arguments for the whole session (treat
    the directories as read-only): `tiny_checkpoint("question-answering", method="lora", adapter_seed=1)`."""
    from tests.checkpoint_factory import make_checkpoint

    made: dict[str, Path] = {}

    def get(task: str, **kwargs: object) -> Path:
        key = repr((task, sorted(kwargs.items())))
        if key not in made:
            made[key] = make_checkpoint(task, tmp_path_factory.mktemp(task), **kwargs)  # type: ignore[arg-type]
        return made[key]

    return get
