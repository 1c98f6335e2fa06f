"""Progress lines and TensorBoard events, written by rank 0 only."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from rayformers.data.storage import Location

__all__ = ["Progress"]


class Progress:
    """One line per logging interval (step, epoch, loss, learning rate, samples/s, tokens/s, ETA) and
    the same scalars, plus evaluation metrics, as TensorBoard events under `<storage>/<name>/tensorboard`."""

    def __init__(self, enabled: bool, total_steps: int, every: int, storage_path: str, name: str) -> None:
        self.enabled, self.total, self.every = enabled, total_steps, every
        self.started = time.monotonic()
        self.samples = self.tokens = 0
        self.window_started = time.monotonic()
        self.writer: Any = None
        self.upload: Location | None = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                return
            target = Location.parse(storage_path) / name / "tensorboard"
            if target.local:
                self.writer = SummaryWriter(target.path)
            else:  # event files are appended to, which object stores cannot do: write here, copy there
                self.upload = target
                self.writer = SummaryWriter(tempfile.mkdtemp(prefix="rayformers-tensorboard-"))

    def step(
        self, step: int, epoch: int, loss: float, lr: float, samples: int, tokens: int, _: float
    ) -> None:
        self.samples += samples
        self.tokens += tokens
        if not self.enabled:
            return
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/learning_rate", lr, step)
        if step % self.every and step != self.total:
            return
        now = time.monotonic()
        elapsed = max(now - self.window_started, 1e-9)
        per_step = (now - self.started) / max(step, 1)
        eta = per_step * (self.total - step)
        print(
            f"[rayformers] step {step}/{self.total} epoch {epoch} loss {loss:.4f} lr {lr:.2e} "
            f"{self.samples / elapsed:.1f} samples/s {self.tokens / elapsed:.0f} tokens/s eta {eta:.0f}s",
            flush=True,
        )
        self.samples = self.tokens = 0
        self.window_started = now

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in ("step", "epoch"))
        print(f"[rayformers] eval at step {step}: {shown}", flush=True)
        if self.writer is not None:
            for key, value in metrics.items():
                if key not in ("step", "epoch"):
                    self.writer.add_scalar(f"eval/{key}", value, step)
            self.writer.flush()
            self._sync()

    def _sync(self) -> None:
        if self.upload is not None and self.writer is not None:
            self.upload.upload(self.writer.logdir)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self._sync()
