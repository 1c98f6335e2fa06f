"""Tokenization and preview, end to end, as whole processes: `rayformers data tokenize` against what a user
writes from the Hugging Face course, and `rayformers data preview` on every shipped config.

- Data: 400,000 texts of 5 to 120 words (`models.texts`, seeded) with a two-class label, in one JSONL file.
- Tokenizer: the MiniLM-L6-size classifier's (`models.build("classifier")`: BERT WordPiece), max_length 256.
- Baseline: `datasets.load_dataset("json", data_files=...)`, `.map(tokenize, batched=True, num_proc=2)`
  (the course's function, plus the label map a string label needs), `.to_parquet(...)`, in a fresh
  datasets cache, as one subprocess.
- rayformers: `rayformers data tokenize CONFIG --out DIR` with its defaults (row checks, the global shuffle,
  the manifest), the labels given as the baseline gives them, and no held-out split (the baseline has none).
- Each side runs `ROUNDS` times, alternating; the best wall time of each counts (the machine is shared).
- Preview: `rayformers data preview CONFIG --rows 2` for each config under configs/, wall time.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import models

ROWS = 400_000
ROUNDS = 2
LABELS = ("negative", "positive")
CONFIGS = models.REPO / "configs"

BASELINE = """
import sys
import datasets
from transformers import AutoTokenizer

data_file, tokenizer_dir, out = sys.argv[1:4]
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
label2id = {"negative": 0, "positive": 1}


def tokenize(batch):
    encoded = tokenizer(batch["text"], truncation=True, max_length=256)
    encoded["labels"] = [label2id[label] for label in batch["label"]]
    return encoded


dataset = datasets.load_dataset("json", data_files=data_file, split="train")
dataset = dataset.map(tokenize, batched=True, num_proc=2, remove_columns=dataset.column_names)
dataset.to_parquet(out)
print(len(dataset))
"""


def _rayformers() -> list[str]:
    script = Path(sys.executable).parent / "rayformers"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rayformers.cli"]


def _timed(command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=1800)
    elapsed = time.perf_counter() - started
    log.write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({done.returncode}); see {log}")
    return elapsed, done.stdout


def _tokens(parquet: Path) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids = pq.read_table(parquet, columns=["input_ids"]).column("input_ids")
    return int(pc.sum(pc.list_value_length(ids)).as_py())


def _write_data(root: Path) -> Path:
    rng = random.Random(5)
    path = root / "train.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for text in models.texts(ROWS, seed=3):
            f.write(json.dumps({"text": text, "label": rng.choice(LABELS)}) + "\n")
    return path


def _config(root: Path, data: Path, tokenizer: Path) -> Path:
    path = root / "tokenize.yaml"
    path.write_text(
        f"data:\n  train: {{path: {data}}}\n  validation_fraction: 0\n  labels: [{', '.join(LABELS)}]\n"
        f"  max_length: 256\nmodel:\n  task: text-classification\n  from_scratch:\n    architecture: bert\n"
        f"    tokenizer: {tokenizer}\n"
    )
    return path


def run(args: Any) -> dict[str, Any]:
    from benchmarks.run import CACHE

    tokenizer = models.build("classifier", CACHE)
    root = Path(tempfile.mkdtemp(prefix="rayformers-bench-tokenize-"))
    logs = Path(args.logs)
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    try:
        data = _write_data(root)
        config = _config(root, data, tokenizer)
        times: dict[str, list[float]] = {"rayformers": [], "baseline": []}
        tokens: dict[str, int] = {}
        for round_ in range(ROUNDS):
            cache = root / f"hf-cache-{round_}"  # a fresh cache: the first run a user makes
            out = root / f"baseline-{round_}.parquet"
            seconds, stdout = _timed(
                [sys.executable, "-c", BASELINE, str(data), str(tokenizer), str(out)],
                logs / f"tokenization-baseline-{round_}.log",
                {**env, "HF_DATASETS_CACHE": str(cache)},
            )
            rows = int(stdout.split()[-1])
            assert rows == ROWS, f"the baseline wrote {rows} rows"
            tokens["baseline"] = _tokens(out)  # counted here, outside its timed process
            times["baseline"].append(seconds)
            shards = root / f"rayformers-{round_}"
            seconds, _ = _timed(
                [*_rayformers(), "data", "tokenize", str(config), "--out", str(shards)],
                logs / f"tokenization-rayformers-{round_}.log",
                env,
            )
            manifest = json.loads((shards / "manifest.json").read_text())
            assert manifest["splits"]["train"]["rows"] == ROWS, manifest["splits"]
            tokens["rayformers"] = manifest["splits"]["train"]["tokens"]
            times["rayformers"].append(seconds)
            print(f"[bench] tokenization round {round_}: baseline {times['baseline'][-1]:.1f} s, "
                  f"rayformers {times['rayformers'][-1]:.1f} s", flush=True)  # fmt: skip
            shutil.rmtree(cache, ignore_errors=True)
        assert tokens["rayformers"] == tokens["baseline"], f"different token counts: {tokens}"
        previews = {}
        for path in sorted(CONFIGS.rglob("*.yaml")):
            name = str(path.relative_to(models.REPO))
            previews[name], _ = _timed(
                [*_rayformers(), "data", "preview", name, "--rows", "2"],
                logs / f"preview-{name.replace('/', '-')}.log",
                env,
                cwd=models.REPO,
            )
            print(f"[bench] preview {name}: {previews[name]:.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    best = {side: min(values) for side, values in times.items()}
    ours, theirs = ROWS / best["rayformers"], ROWS / best["baseline"]
    comparisons = [
        {
            "measurement": f"data tokenize, {ROWS:,} rows, whole process",
            "rayformers": ours,
            "baseline": theirs,
            "unit": "rows/s",
            "ratio": ours / theirs,
            "target": ">= 0.8",
        }
    ] + [
        {"measurement": f"data preview {name} --rows 2", "rayformers": seconds, "baseline": None, "unit": "s",
         "ratio": None, "target": "<= 10"}
        for name, seconds in previews.items()
    ]  # fmt: skip
    return {
        "name": "tokenization",
        "title": f"Tokenization, {ROWS:,} rows of 5-120 words, MiniLM-L6 WordPiece tokenizer, and data preview",
        "comparisons": comparisons,
        "notes": [
            f"- Baseline: `datasets.load_dataset('json')`, `.map(tokenize, batched=True, num_proc=2)`, "
            f"`.to_parquet()`, a fresh datasets cache; rayformers: `rayformers data tokenize` with its defaults "
            f"(row checks, global shuffle, manifest). Both are whole processes, timed end to end, best of "
            f"{ROUNDS} alternating rounds; both wrote {tokens['rayformers']:,} tokens.",
            f"- Wall times (s): baseline {', '.join(f'{t:.1f}' for t in times['baseline'])}; rayformers "
            f"{', '.join(f'{t:.1f}' for t in times['rayformers'])}.",
            "- Preview reads, checks and tokenizes the first 10,000 rows of each split in its own process "
            "(no Ray cluster); every shipped sample set fits, so its statistics cover every row.",
        ],
        "seconds": times,
        "tokens": tokens,
        "preview_seconds": previews,
    }
