"""The optimizer and its steps: AdamW (torch's fused kernel where the device has one), the precision
(autocast dtype, fp16's loss scaler), and `Stepper`, which turns micro-batches into optimizer steps as
`GradientAccumulation` plans them: DDP all-reduces only on a step's last micro-batch, gradients are
clipped, and each step hands back its mean loss, rows and tokens, still on the device."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rayformers.config import RunConfig, TrainConfig
from rayformers.training.accumulation import GradientAccumulation

__all__ = ["StepWindow", "Stepper", "adamw", "fused_adamw", "precision"]

# Devices whose torch has a fused AdamW kernel (one pass over all parameters instead of a Python loop
# of small ops per tensor: on a MiniLM-size model on 2 CPU cores, 17 ms a step instead of 90).
_FUSED_DEVICES = frozenset({"cpu", "cuda"})


def precision(run: RunConfig) -> torch.dtype | None:
    """The autocast dtype: off on CPU; bf16 where the GPU supports it, else fp16 (with a scaler)."""
    train = run.train
    if not train.use_gpu or train.mixed_precision == "no":
        return None
    if train.mixed_precision == "bf16" or (
        train.mixed_precision == "auto" and torch.cuda.is_bf16_supported()
    ):
        return torch.bfloat16
    return torch.float16


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs torch's fused kernel on `device` (the same update, one kernel: Hugging Face's
    Trainer defaults to it too). Elsewhere (MPS, XLA, ...) it takes torch's default implementation."""
    return device.type in _FUSED_DEVICES


def adamw(model: torch.nn.Module, train: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: weight decay on matrices, none on biases and norms."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train.learning_rate,
        fused=fused_adamw(device) or None,
    )


@dataclass(frozen=True)
class StepWindow:
    """What one optimizer step saw: the mean loss of its micro-batches (a device tensor), their rows
    and their tokens (the attention masks' sum, a device tensor) on this worker."""

    loss: torch.Tensor
    rows: int
    tokens: torch.Tensor


class Stepper:
    """Micro-batches in, optimizer steps out. `micro_batch` runs one micro-batch's forward and backward
    (its loss weighted by one over its step's micro-batches, under DDP's `no_sync` unless it ends the
    step, so gradients cross the network once a step) and, on a step's last micro-batch, clips, steps
    the optimizer, scheduler and scaler and returns the step's `StepWindow`. Nothing here reads a tensor
    on the host: a step never waits for the device."""

    def __init__(
        self,
        model: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: torch.amp.GradScaler,
        accumulation: GradientAccumulation,
        *,
        device: torch.device,
        dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.accumulation, self.device = accumulation, device
        self.dtype, self.max_grad_norm = dtype, max_grad_norm
        self._window()

    def _window(self) -> None:
        self._loss = torch.zeros((), device=self.device)
        self._tokens = torch.zeros((), dtype=torch.long, device=self.device)
        self._rows = 0

    def start_epoch(self) -> None:
        """No gradient or partial window carries over from an epoch into the next."""
        self.optimizer.zero_grad(set_to_none=True)
        self._window()

    def micro_batch(
        self, micro: int, batch: Mapping[str, Any], loss_of: Callable[[Mapping[str, Any]], torch.Tensor]
    ) -> StepWindow | None:
        """Run micro-batch `micro` (1-based within its epoch); the step's window if it ended one."""
        ends = self.accumulation.ends_step(micro)
        weight = self.accumulation.weight(micro)
        quiet = (
            self.model.no_sync() if not ends and hasattr(self.model, "no_sync") else contextlib.nullcontext()
        )
        with quiet:
            with torch.autocast(
                self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
            ):
                loss = loss_of(batch)
            self.scaler.scale(loss * weight).backward()
        self._loss += loss.detach().float() * weight
        self._rows += len(batch["input_ids"])
        if "attention_mask" in batch:
            self._tokens += batch["attention_mask"].sum()
        if not ends:
            return None
        if self.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        window = StepWindow(self._loss, self._rows, self._tokens)
        self._window()
        return window
