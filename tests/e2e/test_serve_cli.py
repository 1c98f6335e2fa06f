"""`rayformers serve build` as an operator runs it: it writes a file that Ray's schema accepts and
`serve deploy` serves on a `ray start` cluster, where an edit to its deployments section keeps the
replicas; and Ctrl-C while `rayformers serve` deploys. (`serve --checkpoint` and its clean SIGTERM are run
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


def _get_json(url: str) -> dict:
    """GET from a `ray start` cluster's dashboard, which Ray 2.60 starts with token authentication on: the
    token is the one `ray start` wrote under ~/.ray/, which the Ray CLI sends too."""
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _model_details(dashboard: str, app: str) -> dict:
    """The app's model deployment as Serve's REST API (what `serve status` reads) reports it."""
    details = _get_json(f"{dashboard}/api/serve/applications/")
    found = (details.get("applications") or {}).get(app) or {}
    return (found.get("deployments") or {}).get("Model") or {}


def _wait_for(check, deadline: float, what: str, head: subprocess.Popen, log: Path):
    while True:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        if head.poll() is not None:
            raise AssertionError(f"the Ray head exited with {head.returncode}:\n{log.read_text()[-5000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def test_serve_build_writes_a_config_whose_deployment_edits_keep_the_replicas(tiny_checkpoint, tmp_path):
    """`serve build` writes a file Ray's schema accepts and `serve deploy` serves, on a Ray cluster started
    with `ray start`, as an operator runs it. Issue 13: the deployment options are in the `deployments:`
    section, so an operator's edit to max_replicas there, deployed again, is a lightweight update: Serve
    applies it and the replicas that were serving keep serving (the same replica and actor ids)."""
    import tempfile

    from ray.serve.schema import ServeDeploySchema

    port, dash_port = _free_port(), _free_port()
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"train": {"path": str(REPO / "data/samples/sentiment/train.jsonl")}},
                "model": {"task": "text-classification", "name": "unused"},
                "serve": {"port": port, "apps": [{"name": "reviews", "checkpoint": str(tiny_checkpoint("text-classification")), "num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 2}}]},
            }
        )
    )  # fmt: skip
    out_file = tmp_path / "serve.yaml"
    built = subprocess.run(
        [sys.executable, "-m", "rayformers.cli", "serve", "build", str(config), "-o", str(out_file)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    written = yaml.safe_load(out_file.read_text())
    schema = ServeDeploySchema.model_validate(written)
    assert [a.name for a in schema.applications] == ["reviews", "gateway"]
    (model,) = schema.applications[0].deployments
    assert model.name == "Model" and model.autoscaling_config["max_replicas"] == 2
    assert "autoscaling" not in schema.applications[0].args

    # A Ray of its own (its own temp dir, so no other Ray on this machine finds it as "the" cluster).
    ray_dir = tempfile.mkdtemp(prefix="rf-", dir="/tmp")
    bin_dir = Path(sys.executable).parent
    log = tmp_path / "ray-head.log"
    # Token authentication, as `ray start` turns it on in 2.60, set deliberately for every Ray CLI call.
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--port={_free_port()}",
         f"--ray-client-server-port={_free_port()}", f"--dashboard-port={dash_port}",
         f"--dashboard-agent-listen-port={_free_port()}", "--include-dashboard=true", f"--temp-dir={ray_dir}",
         "--disable-usage-stats"],
        cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    dashboard = f"http://127.0.0.1:{dash_port}"

    def serve_deploy() -> None:
        done = subprocess.run(
            [str(bin_dir / "serve"), "deploy", str(out_file), "-a", dashboard],
            cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

    try:
        _wait_for(
            lambda: _get_json(f"{dashboard}/api/version"), time.monotonic() + 120, "the dashboard", head, log
        )
        serve_deploy()
        answer = _predict(
            f"http://127.0.0.1:{port}/reviews/predict", {"inputs": ["fine", "bad"]}, time.monotonic() + 240,
            head, log,
        )  # fmt: skip
        assert len(answer) == 2  # type: ignore[arg-type]
        before = _model_details(dashboard, "reviews")
        assert before["deployment_config"]["autoscaling_config"]["max_replicas"] == 2
        serving = {(r["replica_id"], r["actor_id"]) for r in before["replicas"] if r["state"] == "RUNNING"}
        assert len(serving) == 1, before["replicas"]

        # The operator's edit: more replicas allowed, in the deployments section, deployed again.
        written["applications"][0]["deployments"][0]["autoscaling_config"]["max_replicas"] = 5
        out_file.write_text(yaml.safe_dump(written, sort_keys=False))
        serve_deploy()

        def applied() -> dict | None:
            found = _model_details(dashboard, "reviews")
            scaled = found.get("deployment_config", {}).get("autoscaling_config", {}).get("max_replicas")
            return found if scaled == 5 and found.get("status") == "HEALTHY" else None

        after = _wait_for(applied, time.monotonic() + 120, "max_replicas 5 applied", head, log)
        kept = {(r["replica_id"], r["actor_id"]) for r in after["replicas"] if r["state"] == "RUNNING"}
        assert kept == serving, f"the edit restarted the replicas: {serving} before, {kept} after"
        assert len(_predict(f"http://127.0.0.1:{port}/reviews/predict", {"inputs": "fine"}, time.monotonic() + 60, head, log)) >= 1  # type: ignore[arg-type]  # fmt: skip
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)


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
