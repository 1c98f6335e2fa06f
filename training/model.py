"""Model building: the task's Auto class from a hub id, a directory or an architecture config, and
the one switch between full fine-tuning and LoRA (peft)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rayformers.config import LoraConfig, ModelConfig
from rayformers.errors import UserError
from rayformers.manifest import PreprocessSettings

if TYPE_CHECKING:
    import torch

    from rayformers.tasks.base import Task

__all__ = [
    "ModelError",
    "apply_lora",
    "build_model",
    "default_target_modules",
    "head_modules",
    "parameter_counts",
]

# peft's table lacks a few common encoders.
_EXTRA_TARGETS = {"distilbert": ["q_lin", "v_lin"], "modernbert": ["Wqkv"]}


class ModelError(UserError):
    """A model that cannot be built as configured; the message says why and what to change."""


def _special_token_kwargs(tokenizer: Any, architecture: str) -> dict[str, Any]:
    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id
        if tokenizer.bos_token_id is not None
        else tokenizer.cls_token_id,
        "eos_token_id": tokenizer.eos_token_id
        if tokenizer.eos_token_id is not None
        else tokenizer.sep_token_id,
    }
    if architecture in ("bart", "mbart", "marian", "t5", "mt5", "pegasus"):
        # Seq2seq decoders start from EOS (BART) or PAD (T5) when the config says nothing else.
        ids["decoder_start_token_id"] = (
            ids["pad_token_id"] if architecture.endswith("t5") else ids["eos_token_id"]
        )
    return {k: v for k, v in ids.items() if v is not None}


def build_model(
    cfg: ModelConfig, task: Task, tokenizer: Any, settings: PreprocessSettings, seed: int
) -> torch.nn.Module:
    """The task's model (built with the task's label arguments for `settings`), fully trainable or
    wrapped with LoRA adapters as `cfg.method` says."""
    import torch
    from transformers import AutoConfig

    auto = task.auto_model_class()
    label_kwargs = task.model_kwargs(settings)
    torch.manual_seed(seed)  # every worker builds identical weights; DDP then keeps them in step
    if cfg.from_scratch is not None:
        architecture = cfg.from_scratch.architecture
        try:
            config = AutoConfig.for_model(
                architecture,
                **{
                    **_special_token_kwargs(tokenizer, architecture),
                    **cfg.from_scratch.config,
                    **label_kwargs,
                },
            )
        except (ValueError, TypeError) as err:
            raise ModelError(f"model.from_scratch: cannot build a {architecture!r} config: {err}") from None
        model = auto.from_config(config)
    else:
        assert cfg.name is not None
        try:
            model = auto.from_pretrained(
                cfg.name, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **label_kwargs
            )
        except (OSError, ValueError) as err:
            raise ModelError(
                f"model.name: {cfg.name!r} could not be loaded as {task.auto_model}: {str(err).splitlines()[0]}. Give a "
                "hub id this machine can reach or a directory saved with save_pretrained"
            ) from None
    if cfg.method == "lora":
        model = apply_lora(model, cfg.lora, task)
    return model


def default_target_modules(model_type: str) -> list[str] | None:
    """peft's default LoRA targets for an architecture (query/value projections), or None."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as targets

    found = targets.get(model_type) or _EXTRA_TARGETS.get(model_type)
    return list(found) if found else None


def _linear_names(model: torch.nn.Module) -> list[str]:
    """Names of the layers LoRA can wrap: linear layers, and GPT-2 style `Conv1D` projections."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, Conv1D))
        }
    )


def apply_lora(model: torch.nn.Module, lora: LoraConfig, task: Task) -> torch.nn.Module:
    """Wrap `model` with LoRA adapters; the task head stays trainable and is saved with the adapter."""
    import peft

    model_type = getattr(model.config, "model_type", "")
    linear = _linear_names(model)
    targets = lora.target_modules or default_target_modules(model_type)
    if not targets:
        raise ModelError(
            f"model.lora.target_modules: no default for architecture {model_type!r}; set it to some of the "
            f"model's linear layers: {', '.join(linear)}"
        )
    missing = [t for t in targets if t not in linear]
    if missing:
        raise ModelError(
            f"model.lora.target_modules: {missing} not found in this {model_type!r} model; its linear layers "
            f"are: {', '.join(linear)}"
        )
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(targets),
        modules_to_save=head_modules(model, task) or None,
        task_type=getattr(peft.TaskType, task.peft_task_type) if task.peft_task_type else None,
    )
    return peft.get_peft_model(model, config)


def head_modules(model: torch.nn.Module, task: Task) -> list[str]:
    """The task's head modules this model has: new weights, which LoRA must still train and save."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return sorted(names & set(task.head_modules))


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
