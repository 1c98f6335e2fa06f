"""`rayformers quickstart` as the README runs it: the whole flow offline, its five steps in order, the
answers, and "quickstart finished" as the last line, after Ray's own shutdown lines (issue 13)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_quickstart_runs_the_flow_and_says_it_is_done_last(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "rayformers.cli", "quickstart", "--workdir", str(tmp_path / "demo"), "--port", str(_free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": "local"},
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-5000:]
    steps = [int(m.group(1)) for m in re.finditer(r"^\[(\d)/5\] ", out, re.MULTILINE)]
    assert steps == [1, 2, 3, 4, 5], out[-5000:]
    metrics = re.search(
        r"^\[3/5\] evaluation on the validation split: (\{.*\}); checkpoint: (\S+)", out, re.M
    )
    assert metrics and float(re.search(r'"accuracy": ([0-9.]+)', metrics.group(1)).group(1)) > 0.8, out
    assert Path(metrics.group(2), "rayformers.json").is_file()
    answers = re.findall(r"^\s+(positive|negative) \((\d\.\d\d)\)  ", out, re.MULTILINE)
    assert len(answers) == 3 and {label for label, _ in answers} == {"positive", "negative"}, out
    # Nothing of Ray's after the last word: on stdout or stderr, the shutdown's lines come first.
    lines = [line for line in out.splitlines() if line.strip()]
    assert re.fullmatch(r"quickstart finished in \d+ s", lines[-1]), lines[-5:]
    assert "shutting down Serve and Ray ..." in lines[:-1]
    assert "quickstart finished" not in done.stderr
