"""Progress on rank 0: TensorBoard events of each run attempt in a folder of their own, the loss read
from the device only on the steps that log, and the timing a run summary reports."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from rayformers.data.storage import Location
from rayformers.training.progress import Progress, events_folder


class CountedLoss:
    """A loss that counts how often it is read on the host (what `.item()` on a tensor would cost)."""

    def __init__(self) -> None:
        self.reads = 0

    def __float__(self) -> float:
        self.reads += 1
        return 0.5


def _event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*"))


def test_two_runs_under_one_name_write_events_to_two_folders(tmp_path):
    # An unnamed run is named `<task>-<method>`: the second run of the same config must not append its
    # curve to the first one's events folder, or TensorBoard draws both as one run.
    for _ in range(2):
        progress = Progress(True, 2, 1, str(tmp_path), "text-classification-full")
        progress.step(1, 0, 0.7, 1e-3, 32, 640)
        progress.step(2, 0, 0.6, 1e-3, 32, 640)
        progress.close()
    root = tmp_path / "text-classification-full" / "tensorboard"
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(runs) == 2
    assert all(len(_event_files(run)) == 1 for run in runs)
    assert not list(root.glob("events.out.tfevents.*"))  # nothing left at the shared top


def test_events_folder_is_named_by_the_attempt_time(tmp_path):
    when = datetime(2026, 12, 1, 16, 5, 9, 123456, tzinfo=timezone.utc)
    folder = events_folder(Location.parse(str(tmp_path)) / "run", when)
    assert Path(folder.path) == tmp_path / "run" / "tensorboard" / "20261201-160509-123456"


def test_the_loss_is_read_only_on_the_steps_that_log(tmp_path, capsys):
    progress = Progress(True, 10, 5, str(tmp_path), "run")
    losses = [CountedLoss() for _ in range(10)]
    for step, loss in enumerate(losses, start=1):
        progress.step(step, 0, loss, 1e-3, 32, 640)
    progress.close()
    assert [loss.reads for loss in losses] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    lines = [line for line in capsys.readouterr().out.splitlines() if "] step " in line]
    assert [line.split()[2] for line in lines] == ["5/10", "10/10"]


def test_timing_counts_from_the_launch(tmp_path, capsys):
    progress = Progress(True, 3, 10, str(tmp_path), "run", launched_at=1000.0)
    clock = iter([1004.0, 1010.0, 1011.0, 1012.0, 1013.0])
    progress.since_launch = lambda: next(clock) - 1000.0  # type: ignore[method-assign]
    progress.stage("workers_started")
    for step in (1, 2, 3):
        progress.step(step, 0, 0.5, 1e-3, 32 * step, 100)
    progress.close()
    timing = progress.timing()
    assert timing["first_step_s"] == 10.0
    assert timing["stages_s"] == {"workers_started": 4.0, "first_step": 10.0}
    assert timing["step_ends_s"] == [10.0, 11.0, 12.0] and timing["step_rows"] == [32, 64, 96]
    assert "first optimizer step 10.0 s after `rayformers train` started (workers_started 4.0 s)" in (
        capsys.readouterr().out
    )


def test_other_ranks_keep_quiet_and_write_no_events(tmp_path, capsys):
    progress = Progress(False, 2, 1, str(tmp_path), "run")
    progress.step(1, 0, 0.5, 1e-3, 32, 640)
    progress.close()
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "run").exists()
