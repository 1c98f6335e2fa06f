"""The driver side of `rayformers train`: check the cluster can hold the workers, tokenize once
into the run directory, run a Ray Train `TorchTrainer`, pick the best checkpoint and summarise."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.data
import ray.train
from ray.train.torch import TorchTrainer

from rayformers.config import RunConfig
from rayformers.data.collate import read_columns
from rayformers.data.pipeline import build_tokenized
from rayformers.data.rows import DataError
from rayformers.data.shards import MANIFEST, columns_of, read_manifest, write_tokenized
from rayformers.data.storage import Location, is_remote
from rayformers.errors import UserError
from rayformers.manifest import DataManifest
from rayformers.tasks import get_task
from rayformers.tasks.checkpoint import BEST, RUN_SUMMARY
from rayformers.training.checkpoint import resume_point
from rayformers.training.loop import LoopConfig, train_loop_per_worker
from rayformers.training.tracking import record_outcome

__all__ = [
    "ResourceError",
    "TrainResult",
    "check_resources",
    "check_storage",
    "run_training",
    "wait_for_free_resources",
    "writable_run_dir",
]


class ResourceError(UserError):
    """The cluster cannot hold the requested workers; the message says what it has."""


# How long a run waits for CPUs that something else holds before it gives up and says so.
WORKER_WAIT_S = float(os.environ.get("RAYFORMERS_WORKER_WAIT_S", "120"))
# How long a run on a joined cluster waits for its autoscaler to add the workers' nodes.
AUTOSCALE_WAIT_S = float(os.environ.get("RAYFORMERS_AUTOSCALE_WAIT_S", "900"))
# Worker groups that fail to start (resources taken after our check) are retried this often, not forever.
STARTUP_RETRIES = 3


@dataclass
class TrainResult:
    """Where the run's outputs are."""

    best_checkpoint: str
    best_metrics: dict[str, Any]
    summary_path: str


def check_resources(cfg: RunConfig, cluster: dict[str, float]) -> None:
    """Fail at once, saying what the cluster has, when the workers can never be scheduled."""
    train = cfg.train
    cpus, gpus = (
        train.num_workers * train.cpus_per_worker,
        train.num_workers * (train.gpus_per_worker if train.use_gpu else 0),
    )
    have_cpu, have_gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    problems = []
    if cpus > have_cpu:
        problems.append(
            f"{train.num_workers} workers x {train.cpus_per_worker:g} CPU = {cpus:g} CPUs, the cluster has {have_cpu:g}"
        )
    if gpus > have_gpu:
        problems.append(
            f"{train.num_workers} workers x {train.gpus_per_worker:g} GPU = {gpus:g} GPUs, the cluster has {have_gpu:g}"
        )
    if problems:
        raise ResourceError(
            "train: the cluster cannot hold the workers ("
            + "; ".join(problems)
            + "). Lower train.num_workers "
            "or train.cpus_per_worker / gpus_per_worker, set train.use_gpu: false, or add nodes"
        )


def wait_for_free_resources(cfg: RunConfig, timeout_s: float = WORKER_WAIT_S) -> None:
    """Wait (bounded) until the workers' CPUs and GPUs are free, then return; else raise a ResourceError
    that says what is held. Ray Train V2 itself retries a worker group that cannot start without limit,
    so a cluster whose CPUs something else holds (another job, a Serve replica, a leftover actor) would
    otherwise make the run wait forever without a word."""
    train = cfg.train
    wanted = {"CPU": train.num_workers * train.cpus_per_worker}
    if train.use_gpu:
        wanted["GPU"] = train.num_workers * train.gpus_per_worker
    deadline, said = time.monotonic() + timeout_s, False
    while True:
        free = ray.available_resources()
        short = {k: (v, free.get(k, 0.0)) for k, v in wanted.items() if free.get(k, 0.0) + 1e-9 < v}
        if not short:
            return
        if not said:
            # A Ray Data pipeline that failed earlier in this process keeps its actors (and their CPUs)
            # until the exception's frames are collected: collect them before waiting on anyone else.
            gc.collect()
        if time.monotonic() >= deadline:
            held = "; ".join(f"{k}: {need:g} needed, {have:g} free" for k, (need, have) in short.items())
            raise ResourceError(
                f"train: the workers' resources stayed taken for {timeout_s:g} s ({held}; the cluster has "
                f"{ray.cluster_resources().get('CPU', 0):g} CPUs in all). Something else holds them (another run, "
                "a Serve application, `ray status` shows what): stop it, or lower train.num_workers / "
                "train.cpus_per_worker"
            )
        if not said:
            print(f"[rayformers] waiting for free resources for {train.num_workers} workers ...", flush=True)
            said = True
        time.sleep(0.5)


