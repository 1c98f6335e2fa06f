"""rayformers as a user installs it: a wheel (`pip install .`) in a fresh virtualenv, used from a project
directory that has its own `data`, `training`, `serving` and `cluster` packages. The wheel installs only
the `rayformers` namespace; `validate`, `data preview` (Ray Data's tokenizer actors), a 2-worker `train`
(Ray Train workers) and `serve` (Serve replicas, over HTTP; SIGTERM stops it cleanly) all work there, and
never import the project's own packages.

The fresh virtualenv gets the wheel alone (`--no-deps`); its dependencies come from this checkout's
environment through a path file, which adds that site-packages directory to the path without running its
editable-install hook, so nothing of the checkout itself is importable there: installing torch, Ray and
transformers again would cost gigabytes and minutes and prove nothing about this package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import psutil
import pytest

from tests.user_project import SHADOWED, user_project

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install .` builds, from a copy of the sources (an in-tree build would leave build/
    behind, whose stale files a later build would package)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("rayformers", "data", "tasks", "training", "serving", "cluster"):
        shutil.copytree(
            REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "samples")
        )
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (found,) = out.glob("rayformers-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip())  # fmt: skip
    (site / "_rayformers_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # This environment's pip installs into the new one (`--python`), which needs no pip of its own.
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    return root


def run(venv: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    return subprocess.run(
        [str(venv / "bin" / "rayformers"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_the_wheel_installs_only_the_rayformers_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"rayformers", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, top
    for module in ("data/pipeline.py", "tasks/__init__.py", "tasks/text_classification.py",
                   "training/loop.py", "serving/app.py", "cluster/session.py", "cli/main.py"):  # fmt: skip
        assert f"rayformers/{module}" in names, module
    assert not [n for n in names if "/samples/" in n]  # sample data stays in the repository


def test_the_installed_package_comes_from_the_wheel_not_the_checkout(venv, tmp_path):
    project = user_project(tmp_path / "project")
    code = (
        "import importlib.util, json, rayformers.data.pipeline, rayformers.tasks\n"
        "print(json.dumps([rayformers.data.pipeline.__file__, rayformers.tasks.__file__,"
        f" [importlib.util.find_spec(m).origin for m in {list(SHADOWED)!r}]]))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], cwd=project, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    pipeline, table, shadows = json.loads(out.stdout)
    assert Path(pipeline).is_relative_to(venv) and Path(table).is_relative_to(venv)
    # From the project directory, its own packages are the ones named data, training, ... (as in any script).
    assert shadows == [str(project / name / "__init__.py") for name in SHADOWED]


@pytest.mark.timeout(900)
def test_validate_preview_train_and_serve_from_a_project_with_its_own_data_package(venv, tmp_path):
    project = user_project(tmp_path / "project", "configs/text-classification/full.yaml")
    sets = [
        "--set",
        "train.max_steps=20",
        "--set",
        "train.eval_every_steps=20",
        "--set",
        "train.num_workers=2",
    ]

    checked = run(venv, project, "validate", "run.yaml", *sets)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stderr[-3000:]

    preview = run(venv, project, "data", "preview", "run.yaml", "--rows", "2", "--json")
    assert preview.returncode == 0, preview.stderr[-4000:]
    report = json.loads(preview.stdout)
    assert report["splits"]["train"]["stats"]["rows"] == 2000
    assert report["splits"]["train"]["stats"]["labels"] == {"negative": 1000, "positive": 1000}
    assert len(report["splits"]["validation"]["rows"]) == 2

    trained = run(venv, project, "train", "run.yaml", *sets)
    assert trained.returncode == 0, trained.stderr[-4000:]
    checkpoint = Path(trained.stdout.strip().splitlines()[-1])
    assert checkpoint.is_relative_to(project / "runs") and (checkpoint / "rayformers.json").is_file()

    port = _free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH", "VIRTUAL_ENV")}
    # Output goes to a file: Ray writes more than a pipe holds, and an unread pipe would block the server.
    server = subprocess.Popen(
        [str(venv / "bin" / "rayformers"), "serve", "--checkpoint", str(checkpoint), "--name", "reviews",
         "--port", str(port)],
        cwd=project, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        answer = _predict(
            f"http://127.0.0.1:{port}/reviews/predict", ["a great film", "a dull film"], server, log
        )
        assert [set(a) for a in answer] == [{"label", "score"}] * 2
        assert {a["label"] for a in answer} <= {"negative", "positive"}
        children = [p for p in psutil.Process(server.pid).children(recursive=True) if p.is_running()]
        assert children, "serve started no Ray processes"
        # A replica answers a moment before Serve calls its app running; a SIGTERM before the deploy
        # is done stops the deploy instead (exit 143). Stop the server once it says it is serving.
        deadline = time.monotonic() + 60
        while "Serving; Ctrl-C or SIGTERM stops." not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    output = log.read_text()
    assert server.returncode == 0, output[-3000:]
    assert f"http://127.0.0.1:{port}/reviews" in output and "the user project's" not in output
    time.sleep(2)
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _predict(url: str, inputs: list[str], server: subprocess.Popen, log: Path) -> list[dict]:
    body = json.dumps({"inputs": inputs}).encode()
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json"}, method="POST"
    )
    deadline = time.monotonic() + 240
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except OSError:
            assert server.poll() is None, (
                f"the server exited with {server.returncode}:\n{log.read_text()[-5000:]}"
            )
            assert time.monotonic() < deadline, log.read_text()[-5000:]
            time.sleep(1)
