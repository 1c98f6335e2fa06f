"""Scoring a checkpoint on a labelled split (`rayformers evaluate`), as the course's `trainer.evaluate`
does: the task's metrics and mean loss over every row.

It runs what training's own evaluation runs, so that the two agree on the same split: the split is read
and tokenized by the data stage (Ray Data, streamed) with the checkpoint's recorded preprocessing and
label map, collated by the task's evaluation collator, and scored by the task's `Evaluator`. The run's
data settings (columns, formats) come from the `summary.json` beside the checkpoint when there is one,
so a checkpoint of a run is scored on a file laid out as its training data was.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from rayformers.config import DataConfig, SourceConfig, TrainConfig
from rayformers.data.storage import Location
from rayformers.tasks import get_task
from rayformers.tasks.checkpoint import RUN_SUMMARY, load_model, read_manifest, resolve_checkpoint

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    checkpoint: str,
    data: str,
    *,
    data_config: DataConfig | None = None,
    batch_size: int = 32,
    metric_module: str | None = None,
) -> dict[str, float]:
    """The task's metrics of `checkpoint` on the rows at `data` (any source the data stage reads). Needs
    a running Ray (Ray Data tokenizes the split). `data_config`: the columns and formats to read it with
    (default: those of the run that wrote the checkpoint, else the task's defaults)."""
    import torch

    from rayformers.data.pipeline import build_tokenized
    from rayformers.data.tokenizer import load_tokenizer
    from rayformers.tasks.evaluation import evaluate
    from rayformers.training.loop import evaluation_batches

    path = resolve_checkpoint(checkpoint)
    run = _run_config(Location.parse(path))
    train = TrainConfig.model_validate(run.get("train", {}))
    with Location.parse(path).local_copy() as root:
        manifest = read_manifest(root)
        task = get_task(manifest.task)
        settings = manifest.preprocessing
        recorded = DataConfig.model_validate(run["data"]) if "data" in run else None
        base = data_config or recorded
        # Read as the run read its data (format, encoding), from the given path.
        like = (base.validation or base.train) if base is not None else SourceConfig(path=data)
        source = like.model_copy(update={"path": data, "hub": None, "name": None, "revision": None})
        base = base or DataConfig(train=source)
        split = base.model_copy(
            update={"train": source, "validation": source, "tokenized": None, "limit": None, "shuffle": False}
        )
        tokenizer = load_tokenizer(str(root), task.name)
        tokenized = build_tokenized(
            split, task.name, str(root), labels=settings.labels, tokenizer=tokenizer, settings=settings
        )
        model = load_model(manifest, root, dtype=torch.float32, task=task)
        # Iterated in the block: the tokenizing actors read the tokenizer from this copy.
        assert tokenized.validation is not None
        rows = tokenized.validation.iter_batches(batch_size=batch_size, batch_format="numpy")
        # The run's seed, so fill-mask masks the tokens its training-time evaluations masked.
        batches = evaluation_batches(task, tokenizer, rows, split.mlm_probability, train.seed)
        module = metric_module or train.metric_module
        return evaluate(model, batches, task, settings, tokenizer, torch.device("cpu"), module)


def _run_config(checkpoint: Location) -> dict[str, Any]:
    """The config of the run whose directory holds `checkpoint`, from its summary ({} without one)."""
    run = checkpoint.at(posixpath.dirname(checkpoint.path.rstrip("/")))
    try:
        config = json.loads((run / RUN_SUMMARY).read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return config if isinstance(config, dict) else {}
