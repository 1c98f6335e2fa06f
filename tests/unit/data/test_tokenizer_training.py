"""Tests of ``data.tokenizer_training``: both kinds trained on the corpus sample, reloaded from disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rayformers.data.sample_sets import DEFAULT_OUT
from rayformers.data.tokenizer_training import train_tokenizer

CORPUS = DEFAULT_OUT / "corpus" / "train.txt"
VOCAB_SIZE = 1000
# Golden ids: the specials are trained first, in a fixed order.
SPECIAL_IDS = {
    "wordpiece": {
        "pad_token_id": 0,
        "unk_token_id": 1,
        "cls_token_id": 2,
        "sep_token_id": 3,
        "mask_token_id": 4,
    },
    "bpe": {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "unk_token_id": 3, "mask_token_id": 4},
}
START_END = {"wordpiece": ("[CLS]", "[SEP]"), "bpe": ("<s>", "</s>")}
CONTEXT = "Velmira was founded in 1391. The Zelori River flows through Velmira, a town of 12,400 people."


def _train(kind: str, out_dir: Path) -> PreTrainedTokenizerBase:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return train_tokenizer(iter(lines), out_dir, kind=kind, vocab_size=VOCAB_SIZE, model_max_length=128)


@pytest.fixture(scope="module", params=["wordpiece", "bpe"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out_dir = tmp_path_factory.mktemp(f"tokenizer-{request.param}")
    _train(request.param, out_dir)
    return request.param, out_dir


@pytest.fixture(scope="module")
def tokenizer(trained: tuple[str, Path]) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(trained[1], local_files_only=True)


def _kind(tokenizer: PreTrainedTokenizerBase) -> str:
    return "wordpiece" if tokenizer.cls_token == "[CLS]" else "bpe"


def test_reloaded_tokenizer_equals_the_trained_one(trained: tuple[str, Path], tmp_path: Path) -> None:
    kind, out_dir = trained
    fresh = _train(kind, tmp_path)
    loaded = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    assert loaded.backend_tokenizer.to_str() == fresh.backend_tokenizer.to_str()
    assert loaded.special_tokens_map == fresh.special_tokens_map
    assert loaded(CONTEXT, "Who?")["input_ids"] == fresh(CONTEXT, "Who?")["input_ids"]


def test_training_twice_gives_identical_files(trained: tuple[str, Path], tmp_path: Path) -> None:
    kind, out_dir = trained
    _train(kind, tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (out_dir / name).read_bytes(), name


def test_config_records_length_padding_and_specials(trained: tuple[str, Path]) -> None:
    kind, out_dir = trained
    config = json.loads((out_dir / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 128
    assert config["padding_side"] == "right"
    tokenizer = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    assert {name: getattr(tokenizer, name) for name in SPECIAL_IDS[kind]} == SPECIAL_IDS[kind]
    assert len(tokenizer) == VOCAB_SIZE


def test_a_sentence_is_wrapped_in_start_and_end_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("the movie was great")["input_ids"])
    start, end = START_END[_kind(tokenizer)]
    assert (tokens[0], tokens[-1]) == (start, end)
    assert start not in tokens[1:-1] and end not in tokens[1:-1]


@pytest.mark.parametrize(
    "text", ["the movie was great", "the service was lovely, i would happily recommend it.", "a big red cat."]
)
def test_decode_inverts_encode(tokenizer: PreTrainedTokenizerBase, text: str) -> None:
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_pairs_mark_their_second_segment(tokenizer: PreTrainedTokenizerBase) -> None:
    encoding = tokenizer("the movie was great", "the food was bland")
    tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    if _kind(tokenizer) == "wordpiece":
        second = tokens.index("[SEP]") + 1
        assert encoding["token_type_ids"] == [0] * second + [1] * (len(tokens) - second)
        assert tokens[-1] == "[SEP]"
    else:  # RoBERTa-style: <s> A </s></s> B </s>, no segment ids (BART and T5 reject them)
        assert "token_type_ids" not in encoding
        assert tokens[0] == "<s>" and tokens.count("</s>") == 3 and tokens[-1] == "</s>"


def test_offsets_point_at_the_text_of_each_token(tokenizer: PreTrainedTokenizerBase) -> None:
    encoding = tokenizer(CONTEXT, return_offsets_mapping=True)
    special = set(tokenizer.all_special_ids)
    for token_id, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True):
        if token_id in special:
            assert (start, end) == (0, 0)
            continue
        piece = tokenizer.decode([token_id]).strip().removeprefix("##")
        assert CONTEXT[start:end].lower() == piece, (token_id, start, end)
    answer = CONTEXT.index("1391")
    covering = [i for i, (s, e) in enumerate(encoding["offset_mapping"]) if s < answer + 4 and e > answer]
    spans = [encoding["offset_mapping"][i] for i in covering]
    assert spans[0][0] == answer and spans[-1][1] == answer + 4


def test_pre_split_words_map_back_to_their_word(tokenizer: PreTrainedTokenizerBase) -> None:
    words = ["Alice", "Smith", "works", "for", "Acme", "Corp", "in", "Rio", "de", "Janeiro", "."]
    encoding = tokenizer(words, is_split_into_words=True)
    word_ids = encoding.word_ids()
    assert word_ids[0] is None and word_ids[-1] is None
    inner = word_ids[1:-1]
    assert None not in inner and inner == sorted(inner) and set(inner) == set(range(len(words)))
    for index, word in enumerate(words):
        ids = [token for token, owner in zip(encoding["input_ids"], word_ids, strict=True) if owner == index]
        assert tokenizer.decode(ids).strip().replace(" ##", "") == word.lower()


def test_padding_is_on_the_right_with_the_pad_id(tokenizer: PreTrainedTokenizerBase) -> None:
    batch = tokenizer(["a cat", "the movie was great"], padding=True)
    short = batch["input_ids"][0]
    assert short[-1] == 0 and batch["attention_mask"][0][-1] == 0 and batch["attention_mask"][0][0] == 1


@pytest.mark.parametrize("trained", ["bpe"], indirect=True)
def test_bpe_targets_end_with_eos_and_mask_absorbs_its_space(trained: tuple[str, Path]) -> None:
    _, out_dir = trained
    tokenizer = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    assert tokenizer("the cat", text_target="sil tos.")["labels"][-1] == tokenizer.eos_token_id
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("the movie was <mask>")["input_ids"])
    assert tokens[-3:] == ["Ġwas", "<mask>", "</s>"]
    assert tokenizer.unk_token_id not in tokenizer("naïve café ☕")["input_ids"]


@pytest.mark.parametrize(("kind", "vocab_size"), [("bpe", 100), ("wordpiece", 3), ("unigram", 1000)])
def test_bad_arguments_say_what_to_use(tmp_path: Path, kind: str, vocab_size: int) -> None:
    with pytest.raises(ValueError, match="use"):
        train_tokenizer(["a b c"], tmp_path, kind=kind, vocab_size=vocab_size)  # type: ignore[arg-type]


def test_a_tokenizer_retrained_on_code_splits_identifiers_into_fewer_tokens(tmp_path: Path) -> None:
    """Issue 13, as the course retrains GPT-2's tokenizer on Python: the zoo's GPT-2 tokenizer retrained
    (`--from`) on this repository's own code keeps its pipeline and special tokens and splits an
    identifier-heavy line it never saw into far fewer tokens."""
    from transformers import AutoTokenizer

    from rayformers.data.tokenizer_training import retrain_tokenizer
    from tests.zoo import REPO, standin

    base = standin("gpt2", tmp_path / "gpt2")
    corpus = (
        line for path in sorted((REPO / "serving").glob("*.py")) for line in path.read_text().splitlines()
    )
    retrain_tokenizer(corpus, tmp_path / "code", str(base), vocab_size=3000)
    original, code = AutoTokenizer.from_pretrained(base), AutoTokenizer.from_pretrained(tmp_path / "code")
    line = (
        "    replica_handler = build_handler(loaded_checkpoint, max_batch_tokens=self.args.max_batch_tokens)"
    )
    before, after = len(original.tokenize(line)), len(code.tokenize(line))
    print(f"GPT-2 stand-in: {before} tokens; retrained on code: {after}")
    assert after < before * 0.6, (before, after)
    assert code.all_special_tokens == original.all_special_tokens and code.eos_token == original.eos_token
    assert type(code.backend_tokenizer.pre_tokenizer) is type(original.backend_tokenizer.pre_tokenizer)
    assert code.decode(code(line)["input_ids"]) == original.decode(original(line)["input_ids"]) == line
    assert len(code) <= 3000 and code.backend_tokenizer.model.__class__.__name__ == "BPE"
