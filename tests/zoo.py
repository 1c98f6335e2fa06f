"""A zoo of stand-ins for the checkpoints users bring from the hub, built here (nothing is downloaded).

Each is a tiny random-weight model of a real architecture, saved with `save_pretrained` in the form the
hub has it (masked-LM encoders, causal-LM decoders, seq2seq generators, an MNLI head), in the dtype the
hub has it (bf16 for decoder-only models), with a tokenizer of that architecture's own class built over
the repository's sample vocabularies: BERT and DistilBERT WordPiece (DistilBERT has no token type ids),
RoBERTa and BART byte-level BPE, DeBERTa-v2 and T5 Unigram (SentencePiece style, `▁` word starts),
ModernBERT byte-level BPE with BERT's special tokens, GPT-2, Llama and Qwen2 byte-level BPE with no pad
token, and a Mixtral (MoE) in several safetensors shards.

    from tests.zoo import standin
    directory = standin("deberta-v2", tmp_path)   # built once per directory
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples" / "tokenizers"

_ENCODER = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
            "max_position_embeddings": 256}  # fmt: skip
_DECODER = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "intermediate_size": 64, "max_position_embeddings": 256}  # fmt: skip
_SEQ2SEQ_BART = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
                 "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                 "max_position_embeddings": 256}  # fmt: skip

# architecture -> (the class the hub checkpoint is saved as, its config, hub dtype, tokenizer kind)
ZOO: dict[str, tuple[str, dict[str, Any], torch.dtype, str]] = {
    "bert": ("BertForMaskedLM", {"hidden_size": 32, **_ENCODER}, torch.float32, "bert"),
    "distilbert": ("DistilBertForMaskedLM", {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64,
                                             "max_position_embeddings": 256}, torch.float32, "distilbert"),
    "roberta": ("RobertaForMaskedLM", {"hidden_size": 32, **_ENCODER, "max_position_embeddings": 258},
                torch.float32, "roberta"),
    "deberta-v2": ("DebertaV2ForMaskedLM", {"hidden_size": 32, **_ENCODER, "relative_attention": True,
                                            "position_buckets": 32, "pos_att_type": ["p2c", "c2p"]},
                   torch.float32, "deberta-v2"),
    "modernbert": ("ModernBertForMaskedLM", {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                             "intermediate_size": 64, "max_position_embeddings": 256,
                                             "global_attn_every_n_layers": 1, "local_attention": 64},
                   torch.float32, "modernbert"),
    "gpt2": ("GPT2LMHeadModel", {"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 256}, torch.bfloat16, "gpt2"),
    "llama": ("LlamaForCausalLM", _DECODER, torch.bfloat16, "llama"),
    "qwen2": ("Qwen2ForCausalLM", _DECODER, torch.bfloat16, "qwen2"),
    "mixtral": ("MixtralForCausalLM", {**_DECODER, "num_local_experts": 4, "num_experts_per_tok": 2},
                torch.bfloat16, "llama"),
    "bart": ("BartForConditionalGeneration", _SEQ2SEQ_BART, torch.float32, "roberta"),
    "t5": ("T5ForConditionalGeneration", {"d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1,
                                          "num_decoder_layers": 1, "num_heads": 2}, torch.float32, "t5"),
    # An NLI head trained in MNLI's order (contradiction, neutral, entailment), as roberta-large-mnli has it.
    "roberta-mnli": ("RobertaForSequenceClassification", {"hidden_size": 32, **_ENCODER,
                                                          "max_position_embeddings": 258},
                     torch.float32, "roberta"),
}  # fmt: skip
MNLI = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}
SHARDED = {"mixtral"}
"""Saved in several safetensors files (a `model.safetensors.index.json` and no `model.safetensors`)."""


def _bpe() -> tuple[dict[str, int], list[Any]]:
    model = json.loads((SAMPLES / "bpe" / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    return model["vocab"], [tuple(m.split(" ") if isinstance(m, str) else m) for m in model["merges"]]


def _wordpiece() -> dict[str, int]:
    return json.loads((SAMPLES / "wordpiece" / "tokenizer.json").read_text(encoding="utf-8"))["model"][
        "vocab"
    ]


def _unigram(specials: list[str]) -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocabulary over the sample WordPiece one: `▁word` for word starts,
    bare pieces for continuations, single characters so that every text has a segmentation."""
    words = [w for w in _wordpiece() if not w.startswith("[")]
    starts = [w for w in words if not w.startswith("##")]
    pieces = [("▁" + w, -len(w) / 10) for w in starts] + [("▁" + w.capitalize(), -len(w) / 5) for w in starts]
    pieces += [(w[2:], -len(w)) for w in words if w.startswith("##")]
    chars = sorted({c for w in words for c in w.removeprefix("##")} | {c.upper() for w in starts for c in w})
    seen, vocab = set(specials), [(s, 0.0) for s in specials]
    for piece, score in [("▁", -2.0), *pieces, *((c, -20.0) for c in chars)]:
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, score))
    return vocab


