"""What `rayformers.cluster.connect` hands the Ray it starts (ray.init faked: the environment it sees)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import ray

from rayformers.cluster import connect, session
from rayformers.config import ClusterConfig

HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"
DRAIN = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
NAMES = (HAPROXY, DRAIN, *PORTS)


@pytest.fixture
def started(monkeypatch):
    """The environment and arguments of each faked ray.init."""
    calls: list[tuple[dict[str, str | None], dict]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(({k: os.environ.get(k) for k in NAMES}, kw)))
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    return calls


def test_an_embedded_ray_serves_through_haproxy_unless_the_config_says_otherwise(started, monkeypatch):
    connect(ClusterConfig(num_cpus=2))
    connect(ClusterConfig(num_cpus=2, working_dir="."))  # a runtime env too: the raylet still gets it
    connect(ClusterConfig(num_cpus=2, env_vars={HAPROXY: "0"}))
    monkeypatch.setenv(HAPROXY, "0")  # the operator's shell
    connect(ClusterConfig(num_cpus=2))
    assert [env[HAPROXY] for env, _ in started] == ["1", "1", "0", "0"]
    assert {env[DRAIN] for env, _ in started} == {"2"}
    assert os.environ[HAPROXY] == "0" and DRAIN not in os.environ  # the caller's environment is its own


def test_without_an_haproxy_binary_serve_keeps_its_own_proxy(started, monkeypatch):
    """ray[serve] bundles HAProxy on Linux only; with the setting on and no binary, Serve would not start."""
    monkeypatch.setattr(session, "_haproxy_binary", lambda: None)
    connect(ClusterConfig(num_cpus=2))
    monkeypatch.setattr(session, "_haproxy_binary", lambda: "/usr/sbin/haproxy")
    connect(ClusterConfig(num_cpus=2))
    assert [env[HAPROXY] for env, _ in started] == ["0", "1"]


def test_the_binary_is_found_as_serve_finds_it(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path / "missing"))
    assert session._haproxy_binary() is None
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH")
    assert session._haproxy_binary()  # ray[serve]'s bundled one, on this Linux machine


def test_each_embedded_ray_gets_its_own_haproxy_stats_and_metrics_ports(started):
    """HAProxy binds 8404 and 9101 on every interface by default: a second Ray on the machine failed."""
    connect(ClusterConfig(num_cpus=2))
    connect(ClusterConfig(num_cpus=2, env_vars={PORTS[0]: "18404"}))
    first, second = (env for env, _ in started)
    assert all(first[p] and int(first[p]) > 0 for p in PORTS)
    assert first[PORTS[0]] != first[PORTS[1]]
    assert second[PORTS[0]] == "18404"


def test_a_joined_cluster_keeps_the_ingress_its_operator_chose(started):
    connect(ClusterConfig(address="ray://head:10001"))
    ((env, kwargs),) = started
    assert set(env.values()) == {None}
    assert kwargs["address"] == "ray://head:10001"


def test_an_haproxy_left_by_a_dead_actor_is_stopped_and_only_this_nodes(tmp_path):
    """Ray shut down without `serve.shutdown` leaves Serve's HAProxy running, holding its port."""
    mine, other = "a" * 56, "b" * 56
    fake = tmp_path / "haproxy"
    fake.write_text("import time\ntime.sleep(60)\n")
    procs = {
        node: subprocess.Popen([sys.executable, str(fake), "-f", f"/tmp/haproxy-serve/{node}/haproxy.cfg"])
        for node in (mine, other)
    }
    try:
        session._stop_orphaned_haproxy(mine)
        assert procs[mine].wait(timeout=10) != 0
        assert procs[other].poll() is None
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
