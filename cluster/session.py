"""The one place rayformers calls `ray.init`: an embedded local Ray, or a connection to a cluster."""

from __future__ import annotations

import os
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
            ray.shutdown()

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
