"""What the loop does on a worker: torch threads as the CPUs reserved, the first batch fetched early."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayformers.data.tokenizer import load_tokenizer
from rayformers.loading import load_config
from rayformers.tasks import get_task
from rayformers.training.loop import evaluation_batches, torch_threads

REPO = Path(__file__).resolve().parents[3]


def _threads(*overrides: str) -> int | None:
    return torch_threads(load_config(REPO / "configs/text-classification/full.yaml", list(overrides)))


def test_a_cpu_worker_uses_the_cpus_it_reserved():
    assert _threads("train.cpus_per_worker=2") == 2
    assert _threads("train.cpus_per_worker=1") == 1
    assert _threads("train.cpus_per_worker=0.5") == 1  # a fraction of a CPU still computes on one thread
    assert _threads("train.cpus_per_worker=3.5") == 3


def test_gpu_workers_and_a_users_own_omp_setting_are_left_alone():
    assert _threads("train.use_gpu=true") is None
    assert _threads("train.cpus_per_worker=2", "cluster.env_vars={OMP_NUM_THREADS: '1'}") is None


def test_started_batches_fetch_the_first_batch_at_once_and_continue_the_same_iterator():
    import threading

    from rayformers.training.loop import StartedBatches

    fetched = threading.Event()

    def batches():
        fetched.set()
        yield from range(4)

    started = StartedBatches(batches())
    assert fetched.wait(5)  # fetched before anyone iterates
    assert list(started) == [0, 1, 2, 3]


def test_started_batches_raise_the_fetch_error_where_they_are_iterated():
    import pytest

    from rayformers.training.loop import StartedBatches

    def broken():
        raise ValueError("data.train: bad row")
        yield

    with pytest.raises(ValueError, match="bad row"):
        list(StartedBatches(broken()))
    assert list(StartedBatches(iter([]))) == []


def _validation_rows(tokenizer: Any) -> list[dict[str, np.ndarray]]:
    """Two NumPy batches of the validation split, as Ray Data hands them to the loop."""
    texts = [f"the model reads text number {i} and writes the words back" for i in range(16)]
    encoded = tokenizer(texts, return_special_tokens_mask=True)
    rows = [{k: np.array(encoded[k][i]) for k in encoded} for i in range(len(texts))]
    return [{k: np.array([r[k] for r in rows[s : s + 8]], dtype=object) for k in rows[0]} for s in (0, 8)]


def test_fill_mask_evaluations_mask_the_same_tokens_every_time(wordpiece_dir: Path) -> None:
    """Issue 11: each evaluation drew new masks, so the best checkpoint was partly a draw. Two
    evaluations now see identical masked inputs and labels; one collator reused across them (the
    old loop) does not, which shows the comparison can fail."""
    tokenizer = load_tokenizer(str(wordpiece_dir), "fill-mask")
    task = get_task("fill-mask")
    rows = _validation_rows(tokenizer)

    def tensors(batches: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(b["input_ids"], b["labels"]) for b in batches]

    first = tensors(evaluation_batches(task, tokenizer, rows, 0.3, seed=7))
    second = tensors(evaluation_batches(task, tokenizer, rows, 0.3, seed=7))
    assert any((labels != -100).any() for _, labels in first)  # tokens were masked at all
    for (ids_a, labels_a), (ids_b, labels_b) in zip(first, second, strict=True):
        assert torch.equal(ids_a, ids_b) and torch.equal(labels_a, labels_b)
    reused = task.collator(tokenizer, mlm_probability=0.3, seed=7, evaluation=True)
    old_first = tensors(reused(b) for b in rows)
    old_second = tensors(reused(b) for b in rows)
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(old_first, old_second, strict=True))
