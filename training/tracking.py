"""MLflow tracking of a training run, when `train.tracking.mlflow` names a tracking URI.

Rank 0 logs, into one MLflow run per rayformers run: the run's parameters once, the training scalars
at the progress interval (`train/loss`, `train/learning_rate`, `train/samples_per_s`, `train/tokens_per_s`)
and each evaluation's metrics (`eval/<name>`, as TensorBoard has them), by optimizer step. The run's id
travels in the training state, so a resumed run (or a worker group Ray Train restarted) goes on logging
into the same MLflow run. The driver adds the best checkpoint once the run has picked it (`record_outcome`).

What happens when the store is not there:
- at the start, `check_tracking` fails the run before any model loads, naming `train.tracking.mlflow`:
  MLflow not installed, or the store unreachable (a run asked to be tracked must not run untracked);
- during the run, a failed write is logged once and the run trains on; the metrics wait in a bounded
  buffer and go out with the next write that succeeds, tried again at most every `RETRY_S`. TensorBoard
  and `summary.json` keep every metric either way. HTTP requests time out after `HTTP_TIMEOUT_S` with
  `HTTP_RETRIES` retries (MLflow's own defaults, 120 s and 7 retries, would stall a step for minutes),
  unless the environment sets MLFLOW_HTTP_REQUEST_TIMEOUT / MLFLOW_HTTP_REQUEST_MAX_RETRIES itself.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from rayformers.config import RunConfig, TrackingConfig
from rayformers.errors import UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "HTTP_RETRIES",
    "HTTP_TIMEOUT_S",
    "RETRY_S",
    "RUN_DIR_TAG",
    "MlflowTracker",
    "TrackingError",
    "check_tracking",
    "record_outcome",
    "run_params",
]

logger = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 10
HTTP_RETRIES = 2
RETRY_S = 30.0
"""Least time between two attempts to write to a store that failed."""
BUFFERED = 10_000
"""Metric points kept for a store that is down; older ones are dropped past this."""
RUN_DIR_TAG = "rayformers.run_dir"
BEST_TAG = "rayformers.best_checkpoint"
INSTALL = "pip install 'rayformers[mlflow]'"


class TrackingError(UserError):
    """MLflow tracking cannot start: not installed, or the store cannot be reached."""


def _client(uri: str) -> MlflowClient:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(
            f"train.tracking.mlflow: {uri!r} asks for MLflow tracking, but MLflow is not installed here; "
            f"install it with `{INSTALL}` (on every node), or remove train.tracking.mlflow"
        ) from None
    _prepare_environment(uri)
    return MlflowClient(tracking_uri=uri)


def _prepare_environment(uri: str) -> None:
    if uri.lower().startswith("file:"):
        # MLflow 3 refuses its filesystem store unless this is set: the user named that store
        # explicitly, so the opt-in is theirs, given for them (in this process only).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))


def _experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TrackingError(
                f"train.tracking.experiment: MLflow experiment {name!r} is deleted; restore it "
                "(`mlflow experiments restore`) or name another experiment"
            )
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:  # another run created it meanwhile
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def check_tracking(tracking: TrackingConfig, run_name: str) -> None:
    """Fail now, naming the field, if `tracking` asks for MLflow and MLflow is missing or its store
    cannot be reached (the experiment is also created here). No MLflow asked: nothing to check."""
    if tracking.mlflow is None:
        return
    client = _client(tracking.mlflow)
    try:
        _experiment_id(client, tracking.experiment or run_name)
    except TrackingError:
        raise
    except Exception as err:
        raise TrackingError(
            f"train.tracking.mlflow: cannot use the MLflow tracking store at {tracking.mlflow!r} "
            f"({_short(err)}); start the tracking server or fix the URI, or remove train.tracking.mlflow "
            "to train without MLflow"
        ) from None


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def run_params(run: RunConfig, total_steps: int, world: int) -> dict[str, str]:
    """What the MLflow run records as parameters: what a comparison of runs asks first."""
    model, train = run.model, run.train
    params: dict[str, Any] = {
        "task": model.task,
        "model": model.name or (model.from_scratch.architecture if model.from_scratch else None),
        "method": model.method,
        "learning_rate": train.learning_rate,
        "batch_size": train.batch_size,
        "effective_batch_size": train.batch_size * world * train.gradient_accumulation_steps,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "epochs": train.epochs,
        "max_steps": train.max_steps,
        "total_steps": total_steps,
        "num_workers": world,
        "scheduler": train.scheduler,
        "warmup_ratio": train.warmup_ratio,
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "mixed_precision": train.mixed_precision,
        "seed": train.seed,
        "max_length": run.data.max_length,
        "metric": train.metric,
    }
    if model.method == "lora":
        params.update(lora_r=model.lora.r, lora_alpha=model.lora.alpha, lora_dropout=model.lora.dropout)
    return {k: str(v) for k, v in params.items() if v is not None}


class MlflowTracker:
    """Rank 0's MLflow run. `log` never raises: a store that fails is retried later (see the module)."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self._pending: list[Any] = []
        self._failed_at: float | None = None
        self._warned = False

    @classmethod
    def open(
        cls,
        run: RunConfig,
        run_dir: str,
        params: dict[str, str],
        resume_id: str | None = None,
    ) -> MlflowTracker | None:
        """The run's MLflow run: `resume_id`'s again when that run still exists, else a new one with
        `params`. None when the config asks for no MLflow. Raises `TrackingError` when the store is
        unusable (as `check_tracking` does)."""
        tracking = run.train.tracking
        if tracking.mlflow is None:
            return None
        client = _client(tracking.mlflow)
        try:
            if resume_id is not None and _exists(client, resume_id):
                client.update_run(resume_id, status="RUNNING")
                return cls(client, resume_id)
            experiment = _experiment_id(client, tracking.experiment or run.run_name)
            tags = {
                **tracking.tags,
                RUN_DIR_TAG: run_dir,
                "rayformers.run_name": run.run_name,
                "rayformers.task": run.model.task,
            }
            created = client.create_run(experiment, tags=tags, run_name=tracking.run_name or run.run_name)
            tracker = cls(client, created.info.run_id)
            from mlflow.entities import Param

            client.log_batch(tracker.run_id, params=[Param(k, v) for k, v in params.items()])
            return tracker
        except TrackingError:
            raise
        except Exception as err:
            raise TrackingError(
                f"train.tracking.mlflow: cannot start an MLflow run at {tracking.mlflow!r} ({_short(err)}); "
                "start the tracking server or fix the URI, or remove train.tracking.mlflow"
            ) from None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Metrics at optimizer step `step` (buffered while the store is down)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        del self._pending[:-BUFFERED]
        self.flush()

    def flush(self, force: bool = False) -> bool:
        """Send what waits; True when nothing is left. A store that failed is tried again only
        `RETRY_S` later (or when `force`d, at the end of the run)."""
        if not self._pending:
            return True
        if not force and self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_S:
            return False
        try:
            for start in range(0, len(self._pending), 1000):  # MLflow takes at most 1000 metrics a batch
                self.client.log_batch(self.run_id, metrics=self._pending[start : start + 1000])
        except Exception as err:
            self._failed_at = time.monotonic()
            if not self._warned:
                self._warned = True
                logger.warning(
                    "[rayformers] MLflow logging failed (%s); training goes on, metrics are kept and sent "
                    "again every %g s (TensorBoard and summary.json have them all)",
                    _short(err),
                    RETRY_S,
                )
            return False
        if self._failed_at is not None:
            logger.warning("[rayformers] MLflow logging works again; the metrics it missed are sent")
        self._pending.clear()
        self._failed_at = None
        return True

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run (`FINISHED`, or `FAILED` when training raised); never raises."""
        sent = self.flush(force=True)
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as err:
            logger.warning("[rayformers] could not end the MLflow run %s: %s", self.run_id, _short(err))
            return
        if not sent:
            logger.warning("[rayformers] %d MLflow metric points were never sent", len(self._pending))


def _exists(client: MlflowClient, run_id: str) -> bool:
    try:
        found = client.get_run(run_id)
    except Exception:  # deleted for good, or another store
        return False
    return str(found.info.lifecycle_stage) != "deleted"


def record_outcome(run: RunConfig, run_dir: str, best_checkpoint: str, best_metrics: dict[str, Any]) -> None:
    """On the driver, after the run: tag its MLflow run with the best checkpoint and log that
    checkpoint's metrics as `best/<name>`. Never raises (the checkpoints are what matters by then)."""
    tracking = run.train.tracking
    if tracking.mlflow is None:
        return
    try:
        client = _client(tracking.mlflow)
        found = client.get_experiment_by_name(tracking.experiment or run.run_name)
        if found is None:
            return
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{RUN_DIR_TAG}` = '{run_dir}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            return
        run_id = runs[0].info.run_id
        client.set_tag(run_id, BEST_TAG, best_checkpoint)
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(best_metrics.get("step", 0))
        best = [
            Metric(f"best/{k}", float(v), now, step)
            for k, v in best_metrics.items()
            if k not in ("step", "epoch") and isinstance(v, (int, float))
        ]
        if best:
            client.log_batch(run_id, metrics=best)
    except Exception as err:
        logger.warning("[rayformers] could not record the best checkpoint in MLflow: %s", _short(err))
