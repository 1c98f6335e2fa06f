"""Fault tolerance: a killed worker and a stopped-then-rerun job both continue from the latest
checkpoint instead of starting over, and finish at the configured step; a cut-off checkpoint upload
in the run's storage is never resumed (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from rayformers.loading import load_config
from rayformers.training.checkpoint import RAY_SNAPSHOT
from rayformers.training.trainer import run_training

pytestmark = pytest.mark.usefixtures("ray_cluster")
REPO = Path(__file__).resolve().parents[2]


def config(storage, name, max_steps, *extra):
    return load_config(
        REPO / "configs/text-classification/full.yaml",
        [f"train.storage_path={storage}", f"train.name={name}", f"train.max_steps={max_steps}",
         "train.eval_every_steps=10", "train.keep_checkpoints=1", *extra],
    )  # fmt: skip


def summary_of(result):
    return json.loads(Path(result.summary_path).read_text())


def _kill_one_worker_after_first_checkpoint(run_dir: Path, killed: list[int]) -> None:
    import psutil

    deadline = time.monotonic() + 240
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    # A checkpoint counts once Ray Train has registered it, not when its directory first appears.
    while time.monotonic() < deadline and not (snapshot.exists() and "checkpoint_" in snapshot.read_text()):
        time.sleep(0.2)
    # Ray names each actor's process after its class (the state API needs the dashboard, off here).
    for process in psutil.process_iter(["pid", "cmdline"]):
        if "ray::RayTrainWorker" in " ".join(process.info["cmdline"] or []):
            os.kill(process.info["pid"], signal.SIGKILL)
            killed.append(process.info["pid"])
            return


def test_a_killed_worker_resumes_and_a_rerun_with_the_same_name_continues(tmp_path):
    killed: list[int] = []
    killer = threading.Thread(
        target=_kill_one_worker_after_first_checkpoint, args=(tmp_path / "killed", killed), daemon=True
    )
    killer.start()
    result = run_training(config(tmp_path, "killed", 60, "train.max_failures=2"))
    killer.join(timeout=5)
    assert killed, "no training worker was found to kill"
    summary = summary_of(result)
    assert summary["resumed_from"] and summary["resumed_from"][0] >= 10
    assert summary["history"][-1]["step"] == 60

    # Every checkpoint left in storage is whole (its manifest is copied last), and none is left under
    # the hidden name a checkpoint is copied to before its rename.
    run = tmp_path / "killed"
    assert not list(run.glob(".*.partial")), sorted(p.name for p in run.iterdir())
    kept = sorted(run.glob("checkpoint_0*"))
    assert kept and all(
        (c / "rayformers.json").is_file() and (c / "model.safetensors").is_file() for c in kept
    )

    # An upload cut off (say the node died) after the run: a later name holding the manifest, as Ray's own
    # copy (in no order) could leave it, and part of the weights. Ray never registered it.
    cut = run / "checkpoint_999999"
    cut.mkdir()
    (cut / "rayformers.json").write_text((kept[-1] / "rayformers.json").read_text())
    (cut / "model.safetensors").write_bytes((kept[-1] / "model.safetensors").read_bytes()[:100])

    # The run finished. Started again under the same name with more steps, it continues from step 60
    # (model, optimizer, scheduler and history from that checkpoint) rather than starting over, and
    # never from the cut-off directory.
    again = summary_of(run_training(config(tmp_path, "killed", 70)))
    assert again["resumed_from"] == [*summary["resumed_from"], 60]
    assert [h["step"] for h in again["history"]] == [*[h["step"] for h in summary["history"]], 70]
    assert (
        again["best_checkpoint"] != str(cut) and "checkpoint_999999" not in (run / RAY_SNAPSHOT).read_text()
    )
