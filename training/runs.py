"""Run history: the runs under a storage path, read from what training leaves there (`rayformers runs`).

A finished run has its `summary.json` (config, best checkpoint and metrics, history, start and end).
A run without one is `incomplete`: it is still training, or it stopped; its complete checkpoints (those
with their manifest, which is copied last) are counted, and a later run under the same name resumes
from the latest one Ray Train recorded. Nothing here needs Ray.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pyarrow.fs as pafs

from rayformers.data.storage import Location
from rayformers.errors import UserError
from rayformers.tasks.checkpoint import MANIFEST, RUN_SUMMARY
from rayformers.training.checkpoint import RAY_SNAPSHOT

__all__ = ["RunNotFoundError", "RunRecord", "list_runs", "show_run"]


class RunNotFoundError(UserError):
    """No run of that name under the storage path."""


@dataclass(frozen=True)
class RunRecord:
    """One run as `rayformers runs list` shows it."""

    name: str
    status: Literal["finished", "incomplete"]
    task: str | None
    model: str | None
    method: str | None
    metric: str | None
    best_value: float | None
    best_checkpoint: str | None
    duration_s: float | None
    finished_at: float | None
    checkpoints: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_runs(storage: str) -> list[RunRecord]:
    """Every run under `storage` (a local path or a cloud URI), finished ones newest first, then the
    incomplete ones by name."""
    root = Location.parse(storage)
    if not root.exists():
        raise RunNotFoundError(f"--storage {storage!r}: no such directory; give a train.storage_path")
    records = [
        record
        for info in root.fs.get_file_info(pafs.FileSelector(root.path, recursive=False))
        if info.type == pafs.FileType.Directory and not info.base_name.startswith(".")
        for record in [_record(root.at(info.path), info.base_name)]
        if record is not None
    ]
    finished = sorted((r for r in records if r.status == "finished"), key=lambda r: -(r.finished_at or 0))
    return finished + sorted((r for r in records if r.status != "finished"), key=lambda r: r.name)


def show_run(storage: str, name: str) -> dict[str, Any]:
    """One run in full: its record, and for a finished one its summary (config, metrics, history)."""
    run = Location.parse(storage) / name
    record = _record(run, name)
    if record is None:
        known = ", ".join(r.name for r in list_runs(storage)) or "none"
        raise RunNotFoundError(f"no run named {name!r} under {storage}; runs there: {known}")
    summary = _summary(run)
    return {**record.as_dict(), **({"summary": summary} if summary is not None else {})}


def _record(run: Location, name: str) -> RunRecord | None:
    summary = _summary(run)
    folders = _checkpoint_folders(run)
    if summary is None and not folders and not (run / RAY_SNAPSHOT).exists():
        return None  # not a run directory (or one that never got as far as a checkpoint)
    checkpoints = [f for f in folders if (run / f / MANIFEST).exists()]  # a cut-off copy has no manifest
    if summary is None:
        return RunRecord(name, "incomplete", None, None, None, None, None, None, None, None, len(checkpoints))
    config = summary.get("config", {})
    model = config.get("model", {})
    metric = summary.get("metric")
    best = summary.get("best_metrics", {}).get(metric) if metric else None
    started, ended = summary.get("started_at"), summary.get("finished_at")
    timed = isinstance(started, (int, float)) and isinstance(ended, (int, float))
    scratch = model.get("from_scratch") or {}
    return RunRecord(
        name=name,
        status="finished",
        task=model.get("task"),
        model=model.get("name") or (f"{scratch.get('architecture')} (from scratch)" if scratch else None),
        method=model.get("method"),
        metric=metric,
        best_value=float(best) if isinstance(best, (int, float)) else None,
        best_checkpoint=summary.get("best_checkpoint"),
        duration_s=ended - started if timed else None,
        finished_at=ended if timed else None,
        checkpoints=len(checkpoints),
    )


def _summary(run: Location) -> dict[str, Any] | None:
    try:
        found = json.loads((run / RUN_SUMMARY).read_text())
    except (FileNotFoundError, ValueError):  # none yet, or one a reader caught mid-write on old storage
        return None
    return found if isinstance(found, dict) else None


def _checkpoint_folders(run: Location) -> list[str]:
    try:
        listed = run.fs.get_file_info(pafs.FileSelector(run.path, recursive=False))
    except (FileNotFoundError, OSError):
        return []
    return sorted(
        posixpath.basename(i.path)
        for i in listed
        if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")
    )
