"""`rayformers quickstart`: the whole flow, offline, on the project's own sample data.

Train a small tokenizer, build a tiny BERT from a config, stream and tokenize the sentiment set with
Ray Data, fine-tune it with LoRA on 2 Ray Train workers, print the evaluation, serve the checkpoint
with Ray Serve, send it a few requests over HTTP and print the answers and a `curl` line, then shut
everything down (or keep serving). Stages are imported inside, as in the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from rayformers.errors import UserError

__all__ = ["REVIEWS", "quickstart_config", "run_quickstart"]

_CONFIG = Path("configs") / "text-classification" / "lora.yaml"
# In the sample set's style (its words and templates): the tiny model knows nothing else.
REVIEWS = [
    "We went there on Saturday. The soup was brilliant, I would happily recommend it.",
    "This phone was dreadful, a complete waste of money.",
    "I thought the concert was impressive.",
]


def quickstart_config() -> Path:
    """The sample config the quickstart runs: in the repository this module sits in (an editable
    install), else in the current directory (a clone with rayformers installed from a wheel)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / _CONFIG).is_file():
            return root / _CONFIG
    raise UserError(
        f"the quickstart trains on the repository's sample data ({_CONFIG} and data/samples/), which is "
        "not here: run it from a clone of the rayformers repository (`make quickstart`)"
    )


def _say(step: int, text: str) -> None:
    print(f"[{step}/5] {text}", flush=True)


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def run_quickstart(workdir: Path, *, port: int = 8000, keep_serving: bool = False) -> dict[str, Any]:
    """Run the flow in `workdir`; return the metrics and the served answers."""
    from rayformers.cluster import connect
    from rayformers.config import ServeAppConfig
    from rayformers.data.corpus import stream_texts
    from rayformers.data.tokenizer_training import train_tokenizer
    from rayformers.loading import load_config
    from rayformers.serving.app import checked
    from rayformers.serving.server import block_stop_signals, deploy, serve_until_stopped
    from rayformers.training.trainer import run_training

    started = time.monotonic()
    if keep_serving:
        block_stop_signals()
    workdir = workdir.resolve()
    if (workdir / "runs" / "quickstart").exists() or (workdir / "tokenizer").exists():
        # A fresh tokenizer each time: an old run in the same place would be resumed with the old one.
        shutil.rmtree(workdir)
    tokenizer_dir = workdir / "tokenizer"
    config = quickstart_config()
    samples = config.parents[2] / "data" / "samples" / "sentiment"
    cfg = load_config(
        config,
        [
            f"data.train.path={samples / 'train.jsonl'}",
            f"data.validation.path={samples / 'validation.jsonl'}",
            f"model.from_scratch.tokenizer={tokenizer_dir}",
            f"train.storage_path={workdir / 'runs'}",
            "train.name=quickstart",
            f"serve.port={port}",
        ],
    )
    with connect(cfg.cluster) as session:
        shown = os.path.relpath(str(cfg.data.train.path))
        _say(1, f"training a WordPiece tokenizer on {shown} (streamed with Ray Data)")
        train_tokenizer(
            stream_texts(cfg.data, cfg.model.task), tokenizer_dir, model_max_length=cfg.data.max_length
        )
        _say(
            2,
            f"LoRA fine-tuning a tiny BERT built from a config on {cfg.train.num_workers} Ray Train workers "
            "(tokenized by Ray Data)",
        )
        result = run_training(cfg)
        metrics = {
            k: round(float(v), 4) for k, v in result.best_metrics.items() if k in ("accuracy", "f1", "loss")
        }
        _say(
            3,
            f"evaluation on the validation split: {json.dumps(metrics)}; checkpoint: {result.best_checkpoint}",
        )
        app = ServeAppConfig(name="sentiment", checkpoint=result.best_checkpoint, num_cpus=0.5)
        _say(4, "serving the checkpoint with Ray Serve")
        # --keep-serving holds the stop signals: the deploy takes them, or Ctrl-C waits for its end. The
        # deploy says what it deploys, then every few seconds which replicas it still waits for.
        served = deploy(cfg.serve, checked(cfg.serve, [app]), cfg.cluster, stoppable=keep_serving)
        url = served.urls["sentiment"]
        print(f"    serving at {url}", flush=True)
        try:
            answers = _post(f"{url}/predict", {"inputs": REVIEWS})
            _say(5, "answers over HTTP:")
            for text, answer in zip(REVIEWS, answers, strict=True):
                print(f"    {answer['label']:>8} ({answer['score']:.2f})  {text}")
            body = json.dumps({"inputs": "The service was terrible."})
            print(
                f"\nTry it yourself:\n    curl -s -X POST {url}/predict -H 'content-type: application/json' -d '{body}'"
            )
        except BaseException:
            served.shutdown()
            raise
        if keep_serving:
            serve_until_stopped(served)
        else:
            print("\nshutting down Serve and Ray ...", flush=True)
            served.shutdown()
        session.close()
    # Said once Ray is down: the lines its processes log while they stop (forwarded to this terminal
    # until `ray.shutdown` returns) come before it, never after.
    print(f"quickstart finished in {time.monotonic() - started:.0f} s", flush=True)
    return {"metrics": metrics, "answers": answers, "checkpoint": result.best_checkpoint}
