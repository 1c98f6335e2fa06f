"""The one training loop every task and both methods share: it runs on each Ray Train worker."""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict

from rayformers.config import RunConfig
from rayformers.manifest import CheckpointManifest, PreprocessSettings
from rayformers.training.accumulation import GradientAccumulation

if TYPE_CHECKING:
    from rayformers.tasks.base import Task

__all__ = ["LoopConfig", "evaluation_batches", "train_loop_per_worker"]


class LoopConfig(BaseModel):
    """What each worker receives: the validated run config plus what the driver derived."""

    model_config = ConfigDict(extra="forbid")

    run: RunConfig
    settings: PreprocessSettings
    train_rows: int
    data_fingerprint: str
    has_validation: bool
    run_dir: str
    """The run's directory in storage (absolute, or a cloud URI): checkpoints land in it."""
    launched_at: float | None = None  # wall clock when `rayformers train` started: timing is measured from it


def torch_threads(run: RunConfig) -> int | None:
    """The intra-op threads a CPU worker should use: the CPUs it reserved (at least one), unless the
    user set OMP_NUM_THREADS for the cluster themselves. None: leave torch as it is (GPU workers)."""
    if run.train.use_gpu or "OMP_NUM_THREADS" in run.cluster.env_vars:
        return None
    return max(1, int(run.train.cpus_per_worker))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train, evaluate and checkpoint on one worker of a Ray Train run."""
    cfg = LoopConfig.model_validate(config)
    threads = torch_threads(cfg.run)
    if threads is not None and torch.get_num_threads() != threads:
        # A worker's torch follows OMP_NUM_THREADS, which Ray sets (or not) from the actor's CPUs; a
        # worker that reserved N CPUs computes on N threads, neither oversubscribing nor idling cores.
        torch.set_num_threads(threads)
    import ray.train
    import ray.train.torch

    from rayformers.data.tokenizer import load_tokenizer
    from rayformers.tasks import get_task
    from rayformers.training.progress import Progress

    run, settings, task = cfg.run, cfg.settings, get_task(cfg.settings.task)
    train = run.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    progress = Progress(
        rank == 0, 0, train.log_every_steps, run.train.storage_path, run.run_name, launched_at=cfg.launched_at
    )
    progress.stage("workers_started")
    if rank == 0:
        from rayformers.training.tracking import check_tracking

        check_tracking(train.tracking, run.run_name)  # before the model loads: an unusable store fails now
    tokenizer = load_tokenizer(
        run.model.tokenizer_source,
        task.name,
        revision=run.model.tokenizer_revision,
        trust_remote_code=run.model.trust_remote_code,
    )
    collator = task.collator(
        tokenizer,
        pad_to_multiple_of=run.data.pad_to_multiple_of,
        mlm_probability=run.data.mlm_probability,
        seed=train.seed + rank,
    )
    device = ray.train.torch.get_device()
    train_shard = ray.train.get_dataset_shard("train")

    def epoch_batches(epoch: int) -> Iterable[dict[str, Any]]:
        return train_shard.iter_torch_batches(  # type: ignore[no-any-return]
            batch_size=train.batch_size,
            collate_fn=collator,
            device=device,
            local_shuffle_buffer_size=max(4 * train.batch_size, 256),
            local_shuffle_seed=train.seed + epoch,
        )

    checkpoint = ray.train.get_checkpoint()
    # A fresh run starts reading its first epoch now: Ray Data's split coordinator starts and the first
    # batches arrive while the model stack imports and the model loads, not after.
    early = StartedBatches(epoch_batches(0)) if checkpoint is None else None

    from transformers import get_scheduler

    from rayformers.manifest import package_versions
    from rayformers.tasks.checkpoint import BASE_MODEL_DIR, MANIFEST, embeds_base, load_model, read_manifest
    from rayformers.tasks.evaluation import evaluate, gather
    from rayformers.training.checkpoint import (
        ResumeError,
        load_training_state,
        publish_checkpoint,
        resume_differences,
        save_clean_base,
        write_checkpoint,
    )
    from rayformers.training.model import build_model, parameter_counts
    from rayformers.training.optimization import Stepper, adamw, precision

    # A LoRA run over a base built from scratch, or for a task with labels, saves that base with every
    # checkpoint (rank 0 writes).
    base_dir = None
    if embeds_base(run.model.method, run.model.from_scratch is not None, task, settings) and rank == 0:
        base_dir = Path(tempfile.mkdtemp(prefix="rayformers-base-"))
    base_model_name = (
        BASE_MODEL_DIR
        if run.model.method == "lora" and run.model.from_scratch is not None
        else run.model.name or run.model.from_scratch.architecture  # type: ignore[union-attr]
    )
    state: dict[str, Any] | None = None
    if checkpoint is not None:
        # Resumed: the model comes back from the checkpoint as every reader loads it (full weights, or
        # base + adapter with the adapter and heads trainable), in fp32 for the optimizer's sake.
        with checkpoint.as_directory() as directory:
            try:
                found = read_manifest(directory)
            except FileNotFoundError:  # the driver checked it (`resume_point`); its files went since
                raise ResumeError(
                    f"train.name: {run.run_name!r} cannot resume: checkpoint {checkpoint.path} has no {MANIFEST} "
                    "(cut off or damaged); restore that directory, or use a new train.name"
                ) from None
            differences = resume_differences(found, cfg.data_fingerprint, base_model_name, run.model.method)
            if differences:
                raise ResumeError(
                    f"train.name: {run.run_name!r} already holds a checkpoint of another run "
                    f"({'; '.join(differences)}); use a new train.name to start afresh"
                )
            state = load_training_state(Path(directory))
            model = load_model(found, directory, dtype=torch.float32, trainable=True)
            if base_dir is not None and (Path(directory) / BASE_MODEL_DIR).is_dir():
                shutil.copytree(Path(directory) / BASE_MODEL_DIR, base_dir, dirs_exist_ok=True)
            elif base_dir is not None:  # a checkpoint written before hub bases were embedded
                save_clean_base(model, base_dir)
    else:
        model = build_model(run.model, task, tokenizer, settings, train.seed)
        if base_dir is not None:
            save_clean_base(model, base_dir)
    trainable, total = parameter_counts(model)
    if rank == 0:
        print(
            f"[rayformers] {run.model.method} fine-tuning: {trainable:,} trainable of {total:,} parameters "
            f"({100 * trainable / total:.2f}%)",
            flush=True,
        )
    model = ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"find_unused_parameters": task.ddp_find_unused_parameters}
    )
    optimizer = adamw(model, train, device)
    micro_per_epoch = max(1, cfg.train_rows // (world * train.batch_size))
    accumulation = GradientAccumulation(train.gradient_accumulation_steps, micro_per_epoch)
    steps_per_epoch = accumulation.steps_per_epoch
    total_steps = train.max_steps or steps_per_epoch * train.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = get_scheduler(
        train.scheduler,
        optimizer,
        num_warmup_steps=int(train.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    dtype = precision(run)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    step, start_epoch, history, resumed_from = 0, 0, [], []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, start_epoch, history = state["step"], state["epoch"], state["history"]
        resumed_from = [*state.get("resumed_from", []), step]
        if rank == 0:
            print(f"[rayformers] resumed from step {step} (epoch {start_epoch})", flush=True)
    stepper = Stepper(
        model,
        optimizer,
        scheduler,
        scaler,
        accumulation,
        device=device,
        dtype=dtype,
        max_grad_norm=train.max_grad_norm,
    )
    progress.total = total_steps
    if rank == 0 and train.tracking.mlflow is not None:
        from rayformers.training.tracking import MlflowTracker, run_params

        # A resumed run (or a restarted worker group) logs on into the MLflow run it began.
        progress.tracker = MlflowTracker.open(
            run,
            cfg.run_dir,
            run_params(run, total_steps, world),
            resume_id=state.get("mlflow_run_id") if state is not None else None,
        )
    progress.stage("model_ready")
    eval_every = train.eval_every_steps or steps_per_epoch
    model.train()

    # Training loss summed over the optimizer steps since the last report (on the device: read only
    # when reported), and their count.
    interval: list[Any] = [torch.zeros((), device=device), 0]

    def report(epoch: int) -> None:
        metrics: dict[str, float] = {"step": float(step), "epoch": float(epoch)}
        losses = [(s, n) for s, n in gather([(float(interval[0]), interval[1])]) if n]
        if losses:
            # Mean training loss over the interval, across all workers: the curve a user watches fall.
            metrics["train_loss"] = sum(s for s, _ in losses) / sum(n for _, n in losses)
        interval[:] = [torch.zeros((), device=device), 0]
        if cfg.has_validation:
            # NumPy batches collated here, not `iter_torch_batches`: evaluation batches carry non-tensor
            # columns (QA's example ids and texts) that Ray's device transfer refuses. `evaluate` moves
            # the tensors.
            rows = ray.train.get_dataset_shard("validation").iter_batches(
                batch_size=train.batch_size, batch_format="numpy"
            )
            batches = evaluation_batches(task, tokenizer, rows, run.data.mlm_probability, train.seed)
            metrics.update(evaluate(model, batches, task, settings, tokenizer, device, train.metric_module))
        history.append(metrics)
        progress.metrics(step, metrics)
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": epoch,
            "history": history,
            "resumed_from": resumed_from,
            "timing": {**progress.timing(), "torch_threads": torch.get_num_threads()},
            "mlflow_run_id": progress.tracker.run_id if progress.tracker is not None else None,
        }
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            manifest = CheckpointManifest(
                task=task.name,
                method=run.model.method,
                base_model=base_model_name,
                base_revision=run.model.revision,
                architecture=(model.module if hasattr(model, "module") else model).config.model_type,
                auto_model=task.auto_model,
                preprocessing=settings,
                pooling=task.pooling,
                metrics={k: v for k, v in metrics.items() if k not in ("step", "epoch")},
                step=step,
                epoch=epoch,
                data_fingerprint=cfg.data_fingerprint,
                versions=package_versions(),
            )
            name = f"checkpoint_{step:06d}"
            final = f"{cfg.run_dir}/{name}"  # where `publish_checkpoint` puts it
            write_checkpoint(
                Path(tmp),
                model,
                tokenizer,
                manifest,
                train.model_dump(mode="json"),
                state,
                base_dir,
                final,
                run,
            )
            # Ray Train registers the checkpoint (and a resumed run may pick it) only once this upload
            # returned; `publish_checkpoint` also keeps a cut-off copy from looking like a checkpoint.
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(tmp),
                checkpoint_dir_name=name,
                checkpoint_upload_fn=lambda local, dir_name: publish_checkpoint(
                    ray.train.get_context().get_storage(), Path(local.path), dir_name
                ),
            )

    try:
        for epoch in range(start_epoch, epochs):
            skip = (
                step - epoch * steps_per_epoch
            )  # resumed mid-epoch: pass over the batches already trained on
            batches = early if early is not None and epoch == 0 else epoch_batches(epoch)
            micro = 0
            stepper.start_epoch()
            done_before = accumulation.micro_batches_before(skip) if skip > 0 else 0
            for batch in batches:
                if micro >= micro_per_epoch or step >= total_steps:
                    break
                if "first_batch" not in progress.stages:
                    progress.stage("first_batch")
                micro += 1
                if micro <= done_before:
                    continue
                window = stepper.micro_batch(micro, batch, lambda b: task.loss(model, b, settings))
                if window is None:
                    continue
                step += 1
                # The mean loss of the step's micro-batches and their tokens stay on the device: progress
                # reads them on the steps that log, so a step waits for the host only there.
                interval[0] += window.loss
                interval[1] += 1
                progress.step(
                    step,
                    epoch,
                    window.loss,
                    scheduler.get_last_lr()[0],
                    window.rows * world,
                    window.tokens * world,
                )
                if step % eval_every == 0 or step == total_steps:
                    report(epoch if step % steps_per_epoch else epoch + 1)
            if step >= total_steps:
                break
    except BaseException:
        progress.close(failed=True)
        raise
    progress.close()
    if base_dir is not None:  # a full copy of the base, in this worker's temp folder
        shutil.rmtree(base_dir, ignore_errors=True)


def evaluation_batches(
    task: Task, tokenizer: Any, rows: Iterable[dict[str, Any]], mlm_probability: float, seed: int
) -> Iterator[dict[str, Any]]:
    """One evaluation's collated batches of `rows` (NumPy batches of the validation split). Its collator
    is made here, fresh each evaluation: fill-mask then masks the same tokens every time, so that
    evaluations compare checkpoints, not mask draws."""
    collate = task.collator(tokenizer, mlm_probability=mlm_probability, seed=seed, evaluation=True)
    return (collate(batch) for batch in rows)


class StartedBatches:
    """An iterable of batches whose first batch is fetched at once, in a thread: the data pipeline
    starts while the caller does other work. Iterating waits for that batch, then continues the same
    iterator; an error the fetch met is raised there."""

    def __init__(self, batches: Iterable[Any]) -> None:
        self._iterator = iter(batches)
        self._first: list[Any] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fetch, name="rayformers-first-batch", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            self._first.append(next(self._iterator))
        except StopIteration:
            pass
        except BaseException as err:  # handed to the iterating thread, which raises it
            self._error = err

    def __iter__(self) -> Iterator[Any]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first
        yield from self._iterator
