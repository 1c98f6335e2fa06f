"""Checkpoints in a run's storage (issue 12): a cut-off upload never passes for a checkpoint, and a run
resumes only from one Ray Train registered whole, or fails naming what is damaged and the fix.

Without Ray: Ray Train's own `StorageContext` copies the files and its own `CheckpointManager` writes and
reads the snapshot, exactly as the controller does; only the copy is cut off, by a full disk."""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from rayformers.data.storage import Location
from rayformers.loading import load_config
from rayformers.tasks.checkpoint import MANIFEST, TRAINING_STATE
from rayformers.training.checkpoint import ResumeError

REPO = Path(__file__).resolve().parents[3]


def ray_storage(storage: Location, name: str = "run") -> Any:
    """Ray Train's storage context of run `name` under `storage`, as the trainer configures it."""
    from ray.train.v2._internal.execution.storage import StorageContext

    return StorageContext(storage_path=storage.path, experiment_dir_name=name, storage_filesystem=storage.fs)


def register(storage: Any, *names: str) -> None:
    """What the controller does once an upload returned: Ray's checkpoint manager registers each
    checkpoint and writes its snapshot."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager
    from ray.train.v2._internal.execution.training_report import _TrainingReport

    async def run() -> None:
        manager = CheckpointManager(CheckpointConfig(), storage)
        for step, name in enumerate(names, 1):
            checkpoint = Checkpoint(
                path=storage.build_checkpoint_path_from_name(name), filesystem=storage.storage_filesystem
            )
            manager.register_checkpoint(
                _TrainingReport(checkpoint=checkpoint, metrics={"step": step}, validation=False)
            )

    asyncio.run(run())


def ray_resumes_from(storage: Any) -> str:
    """The checkpoint Ray hands `ray.train.get_checkpoint()` in a run started on this storage."""
    from ray.train import CheckpointConfig
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager

    latest = CheckpointManager(CheckpointConfig(), storage).latest_checkpoint_result
    return str(latest.checkpoint.path)


def files(fs: pafs.FileSystem, root: str) -> dict[str, bytes]:
    """Every file under `root`, by its path relative to it."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    found = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as stream:
                found[info.path[len(root) + 1 :]] = bytes(stream.read())
    return found


@pytest.fixture
def written(tiny_checkpoint: Callable[..., Path], tmp_path: Path) -> Path:
    """A LoRA checkpoint (its base in `base_model/`) as the loop writes it, in a local temporary folder."""
    return Path(shutil.copytree(tiny_checkpoint("text-classification", method="lora"), tmp_path / "local"))


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    """A run's storage: a local directory, or a bucket on the local S3 server."""
    if request.param == "local":
        return Location.parse(tmp_path / "runs")
    return Location.parse(request.getfixturevalue("s3_uri")("runs"))


def full_disk_after(monkeypatch: pytest.MonkeyPatch, count: int) -> list[str]:
    """Make storage fill up once `count` files were copied; the manifest, when it is among the files a
    copy is given, goes first (pyarrow copies in no promised order, in parallel). Returns what was copied."""
    real = pafs.copy_files
    copied: list[str] = []

    def copy_files(source: str, destination: str, source_filesystem: Any = None, **kwargs: Any) -> None:
        fs = source_filesystem or pafs.LocalFileSystem()
        selector = pafs.FileSelector(source, recursive=True)
        sources = [i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]
        for path in sorted(sources, key=lambda p: not p.endswith(MANIFEST)):
            if len(copied) == count:
                raise OSError(errno.ENOSPC, "No space left on device")
            target = destination + path[len(source) :]
            real(path, target, source_filesystem=fs, **kwargs)
            copied.append(path[len(source) + 1 :])

    monkeypatch.setattr(pafs, "copy_files", copy_files)
    return copied


