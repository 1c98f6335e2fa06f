"""A CPU worker computes on as many torch threads as the CPUs it reserved."""

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
