"""Batch inference, end to end, as whole processes: `rayformers predict` against the loop a user writes
without it.

- Model: the MiniLM-L6-size BERT classifier (`models.build("classifier")`, random weights of real size).
- Data: 10,000 texts of 5 to 120 words (`models.texts`, seeded) in one JSONL file.
- Baseline: one Python process that loads the same checkpoint with serving's `load_checkpoint` and
  `build_handler` (the same handler, so the same tokenization and forwards), reads the file line by line
  and calls `handler.predict` on batches of 64, writing one JSON line per row: what a user would write
  around a pipeline, with torch's default threads (every core).
- rayformers: `rayformers predict CHECKPOINT --input FILE --output DIR` with its defaults (Ray started by
  the command, the actor pool sized to the machine, Parquet shards, the resume bookkeeping).
- Both are timed end to end (process start to exit) and by their own steady-state figure (the baseline:
  rows over the loop; rayformers: rows over the time from its first output to the end). Each side runs
  `ROUNDS` times, alternating; the best of each counts. Their outputs must agree on every row.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import models

ROWS = 10_000
ROUNDS = 2
BATCH = 64

BASELINE = """
import json, sys, time
from rayformers.serving.checkpoint import build_handler, load_checkpoint

checkpoint, data, out = sys.argv[1:4]
handler = build_handler(load_checkpoint(checkpoint))
texts = [json.loads(line)["text"] for line in open(data, encoding="utf-8")]
started = time.perf_counter()
with open(out, "w", encoding="utf-8") as f:
    for i in range(0, len(texts), 64):
        for output in handler.predict(texts[i : i + 64]):
            f.write(json.dumps(output) + "\\n")
print(len(texts), time.perf_counter() - started)
"""


def _rayformers() -> list[str]:
    script = Path(sys.executable).parent / "rayformers"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rayformers.cli"]


def _timed(
    command: list[str], log: Path, env: dict[str, str]
) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    elapsed = time.perf_counter() - started
    log.write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({done.returncode}); see {log}")
    return elapsed, done


def _predicted(out: Path) -> list[Any]:
    import pyarrow.parquet as pq

    rows = sorted(pq.read_table(out).to_pylist(), key=lambda r: r["id"])
    return [json.loads(r["output"]) for r in rows]


def run(args: Any) -> dict[str, Any]:
    from benchmarks.run import CACHE

    checkpoint = models.build("classifier", CACHE)
    root = Path(tempfile.mkdtemp(prefix="rayformers-bench-predict-"))
    logs = Path(args.logs)
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    times: dict[str, list[float]] = {"rayformers": [], "baseline": []}
    steady: dict[str, list[float]] = {"rayformers": [], "baseline": []}
    try:
        data = root / "reviews.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in models.texts(ROWS, seed=11)))
        for round_ in range(ROUNDS):
            baseline_out = root / f"baseline-{round_}.jsonl"
            seconds, done = _timed(
                [sys.executable, "-c", BASELINE, str(checkpoint), str(data), str(baseline_out)],
                logs / f"predict-baseline-{round_}.log",
                env,
            )
            rows, loop_s = done.stdout.split()
            assert int(rows) == ROWS
            times["baseline"].append(seconds)
            steady["baseline"].append(ROWS / float(loop_s))
            out = root / f"rayformers-{round_}"
            seconds, _ = _timed(
                [*_rayformers(), "predict", str(checkpoint), "--input", str(data), "--output", str(out)],
                logs / f"predict-rayformers-{round_}.log",
                env,
            )
            summary = json.loads((out / "_predict.json").read_text())["finished"]
            assert summary["rows"] == ROWS and summary["errors"] == 0, summary
            times["rayformers"].append(seconds)
            steady["rayformers"].append(ROWS / (summary["seconds"] - summary["first_output_s"]))
            theirs = [json.loads(line) for line in baseline_out.read_text().splitlines()]
            ours = _predicted(out)
            assert len(ours) == ROWS and all(
                a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-5
                for a, b in zip(ours, theirs, strict=True)
            ), "rayformers predict and the baseline disagree"
            print(f"[bench] predict round {round_}: baseline {times['baseline'][-1]:.1f} s, "
                  f"rayformers {times['rayformers'][-1]:.1f} s", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    best = {side: min(values) for side, values in times.items()}
    fastest = {side: max(values) for side, values in steady.items()}
    whole = {side: ROWS / seconds for side, seconds in best.items()}
    comparisons = [
        {
            "measurement": f"predict {ROWS:,} rows, whole process",
            "rayformers": whole["rayformers"],
            "baseline": whole["baseline"],
            "unit": "rows/s",
            "ratio": whole["rayformers"] / whole["baseline"],
            "target": None,
        },
        {
            "measurement": f"predict {ROWS:,} rows, steady state",
            "rayformers": fastest["rayformers"],
            "baseline": fastest["baseline"],
            "unit": "rows/s",
            "ratio": fastest["rayformers"] / fastest["baseline"],
            "target": ">= 0.9",
        },
    ]
    return {
        "name": "predict",
        "title": f"Batch inference, {ROWS:,} rows of 5-120 words, MiniLM-L6-size classifier",
        "comparisons": comparisons,
        "notes": [
            f"- Baseline: one process, serving's handler over batches of {BATCH} (torch's default threads); "
            "rayformers: `rayformers predict` with its defaults (embedded Ray, the actor pool sized to the "
            "machine, Parquet shards). Whole process: start to exit, Ray's start and the model loads "
            f"included. Steady state: the baseline's loop; rayformers from its first output to its end. "
            f"Best of {ROUNDS} alternating rounds; the outputs agree on every row.",
            f"- Wall times (s): baseline {', '.join(f'{t:.1f}' for t in times['baseline'])}; rayformers "
            f"{', '.join(f'{t:.1f}' for t in times['rayformers'])}.",
        ],
        "seconds": times,
        "steady_rows_per_s": steady,
    }
