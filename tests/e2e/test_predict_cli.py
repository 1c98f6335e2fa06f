"""`rayformers predict` as a user runs it: a run killed with SIGKILL once some shards are written resumes
from them when run again, and ends with every row exactly once and the outputs of a clean run; bad
options fail before Ray starts with one line that names the flag."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
WORDS = ["a", "great", "dull", "film", "book", "tiring", "superb", "pleasant", "camera", "kettle", "was"]
ROWS, PER_SHARD = 600, 50


def _command(checkpoint: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "rayformers.cli", "predict", str(checkpoint), "--input", str(data),
        "--output", str(out), "--rows-per-shard", str(PER_SHARD), "--batch-size", "10",
        "--num-cpus", "0.5", "--concurrency", "1", "--parameters", '{"top_k": 2}', *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out).to_pylist()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A directory of JSONL files, read in path order: each file is one read block (Ray Data hands
    the actors a block at a time), so shards finish one after another."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("predict") / "reviews"
    root.mkdir()
    for part in range(ROWS // PER_SHARD):
        (root / f"reviews-{part:02d}.jsonl").write_text(
            "".join(
                json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))}) + "\n"
                for _ in range(PER_SHARD)
            )
        )
    return root


@pytest.mark.slow
def test_a_killed_run_resumes_without_duplicating_rows(tiny_checkpoint, data, tmp_path):
    from rayformers.serving.checkpoint import build_handler, load_checkpoint
    from tests.integration.serving.examples import close

    checkpoint = tiny_checkpoint("text-classification")
    out = tmp_path / "out"
    # One row per forward makes the run slow enough to be killed mid-way.
    process = subprocess.Popen(
        _command(checkpoint, data, out, "--max-batch-tokens", "1"), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env=_env(), start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    try:
        while len(list(out.glob("part-*.parquet"))) < 2:
            assert process.poll() is None, (
                f"the run ended before it was killed: {process.stderr.read()[-3000:]}"
            )
            assert time.monotonic() < deadline, "no two shards were written within 90 s"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and the Ray it started, as an OOM killer would
        process.wait()
        process.stderr.close()
    kept = len(list(out.glob("part-*.parquet")))
    assert 2 <= kept < ROWS // PER_SHARD

    resumed = subprocess.run(
        _command(checkpoint, data, out), capture_output=True, text=True, env=_env(), timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == str(out)  # scripts read the output from here
    assert f"resuming: {kept} shards already in" in resumed.stderr
    assert f"predicted {ROWS - kept * PER_SHARD} rows" in resumed.stderr and "rows/s" in resumed.stderr
    rows = sorted(_rows(out), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(ROWS))  # every row exactly once
    texts = [json.loads(line)["text"] for f in sorted(data.iterdir()) for line in f.read_text().splitlines()]
    assert [r["text"] for r in rows] == texts
    # And what the handler answers for them (batched otherwise: equal but for float32 rounding).
    expected = build_handler(load_checkpoint(str(checkpoint))).predict(texts, {"top_k": 2})
    assert close([json.loads(r["output"]) for r in rows], expected, tol=1e-5)


def test_bad_options_fail_before_ray_with_one_line(tiny_checkpoint, data, tmp_path):
    checkpoint = tiny_checkpoint("text-classification")
    cases = [
        (["--input", str(tmp_path / "nope.jsonl")], "--input: file"),
        (["--parameters", '{"top_k": 0}'], "--parameters: top_k"),
        (["--parameters", "{top_k"], "--parameters"),
        (["--column", "text=review"], "the rows have columns text, but the task reads 'text'"),
    ]
    for change, expected in cases:
        command = _command(checkpoint, data, tmp_path / "out")
        flag = change[0]
        at = command.index(flag) if flag in command else len(command)
        command = command[:at] + change + command[at + 2 :] if flag in command else command + change
        started = time.monotonic()
        out = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=120)
        assert out.returncode == 1, out.stderr
        assert expected in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert "Started a local Ray" not in out.stderr, "the mistake should be caught before Ray starts"
        assert time.monotonic() - started < 60
