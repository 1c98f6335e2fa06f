"""`rayformers serve build` as a user runs it: it writes a file that Ray's schema accepts and `serve run`
serves; and Ctrl-C while `rayformers serve` deploys. (`serve --checkpoint` and its clean SIGTERM are run
from an installed wheel in test_wheel.py.)"""

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


def _left_in_session(sid: int) -> list[str]:
    """The live (not zombie) processes of session `sid`: a server started with `start_new_session` and
    everything it started, Ray's own processes included."""
    left = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # not a process, or gone
            continue
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == sid and state != "Z":
            left.append(stat.split(")")[0] + ")")
    return left


def test_ctrl_c_while_a_deploy_waits_stops_it(tiny_checkpoint, tmp_path):
    """Issue 12: `rayformers serve` held Ctrl-C until every replica had loaded, so a deploy waiting for
    resources it will never get (here 64 CPUs on a 2-CPU Ray) could not be stopped. Ctrl-C now stops it
    with 130, and takes down what it had started: the app that was up, Serve and the embedded Ray."""
    port = _free_port()
    checkpoint = str(tiny_checkpoint("text-classification"))
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"train": {"path": str(REPO / "data/samples/sentiment/train.jsonl")}},
                "model": {"task": "text-classification", "name": "unused"},
                "cluster": {"num_cpus": 2},
                "serve": {"port": port, "apps": [{"name": "small", "checkpoint": checkpoint, "num_cpus": 0.5}, {"name": "big", "checkpoint": checkpoint, "num_cpus": 64}]},
            }
        )
    )  # fmt: skip
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "rayformers.cli", "serve", str(config)], cwd=REPO, stdout=log.open("w"),
        stderr=subprocess.STDOUT, text=True, env={**os.environ, "RAY_ADDRESS": "local"}, start_new_session=True,
    )  # fmt: skip
    try:
        # `small` answering shows the deploy under way, Serve waiting for `big` alone.
        _predict(
            f"http://127.0.0.1:{port}/small/predict", {"inputs": "fine"}, time.monotonic() + 180, process, log
        )
        assert process.poll() is None, log.read_text()[-3000:]
        os.kill(process.pid, signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    out = log.read_text()
    assert code == 130, out[-3000:]
    assert "SIGINT: stopping the deploy" in out, out[-3000:]
    assert "interrupted: SIGINT stopped the deploy before every app was running" in out, out[-3000:]
    assert "Serving;" not in out
    with pytest.raises(OSError):  # nothing answers on the port: no app, no proxy
        urllib.request.urlopen(f"http://127.0.0.1:{port}/small/info", timeout=5)
    deadline = time.monotonic() + 10
    while (left := _left_in_session(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        os.killpg(process.pid, signal.SIGKILL)
    assert not left, f"the embedded Ray outlived the server: {left}"