def _request_workers(cfg: RunConfig) -> None:
    from ray.autoscaler.sdk import request_resources

    bundle = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        bundle["GPU"] = cfg.train.gpus_per_worker
    print(
        f"[rayformers] the cluster is short of {cfg.train.num_workers} x {bundle}; asking its autoscaler "
        f"and waiting up to {AUTOSCALE_WAIT_S:g} s",
        flush=True,
    )
    request_resources(bundles=[bundle] * cfg.train.num_workers)


def _fingerprint(cfg: RunConfig) -> str:
    payload = json.dumps(
        {"data": cfg.data.model_dump(mode="json"), "tokenizer": cfg.model.tokenizer_source}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class IngestConfig(ray.train.DataConfig):
    """How the datasets reach the workers: training rows split equally (every worker runs the same
    number of steps, as DDP needs), validation rows split unequally, so that every row is evaluated
    exactly once (an equal split drops up to world-1 rows per evaluation)."""

    def configure(
        self,
        datasets: dict[str, Any],
        world_size: int,
        worker_handles: Any,
        worker_node_ids: Any,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        equal = {k: v for k, v in datasets.items() if k != "validation"}
        output: list[dict[str, Any]] = super().configure(
            equal, world_size, worker_handles, worker_node_ids, **kwargs
        )
        if "validation" in datasets:
            validation = datasets["validation"].copy(datasets["validation"])
            validation.set_name("validation")
            validation.context.execution_options = self._resolve_execution_options("validation")
            for i, split in enumerate(validation.streaming_split(world_size, equal=False)):
                output[i]["validation"] = split
        return output


def shard_differences(manifest: DataManifest, cfg: RunConfig) -> list[str]:
    """How the shards a run directory holds differ from what `cfg` would tokenize: the data config,
    the task, and the tokenizer itself (by its files' fingerprint, so a new `model.name` or
    `model.tokenizer` is noticed even when the data section is unchanged)."""
    from rayformers.data.tokenizer import load_tokenizer, tokenizer_fingerprint

    differences = []
    if manifest.source != cfg.data.model_dump(mode="json"):
        differences.append("data: another data config")
    if manifest.preprocessing.task != cfg.model.task:
        differences.append(
            f"task: shards are {manifest.preprocessing.task!r}, config asks {cfg.model.task!r}"
        )
    source = cfg.model.tokenizer_source
    tokenizer = load_tokenizer(
        source,
        cfg.model.task,
        revision=cfg.model.tokenizer_revision,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    if tokenizer_fingerprint(tokenizer) != manifest.tokenizer_hash:
        differences.append(
            f"tokenizer: shards were made with {manifest.tokenizer!r}, this run's is {source!r}"
        )
    return differences


def _tokenize_once(cfg: RunConfig, run_dir: Location) -> DataManifest:
    """Tokenize into `<run>/tokenized` once; a resumed run reuses the shards when they still match."""
    target = run_dir / "tokenized"
    if (target / MANIFEST).exists():
        manifest = read_manifest(target)
        differences = shard_differences(manifest, cfg)
        if not differences:
            return manifest
        raise DataError(
            f"{target} holds shards of another run under this name ({'; '.join(differences)}); use a new "
            "train.name, or delete that run's directory"
        )
    tokenized = build_tokenized(
        cfg.data,
        cfg.model.task,
        cfg.model.tokenizer_source,
        revision=cfg.model.tokenizer_revision,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    return write_tokenized(tokenized, cfg.data, target)


def run_training(cfg: RunConfig) -> TrainResult:
    """Run (or resume) the configured training; return the best checkpoint."""
    try:
        check_resources(cfg, ray.cluster_resources())
    except ResourceError:
        if cfg.cluster.address is None:
            raise  # an embedded Ray never grows: say so at once
        # A cluster we joined may autoscale (a KubeRay or launcher cluster often starts with no
        # workers): ask its autoscaler for the workers, and wait for them (bounded) in the run.
        _request_workers(cfg)
        try:
            return _run(cfg)
        finally:  # a standing request would keep the autoscaled nodes up (and billed) forever
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[])
    return _run(cfg)


def check_storage(cfg: RunConfig, alive_nodes: int) -> None:
    """Checkpoints written on one node must be readable from every other: on a multi-node cluster a
    node-local path would fail at the first checkpoint, or silently split a run across disks."""
    path = cfg.train.storage_path
    if alive_nodes > 1 and not is_remote(path) and not cfg.train.storage_is_shared:
        raise ResourceError(
            f"train.storage_path: {path!r} is a local path, but the cluster has {alive_nodes} nodes and each "
            "would write to its own disk. Use shared storage: s3://bucket/runs, gs://bucket/runs, or an NFS "
            "path mounted on every node (then set train.storage_is_shared: true)"
        )


def launch_time() -> float:
    """The wall clock when this process started (`rayformers train`, or the script that called us):
    the run's timing counts from there, so Ray's start and Python's imports are in it."""
    import psutil

    return float(psutil.Process().create_time())


PROBE = ".rayformers-write-probe"


def writable_run_dir(cfg: RunConfig) -> tuple[Location, Location]:
    """The storage and the run's directory in it, created, after a small file was written there and removed: storage that is
    read-only, full, not a directory or refused by its bucket fails here, naming the field, before any
    worker starts, not at the first checkpoint."""
    where = cfg.train.storage_path
    try:
        storage = Location.parse(where)
        run_dir = storage / cfg.run_name
        run_dir.mkdir()
        probe = run_dir / PROBE
        probe.write_text("rayformers checks that it can write here\n")
        probe.fs.delete_file(probe.path)
    except ValueError as err:
        raise ResourceError(f"train.storage_path: {err}") from None
    except OSError as err:
        raise ResourceError(
            f"train.storage_path: cannot write the run's checkpoints under {where!r} ({err}); point it at a "
            "directory or bucket this cluster can write to, with free space"
        ) from None
    return storage, run_dir


def _run(cfg: RunConfig) -> TrainResult:
    launched_at = launch_time()
    stages = {"ray_started": time.time() - launched_at}
    check_storage(cfg, sum(1 for node in ray.nodes() if node.get("Alive")))
    name = cfg.run_name
    storage, run_dir = writable_run_dir(cfg)
    # A run under a used name resumes from Ray Train's snapshot: checked here, before tokenizing and before
    # any worker starts, so a damaged one fails once, naming the checkpoint, not on every worker restart.
    resume_point(run_dir, name)
    manifest = _tokenize_once(cfg, run_dir)
    stages["data_ready"] = time.time() - launched_at
    # Training workers hold their CPUs for the whole run: reading the shards reserves none, so it never
    # waits behind them (reading Parquet is light next to the model's work). The V2 file datasource
    # plans a file-listing task that asks for a whole CPU whatever `num_cpus` says, and would wait forever.
    ray.data.DataContext.get_current().use_datasource_v2 = False
    wait_for_free_resources(cfg, WORKER_WAIT_S if cfg.cluster.address is None else AUTOSCALE_WAIT_S)
    task = get_task(cfg.model.task)
    datasets = {}
    for split in (s for s in ("train", "validation") if s in manifest.splits):
        shards = run_dir / "tokenized" / split
        # Only what the collator reads is decoded and handed to the workers.
        wanted = read_columns(
            columns_of(shards), task.evaluation_columns if split == "validation" else frozenset()
        )
        datasets[split] = ray.data.read_parquet(
            shards.path, filesystem=run_dir.fs, columns=wanted, num_cpus=0
        )
        # Each worker's progress line says how training goes; a bar per pass over the shards, redrawn
        # every second for the whole run, would take CPU from the workers and bury those lines.
        datasets[split].context.enable_progress_bars = False
    metric = cfg.train.metric or task.default_metric_for(manifest.preprocessing)
    mode = cfg.train.metric_mode or ("min" if task.metric_is_lower_better(metric) else "max")
    loop = LoopConfig(
        run=cfg.without_secrets(), settings=manifest.preprocessing, train_rows=manifest.splits["train"].rows,
        data_fingerprint=_fingerprint(cfg), has_validation="validation" in datasets, run_dir=str(run_dir),
        launched_at=launched_at,
    )  # fmt: skip
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop.model_dump(mode="json"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={
                "CPU": cfg.train.cpus_per_worker,
                **({"GPU": cfg.train.gpus_per_worker} if cfg.train.use_gpu else {}),
            },
            placement_strategy=cfg.train.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage.path,
            storage_filesystem=None if storage.local else storage.fs,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints,
                checkpoint_score_attribute=metric if "validation" in datasets else "step",
                checkpoint_score_order=mode if "validation" in datasets else "max",
            ),
            failure_config=ray.train.FailureConfig(
                max_failures=cfg.train.max_failures, controller_failure_limit=STARTUP_RETRIES
            ),
        ),
        datasets=datasets,
        dataset_config=IngestConfig(datasets_to_split=list(datasets)),
    )
    stages["trainer_started"] = time.time() - launched_at
    result = trainer.fit()
    best = _best(
        result, metric if "validation" in datasets else "step", mode if "validation" in datasets else "max"
    )
    latest = result.checkpoint.path if result.checkpoint is not None else best[0]
    best = (str(storage.at(best[0])), best[1])
    summary = {
        "config": cfg.without_secrets().model_dump(mode="json"),
        "metric": metric,
        "mode": mode,
        "best_checkpoint": best[0],
        "best_metrics": best[1],
        **_history(storage.at(latest), stages),
        "data": manifest.model_dump(mode="json")["splits"],
        "started_at": launched_at,
        "finished_at": time.time(),
    }
    summary_path = run_dir / RUN_SUMMARY
    _write_whole(summary_path, json.dumps(summary, indent=2, default=str) + "\n")
    _link_best(run_dir, best[0])
    # Only the driver knows which checkpoint Ray kept as the best: its MLflow run learns it here.
    record_outcome(cfg, str(run_dir), best[0], best[1])
    return TrainResult(best_checkpoint=best[0], best_metrics=best[1], summary_path=str(summary_path))


def _best(result: Any, metric: str, mode: str) -> tuple[str, dict[str, Any]]:
    candidates = [(c.path, dict(m)) for c, m in (result.best_checkpoints or []) if metric in m]
    if not candidates:
        if result.checkpoint is None:
            raise RuntimeError("training produced no checkpoint")
        return result.checkpoint.path, dict(result.metrics or {})
    pick = max if mode == "max" else min
    return pick(candidates, key=lambda c: c[1][metric])


def _history(checkpoint: Location, stages: dict[str, float]) -> dict[str, Any]:
    """Metric history, the steps the run resumed from and the timing of its last attempt (the driver's
    `stages` joined to the workers'), as the latest checkpoint recorded them."""
    from rayformers.tasks.checkpoint import TRAINING_STATE
    from rayformers.training.checkpoint import load_training_state

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(checkpoint.path)
        if not checkpoint.local:  # only the small state file, not the weights
            local = Path(tmp)
            with checkpoint.fs.open_input_stream((checkpoint / TRAINING_STATE).path) as stream:
                (local / TRAINING_STATE).write_bytes(bytes(stream.read()))
        state = load_training_state(local)
    timing = dict(state.get("timing", {}))
    both = {**stages, **timing.get("stages_s", {})}
    timing["stages_s"] = dict(sorted(both.items(), key=lambda item: item[1]))
    return {
        "history": list(state.get("history", [])),
        "resumed_from": list(state.get("resumed_from", [])),
        "timing": timing,
    }


def _write_whole(path: Location, text: str) -> None:
    """Write `path` so that a reader sees the old file or the new one, never half of it: on local or NFS
    storage under a temporary name, then renamed; an object store's upload appears only once complete."""
    if not path.local:
        path.write_text(text)
        return
    partial = Path(f"{path.path}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path.path)


def _link_best(run_dir: Location, checkpoint: str) -> None:
    """`<run>/best` points at the best checkpoint, so configs can name it before the run exists. Object
    stores have no links: there `summary.json` and the run's last line name it. The new link replaces
    the old one in one rename: a replica starting meanwhile finds one of the two, never no `best`."""
    if not run_dir.local:
        return
    link = Path(run_dir.path) / BEST
    partial = link.with_name("best.partial")
    if partial.is_symlink() or partial.exists():
        partial.unlink()
    partial.symlink_to(os.path.relpath(checkpoint, run_dir.path))
    os.replace(partial, link)
