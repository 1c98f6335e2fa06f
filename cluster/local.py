"""`rayformers cluster local` / `cluster down`: a head and N-1 worker nodes on one machine, each its own
raylet with its own resources, for developing and testing multi-node behaviour without a cloud.

Ray 2.60's `ray start --head` turns token authentication on; every node and every driver of such a
cluster must run with `RAY_AUTH_MODE=token` (set here for the nodes; `connect()` sets it for drivers
that join an address). Node i also gets a custom resource `rayformers_node_<i>`, so work can be pinned.

Each worker node gets its own `--temp-dir`. By default a worker node takes the head's temp dir and session
name, so on one machine every raylet shares /tmp/ray/session_*/runtime_resources, while each node's runtime
env agent keeps its own in-memory URI cache. The first task on a second node then unpacks a job's
working_dir again with overwrite=True (Ray's WorkingDirPlugin.create -> download_and_unpack_package:
shutil.rmtree, then unzip). That deletes the directory the job's driver is running in. On separate machines
each node has its own disk, which is the layout Ray assumes.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rayformers.errors import UserError

__all__ = ["AUTH_ENV", "ClusterStartError", "LocalCluster", "start_local", "stop_local"]

AUTH_ENV = {"RAY_AUTH_MODE": "token"}


class ClusterStartError(UserError):
    """A node would not start; the message carries Ray's own words."""


@dataclass
class LocalCluster:
    """Where the cluster answers."""

    address: str
    dashboard: str
    nodes: int


def _ray() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


def _env() -> dict[str, str]:
    # Jobs submitted to these nodes run `rayformers ...`: put this environment's scripts on their PATH.
    scripts = str(Path(sys.executable).parent)
    return {**os.environ, **AUTH_ENV, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(args: list[str]) -> None:
    done = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ClusterStartError(f"`{' '.join(args[:3])} ...` failed: " + " | ".join(tail))


NODE_TEMP_DIRS = "/tmp/ray-{port}-node{index}"
"""Worker nodes' own Ray temp dirs: under /tmp, as Ray's default, because Unix socket paths under them
must stay short."""


def node_temp_dir(port: int, index: int) -> str:
    """Worker node `index`'s own Ray temp dir."""
    return NODE_TEMP_DIRS.format(port=port, index=index)


def start_local(
    nodes: int, cpus_per_node: float = 1, port: int = 6379, dashboard_port: int = 8265
) -> LocalCluster:
    """Start a head (with the dashboard, for the Jobs API) and `nodes - 1` workers joined to it."""
    if nodes < 1:
        raise ValueError(f"--nodes must be at least 1, got {nodes}")
    ray = _ray()
    common = [f"--num-cpus={cpus_per_node:g}", "--disable-usage-stats"]
    _run(
        [ray, "start", "--head", f"--port={port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", '--resources={"rayformers_node_0": 1}', *common]
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        for i in range(1, nodes):
            _run(
                [ray, "start", f"--address={address}", f'--resources={{"rayformers_node_{i}": 1}}',
                 f"--temp-dir={node_temp_dir(port, i)}", *common]
            )  # fmt: skip
    except ClusterStartError:
        stop_local()
        raise
    return LocalCluster(address=address, dashboard=f"http://127.0.0.1:{dashboard_port}", nodes=nodes)


def stop_local() -> None:
    """Stop every Ray node this machine runs (`ray stop`), and remove the worker nodes' temp dirs."""
    subprocess.run(
        [_ray(), "stop", "--force"], env={**os.environ, **AUTH_ENV}, capture_output=True, timeout=120
    )
    for directory in glob.glob(NODE_TEMP_DIRS.format(port="*", index="*")):
        shutil.rmtree(directory, ignore_errors=True)
