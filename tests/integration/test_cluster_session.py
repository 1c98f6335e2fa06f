"""`rayformers.cluster.connect` on an embedded Ray, in a process of its own (the test session's Ray is shared)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, os
import ray
from rayformers.cluster import connect
from rayformers.config import ClusterConfig

os.environ["RAY_ADDRESS"] = "127.0.0.1:1"  # a cluster the embedded Ray must not join
os.environ["RF_PROBE"] = "mine"
with connect(ClusterConfig(num_cpus=1, env_vars={"RF_PROBE": "cluster", "RF_ONLY": "x"})):
    @ray.remote(num_cpus=0)
    def env():
        return {k: os.environ.get(k) for k in ("RF_PROBE", "RF_ONLY", "TOKENIZERS_PARALLELISM")}

    workers = ray.get(env.remote())
    driver = {k: os.environ.get(k) for k in ("RF_PROBE", "RF_ONLY", "TOKENIZERS_PARALLELISM", "RAY_ADDRESS")}
print(json.dumps({"workers": workers, "driver": driver}))
"""


def test_an_embedded_ray_gives_its_workers_the_env_vars_and_leaves_the_callers_environment(tmp_path):
    """The workers get `cluster.env_vars`; the process that called `connect` (a notebook, a program
    embedding rayformers) keeps its own variables, RAY_ADDRESS included."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["workers"] == {"RF_PROBE": "cluster", "RF_ONLY": "x", "TOKENIZERS_PARALLELISM": "false"}
    assert seen["driver"] == {
        "RF_PROBE": "mine",
        "RF_ONLY": None,
        "TOKENIZERS_PARALLELISM": None,
        "RAY_ADDRESS": "127.0.0.1:1",
    }
