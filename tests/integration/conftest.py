"""One local Ray (2 CPUs) shared by every integration test of the session."""

from __future__ import annotations

import os
import time

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from rayformers.cluster import connect
    from rayformers.config import ClusterConfig

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_metrics_report_interval_ms", "2000")  # metrics scraped in seconds, not 10+
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
    """Each test gives back the CPUs it took: a pipeline that failed on purpose, say, keeps its actors
    while anything references its traceback, and the next training run would wait behind them. Fail
    here, naming the test, rather than hang later. (Module fixtures such as a running Serve app are set
    up before this and count as the baseline.)"""
    import gc

    import ray

    before = ray.available_resources().get("CPU", 0.0) if ray.is_initialized() else None
    yield
    if before is None or not ray.is_initialized():
        return
    gc.collect()
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0.0) + 1e-9 < before:
        if time.monotonic() > deadline:
            pytest.fail(
                f"{request.node.nodeid} left Ray work holding CPUs: "
                f"{ray.available_resources().get('CPU', 0.0):g} free after 60 s, {before:g} before the test"
            )
        time.sleep(0.2)
