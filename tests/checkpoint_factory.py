"""Tiny random checkpoints in the project's on-disk format, in well under a second, without Ray.

`make_checkpoint(task, directory)` writes what a training run writes (it calls the training stage's
own `build_model` and `write_checkpoint`): safetensors weights, the sample tokenizer, a valid
`rayformers.json`, a model card and the training state. Serving and integration tests use these
instead of training: the weights are random, but layout, label maps and settings are the real ones.

    from tests.checkpoint_factory import make_checkpoint
    path = make_checkpoint("question-answering", tmp_path / "qa", method="lora", adapter_seed=1)
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from rayformers.config import ModelConfig
from rayformers.data.tokenizer import load_tokenizer
from rayformers.manifest import CheckpointManifest, LabelMap, PreprocessSettings, package_versions
from rayformers.tasks import TASK_NAMES, get_task
from rayformers.tasks.checkpoint import BASE_MODEL_DIR
from rayformers.training.checkpoint import write_checkpoint
from rayformers.training.model import build_model, default_target_modules, head_modules

__all__ = ["ARCHITECTURES", "LABELS", "TINY_CONFIGS", "make_checkpoint"]

REPO = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO / "data" / "samples" / "tokenizers"

# The shipped configs' architectures, shrunk: 2 layers, hidden 32. `initializer_range` is raised from
# 0.02 so that random logits are far apart: argmax-based results (spans, greedy tokens) then do not
# flip on float noise between a padded batch and a single input.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "bert": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        "initializer_range": 0.2,
    },
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 128, "initializer_range": 0.2},
    "bart": {
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 128,
        "init_std": 0.2,
    },
}

# task -> (architecture, sample tokenizer), as in configs/<task>/full.yaml.
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "text-classification": ("bert", "wordpiece"),
    "token-classification": ("bert", "wordpiece"),
    "question-answering": ("bert", "wordpiece"),
    "fill-mask": ("bert", "wordpiece"),
    "text-generation": ("gpt2", "bpe"),
    "summarization": ("bart", "bpe"),
    "translation": ("bart", "bpe"),
    "zero-shot-classification": ("bert", "wordpiece"),
    "feature-extraction": ("bert", "wordpiece"),
    "text-ranking": ("bert", "wordpiece"),
}

# Label maps as training derives them from the sample sets (LabelMap.from_values sorts names).
LABELS: dict[str, LabelMap] = {
    "text-classification": LabelMap.from_values(["negative", "positive"]),
    "token-classification": LabelMap.from_values(["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]),
    "zero-shot-classification": LabelMap.from_values(["entailment", "neutral", "contradiction"]),
}

_MAX_LENGTH = {"question-answering": 64, "text-generation": 64}
# What tasks derive from their training data (`Task.finish_settings`), as the sample sets give it.
_TASK_OPTIONS: dict[str, dict[str, Any]] = {"text-ranking": {"relevance": "graded", "lists": True}}


def make_checkpoint(
    task: str,
    directory: Path,
    *,
    method: Literal["full", "lora"] = "full",
    seed: int = 0,
    adapter_seed: int | None = None,
    labels: list[str] | None = None,
    tokenizer: Literal["wordpiece", "bpe"] | None = None,
    preprocessing: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write a tiny random `task` checkpoint into `directory` and return it.

    `seed` fixes the (base) weights, so checkpoints with one seed share their base; for `method="lora"`,
    `adapter_seed` (default: `seed`) fixes the adapter, whose LoRA B matrices and head are randomised
    (peft starts B at zero, which would make every adapter a no-op). `preprocessing` overrides
    `PreprocessSettings` fields (e.g. `{"max_length": 32, "stride": 8}`); `labels` replaces the task's
    label map (model head and manifest alike); `tokenizer` picks the other sample tokenizer.
    """
    if task not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_NAMES)}")
    spec = get_task(task)
    architecture, tokenizer_kind = ARCHITECTURES[task]
    tokenizer_dir = TOKENIZERS / (tokenizer or tokenizer_kind)
    loaded_tokenizer = load_tokenizer(str(tokenizer_dir), task)
    label_map = LabelMap(names=labels) if labels is not None else LABELS.get(task)
    defaults: dict[str, Any] = {
        "task": task,
        "max_length": _MAX_LENGTH.get(task, 48),
        "stride": 16,
        "source_prefix": "summarize: " if task == "summarization" else "",
        "labels": label_map,
        "task_options": _TASK_OPTIONS.get(task, {}),
    }
    settings = PreprocessSettings(**{**defaults, **(preprocessing or {})})
    cfg = ModelConfig.model_validate(
        {
            "task": task,
            "from_scratch": {
                "architecture": architecture,
                "tokenizer": str(tokenizer_dir),
                "config": TINY_CONFIGS[architecture],
            },
        }
    )
    directory = Path(directory)
    with torch.random.fork_rng(devices=[]):  # build_model seeds the global RNG; leave the caller's alone
        model = build_model(cfg, spec, loaded_tokenizer, settings, seed)
        with tempfile.TemporaryDirectory() as base_dir:
            if method == "lora":
                model.save_pretrained(base_dir)  # the clean base, as training's save_clean_base writes it
                model = _random_adapter(model, spec, seed if adapter_seed is None else adapter_seed)
            manifest = CheckpointManifest(
                task=task,  # type: ignore[arg-type]
                method=method,
                base_model=BASE_MODEL_DIR if method == "lora" else architecture,
                architecture=model.config.model_type,
                auto_model=spec.auto_model,
                preprocessing=settings,
                pooling=spec.pooling,
                metrics=metrics if metrics is not None else {spec.default_metric: 0.0},
                data_fingerprint=hashlib.sha256(f"{task}:{seed}".encode()).hexdigest(),
                versions=package_versions(),
            )
            write_checkpoint(
                directory,
                model,
                loaded_tokenizer,
                manifest,
                hyperparameters={"factory": True, "seed": seed},
                training_state={"step": 0, "epoch": 0, "history": [], "resumed_from": []},
                base_model_dir=Path(base_dir) if method == "lora" else None,
            )
    return directory


def _random_adapter(model: Any, task: Any, seed: int) -> Any:
    """Wrap `model` with a LoRA adapter as training configures it, then randomise what it trains."""
    import peft

    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=default_target_modules(model.config.model_type),
        modules_to_save=head_modules(model, task) or None,
        task_type=getattr(peft.TaskType, task.peft_task_type) if task.peft_task_type else None,
    )
    wrapped = peft.get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name or ("modules_to_save" in name and name.endswith("weight")):
                param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    return wrapped
