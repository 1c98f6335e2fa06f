"""The models and inputs the benchmarks serve: random weights of real sizes, built from configs, with the
repository's own tokenizers (nothing is downloaded), saved as rayformers checkpoints that
`transformers.pipeline` also loads.

- `classifier`: a MiniLM-L6-size BERT (6 layers, hidden 384, 12 heads, 2 labels).
- `embedder`: the same encoder without a head, mean pooled.
- `causal_lm`: a distilgpt2-size GPT-2 (6 layers, hidden 768, 12 heads, GPT-2's 50257-token vocabulary).
  The sample BPE tokenizer knows 4000 of those ids: the (tied) embedding rows of the others and of
  end-of-text are zero, so greedy decoding picks real tokens and never stops early, and every request
  generates exactly the tokens it asks for, on a model of distilgpt2's full size.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO / "data" / "samples" / "tokenizers"
CORPUS = REPO / "data" / "samples" / "corpus" / "train.jsonl"

MINILM = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
    "vocab_size": 30522,
}
DISTILGPT2 = {"n_layer": 6, "n_embd": 768, "n_head": 12, "n_positions": 1024, "vocab_size": 50257}
SPECS: dict[str, tuple[str, str, str, dict[str, Any]]] = {  # task, architecture, tokenizer, config
    "classifier": ("text-classification", "bert", "wordpiece", MINILM),
    "embedder": ("feature-extraction", "bert", "wordpiece", MINILM),
    "causal_lm": ("text-generation", "gpt2", "bpe", DISTILGPT2),
}


def texts(count: int, seed: int = 0, words: tuple[int, int] = (5, 120)) -> list[str]:
    """`count` texts of 5 to 120 words (seeded), drawn from the sample corpus' sentences."""
    sentences = [json.loads(line)["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        wanted = rng.randint(*words)
        picked: list[str] = []
        while len(picked) < wanted:
            picked.extend(rng.choice(sentences).split())
        out.append(" ".join(picked[:wanted]))
    return out


def build(name: str, root: Path) -> Path:
    """The checkpoint `name` under `root` (built once; reused while its spec is unchanged)."""
    task_name, architecture, tokenizer_kind, config = SPECS[name]
    spec = [task_name, architecture, tokenizer_kind, config, "no-unknown-ids"]
    key = hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:12]
    directory = root / f"{name}-{key}"
    if (directory / "rayformers.json").exists():
        return directory
    import torch

    from rayformers.config import ModelConfig
    from rayformers.data.tokenizer import load_tokenizer
    from rayformers.manifest import CheckpointManifest, LabelMap, PreprocessSettings, package_versions
    from rayformers.tasks import get_task
    from rayformers.training.checkpoint import write_checkpoint
    from rayformers.training.model import build_model

    task = get_task(task_name)
    tokenizer_dir = TOKENIZERS / tokenizer_kind
    tokenizer = load_tokenizer(str(tokenizer_dir), task_name)
    labels = LabelMap(names=["negative", "positive"]) if task.label_kind != "none" else None
    settings = PreprocessSettings(task=task_name, max_length=256, labels=labels)
    model_cfg = ModelConfig.model_validate(
        {
            "task": task_name,
            "from_scratch": {"architecture": architecture, "tokenizer": str(tokenizer_dir), "config": config},
        }
    )
    with torch.random.fork_rng(devices=[]):
        model = build_model(model_cfg, task, tokenizer, settings, seed=0)
    if task.causal_lm:
        with torch.no_grad():
            rows = model.get_input_embeddings().weight
            rows[len(tokenizer) :] = 0
            rows[tokenizer.eos_token_id] = 0
    manifest = CheckpointManifest(
        task=task_name,
        method="full",
        base_model=architecture,
        architecture=model.config.model_type,
        auto_model=task.auto_model,
        preprocessing=settings,
        pooling=task.pooling,
        data_fingerprint=key,
        versions=package_versions(),
    )
    write_checkpoint(
        directory, model, tokenizer, manifest, {"benchmark": name}, {"step": 0, "epoch": 0, "history": []}
    )
    return directory