def test_a_cut_off_upload_leaves_nothing_that_passes_for_a_checkpoint_and_a_retry_is_whole(
    storage: Location, written: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rayformers.training.checkpoint import CheckpointWriteError, publish_checkpoint

    ray = ray_storage(storage)
    run = storage / "run"
    final = run / "checkpoint_000020"
    expected = files(pafs.LocalFileSystem(), str(written))
    copied = full_disk_after(monkeypatch, 3)
    with pytest.raises(
        CheckpointWriteError,
        match=r"train.storage_path: checkpoint checkpoint_000020 could not be written .*No space left on "
        r"device.*free space there.*same train.name: it resumes from the last complete checkpoint",
    ):
        publish_checkpoint(ray, written, "checkpoint_000020")
    assert len(copied) == 3 and MANIFEST not in copied  # the manifest is never among the first files
    # Whatever a reader of the run finds under the name, it does not take it for a checkpoint.
    assert not (final / MANIFEST).exists()
    if storage.local:
        assert not final.exists()  # on local or NFS storage the name appears only whole
    assert files(pafs.LocalFileSystem(), str(written)) == expected  # the local checkpoint is intact

    monkeypatch.undo()
    published = publish_checkpoint(ray, written, "checkpoint_000020")  # Ray retries with the same arguments
    assert published.path == final.path and published.filesystem is ray.storage_filesystem
    assert files(storage.fs, final.path) == expected
    left = {i.base_name for i in storage.fs.get_file_info(pafs.FileSelector(run.path))}
    assert left == {"checkpoint_000020", ".validate_storage_marker"}  # no staging copy left behind


def test_a_leftover_under_the_name_is_replaced_not_merged(storage: Location, written: Path) -> None:
    from rayformers.training.checkpoint import publish_checkpoint

    ray = ray_storage(storage)
    final = storage / "run" / "checkpoint_000020"
    (final / "stale.bin").write_text("from a cut-off attempt")
    (final / MANIFEST).write_text("{}")
    publish_checkpoint(ray, written, "checkpoint_000020")
    assert files(storage.fs, final.path) == files(pafs.LocalFileSystem(), str(written))


def checkpoint_at(storage: Location, written: Path, name: str) -> Location:
    """A complete checkpoint `name` in run `run` (as `publish_checkpoint` leaves one)."""
    target = storage / "run" / name
    target.upload(written)
    return target


def test_a_run_resumes_from_the_last_registered_checkpoint_not_a_cut_off_upload(
    storage: Location, written: Path
) -> None:
    from rayformers.training.checkpoint import resume_point

    ray = ray_storage(storage)
    run = storage / "run"
    assert resume_point(run, "run") is None  # nothing registered yet: a fresh run
    complete = checkpoint_at(storage, written, "checkpoint_000010")
    register(ray, "checkpoint_000010")
    # A later upload cut off: its directory has the manifest and no weights (Ray's own copy has no order).
    (run / "checkpoint_999999" / MANIFEST).write_text((complete / MANIFEST).read_text())
    (run / "checkpoint_999999" / "tokenizer.json").write_text("{")
    assert resume_point(run, "run") == complete
    assert ray_resumes_from(ray) == complete.path  # what get_checkpoint() gives the workers: Ray's guarantee


def test_a_snapshot_naming_a_damaged_checkpoint_fails_naming_it_and_the_fix(
    tmp_path: Path, written: Path
) -> None:
    from rayformers.training.checkpoint import resume_point

    storage = Location.parse(tmp_path / "runs")
    ray = ray_storage(storage)
    run = storage / "run"
    for name in ("checkpoint_000010", "checkpoint_000020"):
        checkpoint_at(storage, written, name)
    register(ray, "checkpoint_000010", "checkpoint_000020")
    assert resume_point(run, "run") == run / "checkpoint_000020"

    # The run directory copied elsewhere, the copy cut off: Ray checks only that the directories exist,
    # and would hand the workers a checkpoint without its manifest.
    (Path(run.path) / "checkpoint_000020" / MANIFEST).unlink()
    assert ray_resumes_from(ray) == (run / "checkpoint_000020").path
    with pytest.raises(
        ResumeError,
        match=r"train.name: 'run' cannot resume: checkpoint .*/run/checkpoint_000020, which Ray Train "
        r"recorded as complete, has no rayformers.json .*restore that directory, or start afresh under a "
        r"new train.name, or delete .*/runs/run to reuse 'run'",
    ):
        resume_point(run, "run")
    (Path(run.path) / "checkpoint_000020" / MANIFEST).write_text(
        (run / "checkpoint_000010" / MANIFEST).read_text()
    )
    (Path(run.path) / "checkpoint_000020" / TRAINING_STATE).unlink()
    with pytest.raises(ResumeError, match=r"checkpoint_000020, .* has no training_state.pt"):
        resume_point(run, "run")
    # An older checkpoint the snapshot keeps (a best one) is checked too: the run would name it best.
    shutil.copy(Path(run.path) / "checkpoint_000010" / TRAINING_STATE, Path(run.path) / "checkpoint_000020")
    (Path(run.path) / "checkpoint_000010" / MANIFEST).unlink()
    with pytest.raises(ResumeError, match=r"checkpoint_000010, .* has no rayformers.json"):
        resume_point(run, "run")


def test_a_snapshot_cut_off_as_it_was_written_fails_naming_it(tmp_path: Path, written: Path) -> None:
    from rayformers.training.checkpoint import RAY_SNAPSHOT, resume_point

    storage = Location.parse(tmp_path / "runs")
    checkpoint_at(storage, written, "checkpoint_000010")
    register(ray_storage(storage), "checkpoint_000010")
    snapshot = Path(storage.path) / "run" / RAY_SNAPSHOT
    snapshot.write_text(snapshot.read_text()[:100])  # the disk filled up as Ray rewrote it
    with pytest.raises(
        ResumeError,
        match=r"train.name: 'run' cannot resume: Ray Train's record of its checkpoints, .*/run/"
        r"checkpoint_manager_snapshot.json, is unreadable \(JSONDecodeError.*free space and start afresh",
    ):
        resume_point(storage / "run", "run")


@pytest.mark.parametrize("damage", ["snapshot", "checkpoint"])
def test_a_damaged_run_fails_before_tokenizing_or_starting_workers(
    tmp_path: Path, written: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """Not once per worker restart, deep in a worker's traceback (Ray's own error for a cut-off snapshot
    is its controller's `JSONDecodeError`)."""
    import ray

    from rayformers.training import trainer

    cfg = load_config(
        REPO / "configs/text-classification/full.yaml",
        [f"train.storage_path={tmp_path}/runs", "train.name=run"],
    )
    storage = Location.parse(tmp_path / "runs")
    checkpoint_at(storage, written, "checkpoint_000010")
    register(ray_storage(storage), "checkpoint_000010")
    run = Path(storage.path) / "run"
    if damage == "snapshot":
        (run / "checkpoint_manager_snapshot.json").write_text('{"ray_version": "2.6')
    else:
        (run / "checkpoint_000010" / MANIFEST).unlink()

    def tokenize(*args: object) -> None:
        raise AssertionError("the run went on to tokenize")

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}])
    monkeypatch.setattr(trainer, "_tokenize_once", tokenize)
    with pytest.raises(ResumeError, match=r"train.name: 'run' cannot resume: .*(snapshot|checkpoint_000010)"):
        trainer._run(cfg)


def test_the_summary_and_the_best_link_are_replaced_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rayformers.training import trainer

    run = Location.parse(tmp_path / "run")
    for name in ("checkpoint_000010", "checkpoint_000020"):
        (tmp_path / "run" / name).mkdir(parents=True)
    trainer._link_best(run, str(tmp_path / "run" / "checkpoint_000010"))
    (tmp_path / "run" / "best.partial").symlink_to("gone")  # a relink that was cut off
    trainer._link_best(run, str(tmp_path / "run" / "checkpoint_000020"))
    assert (tmp_path / "run" / "best").resolve() == tmp_path / "run" / "checkpoint_000020"
    assert not (tmp_path / "run" / "best.partial").is_symlink()

    summary = run / "summary.json"
    trainer._write_whole(summary, json.dumps({"best_checkpoint": "checkpoint_000010"}))

    def full(self: Path, text: str, **kwargs: object) -> None:
        with open(self, "w") as handle:
            handle.write(text[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        trainer._write_whole(summary, json.dumps({"best_checkpoint": "checkpoint_000020"}))
    monkeypatch.undo()
    assert json.loads(summary.read_text()) == {"best_checkpoint": "checkpoint_000010"}
