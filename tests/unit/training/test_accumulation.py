"""Gradient accumulation steps on every micro-batch of an epoch exactly once, weighs each by its own
step's size, and an epoch shorter than the accumulation still steps."""

from __future__ import annotations

import pytest
import torch

from rayformers.training.accumulation import GradientAccumulation


@pytest.mark.parametrize(
    ("steps", "micro", "ends", "weights"),
    [
        (4, 8, [4, 8], [1 / 4] * 8),
        (4, 7, [4, 7], [1 / 4] * 4 + [1 / 3] * 3),  # the 3 left over make a step of their own
        (4, 2, [2], [1 / 2] * 2),  # an epoch shorter than the accumulation still steps
        (1, 3, [1, 2, 3], [1.0] * 3),
    ],
)
def test_every_micro_batch_belongs_to_one_step_and_weighs_by_its_size(steps, micro, ends, weights):
    plan = GradientAccumulation(steps, micro)
    assert [m for m in range(1, micro + 1) if plan.ends_step(m)] == ends
    assert plan.steps_per_epoch == len(ends)
    assert [plan.weight(m) for m in range(1, micro + 1)] == pytest.approx(weights)


def test_an_accumulated_gradient_is_the_mean_over_its_micro_batches():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    rows = torch.randn(7, 3)
    plan = GradientAccumulation(4, 7)
    grads = []
    for micro in range(1, 8):
        loss = model(rows[micro - 1 : micro]).pow(2).mean()
        (loss * plan.weight(micro)).backward()
        if plan.ends_step(micro):
            grads.append(model.weight.grad.clone())
            model.zero_grad()
    expected = []
    for window in (rows[:4], rows[4:]):
        model.zero_grad()
        model(window).pow(2).mean().backward()
        expected.append(model.weight.grad.clone())
    assert all(torch.allclose(g, e) for g, e in zip(grads, expected, strict=True))


def test_resuming_skips_the_micro_batches_of_the_steps_done():
    plan = GradientAccumulation(4, 7)
    assert [plan.micro_batches_before(s) for s in (0, 1, 2)] == [0, 4, 7]
