"""What the serving tests share: one request per task, the helpers that post and compare, and the
checkpoint whose model fails on one word. The deployment itself is the package fixture `server`
(conftest.py), shared by every module in this folder."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import requests

LONG_CONTEXT = " ".join(f"Filler sentence number {i} says nothing much." for i in range(30))
# One request per task: (app, inputs, parameters).
EXAMPLES = {
    "text-classification": (
        "sentiment",
        ["a great film", "a dull and tiring book, I regret it"],
        {"top_k": 2},
    ),
    "token-classification": ("ner", ["Alice Novak flew to Toronto ."], {"aggregation_strategy": "none"}),
    "question-answering": (
        "qa",
        [{"question": "Who led the team?", "context": "The team was led by Alice Novak. " + LONG_CONTEXT}],
        {"top_k": 2},
    ),
    "fill-mask": ("fill-mask", ["the film was [MASK] ."], {"top_k": 3}),
    "text-generation": ("gen", ["the film was"], {"max_new_tokens": 8}),
    "summarization": ("summarize", ["Alice Novak was elected mayor of Toronto on Tuesday. It rained."], {}),
    "translation": ("translate", ["a small river pushed the red queen."], {"max_new_tokens": 8}),
    "zero-shot-classification": (
        "zero-shot",
        ["the match ended in a draw"],
        {"candidate_labels": ["sports", "politics", "cooking"]},
    ),
    "feature-extraction": ("embed", ["a cat sat on the mat", "a dog"], {}),
    "text-ranking": (
        "rank",
        [{"query": "who led the team", "texts": ["Alice Novak led the team.", "It rained.", "a dull film"]}],
        {"top_n": 2},
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broken_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """A classifier whose embedding table was cut short: words with high token ids make the model itself
    raise (an index error inside torch), while the warm-up words still work."""
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    directory = tmp_path_factory.mktemp("broken") / "checkpoint"
    shutil.copytree(tiny_checkpoint("text-classification"), directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    keep = max(tokenizer("Hello world.")["input_ids"]) + 1
    assert max(tokenizer(BROKEN_WORD)["input_ids"]) >= keep
    weights = load_file(directory / "model.safetensors")
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[name] = weights[name][:keep].clone()
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text())
    config["vocab_size"] = keep
    (directory / "config.json").write_text(json.dumps(config))
    return directory


BROKEN_WORD = "zebra"


def post(base: str, path: str, body: object, **kwargs) -> requests.Response:
    return requests.post(f"{base}{path}", json=body, timeout=60, **kwargs)


def in_process(checkpoint: Path, inputs, parameters):
    from rayformers.serving.checkpoint import build_handler, load_checkpoint

    return build_handler(load_checkpoint(str(checkpoint))).predict(inputs, parameters)


def close(a, b, tol=1e-4) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b
