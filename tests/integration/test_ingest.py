"""How the datasets reach Ray Train's workers: training rows equally (DDP steps in lockstep), every
validation row to exactly one worker, none dropped (an equal split drops up to world-1 of them)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from rayformers.training.trainer import IngestConfig


@pytest.mark.parametrize("world", [2, 3])
def test_every_validation_row_reaches_one_worker_and_training_rows_split_equally(ray_cluster, world):
    import ray

    datasets = {"train": ray.data.range(10), "validation": ray.data.range(10)}
    splits = IngestConfig(datasets_to_split=list(datasets)).configure(datasets, world, None, None)

    def read(name: str) -> list[list[int]]:
        def rows(split):
            return [int(r["id"]) for r in split[name].iter_rows()]

        with ThreadPoolExecutor(world) as pool:  # streaming splits are read together, as workers do
            return list(pool.map(rows, splits))

    validation = read("validation")
    assert sorted(i for rows in validation for i in rows) == list(range(10))
    train = read("train")
    assert len({len(rows) for rows in train}) == 1  # equal: every worker the same number of rows
    assert len({i for rows in train for i in rows}) == sum(len(rows) for rows in train)
