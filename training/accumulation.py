"""Gradient accumulation: which micro-batches end an optimizer step, and how much each one weighs.

An epoch of `micro_per_epoch` micro-batches makes `ceil(micro_per_epoch / steps)` optimizer steps: every
`steps` micro-batches, and once more on what is left at the epoch's end, so no micro-batch's gradient
is dropped or carried into the next epoch, and an epoch shorter than `steps` still steps. Each
micro-batch's loss is divided by the size of its own window, so every step's gradient is the mean over
the micro-batches it saw, whatever their number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GradientAccumulation"]


@dataclass(frozen=True)
class GradientAccumulation:
    steps: int
    """Micro-batches per optimizer step (`train.gradient_accumulation_steps`)."""
    micro_per_epoch: int
    """Micro-batches each worker runs per epoch."""

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.micro_per_epoch / self.steps))

    def ends_step(self, micro: int) -> bool:
        """Whether micro-batch `micro` (1-based, within its epoch) is the last of an optimizer step's."""
        return micro % self.steps == 0 or micro >= self.micro_per_epoch

    def weight(self, micro: int) -> float:
        """What micro-batch `micro`'s loss is multiplied by: one over the micro-batches of its step."""
        start = (micro - 1) // self.steps * self.steps
        return 1.0 / (min(start + self.steps, self.micro_per_epoch) - start)

    def micro_batches_before(self, steps_done: int) -> int:
        """Micro-batches of an epoch that its first `steps_done` optimizer steps ran (to resume)."""
        return min(steps_done * self.steps, self.micro_per_epoch)
