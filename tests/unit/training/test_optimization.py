"""One optimizer step over accumulated micro-batches (issue 11, finding 4): DDP syncs only on a step's
last micro-batch, the logged loss is the mean of the step's micro-batch losses (not the last one times
the accumulation), its rows and tokens count every micro-batch; AdamW takes torch's fused kernel;
the precision of GPU runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from rayformers.loading import load_config
from rayformers.training.accumulation import GradientAccumulation
from rayformers.training.optimization import Stepper, adamw, fused_adamw, precision

REPO = Path(__file__).resolve().parents[3]


def _run(*overrides: str) -> Any:
    return load_config(REPO / "configs/text-classification/full.yaml", list(overrides))


class _Ddp(torch.nn.Module):
    """DDP's surface that the stepper uses: `no_sync`, which here records which micro-batches ran
    their backward inside it (DDP would not all-reduce their gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)
        self.quiet = False
        self.synced: list[bool] = []
        self.linear.weight.register_hook(self._backward)

    def _backward(self, grad: torch.Tensor) -> torch.Tensor:
        self.synced.append(not self.quiet)
        return grad

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        self.quiet = True
        try:
            yield
        finally:
            self.quiet = False


def _batches(n: int) -> list[dict[str, torch.Tensor]]:
    """Micro-batches of different sizes and token counts, with targets that give each its own loss."""
    out = []
    for i in range(n):
        rows = 2 + i % 3
        mask = torch.zeros(rows, 5, dtype=torch.long)
        mask[:, : 1 + i % 5] = 1
        out.append(
            {
                "input_ids": torch.ones(rows, 5, dtype=torch.long),
                "attention_mask": mask,
                "x": torch.full((rows, 3), float(i + 1)),
                "y": torch.full((rows, 1), float(i)),
            }
        )
    return out


def _stepper(model: torch.nn.Module, accumulation: GradientAccumulation) -> tuple[Stepper, Any]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every micro-batch sees the same weights
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    stepper = Stepper(model, optimizer, scheduler, scaler, accumulation, device=torch.device("cpu"))
    return stepper, scheduler


def _loss_of(model: _Ddp) -> Any:
    return lambda b: torch.nn.functional.mse_loss(model.linear(b["x"]), b["y"])


def test_only_a_steps_last_micro_batch_all_reduces():
    model = _Ddp()
    stepper, _ = _stepper(model, GradientAccumulation(steps=4, micro_per_epoch=7))
    stepper.start_epoch()
    ends = [stepper.micro_batch(m, b, _loss_of(model)) is not None for m, b in enumerate(_batches(7), 1)]
    assert ends == [False, False, False, True, False, False, True]
    # A micro-batch's backward ran outside no_sync (DDP all-reduced) only where it ended a step.
    assert model.synced == ends


def test_a_steps_loss_is_the_mean_of_its_micro_batches_and_its_rows_and_tokens_count_all_of_them():
    model = _Ddp()
    stepper, scheduler = _stepper(model, GradientAccumulation(steps=4, micro_per_epoch=7))
    batches = _batches(7)
    with torch.no_grad():
        losses = [float(_loss_of(model)(b)) for b in batches]
    stepper.start_epoch()
    windows = [w for m, b in enumerate(batches, 1) if (w := stepper.micro_batch(m, b, _loss_of(model)))]
    assert len(windows) == 2 and scheduler.last_epoch == 2  # two optimizer (and schedule) steps
    for window, part in zip(windows, (range(4), range(4, 7)), strict=True):
        mean = sum(losses[i] for i in part) / len(part)
        assert float(window.loss) == pytest.approx(mean, rel=1e-6)
        assert window.rows == sum(len(batches[i]["input_ids"]) for i in part)
        assert int(window.tokens) == sum(int(batches[i]["attention_mask"].sum()) for i in part)
    # The old loop logged the last micro-batch's loss times the accumulation: not what a step is.
    assert float(windows[0].loss) != pytest.approx(losses[3] * 4, rel=1e-3)


def test_an_epoch_starts_with_no_gradient_left_from_the_last():
    model = _Ddp()
    stepper, _ = _stepper(model, GradientAccumulation(steps=4, micro_per_epoch=7))
    stepper.micro_batch(1, _batches(1)[0], _loss_of(model))  # a step begun, never finished
    assert model.linear.weight.grad is not None
    stepper.start_epoch()
    assert model.linear.weight.grad is None


def test_adamw_takes_the_fused_kernel_on_cpu_and_cuda_and_decays_only_matrices():
    assert fused_adamw(torch.device("cpu")) and fused_adamw(torch.device("cuda", 1))
    assert not fused_adamw(torch.device("mps")) and not fused_adamw(torch.device("meta"))
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model[1].weight.requires_grad_(False)
    optimizer = adamw(model, _run("train.weight_decay=0.1").train, torch.device("cpu"))
    assert optimizer.defaults["fused"] is True
    decay, plain = optimizer.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])] and decay["weight_decay"] == 0.1
    assert len(plain["params"]) == 2 and plain["weight_decay"] == 0.0  # two biases; the frozen norm is out
    # The fused step is AdamW's update: the same weights as torch's default implementation after a step.
    reference = torch.nn.Linear(4, 4)
    twin = torch.nn.Linear(4, 4)
    twin.load_state_dict(reference.state_dict())
    x = torch.randn(8, 4)
    for net, fused in ((reference, None), (twin, True)):
        opt = torch.optim.AdamW(net.parameters(), lr=0.1, fused=fused)
        net(x).pow(2).mean().backward()
        opt.step()
    assert torch.allclose(reference.weight, twin.weight, atol=1e-6)


def test_precision_is_off_on_cpu_and_follows_mixed_precision_on_gpus(monkeypatch):
    assert precision(_run()) is None  # CPU: no autocast, whatever mixed_precision says
    assert precision(_run("train.use_gpu=true", "train.mixed_precision=no")) is None
    assert precision(_run("train.use_gpu=true", "train.mixed_precision=bf16")) is torch.bfloat16
    assert precision(_run("train.use_gpu=true", "train.mixed_precision=fp16")) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a V100 or T4
    assert precision(_run("train.use_gpu=true", "train.mixed_precision=auto")) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # an A100 or later
    assert precision(_run("train.use_gpu=true", "train.mixed_precision=auto")) is torch.bfloat16
