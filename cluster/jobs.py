"""`rayformers submit`: a training run sent to a Ray cluster through the Jobs API, its logs streamed back.

The project directory (or `cluster.working_dir`) is shipped as the job's working directory, so the
config and any relative data paths in it resolve on the cluster as they do here; `cluster.pip` and
`cluster.env_vars` go with it. The job runs `rayformers train` on the cluster and joins it with
`cluster.address=auto`.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from pathlib import Path
from typing import Any

from rayformers.config import ClusterConfig
from rayformers.errors import UserError

__all__ = ["SubmitError", "submit_training"]

# Never shipped: environments, caches, runs and VCS data.
EXCLUDES = [".venv", ".git", "runs", "**/__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"]


class SubmitError(UserError):
    """The job could not be submitted, or did not succeed; the message says which and why."""


def _runtime_env(cluster: ClusterConfig, working_dir: Path) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": EXCLUDES}
    if cluster.pip:
        env["pip"] = list(cluster.pip)
    env["env_vars"] = {
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
        **cluster.env_vars,
    }
    return env


def submit_training(
    config: str, overrides: list[str], address: str, cluster: ClusterConfig
) -> tuple[str, str]:
    """Submit `rayformers train CONFIG` to the cluster at `address` (its dashboard, http://HEAD:8265);
    stream its logs while it runs. Returns the job id and its final status."""
    from ray.job_submission import JobSubmissionClient

    working_dir = Path(cluster.working_dir or os.getcwd()).resolve()
    config_path = Path(config).resolve()
    try:
        relative = config_path.relative_to(working_dir)
    except ValueError:
        raise SubmitError(
            f"{config}: the config must lie inside the working directory shipped to the cluster "
            f"({working_dir}); run from the project directory or set cluster.working_dir"
        ) from None
    sets = " ".join(f"--set {shlex.quote(o)}" for o in [*overrides, "cluster.address=auto"])
    entrypoint = f"rayformers train {shlex.quote(str(relative))} {sets}"
    try:
        client = JobSubmissionClient(address)
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=_runtime_env(cluster, working_dir))
    except Exception as err:  # connection refused, auth, bad runtime env: one line that says which
        raise SubmitError(f"could not submit to {address}: {type(err).__name__}: {err}") from err
    print(f"[rayformers] submitted {job_id} to {address}: {entrypoint}", flush=True)
    asyncio.run(_follow(client, job_id))
    return job_id, _final_status(client, job_id)


async def _follow(client: Any, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def _final_status(client: Any, job_id: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id))
        if status.split(".")[-1] in ("SUCCEEDED", "FAILED", "STOPPED") or time.monotonic() > deadline:
            return status.split(".")[-1]
        time.sleep(1)
