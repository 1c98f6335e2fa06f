"""What the loop does on a worker: torch threads as the CPUs reserved, the first batch fetched early."""

from __future__ import annotations

from pathlib import Path

from rayformers.loading import load_config
from rayformers.training.loop import torch_threads

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