def tokenizer(kind: str) -> Any:
    """The tokenizer of an architecture's own class, over the sample vocabularies."""
    import transformers

    if kind in ("bert", "distilbert"):
        cls = transformers.BertTokenizer if kind == "bert" else transformers.DistilBertTokenizer
        return cls(vocab=_wordpiece(), do_lower_case=True)
    vocab, merges = _bpe()
    if kind == "roberta":
        return transformers.RobertaTokenizer(vocab=vocab, merges=merges)
    if kind == "gpt2":
        return transformers.GPT2Tokenizer(vocab=vocab, merges=merges, eos_token="</s>", bos_token="</s>",
                                          unk_token="<unk>")  # fmt: skip
    if kind == "llama":  # Llama 3 ships a byte-level BPE PreTrainedTokenizerFast, BOS added, no pad token
        from tokenizers import Tokenizer, processors

        bpe = Tokenizer.from_file(str(SAMPLES / "bpe" / "tokenizer.json"))
        bos = bpe.token_to_id("<s>")
        bpe.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", bos)]
        )
        fast = transformers.PreTrainedTokenizerFast(
            tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
        fast.pad_token = None
        return fast
    if kind == "qwen2":
        return transformers.Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token="<unk>", eos_token="</s>",
                                           pad_token=None)  # fmt: skip
    if kind == "modernbert":  # byte-level BPE with BERT's special tokens and template
        from tokenizers import Tokenizer, processors

        fast = Tokenizer.from_file(str(SAMPLES / "bpe" / "tokenizer.json"))
        fast.add_special_tokens(["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"])
        cls_id, sep_id = fast.token_to_id("[CLS]"), fast.token_to_id("[SEP]")
        fast.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
        )  # fmt: skip
        out = transformers.PreTrainedTokenizerFast(
            tokenizer_object=fast, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
            mask_token="[MASK]", unk_token="[UNK]", model_input_names=["input_ids", "attention_mask"],
        )  # fmt: skip
        return out
    if kind == "deberta-v2":
        return transformers.DebertaV2Tokenizer(vocab=_unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]))
    if kind == "t5":
        return transformers.T5Tokenizer(vocab=_unigram(["<pad>", "</s>", "<unk>"]), extra_ids=8)
    raise ValueError(f"no stand-in tokenizer {kind!r}")


def _special_ids(architecture: str, tok: Any) -> dict[str, Any]:
    ids = {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
           "bos_token_id": tok.bos_token_id}  # fmt: skip
    if architecture == "t5":
        ids["decoder_start_token_id"] = tok.pad_token_id
    if architecture == "bart":
        ids["decoder_start_token_id"] = tok.eos_token_id
        ids["forced_eos_token_id"] = tok.eos_token_id
    if architecture == "modernbert":
        ids.update(cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
                   eos_token_id=tok.sep_token_id)  # fmt: skip
    return {k: v for k, v in ids.items() if v is not None}


def standin(architecture: str, root: Path) -> Path:
    """The stand-in hub checkpoint of `architecture` under `root` (built on first use)."""
    import transformers

    directory = root / architecture
    if (directory / "config.json").exists():
        return directory
    class_name, config, dtype, kind = ZOO[architecture]
    tok = tokenizer(kind)
    model_type = "roberta" if architecture == "roberta-mnli" else architecture
    labels = (
        {"id2label": MNLI, "label2id": {v: k for k, v in MNLI.items()}}
        if architecture.endswith("mnli")
        else {}
    )
    cfg = transformers.AutoConfig.for_model(model_type, **config, **_special_ids(model_type, tok), **labels)
    if kind in ("gpt2", "llama", "qwen2"):
        cfg.pad_token_id = None  # as the hub's decoder-only configs: no pad token
    torch.manual_seed(0)
    model = getattr(transformers, class_name)(cfg).to(dtype)
    model.save_pretrained(directory, max_shard_size="40KB" if architecture in SHARDED else "50GB")
    tok.save_pretrained(directory)
    return directory
