"""Run history (issue 13): `rayformers runs list/show` read what training leaves in storage."""

from __future__ import annotations

import json

import pytest

from rayformers.training.runs import RunNotFoundError, list_runs, show_run


def _finished(root, name, finished_at, value):
    run = root / name
    (run / "checkpoint_000020").mkdir(parents=True)
    (run / "checkpoint_000020" / "rayformers.json").write_text("{}")
    (run / "summary.json").write_text(
        json.dumps(
            {
                "config": {
                    "model": {"task": "text-classification", "name": "bert-base-uncased", "method": "lora"}
                },
                "metric": "accuracy",
                "mode": "max",
                "best_checkpoint": str(run / "checkpoint_000020"),
                "best_metrics": {"accuracy": value, "loss": 0.3},
                "history": [{"step": 20, "accuracy": value}],
                "started_at": finished_at - 90.5,
                "finished_at": finished_at,
            }
        )
    )


def test_finished_runs_newest_first_then_incomplete_ones(tmp_path):
    _finished(tmp_path, "older", 1_000.0, 0.81)
    _finished(tmp_path, "newer", 2_000.0, 0.93)
    (tmp_path / "stopped" / "checkpoint_000010").mkdir(parents=True)  # no summary: still going, or stopped
    (tmp_path / "stopped" / "checkpoint_000010" / "rayformers.json").write_text("{}")
    (tmp_path / "stopped" / "checkpoint_000020").mkdir()  # cut off: no manifest, not counted
    (tmp_path / "tokenized-only" / "tokenized").mkdir(parents=True)  # never reached a checkpoint
    runs = list_runs(str(tmp_path))
    assert [r.name for r in runs] == ["newer", "older", "stopped"]
    newer = runs[0]
    assert (newer.status, newer.task, newer.model, newer.method) == (
        "finished",
        "text-classification",
        "bert-base-uncased",
        "lora",
    )
    assert (newer.metric, newer.best_value, newer.duration_s, newer.checkpoints) == (
        "accuracy",
        0.93,
        90.5,
        1,
    )
    assert newer.best_checkpoint.endswith("newer/checkpoint_000020")
    assert runs[2].status == "incomplete" and runs[2].checkpoints == 1 and runs[2].best_value is None


def test_show_gives_the_summary_and_an_unknown_name_lists_the_known_ones(tmp_path):
    _finished(tmp_path, "demo", 1_000.0, 0.9)
    shown = show_run(str(tmp_path), "demo")
    assert shown["status"] == "finished" and shown["summary"]["history"] == [{"step": 20, "accuracy": 0.9}]
    with pytest.raises(RunNotFoundError, match=r"'nope'.*runs there: demo"):
        show_run(str(tmp_path), "nope")
    with pytest.raises(RunNotFoundError, match="no such directory"):
        list_runs(str(tmp_path / "missing"))
