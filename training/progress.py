"""Progress lines, TensorBoard events (and MLflow metrics, when tracked) and the run's timing, written by
rank 0 only."""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rayformers.data.storage import Location

if TYPE_CHECKING:
    from rayformers.training.tracking import MlflowTracker

__all__ = ["TIMED_STEPS", "Progress", "events_folder"]

# Steps whose end times the run keeps (for a benchmark's steady state); later steps only count.
TIMED_STEPS = 1000


def events_folder(run_dir: Location, now: datetime | None = None) -> Location:
    """`<run>/tensorboard/<UTC time>`: a folder of its own per run attempt, so TensorBoard shows two
    runs under one name (an unnamed run's name is `<task>-<method>`) as two runs, not one tangled curve."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S-%f")
    return run_dir / "tensorboard" / stamp


class Progress:
    """One line per logging interval (step, epoch, loss, learning rate, samples/s, tokens/s, ETA), the
    same scalars plus evaluation metrics as TensorBoard events under `events_folder(<storage>/<name>)`
    and, when `tracker` is set, as MLflow metrics (`train/...` and `eval/...` alike), and the run's timing: when each start-up stage ended and each optimizer step finished, in seconds
    since `launched_at` (the wall clock when `rayformers train` started)."""

    def __init__(
        self,
        enabled: bool,
        total_steps: int,
        every: int,
        storage_path: str,
        name: str,
        launched_at: float | None = None,
    ) -> None:
        self.enabled, self.total, self.every = enabled, total_steps, every
        self.launched_at = launched_at if launched_at is not None else time.time()
        self.started = time.monotonic()
        self.samples = self.tokens = 0
        self.window_started = time.monotonic()
        self.stages: dict[str, float] = {}
        self.step_ends: list[float] = []
        self.step_rows: list[int] = []
        self.first_step: int | None = None
        self.writer: Any = None
        self.upload: Location | None = None
        self.tracker: MlflowTracker | None = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                return
            target = events_folder(Location.parse(storage_path) / name)
            if target.local:
                self.writer = SummaryWriter(target.path)
            else:  # event files are appended to, which object stores cannot do: write here, copy there
                self.upload = target
                self.writer = SummaryWriter(tempfile.mkdtemp(prefix="rayformers-tensorboard-"))

    def since_launch(self) -> float:
        return time.time() - self.launched_at

    def stage(self, name: str) -> None:
        """Record that the start-up stage `name` has just ended."""
        self.stages[name] = self.since_launch()

    def step(
        self,
        step: int,
        epoch: int,
        loss: Any,
        lr: float,
        samples: int,
        tokens: Any,
    ) -> None:
        """One optimizer step ended. `loss` and `tokens` may be tensors: they are read (a host sync)
        only on the steps that log."""
        now_s = self.since_launch()
        if self.first_step is None:
            self.first_step = step
            self.stages["first_step"] = now_s
            # Throughput and ETA count from the end of the first step: not the model load and start-up.
            self.started = self.window_started = time.monotonic()
            if self.enabled:
                print(
                    f"[rayformers] first optimizer step {now_s:.1f} s after `rayformers train` started ("
                    + ", ".join(f"{k} {v:.1f} s" for k, v in self.stages.items() if k != "first_step")
                    + ")",
                    flush=True,
                )
        if len(self.step_ends) < TIMED_STEPS:
            self.step_ends.append(now_s)
            self.step_rows.append(samples)
        if step != self.first_step:  # the first step's rows ran before the clocks started
            self.samples += samples
            self.tokens += tokens
        if step % self.every and step != self.total:
            return
        loss = float(loss)
        if self.enabled:
            now = time.monotonic()
            elapsed = max(now - self.window_started, 1e-9)
            per_step = (now - self.started) / max(step - self.first_step, 1)
            eta = per_step * (self.total - step)
            samples_s, tokens_s = self.samples / elapsed, int(self.tokens) / elapsed
            scalars = {
                "train/loss": loss,
                "train/learning_rate": lr,
                "train/samples_per_s": samples_s,
                "train/tokens_per_s": tokens_s,
            }
            if self.writer is not None:
                for key, value in scalars.items():
                    self.writer.add_scalar(key, value, step)
            if self.tracker is not None:
                self.tracker.log(step, scalars)
            print(
                f"[rayformers] step {step}/{self.total} epoch {epoch} loss {loss:.4f} lr {lr:.2e} "
                f"{samples_s:.1f} samples/s {tokens_s:.0f} tokens/s eta {eta:.0f}s",
                flush=True,
            )
            self.window_started = now
        self.samples = self.tokens = 0

    def timing(self) -> dict[str, Any]:
        """What the run summary reports: the start-up stages, time to the first optimizer step, and the
        end time and rows (all workers) of the first `TIMED_STEPS` steps."""
        return {
            "first_step_s": self.stages.get("first_step"),
            "stages_s": dict(self.stages),
            "step_ends_s": list(self.step_ends),
            "step_rows": list(self.step_rows),
        }

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in ("step", "epoch"))
        print(f"[rayformers] eval at step {step}: {shown}", flush=True)
        scalars = {f"eval/{k}": v for k, v in metrics.items() if k not in ("step", "epoch")}
        if self.tracker is not None:
            self.tracker.log(step, scalars)
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()
            self._sync()

    def _sync(self) -> None:
        if self.upload is not None and self.writer is not None:
            self.upload.upload(self.writer.logdir)

    def close(self, failed: bool = False) -> None:
        """Close the event files and end the MLflow run (as failed, when training raised)."""
        if self.tracker is not None:
            self.tracker.close("FAILED" if failed else "FINISHED")
            self.tracker = None
        if self.writer is not None:
            self.writer.close()
            self._sync()
