"""One local Ray (2 CPUs) shared by every integration test of the session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from cluster import connect
    from rayformers.config import ClusterConfig

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if ray.is_initialized():
        ray.shutdown()
    session = connect(ClusterConfig(num_cpus=2))
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield session
    session.close()


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.slow)
