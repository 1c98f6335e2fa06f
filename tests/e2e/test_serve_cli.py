"""`rayformers serve build` as a user runs it: it writes a file that Ray's schema accepts and `serve run`
serves. (`serve --checkpoint` and its clean SIGTERM are run from an installed wheel in test_wheel.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _predict(url: str, body: dict, deadline: float, process: subprocess.Popen, log: Path) -> object:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except OSError:
            if process.poll() is not None:
                raise AssertionError(
                    f"the server exited with {process.returncode}:\n{log.read_text()[-5000:]}"
                ) from None
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_serve_build_writes_a_config_that_serve_run_serves(tiny_checkpoint, tmp_path):
    from ray.serve.schema import ServeDeploySchema

    port = _free_port()
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"train": {"path": str(REPO / "data/samples/sentiment/train.jsonl")}},
                "model": {"task": "text-classification", "name": "unused"},
                "serve": {"port": port, "apps": [{"name": "reviews", "checkpoint": str(tiny_checkpoint("text-classification")), "num_cpus": 0.5}]},
            }
        )
    )  # fmt: skip
    out_file = tmp_path / "serve.yaml"
    built = subprocess.run(
        [sys.executable, "-m", "rayformers.cli", "serve", "build", str(config), "-o", str(out_file)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    schema = ServeDeploySchema.model_validate(yaml.safe_load(out_file.read_text()))
    assert [a.name for a in schema.applications] == ["reviews", "gateway"]
    serve_bin = Path(sys.executable).with_name("serve")
    log = tmp_path / "serve-run.log"
    # RAY_ADDRESS=local: a Ray of its own, never a cluster that `ray start` recorded in /tmp/ray.
    process = subprocess.Popen(
        [str(serve_bin), "run", str(out_file)], cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "RAY_ADDRESS": "local"}, start_new_session=True,
    )  # fmt: skip
    try:
        answer = _predict(
            f"http://127.0.0.1:{port}/reviews/predict",
            {"inputs": ["fine", "bad"]},
            time.monotonic() + 240,
            process,
            log,
        )
        assert len(answer) == 2  # type: ignore[arg-type]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
