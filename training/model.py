"""Model building: the task's Auto class from a hub id, a directory or an architecture config, and
the one switch between full fine-tuning and LoRA (peft)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rayformers.config import LoraConfig, ModelConfig
from rayformers.errors import UserError
from rayformers.manifest import PreprocessSettings

if TYPE_CHECKING:
    import torch

    from rayformers.tasks.base import Task

logger = logging.getLogger(__name__)

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
# Heads some architectures build new beside the task's own: DeBERTa's classification pooler is not
# in its pretrained checkpoints.
_EXTRA_HEADS = {"deberta": ("pooler",), "deberta-v2": ("pooler",)}
_PLACEHOLDER_LABEL = re.compile(r"^LABEL_\d+$")


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
        model, new = _from_pretrained(cfg, task, settings, label_kwargs)
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        # Decoder-only checkpoints (GPT-2, Llama, Qwen) name no pad token; their sequence classifiers
        # find each row's last token by it, and refuse batches of more than one row without it.
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    if cfg.method == "lora":
        model = apply_lora(model, cfg.lora, task, new if cfg.from_scratch is None else ())
    return model


def _from_pretrained(
    cfg: ModelConfig, task: Task, settings: PreprocessSettings, label_kwargs: dict[str, Any]
) -> tuple[torch.nn.Module, list[str]]:
    """A hub or local checkpoint, in float32 whatever its saved dtype (bf16 and fp16 checkpoints train
    with float32 master weights; `train.mixed_precision` autocasts the forward), its head fitted to this
    run's labels: kept when they are the same, reordered when the checkpoint orders the same names
    differently, new when it has another number of labels. Also the modules the checkpoint did not
    hold (`new_modules`), which a LoRA run must train and save."""
    import torch
    from transformers import AutoConfig

    assert cfg.name is not None
    where = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    try:
        saved = AutoConfig.from_pretrained(cfg.name, **where) if label_kwargs else None
        order = _head_order(saved, settings) if saved is not None else None
        mismatched = saved is not None and saved.num_labels != label_kwargs["num_labels"]
        model, info = task.auto_model_class().from_pretrained(
            cfg.name,
            dtype=torch.float32,
            ignore_mismatched_sizes=mismatched,
            output_loading_info=True,
            **where,
            **label_kwargs,
        )
    except (OSError, ValueError) as err:
        raise ModelError(
            f"model.name: {cfg.name!r} could not be loaded as {task.auto_model}: {str(err).splitlines()[0]}. Give a "
            "hub id this machine can reach or a directory saved with save_pretrained"
        ) from None
    if mismatched:
        logger.warning(
            "model.name: %s has a %d-label head; this run has %d labels, so the head starts new",
            cfg.name, saved.num_labels, label_kwargs["num_labels"],
        )  # fmt: skip
    if order is not None:
        _reorder_head(model, task, order)
        logger.warning(
            "model.name: %s orders its labels %s; its head was reordered to this run's %s",
            cfg.name, [saved.id2label[i] for i in range(saved.num_labels)], list(settings.labels.names),
        )  # fmt: skip
    fresh = [
        *info.get("missing_keys", ()),
        *(k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())),
    ]
    return model, new_modules(model, fresh)


def new_modules(model: torch.nn.Module, fresh_keys: Iterable[str]) -> list[str]:
    """The largest modules all of whose parameters are in `fresh_keys` (weights a checkpoint did not hold,
    so initialised at random): a task head (`classifier`, ModernBERT's QA `classifier`), BERT's pooler
    under a masked-LM checkpoint, DeBERTa's `pooler`."""
    fresh = set(fresh_keys)
    params = [name for name, _ in model.named_parameters()]
    found: list[str] = []
    for key in sorted(fresh, key=len):
        if key not in params or any(key.startswith(f"{m}.") for m in found):
            continue
        parts = key.split(".")[:-1]
        best = None
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if all(p in fresh for p in params if p.startswith(f"{prefix}.")):
                best = prefix
                break
        if best is not None:
            found.append(best)
    return sorted(found)


def _head_order(saved: Any, settings: PreprocessSettings) -> list[int] | None:
    """For each of this run's labels, its row in the checkpoint's head, when the checkpoint names the
    same labels (case aside) in another order; None when there is nothing to reorder."""
    names = list(settings.labels.names) if settings.labels is not None else []
    id2label = {int(k): str(v) for k, v in (getattr(saved, "id2label", None) or {}).items()}
    if len(id2label) != len(names) or all(_PLACEHOLDER_LABEL.match(v) for v in id2label.values()):
        return None
    rows = {v.casefold(): i for i, v in id2label.items()}
    if set(rows) != {n.casefold() for n in names}:
        return None
    order = [rows[n.casefold()] for n in names]
    return None if order == list(range(len(names))) else order


def _reorder_head(model: torch.nn.Module, task: Task, order: list[int]) -> None:
    """Permute the rows of the head's output layer so that row j scores this run's label j."""
    import torch

    heads = set(task.head_modules)
    outputs = [
        m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m.out_features == len(order) and name.split(".")[0] in heads
    ]
    if len(outputs) != 1:
        raise ModelError(
            f"model.name: cannot find the one output layer of this {type(model).__name__}'s head to put its "
            f"labels in this run's order {order}; start from the checkpoint's base model without its head"
        )
    index = torch.tensor(order)
    with torch.no_grad():
        outputs[0].weight.copy_(outputs[0].weight[index])
        if outputs[0].bias is not None:
            outputs[0].bias.copy_(outputs[0].bias[index])


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


def apply_lora(
    model: torch.nn.Module, lora: LoraConfig, task: Task, new: Iterable[str] = ()
) -> torch.nn.Module:
    """Wrap `model` with LoRA adapters; the task head and the `new` modules (weights the checkpoint did
    not hold) stay trainable and are saved with the adapter."""
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
        modules_to_save=sorted({*head_modules(model, task), *new}) or None,
        task_type=getattr(peft.TaskType, task.peft_task_type) if task.peft_task_type else None,
    )
    return peft.get_peft_model(model, config)


def head_modules(model: torch.nn.Module, task: Task) -> list[str]:
    """The task's head modules this model has: new weights, which LoRA must still train and save."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    extra = _EXTRA_HEADS.get(getattr(model.config, "model_type", ""), ())
    return sorted(names & {*task.head_modules, *extra})


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
