"""MLflow tracking without Ray: a tiny run logged through `Progress` into a local file store is read back
with MLflow's own client; a resumed run logs into the same MLflow run; a store that is missing fails at
the start naming the field, and one that fails mid-run never stops training."""

from __future__ import annotations

import socket
import sys
from typing import Any

import pytest

from rayformers.config import RunConfig
from rayformers.loading import validate_mapping
from rayformers.training import tracking
from rayformers.training.progress import Progress
from rayformers.training.tracking import (
    BEST_TAG,
    RUN_DIR_TAG,
    MlflowTracker,
    TrackingError,
    check_tracking,
    record_outcome,
    run_params,
)

MINIMAL = {
    "data": {"train": {"path": "train.jsonl"}},
    "model": {"task": "text-classification", "name": "distilbert-base-uncased"},
}


@pytest.fixture(autouse=True)
def _own_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the tracker sets in the environment is undone after each test."""
    for name in ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)


def config(uri: str | None, **tracking_options: Any) -> RunConfig:
    train = {"name": "tiny", "learning_rate": 3e-4, "batch_size": 4, "epochs": 2, "tracking": {"mlflow": uri}}
    train["tracking"].update(tracking_options)
    return validate_mapping({**MINIMAL, "train": train})


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def history(store: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in store.get_metric_history(run_id, key)]


def test_a_tiny_run_logged_through_progress_reads_back_from_a_local_store(tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    run = config(uri, tags={"team": "search"})
    check_tracking(run.train.tracking, run.run_name)
    progress = Progress(True, 4, 2, str(tmp_path / "runs"), run.run_name)
    tracker = MlflowTracker.open(run, "/runs/tiny", run_params(run, total_steps=4, world=2))
    assert tracker is not None
    progress.tracker = tracker
    losses = [0.9, 0.7, 0.6, 0.4]
    for step, loss in enumerate(losses, start=1):
        progress.step(step, 0, loss, 1e-4 * step, samples=8, tokens=64)
        if step % 2 == 0:
            progress.metrics(step, {"step": float(step), "epoch": 1.0, "accuracy": 0.5 + step / 10})
    progress.close()

    store = client(uri)
    found = store.get_run(tracker.run_id)
    assert found.info.status == "FINISHED"
    assert found.info.run_name == "tiny"
    assert found.data.tags[RUN_DIR_TAG] == "/runs/tiny"
    assert found.data.tags["team"] == "search"
    params = found.data.params
    assert params["task"] == "text-classification" and params["model"] == "distilbert-base-uncased"
    assert params["method"] == "full" and params["learning_rate"] == "0.0003"
    assert params["batch_size"] == "4" and params["epochs"] == "2" and params["effective_batch_size"] == "8"
    assert history(store, tracker.run_id, "train/loss") == [(2, 0.7), (4, 0.4)]  # every 2nd step
    assert history(store, tracker.run_id, "train/learning_rate") == [(2, 2e-4), (4, 4e-4)]
    assert [step for step, _ in history(store, tracker.run_id, "train/samples_per_s")] == [2, 4]
    assert all(value > 0 for _, value in history(store, tracker.run_id, "train/tokens_per_s"))
    assert history(store, tracker.run_id, "eval/accuracy") == [(2, 0.7), (4, 0.9)]
    assert "eval/step" not in found.data.metrics
    experiment = store.get_experiment(found.info.experiment_id)
    assert experiment.name == "tiny"  # the run's name, unless train.tracking.experiment names one


def test_a_resumed_run_logs_on_into_the_same_mlflow_run_and_the_driver_tags_the_best(tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    run = config(uri, experiment="sentiment", run_name="first try")
    first = MlflowTracker.open(run, "/runs/tiny", {"task": "text-classification"})
    assert first is not None
    first.log(1, {"train/loss": 1.0})
    first.close("FAILED")  # a worker died
    again = MlflowTracker.open(run, "/runs/tiny", {"task": "text-classification"}, resume_id=first.run_id)
    assert again is not None and again.run_id == first.run_id
    again.log(2, {"train/loss": 0.5})
    again.close()
    record_outcome(
        run, "/runs/tiny", "/runs/tiny/checkpoint_000002", {"step": 2, "epoch": 1, "accuracy": 0.8}
    )

    store = client(uri)
    found = store.get_run(first.run_id)
    assert found.info.status == "FINISHED" and found.info.run_name == "first try"
    assert history(store, first.run_id, "train/loss") == [(1, 1.0), (2, 0.5)]
    assert found.data.tags[BEST_TAG] == "/runs/tiny/checkpoint_000002"
    assert history(store, first.run_id, "best/accuracy") == [(2, 0.8)]
    assert store.get_experiment(found.info.experiment_id).name == "sentiment"
    # A resume id the store does not know (another store, a deleted run) starts a new run.
    fresh = MlflowTracker.open(run, "/runs/tiny", {}, resume_id="0" * 32)
    assert fresh is not None and fresh.run_id != first.run_id


def test_no_tracking_asked_is_no_tracker_and_nothing_to_check():
    run = config(None)
    check_tracking(run.train.tracking, run.run_name)
    assert MlflowTracker.open(run, "/runs/tiny", {}) is None
    record_outcome(run, "/runs/tiny", "/runs/tiny/checkpoint_000001", {})


def test_mlflow_missing_fails_at_the_start_naming_the_field_and_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    run = config(f"file:{tmp_path}")
    with pytest.raises(TrackingError) as err:
        check_tracking(run.train.tracking, run.run_name)
    assert "train.tracking.mlflow" in str(err.value)
    assert "pip install 'rayformers[mlflow]'" in str(err.value)


def test_a_tracking_server_that_is_down_fails_at_the_start_within_seconds(monkeypatch):
    import time

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    run = config(f"http://127.0.0.1:{port}")
    began = time.monotonic()
    with pytest.raises(TrackingError) as err:
        check_tracking(run.train.tracking, run.run_name)
    assert time.monotonic() - began < 30
    message = str(err.value)
    assert message.startswith("train.tracking.mlflow: cannot use the MLflow tracking store")
    assert f"127.0.0.1:{port}" in message and "remove train.tracking.mlflow" in message


def test_the_file_store_opt_in_is_given_only_for_a_file_uri_and_an_operators_own_settings_stay(
    monkeypatch, tmp_path
):
    import os

    run = config("http://127.0.0.1:1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")
    tracking._prepare_environment(run.train.tracking.mlflow or "")
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(tracking.HTTP_RETRIES)
    tracking._prepare_environment(f"file:{tmp_path}")
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"


class FlakyClient:
    """A store that is down until `up` is set."""

    def __init__(self) -> None:
        self.up = False
        self.sent: list[Any] = []
        self.ended: str | None = None

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = ()) -> None:
        if not self.up:
            raise ConnectionError("connection refused")
        self.sent.extend(metrics)

    def set_terminated(self, run_id: str, status: str | None = None) -> None:
        self.ended = status


def test_a_store_that_fails_mid_run_is_warned_about_once_and_gets_the_metrics_when_back(monkeypatch):
    monkeypatch.setattr(tracking, "RETRY_S", 0.0)
    warned: list[str] = []
    monkeypatch.setattr(tracking.logger, "warning", lambda message, *args, **_: warned.append(message % args))
    store = FlakyClient()
    tracker = MlflowTracker(store, "run-1")  # type: ignore[arg-type]
    for step in range(1, 4):
        tracker.log(step, {"train/loss": 1.0 / step})  # never raises
    store.up = True
    tracker.log(4, {"train/loss": 0.2})
    tracker.close()
    assert [(m.step, m.key) for m in store.sent] == [(s, "train/loss") for s in range(1, 5)]
    assert store.ended == "FINISHED"
    assert sum("MLflow logging failed" in w for w in warned) == 1
    assert sum("works again" in w for w in warned) == 1


def test_a_store_down_is_not_asked_again_before_the_retry_delay(monkeypatch):
    monkeypatch.setattr(tracking, "RETRY_S", 3600.0)
    store = FlakyClient()
    calls = []
    real = store.log_batch
    store.log_batch = lambda *a, **k: (calls.append(1), real(*a, **k))  # type: ignore[method-assign]
    tracker = MlflowTracker(store, "run-1")  # type: ignore[arg-type]
    for step in range(1, 50):
        tracker.log(step, {"train/loss": 1.0})
    assert len(calls) == 1  # one failed attempt; the steps after it do not wait on the store
    store.up = True
    tracker.close()  # the end of the run tries once more
    assert len(store.sent) == 49


def test_params_name_the_model_method_and_schedule_and_lora_adds_its_rank():
    run = validate_mapping(
        {**MINIMAL, "model": {**MINIMAL["model"], "method": "lora", "lora": {"r": 4}}, "train": {"epochs": 1}}
    )
    params = run_params(run, total_steps=10, world=2)
    assert params["method"] == "lora" and params["lora_r"] == "4" and params["total_steps"] == "10"
    assert "max_steps" not in params  # unset values are left out, not logged as "None"
