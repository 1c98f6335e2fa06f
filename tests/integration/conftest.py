"""One local Ray (2 CPUs) shared by every integration test of the session."""

from __future__ import annotations

import os
import time

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


@pytest.fixture(autouse=True)
def _no_leftover_ray_work(request):
    """Each test leaves the shared Ray as it found it: a pipeline that failed on purpose keeps its actors
    (and their CPUs) until its exception's frames are collected, and the next training run would wait
    behind them. Fail here, naming the test, rather than hang later."""
    yield
    import gc

    import ray

    if not ray.is_initialized():
        return
    gc.collect()
    total = ray.cluster_resources().get("CPU", 0.0)
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0.0) + 1e-9 < total:
        if time.monotonic() > deadline:
            pytest.fail(
                f"{request.node.nodeid} left Ray work holding CPUs: "
                f"{ray.available_resources().get('CPU', 0.0):g} of {total:g} free after 60 s"
            )
        time.sleep(0.2)
