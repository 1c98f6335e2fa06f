"""Fixtures shared by every test: tiny tokenizers with hand-written vocabularies, so golden token ids
can be read off the vocabulary below rather than trusted."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The local S3 server (s3_server below) refuses unsigned writes. Set before any test starts Ray, so Ray's
# workers (which write checkpoints there) inherit them too; a developer's own credentials are kept.
for _key, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
    os.environ.setdefault(_key, _value)
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A local S3 server (moto) for the run's lifetime; yields the URI options that point pyarrow at it."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the local S3 server (moto) did not start")
            time.sleep(0.1)
    yield f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    server.terminate()
    server.wait(10)


@pytest.fixture
def s3_uri(s3_server: str, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`s3_uri("runs")` is `s3://<a new bucket>/runs?<options>` on the local S3 server."""
    import re
    import uuid

    import pyarrow.fs as pafs

    bucket = (
        re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    )
    fs, _ = pafs.FileSystem.from_uri(f"s3://{bucket}?{s3_server}&allow_bucket_creation=true")
    fs.create_dir(bucket)
    return lambda path: f"s3://{bucket}/{path}?{s3_server}"
